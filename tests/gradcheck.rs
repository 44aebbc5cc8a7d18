//! Finite-difference checks of the reference backward pass, in f64: for every
//! cell and option, every direction mode and both layouts, on two stacked
//! layers with sequence lengths (full, zero and partial) and initial states,
//! the analytic gradient of every parameter, input and initial-state element
//! equals the central difference of the loss.

mod common;

use common::{cell_variants, DIRECTIONS, LAYOUTS};
use rnn::reference::{backward, forward, forward_training};
use rnn::rng::SplitMix64;
use rnn::{Config, Input, OutputGrads};

const SEQ_LEN: usize = 4;
const SEQ_LENS: [usize; 3] = [4, 0, 2];
const EPS: f64 = 1e-5;
/// Central differences have truncation error ~EPS² and rounding ~1e-16/EPS.
const TOL: f64 = 1e-7;

struct Problem {
    config: Config,
    params: Vec<f64>,
    x: Vec<f64>,
    h0: Vec<f64>,
    c0: Vec<f64>,
    // Loss = Σ y·wy + Σ h_n·wh + Σ c_n·wc.
    wy: Vec<f64>,
    wh: Vec<f64>,
    wc: Vec<f64>,
}

fn randoms(rng: &mut SplitMix64, len: usize, bound: f64) -> Vec<f64> {
    (0..len).map(|_| rng.uniform(-bound, bound)).collect()
}

impl Problem {
    fn new(config: Config, seed: u64) -> Problem {
        let mut rng = SplitMix64::new(seed);
        let s = rnn::Shapes::new(&config, SEQ_LEN, SEQ_LENS.len()).unwrap();
        Problem {
            params: randoms(&mut rng, config.num_params(), 0.7),
            x: randoms(&mut rng, s.x, 1.0),
            h0: randoms(&mut rng, s.h, 1.0),
            c0: randoms(&mut rng, s.c, 1.0),
            wy: randoms(&mut rng, s.y, 1.0),
            wh: randoms(&mut rng, s.h, 1.0),
            wc: randoms(&mut rng, s.c, 1.0),
            config,
        }
    }

    fn input(&self) -> Input<'_, f64> {
        let input = Input::new(&self.x[..], SEQ_LEN, SEQ_LENS.len())
            .with_seq_lens(&SEQ_LENS)
            .with_h0(&self.h0);
        if self.config.has_cell_state() {
            input.with_c0(&self.c0)
        } else {
            input
        }
    }

    fn loss(&self) -> f64 {
        let out = forward(&self.config, &self.params, &self.input()).unwrap();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        dot(&out.y, &self.wy) + dot(&out.h_n, &self.wh) + out.c_n.map_or(0.0, |c| dot(&c, &self.wc))
    }
}

/// Compares `analytic` with central differences of the loss with respect to
/// each element of the buffer `select` picks out of the problem.
#[allow(clippy::needless_range_loop)]
fn check_buffer(
    name: &str,
    p: &mut Problem,
    analytic: &[f64],
    select: fn(&mut Problem) -> &mut Vec<f64>,
) {
    assert_eq!(select(p).len(), analytic.len(), "{name}: gradient length");
    for k in 0..analytic.len() {
        let orig = select(p)[k];
        select(p)[k] = orig + EPS;
        let plus = p.loss();
        select(p)[k] = orig - EPS;
        let minus = p.loss();
        select(p)[k] = orig;
        let numeric = (plus - minus) / (2.0 * EPS);
        let err = (numeric - analytic[k]).abs();
        assert!(
            err <= TOL * numeric.abs().max(1.0),
            "{name}[{k}]: analytic {} vs numeric {numeric} (error {err:e})",
            analytic[k]
        );
    }
}

fn gradcheck(cell: &str, builder: rnn::ConfigBuilder, seed: u64) {
    for (i, direction) in DIRECTIONS.into_iter().enumerate() {
        let layout = LAYOUTS[i % 2];
        let shaped = |b: rnn::ConfigBuilder| {
            b.num_layers(2)
                .direction(direction)
                .layout(layout)
                .build()
                .unwrap()
        };
        let config = shaped(builder.clone());
        let name = format!("{cell} {direction:?} {layout:?}");
        let mut p = Problem::new(config, seed + i as u64);
        let (out, trace) = forward_training(&p.config, &p.params, &p.input()).unwrap();
        assert_eq!(
            out,
            forward(&p.config, &p.params, &p.input()).unwrap(),
            "{name}: training forward == inference forward"
        );
        let mut grads = OutputGrads::new(&p.wy[..]).with_dh_n(&p.wh);
        if p.config.has_cell_state() {
            grads = grads.with_dc_n(&p.wc);
        }
        let g = backward(&p.config, &p.params, &trace, &grads).unwrap();
        if let (Some(clip), Some(c_n)) = (p.config.cell_clip(), &out.c_n) {
            let clip = f64::from(clip);
            assert!(
                c_n.iter().any(|c| (c.abs() - clip).abs() < 1e-12),
                "{name}: the clip is active somewhere"
            );
        }
        if p.config.gate_clip().is_some() {
            let unclipped = shaped(builder.clone().gate_clip(None));
            let free = forward(&unclipped, &p.params, &p.input()).unwrap();
            let change = common::max_abs_diff(&free.y, &out.y);
            assert!(change > 1e-2, "{name}: the gate clip changes y ({change})");
        }
        check_buffer(&format!("{name} dparams"), &mut p, &g.dparams, |p| {
            &mut p.params
        });
        check_buffer(&format!("{name} dx"), &mut p, &g.dx, |p| &mut p.x);
        check_buffer(&format!("{name} dh0"), &mut p, &g.dh0, |p| &mut p.h0);
        if let Some(dc0) = &g.dc0 {
            check_buffer(&format!("{name} dc0"), &mut p, dc0, |p| &mut p.c0);
        }
        // Zero-length item 1 passes dh_n straight through to dh0.
        let (h_len, n) = (p.config.state_size(), SEQ_LENS.len());
        for ld in 0..p.config.num_layers() * p.config.num_directions() {
            let slot = (ld * n + 1) * h_len..(ld * n + 2) * h_len;
            assert_eq!(
                g.dh0[slot.clone()],
                p.wh[slot],
                "{name}: dh0 of an empty item"
            );
        }
    }
}

macro_rules! gradcheck_tests {
    ($($test:ident => $cell:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            let (name, builder) = cell_variants(3, 3).into_iter().find(|(n, _)| *n == $cell).unwrap();
            gradcheck(name, builder, 0x5eed ^ $cell.len() as u64);
        }
    )*};
}

gradcheck_tests! {
    rnn_tanh => "rnn_tanh",
    rnn_relu => "rnn_relu",
    lstm => "lstm",
    lstm_peephole => "lstm_peephole",
    lstm_projection => "lstm_proj",
    lstm_cell_clip => "lstm_clip",
    lstm_all_options => "lstm_all",
    gru_reset_before_matmul => "gru_reset_before",
    gru_linear_before_reset => "gru_linear_before_reset",
    rnn_gate_clip => "rnn_gate_clip",
    rnn_relu_gate_clip => "rnn_relu_gate_clip",
    rnn_onnx_functions => "rnn_onnx_functions",
    lstm_onnx_functions => "lstm_onnx_functions",
    gru_onnx_functions => "gru_onnx_functions",
    lstm_gate_clip => "lstm_gate_clip",
    lstm_input_forget => "lstm_input_forget",
    lstm_onnx_all => "lstm_onnx_all",
    gru_gate_clip => "gru_gate_clip",
    gru_linear_before_reset_gate_clip => "gru_linear_before_reset_gate_clip",
}

#[test]
fn every_cell_variant_has_a_gradcheck() {
    assert_eq!(
        cell_variants(1, 1).len(),
        19,
        "add a gradcheck test for the new variant"
    );
}
