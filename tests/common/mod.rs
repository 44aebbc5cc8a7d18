//! Helpers shared by the integration tests.
#![allow(dead_code)]

use proptest::test_runner::TestCaseError;
use rnn::rng::SplitMix64;
use rnn::{Activation, CellKind, Config, Direction, GruVariant, Input, Layout, Model, OutputGrads};

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
    let ok = builds_for_this_architecture(compiler).unwrap_or(false);
    if !ok {
        println!(
            "skipped: {compiler} does not build for {}",
            std::env::consts::ARCH
        );
    }
    ok
}

/// Whether `compiler` builds for the architecture these tests run on, or
/// None where it cannot be run.
fn builds_for_this_architecture(compiler: &str) -> Option<bool> {
    let machine = std::process::Command::new(compiler)
        .arg("-dumpmachine")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&machine.stdout).starts_with(std::env::consts::ARCH))
}

/// Whether these tests run emulated, built for another architecture than
/// the host's (qemu in CI): the host's C compiler builds for another one.
/// Without a C compiler, taken as not emulated.
pub fn emulated() -> bool {
    builds_for_this_architecture("cc") == Some(false)
}

/// The ISAs that a test slow under emulation covers: every supported one
/// natively; emulated, every one but the portable path, which is the same
/// Rust on every architecture and runs in the native suite (and under
/// Miri), so that qemu's minutes go to the architecture's own kernels.
pub fn isas_to_cover() -> Vec<rnn::Isa> {
    let mut isas = rnn::Isa::supported();
    if emulated() && isas.len() > 1 {
        isas.retain(|&isa| isa != rnn::Isa::Scalar);
        println!("emulated: the portable path runs natively, not here");
    }
    isas
}

/// `|got − want| ≤ tol · max(1, max |want|)`, element by element (a NaN
/// fails), as a proptest failure naming the element.
pub fn close(what: &str, got: &[f32], want: &[f64], tol: f64) -> Result<(), TestCaseError> {
    if got.len() != want.len() {
        return Err(TestCaseError::fail(format!(
            "{what}: length {} vs {}",
            got.len(),
            want.len()
        )));
    }
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        if err.is_nan() || err > tol * scale {
            return Err(TestCaseError::fail(format!(
                "{what}[{i}]: {g} vs {w} (error {err:e}, scale {scale})"
            )));
        }
    }
    Ok(())
}

/// A training forward and backward of `model` on `b` (`seq_len` steps of
/// `batch` items; output gradients drawn from `rng`) against the f64
/// reference: outputs and states within 2e-5, gradients within 1e-4 (see
/// [`close`]), and inference equal to the training forward. Returns the
/// outputs.
pub fn matches_reference(
    model: &Model,
    b: &Batch,
    seq_len: usize,
    batch: usize,
    rng: &mut SplitMix64,
    name: &str,
) -> Result<rnn::Output, TestCaseError> {
    let config = model.config();
    let lstm = config.has_cell_state();
    let input = b.input(config, seq_len, batch);
    let (out, trace) = model.forward_training(&input).unwrap();

    let params = widen(model.params());
    let (xw, h0w, c0w) = (widen(&b.x), widen(&b.h0), widen(&b.c0));
    let mut winput = Input::new(&xw[..], seq_len, batch)
        .with_seq_lens(&b.seq_lens)
        .with_h0(&h0w);
    if lstm {
        winput = winput.with_c0(&c0w);
    }
    let (want, wtrace) = rnn::reference::forward_training(config, &params, &winput).unwrap();
    close(&format!("{name} y"), &out.y, &want.y, 2e-5)?;
    close(&format!("{name} h_n"), &out.h_n, &want.h_n, 2e-5)?;
    if let (Some(c), Some(wc)) = (&out.c_n, &want.c_n) {
        close(&format!("{name} c_n"), c, wc, 2e-5)?;
    }
    if model.forward_inference(&input).unwrap() != out {
        return Err(TestCaseError::fail(format!(
            "{name}: inference != training forward"
        )));
    }

    let dy = rng.uniform_vec(out.y.len(), -1.0, 1.0);
    let dh = rng.uniform_vec(out.h_n.len(), -1.0, 1.0);
    let dc = rng.uniform_vec(b.c0.len(), -1.0, 1.0);
    let mut grads = OutputGrads::new(&dy).with_dh_n(&dh);
    if lstm {
        grads = grads.with_dc_n(&dc);
    }
    let g = model.backward(&trace, &grads).unwrap();
    let (dyw, dhw, dcw) = (widen(&dy), widen(&dh), widen(&dc));
    let mut wgrads = OutputGrads::new(&dyw[..]).with_dh_n(&dhw);
    if lstm {
        wgrads = wgrads.with_dc_n(&dcw);
    }
    let wg = rnn::reference::backward(config, &params, &wtrace, &wgrads).unwrap();
    close(&format!("{name} dx"), &g.dx, &wg.dx, 1e-4)?;
    close(&format!("{name} dh0"), &g.dh0, &wg.dh0, 1e-4)?;
    if let (Some(d), Some(wd)) = (&g.dc0, &wg.dc0) {
        close(&format!("{name} dc0"), d, wd, 1e-4)?;
    }
    close(&format!("{name} dparams"), &g.dparams, &wg.dparams, 1e-4)?;
    Ok(out)
}

/// Sets `RNN_MIN_PART_MACS` to the bound the tests' shapes were sized for
/// (8k multiply-adds a part, the Zen 3 VM's), before any call reads it, so
/// that their steps split on every machine: by default the bound follows
/// the machine's measured core-to-core round trip, and on a machine with a
/// slow one (an Intel Xeon VM: 36-48k) the small steps would run unsplit
/// and the split paths untested. Call it first in every test that needs
/// split steps (it sets the variable once, before the first of them runs
/// anything).
pub fn split_small_steps() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("RNN_MIN_PART_MACS", "8192"));
}
