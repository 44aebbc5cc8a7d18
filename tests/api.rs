//! The Rust API: parameter layout, the typed errors of every invalid
//! configuration and buffer, trace validation, and agreement with the
//! reference for forward and backward.

mod common;

use common::{assert_close, cell_variants, random_batch, widen};
use rnn::rng::SplitMix64;
use rnn::{
    CellKind, Coded, Config, Direction, Error, GruVariant, Input, Model, OutputGrads, ParamKind,
};

fn lstm(input: usize, hidden: usize) -> rnn::ConfigBuilder {
    Config::builder(CellKind::Lstm, input, hidden)
}

#[test]
fn parameter_counts_match_pytorch() {
    // nn.LSTM(10, 20): 4·20·10 + 4·20·20 + 2·4·20 = 2560.
    assert_eq!(lstm(10, 20).build().unwrap().num_params(), 2560);
    // nn.GRU(10, 20, num_layers=2, bidirectional=True):
    // layer 0: 2·(3·20·10 + 3·20·20 + 2·60) = 3840; layer 1 (input 40): 2·(2400 + 1200 + 120) = 7440.
    let gru = Config::builder(CellKind::Gru, 10, 20)
        .num_layers(2)
        .direction(Direction::BidirectionalConcat)
        .build()
        .unwrap();
    assert_eq!(gru.num_params(), 3840 + 7440);
    // nn.LSTM(10, 20, proj_size=5): weight_hh is [80, 5], weight_hr [5, 20].
    let proj = lstm(10, 20).proj_size(5).build().unwrap();
    assert_eq!(proj.num_params(), 800 + 400 + 160 + 100);
    assert_eq!(proj.param_shape(0, ParamKind::R), Some((80, 5)));
    assert_eq!(proj.param_shape(0, ParamKind::Projection), Some((5, 20)));
    assert_eq!(proj.output_size(), 5);
}

#[test]
fn param_ranges_tile_the_parameter_vector() {
    for (name, builder) in cell_variants(3, 4) {
        let config = builder
            .num_layers(2)
            .direction(Direction::BidirectionalConcat)
            .build()
            .unwrap();
        let mut covered = vec![0u8; config.num_params()];
        for layer in 0..2 {
            for dir in 0..2 {
                let block = config.block_range(layer, dir).unwrap();
                for &kind in ParamKind::ALL {
                    if let Ok(r) = config.param_range(layer, dir, kind) {
                        let (rows, cols) = config.param_shape(layer, kind).unwrap();
                        assert_eq!(r.len(), rows * cols, "{name} {kind:?}");
                        assert!(
                            block.start <= r.start && r.end <= block.end,
                            "{name}: {kind:?} inside its block"
                        );
                        r.for_each(|i| covered[i] += 1);
                    }
                }
            }
        }
        assert!(
            covered.iter().all(|&c| c == 1),
            "{name}: every parameter in exactly one tensor"
        );
    }
}

#[test]
fn invalid_configs_are_rejected() {
    use rnn::Activation::Relu;
    let bad = [
        ("input 0", Config::builder(CellKind::Rnn, 0, 4).build()),
        ("hidden 0", Config::builder(CellKind::Rnn, 3, 0).build()),
        ("layers 0", lstm(3, 4).num_layers(0).build()),
        (
            "proj on GRU",
            Config::builder(CellKind::Gru, 3, 4).proj_size(2).build(),
        ),
        (
            "peepholes on RNN",
            Config::builder(CellKind::Rnn, 3, 4).peepholes(true).build(),
        ),
        (
            "clip on GRU",
            Config::builder(CellKind::Gru, 3, 4)
                .cell_clip(Some(1.0))
                .build(),
        ),
        ("negative clip", lstm(3, 4).cell_clip(Some(-1.0)).build()),
        ("zero clip", lstm(3, 4).cell_clip(Some(0.0)).build()),
        ("NaN clip", lstm(3, 4).cell_clip(Some(f32::NAN)).build()),
        (
            "infinite clip",
            lstm(3, 4).cell_clip(Some(f32::INFINITY)).build(),
        ),
        (
            "negative gate clip",
            lstm(3, 4).gate_clip(Some(-1.0)).build(),
        ),
        (
            "NaN gate clip",
            Config::builder(CellKind::Gru, 3, 4)
                .gate_clip(Some(f32::NAN))
                .build(),
        ),
        (
            "NaN gate clip",
            Config::builder(CellKind::Rnn, 3, 4)
                .gate_clip(Some(f32::NAN))
                .build(),
        ),
        (
            "infinite gate clip",
            lstm(3, 4).gate_clip(Some(f32::INFINITY)).build(),
        ),
        (
            "input_forget on GRU",
            Config::builder(CellKind::Gru, 3, 4)
                .input_forget(true)
                .build(),
        ),
        (
            "input_forget on RNN",
            Config::builder(CellKind::Rnn, 3, 4)
                .input_forget(true)
                .build(),
        ),
        ("relu LSTM", lstm(3, 4).activation(Relu).build()),
        (
            "GRU variant on LSTM",
            lstm(3, 4)
                .gru_variant(GruVariant::LinearBeforeReset)
                .build(),
        ),
        (
            "overflowing sizes",
            lstm(usize::MAX / 2, usize::MAX / 4).build(),
        ),
    ];
    for (what, result) in bad {
        match result {
            Err(Error::InvalidConfig(msg)) => assert!(!msg.is_empty(), "{what}"),
            other => panic!("{what}: expected InvalidConfig, got {other:?}"),
        }
    }
}

fn shape_error(result: rnn::Result<impl std::fmt::Debug>) -> &'static str {
    match result {
        Err(Error::ShapeMismatch { what, .. }) => what,
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn mismatched_buffers_are_rejected() {
    let model = Model::random(lstm(3, 4).num_layers(2).build().unwrap(), 1);
    let (x, h0, c0) = (
        vec![0.0; 2 * 5 * 3],
        vec![0.0; 2 * 5 * 4],
        vec![0.0; 2 * 5 * 4],
    );
    let ok = Input::new(&x, 2, 5);
    assert!(model
        .forward_inference(&ok.with_h0(&h0).with_c0(&c0))
        .is_ok());
    assert_eq!(
        shape_error(model.forward_inference(&Input::new(&x[1..], 2, 5))),
        "x"
    );
    assert_eq!(
        shape_error(model.forward_inference(&ok.with_h0(&h0[1..]))),
        "h0"
    );
    assert_eq!(
        shape_error(model.forward_inference(&ok.with_c0(&c0[..4]))),
        "c0"
    );
    assert_eq!(
        shape_error(model.forward_inference(&ok.with_seq_lens(&[1, 2]))),
        "seq_lens"
    );
    match model.forward_inference(&ok.with_seq_lens(&[1, 2, 3, 2, 1])) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("seq_lens[2] = 3"), "{msg}"),
        other => panic!("too long a length: {other:?}"),
    }
    let (mut y, mut h_n, mut c_n) = (
        vec![0.0; 2 * 5 * 4],
        vec![0.0; 2 * 5 * 4],
        vec![0.0; 2 * 5 * 4],
    );
    assert!(model
        .forward_inference_into(&ok, &mut y, &mut h_n, Some(&mut c_n))
        .is_ok());
    assert_eq!(
        shape_error(model.forward_inference_into(&ok, &mut y[1..], &mut h_n, None)),
        "y"
    );
    assert_eq!(
        shape_error(model.forward_inference_into(&ok, &mut y, &mut h_n[1..], None)),
        "h_n"
    );
    assert_eq!(
        shape_error(model.forward_inference_into(&ok, &mut y, &mut h_n, Some(&mut c_n[1..]))),
        "c_n"
    );
    assert_eq!(
        shape_error(Model::from_params(model.config().clone(), vec![0.0; 3])),
        "params"
    );

    let gru = Model::zeros(Config::builder(CellKind::Gru, 3, 4).build().unwrap());
    let c0_gru = vec![0.0; 5 * 4];
    assert!(matches!(
        gru.forward_inference(&ok.with_c0(&c0_gru)),
        Err(Error::InvalidArgument(_))
    ));
    let (mut y1, mut h1) = (vec![0.0; 2 * 5 * 4], vec![0.0; 5 * 4]);
    let mut c1 = vec![0.0; 5 * 4];
    assert!(matches!(
        gru.forward_inference_into(&ok, &mut y1, &mut h1, Some(&mut c1)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn overflowing_shapes_are_errors_not_panics() {
    let model = Model::zeros(lstm(3, 4).build().unwrap());
    let x: [f32; 0] = [];
    let err = model
        .forward_inference(&Input::new(&x, usize::MAX / 2, 3))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("overflow")),
        "{err}"
    );
}

#[test]
fn empty_sequences_and_batches_are_valid() {
    let model = Model::random(lstm(3, 4).build().unwrap(), 2);
    let h0 = vec![0.5; 2 * 4];
    let out = model
        .forward_inference(&Input::new(&[], 0, 2).with_h0(&h0))
        .unwrap();
    assert!(out.y.is_empty());
    assert_eq!(out.h_n, h0, "zero steps leave the state alone");
    let out = model.forward_inference(&Input::new(&[], 7, 0)).unwrap();
    assert!(out.y.is_empty() && out.h_n.is_empty());
}

#[test]
fn backward_checks_its_trace_and_buffers() {
    let mut model = Model::random(lstm(3, 4).build().unwrap(), 3);
    let x = vec![0.1; 2 * 3]; // T = 2, N = 1, I = 3
    let input = Input::new(&x, 2, 1);
    let (out, trace) = model.forward_training(&input).unwrap();
    let dy = vec![1.0; out.y.len()];
    assert!(model.backward(&trace, &OutputGrads::new(&dy)).is_ok());
    assert_eq!(
        shape_error(model.backward(&trace, &OutputGrads::new(&dy[1..]))),
        "dy"
    );
    assert_eq!(
        shape_error(model.backward(&trace, &OutputGrads::new(&dy).with_dh_n(&[1.0]))),
        "dh_n"
    );
    assert_eq!(
        shape_error(model.backward(&trace, &OutputGrads::new(&dy).with_dc_n(&[1.0]))),
        "dc_n"
    );

    let other = model.clone();
    assert!(
        matches!(
            other.backward(&trace, &OutputGrads::new(&dy)),
            Err(Error::InvalidArgument(_))
        ),
        "a clone is another model"
    );
    model.param_mut(0, 0, ParamKind::W).unwrap()[0] += 1.0;
    let err = model.backward(&trace, &OutputGrads::new(&dy)).unwrap_err();
    assert!(err.to_string().contains("parameters changed"), "{err}");
}

#[test]
fn missing_tensors_and_out_of_range_blocks_are_errors() {
    let model = Model::zeros(Config::builder(CellKind::Gru, 3, 4).build().unwrap());
    assert!(matches!(
        model.param(0, 0, ParamKind::Peephole),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        model.param(1, 0, ParamKind::W),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        model.param(0, 1, ParamKind::W),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(model.param(0, 0, ParamKind::W).unwrap().len(), 12 * 3);
}

#[test]
fn errors_read_well() {
    let e = Error::ShapeMismatch {
        what: "x",
        expected: 6,
        actual: 5,
    };
    assert_eq!(
        e.to_string(),
        "shape mismatch: `x` must hold 6 elements, got 5"
    );
    let e = lstm(3, 4)
        .proj_size(0)
        .peepholes(true)
        .cell_clip(Some(-2.0))
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid configuration: cell_clip must be finite and positive, got -2"
    );
}

#[test]
fn random_models_are_reproducible() {
    let config = lstm(3, 4).build().unwrap();
    assert_eq!(
        Model::random(config.clone(), 9).params(),
        Model::random(config.clone(), 9).params()
    );
    assert_ne!(
        Model::random(config.clone(), 9).params(),
        Model::random(config, 10).params()
    );
}

/// The API (f32) against the f64 reference, forward and backward, for every
/// cell variant and direction mode.
#[test]
fn api_matches_reference() {
    let mut rng = SplitMix64::new(77);
    for (name, builder) in cell_variants(3, 5) {
        for direction in common::DIRECTIONS {
            let config = builder
                .clone()
                .num_layers(2)
                .direction(direction)
                .build()
                .unwrap();
            let model = Model::random(config.clone(), rng.next_u64());
            let b = random_batch(&mut rng, &config, 4, 3);
            let mut input = Input::new(&b.x, 4, 3)
                .with_seq_lens(&b.seq_lens)
                .with_h0(&b.h0);
            let (xw, h0w, c0w) = (widen(&b.x), widen(&b.h0), widen(&b.c0));
            let mut winput = Input::new(&xw[..], 4, 3)
                .with_seq_lens(&b.seq_lens)
                .with_h0(&h0w);
            if config.has_cell_state() {
                input = input.with_c0(&b.c0);
                winput = winput.with_c0(&c0w);
            }
            let params = widen(model.params());
            let (out, trace) = model.forward_training(&input).unwrap();
            let (want, wtrace) =
                rnn::reference::forward_training(&config, &params, &winput).unwrap();
            let tol = 1e-5;
            assert_close(
                &format!("{name} {direction:?} y"),
                &widen(&out.y),
                &want.y,
                tol,
            );
            assert_close(&format!("{name} h_n"), &widen(&out.h_n), &want.h_n, tol);

            let dy = rng.uniform_vec(out.y.len(), -1.0, 1.0);
            let dh = rng.uniform_vec(out.h_n.len(), -1.0, 1.0);
            let g = model
                .backward(&trace, &OutputGrads::new(&dy).with_dh_n(&dh))
                .unwrap();
            let (dyw, dhw) = (widen(&dy), widen(&dh));
            let wg = rnn::reference::backward(
                &config,
                &params,
                &wtrace,
                &OutputGrads::new(&dyw[..]).with_dh_n(&dhw),
            )
            .unwrap();
            assert_close(&format!("{name} dx"), &widen(&g.dx), &wg.dx, tol);
            assert_close(&format!("{name} dh0"), &widen(&g.dh0), &wg.dh0, tol);
            assert_close(
                &format!("{name} dparams"),
                &widen(&g.dparams),
                &wg.dparams,
                1e-4,
            );
            assert_eq!(g.dc0.is_some(), config.has_cell_state());
        }
    }
}

#[test]
fn forward_flops_count_every_matrix_product() {
    // LSTM 10→20, T=3, N=2: 2·6·80·(10 + 20).
    let c = lstm(10, 20).build().unwrap();
    assert_eq!(c.forward_flops(3, 2), 2 * 6 * 80 * 30);
    // Bidirectional 2 layers with projection 5: layer 1 reads 10 features.
    let c = lstm(10, 20)
        .proj_size(5)
        .num_layers(2)
        .direction(Direction::BidirectionalConcat)
        .build()
        .unwrap();
    let layer = |inp: u64| 2 * 6 * 80 * (inp + 5) + 2 * 6 * 100;
    assert_eq!(c.forward_flops(3, 2), 2 * (layer(10) + layer(10)));
}

#[test]
fn block_ranges_of_missing_blocks_are_errors() {
    let config = lstm(3, 4).num_layers(2).build().unwrap();
    assert!(config.block_range(1, 0).is_ok());
    assert!(matches!(
        config.block_range(2, 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        config.block_range(0, 1),
        Err(Error::InvalidArgument(_))
    ));
}

/// Models reuse scratch buffers between calls: calls of other shapes in
/// between must not change a result.
#[test]
fn repeated_calls_of_changing_shapes_agree_with_a_fresh_model() {
    let mut rng = SplitMix64::new(5);
    for (name, builder) in cell_variants(3, 9) {
        let config = builder
            .num_layers(2)
            .direction(Direction::BidirectionalSum)
            .build()
            .unwrap();
        let model = Model::random(config.clone(), 8);
        let shapes = [(5, 4), (2, 7), (9, 1), (5, 4)];
        let batches: Vec<_> = shapes
            .iter()
            .map(|&(t, n)| random_batch(&mut rng, &config, t, n))
            .collect();
        for _round in 0..2 {
            for (&(t, n), b) in shapes.iter().zip(&batches) {
                let input = Input::new(&b.x, t, n).with_seq_lens(&b.seq_lens);
                let fresh = Model::random(config.clone(), 8)
                    .forward_inference(&input)
                    .unwrap();
                assert_eq!(
                    model.forward_inference(&input).unwrap(),
                    fresh,
                    "{name} T{t} N{n}"
                );
                let (out, _) = model.forward_training(&input).unwrap();
                assert_eq!(out, fresh, "{name} T{t} N{n} training");
            }
        }
    }
}

/// Found by fuzzing the C ABI: validation overflowed on huge sizes, and the
/// parameter count looped over every layer.
#[test]
fn huge_configs_are_checked_without_overflow_or_loops() {
    let huge = lstm(3, usize::MAX / 3).build();
    assert!(matches!(huge, Err(Error::InvalidConfig(_))));
    let many_layers = Config::builder(CellKind::Rnn, 1, 1)
        .num_layers(1 << 40)
        .build()
        .unwrap();
    assert_eq!(many_layers.num_params(), 4 << 40);
    assert_eq!(
        many_layers.block_range((1 << 40) - 1, 0).unwrap().end,
        4 << 40
    );
    assert!(matches!(
        lstm(3, 4).proj_size(usize::MAX / 2).build(),
        Err(Error::InvalidConfig(_))
    ));
}

/// The enum codes shared by the C ABI and checkpoints match the header's constants.
#[test]
#[cfg(feature = "capi")]
fn enum_codes_match_the_c_constants() {
    use rnn::ffi::*;
    use rnn::{Activation, GruVariant, Layout};
    assert_eq!(
        [
            CellKind::Rnn.code(),
            CellKind::Lstm.code(),
            CellKind::Gru.code()
        ],
        [RNN_CELL_RNN, RNN_CELL_LSTM, RNN_CELL_GRU]
    );
    assert_eq!(
        [Activation::Tanh.code(), Activation::Relu.code()],
        [RNN_ACTIVATION_TANH, RNN_ACTIVATION_RELU]
    );
    assert_eq!(
        Direction::ALL.iter().map(|d| d.code()).collect::<Vec<_>>(),
        [
            RNN_DIRECTION_FORWARD,
            RNN_DIRECTION_REVERSE,
            RNN_DIRECTION_BIDIRECTIONAL_CONCAT,
            RNN_DIRECTION_BIDIRECTIONAL_SUM
        ]
    );
    assert_eq!(
        Direction::from_code(RNN_DIRECTION_BIDIRECTIONAL_SUM),
        Some(Direction::BidirectionalSum)
    );
    assert_eq!(
        [
            GruVariant::ResetBeforeMatmul.code(),
            GruVariant::LinearBeforeReset.code()
        ],
        [RNN_GRU_RESET_BEFORE_MATMUL, RNN_GRU_LINEAR_BEFORE_RESET]
    );
    assert_eq!(
        [Layout::TimeMajor.code(), Layout::BatchFirst.code()],
        [RNN_LAYOUT_TIME_MAJOR, RNN_LAYOUT_BATCH_FIRST]
    );
    assert_eq!(CellKind::from_code(3), None);
    assert_eq!(
        ParamKind::ALL.iter().map(|k| k.code()).collect::<Vec<_>>(),
        [
            RNN_PARAM_W,
            RNN_PARAM_R,
            RNN_PARAM_WB,
            RNN_PARAM_RB,
            RNN_PARAM_PEEPHOLE,
            RNN_PARAM_PROJECTION
        ]
    );
}

/// With input_forget, f = 1 − i: the forget gate's rows of W, R and the biases
/// and its peephole are unused, so they get exactly zero gradient, and
/// changing them changes nothing.
#[test]
fn input_forget_leaves_the_forget_gate_parameters_unused() {
    let config = lstm(3, 4)
        .peepholes(true)
        .input_forget(true)
        .num_layers(2)
        .build()
        .unwrap();
    let mut model = Model::random(config.clone(), 11);
    let x: Vec<f32> = (0..5 * 2 * 3).map(|k| (k as f32 * 0.37).sin()).collect();
    let input = Input::new(&x, 5, 2);
    let (out, trace) = model.forward_training(&input).unwrap();
    let dy = vec![1.0; out.y.len()];
    let grads = model.backward(&trace, &OutputGrads::new(&dy)).unwrap();
    let hidden = config.hidden_size();
    // Rows of the forget gate (gate 1 of i, f, g, o) inside each tensor.
    let forget_rows = |kind: ParamKind, layer: usize| {
        let range = config.param_range(layer, 0, kind).unwrap();
        let (rows, cols) = config.param_shape(layer, kind).unwrap();
        let per_gate = if kind == ParamKind::Peephole {
            hidden
        } else {
            rows / 4
        };
        let start = range.start + per_gate * cols;
        start..start + per_gate * cols
    };
    let mut unused = Vec::new();
    for layer in 0..2 {
        for kind in [
            ParamKind::W,
            ParamKind::R,
            ParamKind::Wb,
            ParamKind::Rb,
            ParamKind::Peephole,
        ] {
            let rows = forget_rows(kind, layer);
            assert!(
                grads.dparams[rows.clone()].iter().all(|&g| g == 0.0),
                "{kind:?} of layer {layer}: forget-gate gradient is not zero"
            );
            unused.push(rows);
        }
    }
    assert!(
        grads.dparams.iter().any(|&g| g != 0.0),
        "other gradients flow"
    );
    for rows in unused {
        for p in &mut model.params_mut()[rows] {
            *p += 0.5;
        }
    }
    let again = model.forward_inference(&input).unwrap();
    assert_eq!(again.y, out.y, "the forget-gate parameters do not matter");
}

/// Calls reuse the model's scratch buffers (and a dropped trace's): a call
/// after calls with other shapes and with NaN inputs must give exactly what
/// a fresh model gives, with ragged lengths (whose rows past an item's end
/// must read as zeros) and with every item at full length (whose buffers
/// are not cleared first: every element must be written).
#[test]
fn recycled_buffers_do_not_leak_between_calls() {
    for (name, builder) in cell_variants(3, 5) {
        let config = builder
            .num_layers(2)
            .direction(rnn::Direction::BidirectionalConcat)
            .build()
            .unwrap();
        let model = Model::random(config.clone(), 4);
        let mut rng = SplitMix64::new(6);
        let call =
            |model: &Model, rng: &mut SplitMix64, t: usize, n: usize, poison: bool, full: bool| {
                let mut b = random_batch(rng, &config, t, n);
                if poison {
                    b.x.iter_mut().step_by(3).for_each(|v| *v = f32::NAN);
                }
                let mut input = Input::new(&b.x, t, n).with_h0(&b.h0);
                if !full {
                    input = input.with_seq_lens(&b.seq_lens);
                }
                if config.has_cell_state() {
                    input = input.with_c0(&b.c0);
                }
                let inference = model.forward_inference(&input).unwrap();
                let (out, trace) = model.forward_training(&input).unwrap();
                let dy = vec![0.5; out.y.len()];
                let grads = model.backward(&trace, &OutputGrads::new(&dy)).unwrap();
                (inference, out, grads.dx, grads.dparams)
            };
        for full in [false, true] {
            let want = call(&model.clone(), &mut SplitMix64::new(1), 4, 3, false, full);
            call(&model, &mut rng, 7, 5, true, full);
            call(&model, &mut rng, 2, 1, false, !full);
            call(&model, &mut rng, 9, 2, true, full);
            call(&model, &mut rng, 4, 3, true, !full);
            let got = call(&model, &mut SplitMix64::new(1), 4, 3, false, full);
            assert!(
                want == got,
                "{name} (full lengths: {full}): a call after others differs from a fresh model's"
            );
        }
    }
}

/// A NaN input propagates to the outputs it reaches, the same way in the
/// engine (every ISA) and the reference: relu keeps NaN rather than
/// clamping it to 0.
#[test]
fn nan_inputs_propagate_alike_in_engine_and_reference() {
    for (name, builder) in cell_variants(3, 4) {
        let config = builder.build().unwrap();
        let model = Model::random(config.clone(), 8);
        let mut x = vec![0.3f32; 2 * 2 * 3]; // T = 2, N = 2
        x[3] = f32::NAN; // step 0, item 1
        let input = Input::new(&x, 2, 2);
        let want = rnn::reference::forward(
            &config,
            &widen(model.params()),
            &Input::new(&widen(&x)[..], 2, 2),
        )
        .unwrap();
        for isa in rnn::Isa::supported() {
            let out = model
                .clone()
                .with_isa(isa)
                .unwrap()
                .forward_inference(&input)
                .unwrap();
            for (k, (&got, &w)) in out.y.iter().zip(&want.y).enumerate() {
                assert_eq!(
                    got.is_nan(),
                    w.is_nan(),
                    "{name} {isa:?} y[{k}]: {got} vs {w}"
                );
            }
        }
        assert!(
            want.y.iter().any(|v| v.is_nan()),
            "{name}: the NaN reaches y"
        );
    }
}

/// Concurrent training calls leave at most `Model::MAX_IDLE_BYTES` of idle
/// scratch behind (8 of them at this shape need more than that at once:
/// many rows, little arithmetic, so it stays quick under qemu too), and
/// `release_memory` frees it.
#[test]
fn idle_memory_is_capped_and_can_be_released() {
    let (seq_len, batch) = (5000, 100);
    let config = Config::builder(CellKind::Rnn, 1, 1).build().unwrap();
    let model = Model::random(config.clone(), 3);
    let need = model.call_memory(seq_len, batch).unwrap();
    assert!(8 * (need.training_forward + need.trace) > Model::MAX_IDLE_BYTES);
    let x = SplitMix64::new(4).uniform_vec(seq_len * batch, -1.0, 1.0);
    let input = Input::new(&x, seq_len, batch);
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|_| s.spawn(|| model.forward_training(&input).unwrap()))
            .collect();
        let held: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
        // Every trace is alive here; dropping them all returns their buffers.
        drop(held);
    });
    let idle = model.idle_bytes();
    assert!(idle > 0, "some buffers are kept for the next call");
    assert!(idle <= Model::MAX_IDLE_BYTES, "{idle} bytes idle");
    assert_eq!(model.release_memory(), idle);
    assert_eq!(model.idle_bytes(), 0);
    // The model still works, with the same results.
    let again = model.forward_inference(&input).unwrap();
    let fresh = Model::from_params(config, model.params().to_vec()).unwrap();
    assert_eq!(again, fresh.forward_inference(&input).unwrap());
}

/// `backward_into` writes exactly what `backward` returns, bit for bit, into
/// buffers it never reads (filled with NaN), for every cell variant, both
/// layouts and bidirectional layers; a gradient left out (`None`) changes no
/// other; wrong lengths are rejected before any work.
#[test]
fn backward_into_equals_backward_and_overwrites_every_element() {
    let mut rng = SplitMix64::new(41);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (name, builder) in cell_variants(5, 19) {
        for (bidir, batch_first) in [(false, false), (true, true)] {
            let mut builder = builder.clone().num_layers(2);
            if bidir {
                builder = builder.direction(Direction::BidirectionalConcat);
            }
            if batch_first {
                builder = builder.layout(rnn::Layout::BatchFirst);
            }
            let config = builder.build().unwrap();
            let model = Model::random(config.clone(), 3);
            let (t, n) = (6, 3);
            let b = random_batch(&mut rng, &config, t, n);
            let mut input = Input::new(&b.x, t, n)
                .with_seq_lens(&b.seq_lens)
                .with_h0(&b.h0);
            if config.has_cell_state() {
                input = input.with_c0(&b.c0);
            }
            let (out, trace) = model.forward_training(&input).unwrap();
            let dy = rng.uniform_vec(out.y.len(), -1.0, 1.0);
            let og = OutputGrads::new(&dy);
            let want = model.backward(&trace, &og).unwrap();
            let s = *trace.shapes();
            let mut dx = vec![f32::NAN; s.x];
            let mut dh0 = vec![f32::NAN; s.h];
            let mut dc0 = vec![f32::NAN; s.c];
            let mut dp = vec![f32::NAN; config.num_params()];
            let lstm = config.has_cell_state();
            model
                .backward_into(
                    &trace,
                    &og,
                    rnn::GradientBuffers {
                        dx: Some(&mut dx),
                        dh0: Some(&mut dh0),
                        dc0: lstm.then_some(&mut dc0[..]),
                        dparams: Some(&mut dp),
                    },
                )
                .unwrap();
            assert_eq!(bits(&dx), bits(&want.dx), "{name} dx");
            assert_eq!(bits(&dh0), bits(&want.dh0), "{name} dh0");
            assert_eq!(bits(&dp), bits(&want.dparams), "{name} dparams");
            if let Some(want_dc0) = &want.dc0 {
                assert_eq!(bits(&dc0), bits(want_dc0), "{name} dc0");
            }
            // Only dparams: the same bits.
            let mut only = vec![f32::NAN; config.num_params()];
            model
                .backward_into(
                    &trace,
                    &og,
                    rnn::GradientBuffers {
                        dparams: Some(&mut only),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(bits(&only), bits(&want.dparams), "{name} dparams alone");
            let mut short = vec![0.0; s.x - 1];
            let err = model
                .backward_into(
                    &trace,
                    &og,
                    rnn::GradientBuffers {
                        dx: Some(&mut short),
                        ..Default::default()
                    },
                )
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument(_) | Error::ShapeMismatch { .. }),
                "{err:?}"
            );
        }
    }
}
