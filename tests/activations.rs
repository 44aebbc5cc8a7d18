//! ONNX's activation functions: each function and its derivative on every
//! ISA against f64; networks with a random function per role and per
//! direction on every ISA against the f64 reference, forward and backward;
//! the empty-sequence option; configuration errors; files keep both.
//! (onnxruntime's own outputs for every function, cell and direction are
//! in tests/interop.rs; finite differences in tests/gradcheck.rs.)

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rnn::kernels::dispatch::{activation_derivative_in_place, activation_in_place};
use rnn::rng::SplitMix64;
use rnn::{
    ActivationFunction, ActivationKind, CellKind, Coded, Config, Direction, EmptySequenceState,
    GruVariant, Input, Isa, Model,
};

/// ONNX's formulas in f64, written out independently of the crate.
fn f64_value(f: &ActivationFunction, x: f64) -> f64 {
    let (a, b) = (f64::from(f.alpha), f64::from(f.beta));
    match f.kind {
        ActivationKind::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        ActivationKind::Tanh => x.tanh(),
        ActivationKind::Relu => x.max(0.0),
        ActivationKind::Affine => a * x + b,
        ActivationKind::LeakyRelu => {
            if x >= 0.0 {
                x
            } else {
                a * x
            }
        }
        ActivationKind::ThresholdedRelu => {
            if x > a {
                x
            } else {
                0.0
            }
        }
        ActivationKind::ScaledTanh => a * (b * x).tanh(),
        ActivationKind::HardSigmoid => (a * x + b).clamp(0.0, 1.0),
        ActivationKind::Elu => {
            if x >= 0.0 {
                x
            } else {
                a * x.exp_m1()
            }
        }
        ActivationKind::Softsign => x / (1.0 + x.abs()),
        ActivationKind::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
    }
}

/// The derivative by central differences of the f64 formula.
fn f64_slope(f: &ActivationFunction, x: f64) -> f64 {
    let h = 1e-6 * x.abs().max(1.0);
    (f64_value(f, x + h) - f64_value(f, x - h)) / (2.0 * h)
}

/// Whether `x` is within `eps` of a kink or jump of `f`.
fn near_kink(f: &ActivationFunction, x: f64, eps: f64) -> bool {
    let (a, b) = (f64::from(f.alpha), f64::from(f.beta));
    let kinks: Vec<f64> = match f.kind {
        ActivationKind::Relu | ActivationKind::LeakyRelu | ActivationKind::Elu => vec![0.0],
        ActivationKind::ThresholdedRelu => vec![a],
        ActivationKind::HardSigmoid if a != 0.0 => vec![-b / a, (1.0 - b) / a],
        _ => Vec::new(),
    };
    kinks.iter().any(|k| (x - k).abs() < eps)
}

fn all_functions() -> Vec<ActivationFunction> {
    let mut out = Vec::new();
    for &kind in ActivationKind::ALL {
        out.push(ActivationFunction::new(kind));
        out.push(ActivationFunction::with(kind, 1.3, 0.35));
        out.push(ActivationFunction::with(kind, 0.07, -0.6));
    }
    out
}

/// Every function's value within 1e-6 relative (to the value, or to α x and
/// β where they cancel; or 1e-37 absolute) of f64,
/// and its derivative from that value within 2e-6 of the f64 slope (absolute
/// where the slope is below 1: a derivative recovered from a saturated
/// output, such as 1 − tanh², keeps absolute, not relative, accuracy), on
/// every ISA, over a sweep that includes tails which do not fill a vector.
#[test]
fn every_function_and_derivative_matches_f64_on_every_isa() {
    let mut xs: Vec<f32> = (-3000..=3000).map(|i| i as f32 * 0.01).collect();
    xs.extend([1e-7, -1e-7, 1e-3, -1e-3, 45.0, -45.0, 90.0, -90.0, 0.0]);
    for isa in Isa::supported() {
        for f in all_functions() {
            let mut y = xs.clone();
            activation_in_place(isa, &f, &mut y).unwrap();
            let mut d = y.clone();
            activation_derivative_in_place(isa, &f, &mut d).unwrap();
            for ((&x, &y), &d) in xs.iter().zip(&y).zip(&d) {
                let x64 = f64::from(x);
                let want = f64_value(&f, x64);
                let err = (f64::from(y) - want).abs();
                // α x + β can cancel: its rounding is relative to the terms.
                let terms = match f.kind {
                    ActivationKind::Affine | ActivationKind::HardSigmoid => {
                        (f64::from(f.alpha) * x64).abs() + f64::from(f.beta).abs()
                    }
                    _ => 0.0,
                };
                assert!(
                    err <= 1e-6 * want.abs().max(terms) + 1e-37,
                    "{isa:?} {f}({x}) = {y}, f64 {want} (error {err:e})"
                );
                if near_kink(&f, x64, 1e-4) {
                    continue;
                }
                let slope = f64_slope(&f, x64);
                let err = (f64::from(d) - slope).abs();
                assert!(
                    err <= 2e-6 * slope.abs().max(1.0),
                    "{isa:?} {f}'({x}) = {d}, f64 {slope} (error {err:e})"
                );
            }
        }
    }
}

#[test]
fn non_finite_inputs_stay_defined() {
    for isa in Isa::supported() {
        for f in all_functions() {
            let mut v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
            activation_in_place(isa, &f, &mut v).unwrap();
            assert!(v[0].is_nan(), "{isa:?} {f}(NaN) = {}", v[0]);
            // The limit where the f64 formula gives inf / inf (Softsign).
            let limit = |inf: f64| match f64_value(&f, inf) {
                v if v.is_nan() && f.kind == ActivationKind::Softsign => {
                    f64_value(&f, inf.signum() * 1e300)
                }
                v => v,
            };
            let want = [limit(f64::INFINITY), limit(f64::NEG_INFINITY)];
            for (got, want) in v[1..].iter().zip(want) {
                // ±inf in, the formula's limit out (NaN only where the
                // formula itself gives NaN, such as 0 · inf).
                assert!(
                    (want.is_nan() && got.is_nan())
                        || f64::from(*got) == want
                        || (f64::from(*got) - want).abs() < 1e-6,
                    "{isa:?} {f}(±inf) = {got}, want {want}"
                );
            }
        }
    }
}

/// A random network whose every role in every direction has a random
/// function (α ≥ 0, so that it trains).
#[derive(Clone, Debug)]
struct Case {
    cell: usize,
    functions: Vec<(usize, f32, f32)>,
    lbr: bool,
    gate_clip: bool,
    zeros: bool,
    layers: usize,
    input: usize,
    hidden: usize,
    seq_len: usize,
    batch: usize,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (
            0..3usize,
            proptest::collection::vec((0..11usize, 0.05f32..1.5, -0.9f32..0.9), 6),
        ),
        (any::<bool>(), any::<bool>(), any::<bool>(), 1..=2usize),
        (
            1..=6usize,
            1..=37usize,
            1..=5usize,
            1..=6usize,
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (cell, functions),
                (lbr, gate_clip, zeros, layers),
                (input, hidden, seq_len, batch, seed),
            )| Case {
                cell,
                functions,
                lbr,
                gate_clip,
                zeros,
                layers,
                input,
                hidden,
                seq_len,
                batch,
                seed,
            },
        )
}

fn config(case: &Case) -> Config {
    let cell = CellKind::ALL[case.cell];
    let roles = cell.default_activations().len();
    let functions: Vec<ActivationFunction> = (0..2 * roles)
        .map(|i| {
            let (kind, alpha, beta) = case.functions[i];
            ActivationFunction::with(ActivationKind::ALL[kind], alpha, beta)
        })
        .collect();
    let mut b = Config::builder(cell, case.input, case.hidden)
        .direction(Direction::BidirectionalConcat)
        .num_layers(case.layers)
        .activations(&functions)
        .gate_clip(case.gate_clip.then_some(0.8))
        .empty_sequence_state(match case.zeros {
            true => EmptySequenceState::Zeros,
            false => EmptySequenceState::Initial,
        });
    if cell == CellKind::Gru && case.lbr {
        b = b.gru_variant(GruVariant::LinearBeforeReset);
    }
    if cell == CellKind::Lstm && case.lbr {
        b = b.peepholes(true);
    }
    b.build().unwrap()
}

fn check(isa: Isa, case: &Case) -> Result<(), TestCaseError> {
    let config = config(case);
    let model = Model::random(config.clone(), case.seed)
        .with_isa(isa)
        .unwrap();
    let mut rng = SplitMix64::new(case.seed ^ 0xac);
    let mut b = common::random_batch(&mut rng, &config, case.seq_len, case.batch);
    b.seq_lens[0] = 0;
    let name = format!("{isa:?} {:?}", config.activations(0));
    let out = common::matches_reference(&model, &b, case.seq_len, case.batch, &mut rng, &name)?;
    // Item 0 is empty: its final state is h0 or zeros, as configured.
    let hs = config.state_size();
    for ld in 0..config.num_layers() * 2 {
        let row = &out.h_n[ld * case.batch * hs..][..hs];
        let h0_row = &b.h0[ld * case.batch * hs..][..hs];
        prop_assert_eq!(
            row,
            if case.zeros {
                &vec![0.0; hs][..]
            } else {
                h0_row
            }
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0xac71),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_functions_per_role_and_direction_match_the_reference_on_every_isa(case in cases()) {
        for isa in Isa::supported() {
            check(isa, &case)?;
        }
    }
}

#[test]
fn configuration_errors_name_the_problem() {
    let f = ActivationFunction::new;
    let error = |b: rnn::ConfigBuilder| b.build().unwrap_err().to_string();
    let lstm = || Config::builder(CellKind::Lstm, 2, 3);
    let msg = error(lstm().activations(&[f(ActivationKind::Relu)]));
    assert!(msg.contains("takes 3 functions per direction"), "{msg}");
    let msg = error(
        lstm()
            .direction(Direction::BidirectionalConcat)
            .activations(&[f(ActivationKind::Relu); 4]),
    );
    assert!(msg.contains("3 or 6 in all; got 4"), "{msg}");
    let nan = ActivationFunction::with(ActivationKind::Affine, f32::NAN, 0.0);
    let msg = error(Config::builder(CellKind::Rnn, 2, 3).activations(&[nan]));
    assert!(
        msg.contains("activations[0]") && msg.contains("finite"),
        "{msg}"
    );
    let msg = error(
        Config::builder(CellKind::Rnn, 2, 3)
            .activation(rnn::Activation::Relu)
            .activations(&[f(ActivationKind::Elu)]),
    );
    assert!(msg.contains("either activation or activations"), "{msg}");
    // Relu through `activations` is the same network as through `activation`.
    let a = Config::builder(CellKind::Rnn, 2, 3)
        .activation(rnn::Activation::Relu)
        .build()
        .unwrap();
    let b = Config::builder(CellKind::Rnn, 2, 3)
        .activations(&[f(ActivationKind::Relu)])
        .build()
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(b.activation(), rnn::Activation::Relu);
}

#[test]
fn training_refuses_a_function_its_output_does_not_invert() {
    let config = Config::builder(CellKind::Gru, 2, 3)
        .activations(&[
            ActivationFunction::new(ActivationKind::Sigmoid),
            ActivationFunction::with(ActivationKind::Elu, -0.5, 0.0),
        ])
        .build()
        .unwrap();
    let model = Model::random(config, 1);
    let x = [0.5f32; 4];
    let input = Input::new(&x, 2, 1);
    assert!(model.forward_inference(&input).is_ok(), "inference runs");
    let msg = model.forward_training(&input).unwrap_err().to_string();
    assert!(
        msg.contains("Elu(α = -0.5)") && msg.contains("α ≥ 0"),
        "{msg}"
    );
}

/// Checkpoints and safetensors files keep every direction's functions and
/// the empty-sequence option; checkpoints keep a gate clip of 0.
#[test]
fn files_keep_functions_and_the_empty_sequence_option() {
    let config = Config::builder(CellKind::Lstm, 3, 4)
        .direction(Direction::BidirectionalConcat)
        .activations(&[
            ActivationFunction::with(ActivationKind::HardSigmoid, 0.3, 0.45),
            ActivationFunction::new(ActivationKind::Softsign),
            ActivationFunction::with(ActivationKind::ScaledTanh, 1.25, 0.75),
            ActivationFunction::new(ActivationKind::Sigmoid),
            ActivationFunction::with(ActivationKind::ThresholdedRelu, 0.125, 0.0),
            ActivationFunction::new(ActivationKind::Softplus),
        ])
        .empty_sequence_state(EmptySequenceState::Zeros)
        .build()
        .unwrap();
    let model = Model::random(config.clone(), 5);
    let bytes = rnn::train::checkpoint::to_bytes(&model, &[]);
    let back = rnn::train::checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(back.model.config(), &config);
    assert_eq!(back.model.params(), model.params());
    let bytes = rnn::interop::safetensors::to_bytes(&model, &[]).unwrap();
    let back = rnn::interop::safetensors::from_bytes(&bytes, None).unwrap();
    assert_eq!(back.model.config(), &config);
    // ONNX's clip = 0 (format 3 stores "none" as NaN, so 0 survives).
    for clip in [Some(0.0), None, Some(0.5)] {
        let config = Config::builder(CellKind::Rnn, 2, 3)
            .gate_clip(clip)
            .build()
            .unwrap();
        let bytes = rnn::train::checkpoint::to_bytes(&Model::zeros(config.clone()), &[]);
        let back = rnn::train::checkpoint::from_bytes(&bytes).unwrap();
        assert_eq!(back.model.config().gate_clip(), clip);
    }
}
