//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rnn::rng::SplitMix64;
use rnn::{Activation, CellKind, Config, Direction, GruVariant, Layout};

/// Every cell type and cell option, with a readable name.
pub fn cell_variants(input: usize, hidden: usize) -> Vec<(&'static str, rnn::ConfigBuilder)> {
    use rnn::ActivationKind::*;
    use CellKind::*;
    let f = rnn::ActivationFunction::with;
    vec![
        ("rnn_tanh", Config::builder(Rnn, input, hidden)),
        (
            "rnn_relu",
            Config::builder(Rnn, input, hidden).activation(Activation::Relu),
        ),
        ("lstm", Config::builder(Lstm, input, hidden)),
        (
            "lstm_peephole",
            Config::builder(Lstm, input, hidden).peepholes(true),
        ),
        (
            "lstm_proj",
            Config::builder(Lstm, input, hidden).proj_size(2),
        ),
        (
            "lstm_clip",
            Config::builder(Lstm, input, hidden).cell_clip(Some(0.25)),
        ),
        (
            "lstm_all",
            Config::builder(Lstm, input, hidden)
                .peepholes(true)
                .proj_size(2)
                .cell_clip(Some(0.25)),
        ),
        ("gru_reset_before", Config::builder(Gru, input, hidden)),
        (
            "gru_linear_before_reset",
            Config::builder(Gru, input, hidden).gru_variant(GruVariant::LinearBeforeReset),
        ),
        // ONNX's clip and input_forget.
        (
            "rnn_gate_clip",
            Config::builder(Rnn, input, hidden).gate_clip(Some(0.5)),
        ),
        (
            "rnn_relu_gate_clip",
            Config::builder(Rnn, input, hidden)
                .activation(Activation::Relu)
                .gate_clip(Some(0.25)),
        ),
        (
            "lstm_gate_clip",
            Config::builder(Lstm, input, hidden)
                .peepholes(true)
                .proj_size(2)
                .gate_clip(Some(0.5)),
        ),
        (
            "lstm_input_forget",
            Config::builder(Lstm, input, hidden)
                .peepholes(true)
                .input_forget(true),
        ),
        (
            "lstm_onnx_all",
            Config::builder(Lstm, input, hidden)
                .peepholes(true)
                .input_forget(true)
                .gate_clip(Some(0.5)),
        ),
        (
            "gru_gate_clip",
            Config::builder(Gru, input, hidden).gate_clip(Some(0.5)),
        ),
        (
            "gru_linear_before_reset_gate_clip",
            Config::builder(Gru, input, hidden)
                .gru_variant(GruVariant::LinearBeforeReset)
                .gate_clip(Some(0.5)),
        ),
        // ONNX's other activation functions (out of line in the kernels).
        // Smooth where the finite differences of tests/gradcheck.rs may
        // cross: Elu with α = 1 has a continuous slope at 0 (a kink there
        // would fail a central difference that straddles it).
        (
            "rnn_onnx_functions",
            Config::builder(Rnn, input, hidden).activations(&[f(ScaledTanh, 1.3, 0.8)]),
        ),
        (
            "lstm_onnx_functions",
            Config::builder(Lstm, input, hidden)
                .peepholes(true)
                .proj_size(2)
                .activations(&[
                    f(HardSigmoid, 0.3, 0.45),
                    f(Softsign, 0.0, 0.0),
                    f(Elu, 1.0, 0.0),
                ]),
        ),
        (
            "gru_onnx_functions",
            Config::builder(Gru, input, hidden)
                .gru_variant(GruVariant::LinearBeforeReset)
                .gate_clip(Some(0.5))
                .activations(&[f(Affine, 0.25, 0.5), f(Softplus, 0.0, 0.0)]),
        ),
    ]
}

/// Index in [`cell_variants`] of the variant called `name`.
pub fn variant_index(name: &str) -> usize {
    cell_variants(1, 1)
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no cell variant {name}"))
}

pub fn num_variants() -> usize {
    cell_variants(1, 1).len()
}

pub const DIRECTIONS: [Direction; 4] = [
    Direction::Forward,
    Direction::Reverse,
    Direction::BidirectionalConcat,
    Direction::BidirectionalSum,
];

pub const LAYOUTS: [Layout; 2] = [Layout::TimeMajor, Layout::BatchFirst];

pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Largest absolute difference between two equally long slices; NaN if
/// any difference is NaN (`f64::max` would drop it, and a NaN output would
/// pass every tolerance).
pub fn max_abs_diff<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x.into() - y.into()).abs())
        .fold(0.0, |m, d| if d > m || d.is_nan() { d } else { m })
}

impl Batch {
    /// The batch as a call's input over `seq_len` steps of `batch` items,
    /// `c0` included where the cell has a cell state.
    pub fn input(&self, config: &Config, seq_len: usize, batch: usize) -> rnn::Input<'_> {
        let x = rnn::Input::new(&self.x, seq_len, batch)
            .with_seq_lens(&self.seq_lens)
            .with_h0(&self.h0);
        match config.has_cell_state() {
            true => x.with_c0(&self.c0),
            false => x,
        }
    }
}

pub fn assert_close<T: Copy + Into<f64> + std::fmt::Debug>(
    what: &str,
    got: &[T],
    want: &[T],
    tol: f64,
) {
    let diff = max_abs_diff(got, want);
    assert!(
        diff <= tol,
        "{what}: max |difference| {diff:e} > {tol:e}\n got  {got:?}\n want {want:?}"
    );
}

/// Random data for one call: x, per-item lengths, h0 and (LSTM) c0.
pub struct Batch {
    pub x: Vec<f32>,
    pub seq_lens: Vec<usize>,
    pub h0: Vec<f32>,
    pub c0: Vec<f32>,
}

pub fn random_batch(rng: &mut SplitMix64, config: &Config, seq_len: usize, batch: usize) -> Batch {
    let shapes = rnn::Shapes::new(config, seq_len, batch).unwrap();
    Batch {
        x: rng.uniform_vec(shapes.x, -1.0, 1.0),
        seq_lens: (0..batch).map(|_| rng.below(seq_len + 1)).collect(),
        h0: rng.uniform_vec(shapes.h, -1.0, 1.0),
        c0: rng.uniform_vec(shapes.c, -1.0, 1.0),
    }
}

/// Whether `compiler` builds for the architecture these tests run on: false
/// under qemu for another architecture, where the host's compilers, cargo
/// and this test's own binary (as a child process) cannot serve.
pub fn native(compiler: &str) -> bool {
    let machine = std::process::Command::new(compiler)
        .arg("-dumpmachine")
        .output();
    let ok = machine
        .is_ok_and(|m| String::from_utf8_lossy(&m.stdout).starts_with(std::env::consts::ARCH));
    if !ok {
        println!(
            "skipped: {compiler} does not build for {}",
            std::env::consts::ARCH
        );
    }
    ok
}
