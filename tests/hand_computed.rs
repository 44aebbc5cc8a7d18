//! One step of each cell on 1×1 shapes, against values worked out by hand.
//! The gate values differ per gate, so a wrong gate order changes the result.

mod common;

use common::widen;
use rnn::{Activation, CellKind, Config, GruVariant, Input, Model, ParamKind};

/// Runs one step with the given tensors through the API (f32) and the
/// reference (f64) and checks `h` and `c` against the expected values.
fn check_one_step(
    config: Config,
    tensors: &[(ParamKind, &[f32])],
    x: f32,
    h0: f32,
    c0: Option<f32>,
    want_h: f64,
    want_c: Option<f64>,
) {
    let mut model = Model::zeros(config.clone());
    for &(kind, values) in tensors {
        model.param_mut(0, 0, kind).unwrap().copy_from_slice(values);
    }
    let (xs, h0s, c0s) = ([x], [h0], [c0.unwrap_or(0.0)]);
    let mut input = Input::new(&xs, 1, 1).with_h0(&h0s);
    if c0.is_some() {
        input = input.with_c0(&c0s);
    }

    let out = model.forward_inference(&input).unwrap();
    assert!(
        (f64::from(out.h_n[0]) - want_h).abs() < 1e-6,
        "h: {} vs {want_h}",
        out.h_n[0]
    );
    assert_eq!(out.y, out.h_n, "with T = 1, y is the final state");
    if let Some(want_c) = want_c {
        let c = out.c_n.unwrap()[0];
        assert!((f64::from(c) - want_c).abs() < 1e-6, "c: {c} vs {want_c}");
    }

    let (xw, h0w, c0w) = (widen(&xs), widen(&h0s), widen(&c0s));
    let mut winput = Input::new(&xw[..], 1, 1).with_h0(&h0w);
    if c0.is_some() {
        winput = winput.with_c0(&c0w);
    }
    let out = rnn::reference::forward(&config, &widen(model.params()), &winput).unwrap();
    // The inputs were rounded to f32, so the reference matches to f32 rounding
    // of the literals, far tighter than the API tolerance.
    assert!(
        (out.h_n[0] - want_h).abs() < 1e-7,
        "reference h: {} vs {want_h}",
        out.h_n[0]
    );
    if let Some(want_c) = want_c {
        assert!((out.c_n.unwrap()[0] - want_c).abs() < 1e-7);
    }
}

#[test]
fn rnn_tanh_one_step() {
    // a = 0.5·2 + 0.1 + (−0.3)·0.5 + 0.2 = 1.15; h = tanh(1.15)
    let config = Config::builder(CellKind::Rnn, 1, 1).build().unwrap();
    use ParamKind::*;
    check_one_step(
        config,
        &[(W, &[0.5]), (R, &[-0.3]), (Wb, &[0.1]), (Rb, &[0.2])],
        2.0,
        0.5,
        None,
        0.8177540779702878,
        None,
    );
}

#[test]
fn rnn_relu_one_step() {
    use ParamKind::*;
    let config = || {
        Config::builder(CellKind::Rnn, 1, 1)
            .activation(Activation::Relu)
            .build()
            .unwrap()
    };
    // a = −0.5·2 + 0.1 − 0.15 + 0.2 = −0.85 → 0
    check_one_step(
        config(),
        &[(W, &[-0.5]), (R, &[-0.3]), (Wb, &[0.1]), (Rb, &[0.2])],
        2.0,
        0.5,
        None,
        0.0,
        None,
    );
    // a = 0.8·2 + 0.1 − 0.15 + 0.2 = 1.75 → 1.75
    check_one_step(
        config(),
        &[(W, &[0.8]), (R, &[-0.3]), (Wb, &[0.1]), (Rb, &[0.2])],
        2.0,
        0.5,
        None,
        1.75,
        None,
    );
}

const LSTM_W: [f32; 4] = [0.1, 0.2, 0.3, 0.4]; // i, f, g, o
const LSTM_R: [f32; 4] = [-0.1, -0.2, 0.5, 0.6];
const LSTM_WB: [f32; 4] = [0.01, 0.02, 0.03, 0.04];
const LSTM_RB: [f32; 4] = [0.05, 0.06, 0.07, 0.08];

#[test]
fn lstm_one_step() {
    // x = 1.5, h0 = 0.2, c0 = −0.3; pre_k = W_k·x + Wb_k + R_k·h0 + Rb_k:
    // i = σ(0.19), f = σ(0.34), g = tanh(0.65), o = σ(0.84)
    // c = f·c0 + i·g = 0.13765075..., h = o·tanh(c) = 0.09554159...
    use ParamKind::*;
    let config = Config::builder(CellKind::Lstm, 1, 1).build().unwrap();
    check_one_step(
        config,
        &[(W, &LSTM_W), (R, &LSTM_R), (Wb, &LSTM_WB), (Rb, &LSTM_RB)],
        1.5,
        0.2,
        Some(-0.3),
        0.09554159247793607,
        Some(0.1376507541196682),
    );
}

#[test]
fn lstm_peephole_clip_projection_one_step() {
    // As above plus p = (p_i, p_f, p_o) = (0.3, −0.4, 0.5), clip 0.1, P_r = 2:
    // i = σ(0.19 + 0.3·(−0.3)), f = σ(0.34 − 0.4·(−0.3)), g = tanh(0.65)
    // c_raw = f·c0 + i·g = 0.1162 → clipped to 0.1; o = σ(0.84 + 0.5·0.1)
    // h = 2·o·tanh(0.1) = 0.14130732...
    use ParamKind::*;
    let config = Config::builder(CellKind::Lstm, 1, 1)
        .peepholes(true)
        .cell_clip(Some(0.1))
        .proj_size(1)
        .build()
        .unwrap();
    check_one_step(
        config,
        &[
            (W, &LSTM_W),
            (R, &LSTM_R),
            (Wb, &LSTM_WB),
            (Rb, &LSTM_RB),
            (Peephole, &[0.3, -0.4, 0.5]),
            (Projection, &[2.0]),
        ],
        1.5,
        0.2,
        Some(-0.3),
        0.14130732381800806,
        Some(0.1),
    );
}

const GRU_W: [f32; 3] = [0.3, -0.2, 0.4]; // r, z, n
const GRU_R: [f32; 3] = [0.2, 0.5, -0.6];
const GRU_WB: [f32; 3] = [0.1, 0.2, 0.3];
const GRU_RB: [f32; 3] = [-0.1, 0.05, 0.2];

#[test]
fn gru_reset_before_matmul_one_step() {
    // x = 1, h0 = 0.4: r = σ(0.3 + 0.1 + 0.08 − 0.1), z = σ(−0.2 + 0.2 + 0.2 + 0.05)
    // n = tanh(0.4 + 0.3 − 0.6·(r·0.4) + 0.2); h = (1 − z)·n + z·0.4
    use ParamKind::*;
    let config = Config::builder(CellKind::Gru, 1, 1).build().unwrap();
    check_one_step(
        config,
        &[(W, &GRU_W), (R, &GRU_R), (Wb, &GRU_WB), (Rb, &GRU_RB)],
        1.0,
        0.4,
        None,
        0.5048957639811981,
        None,
    );
}

#[test]
fn gru_linear_before_reset_one_step() {
    // As above but n = tanh(0.4 + 0.3 + r·(−0.6·0.4 + 0.2)).
    use ParamKind::*;
    let config = Config::builder(CellKind::Gru, 1, 1)
        .gru_variant(GruVariant::LinearBeforeReset)
        .build()
        .unwrap();
    check_one_step(
        config,
        &[(W, &GRU_W), (R, &GRU_R), (Wb, &GRU_WB), (Rb, &GRU_RB)],
        1.0,
        0.4,
        None,
        0.4827805493556775,
        None,
    );
}

#[test]
fn rnn_gate_clip_one_step() {
    use ParamKind::*;
    let tensors: [(ParamKind, &[f32]); 4] = [(W, &[0.5]), (R, &[-0.3]), (Wb, &[0.1]), (Rb, &[0.2])];
    // a = 1.15 as in rnn_tanh_one_step, clamped to 0.5: h = tanh(0.5).
    let tanh = Config::builder(CellKind::Rnn, 1, 1).gate_clip(Some(0.5));
    check_one_step(
        tanh.build().unwrap(),
        &tensors,
        2.0,
        0.5,
        None,
        0.46211715726000974,
        None,
    );
    // relu(clamp(1.15, ±1)) = 1.
    let relu = Config::builder(CellKind::Rnn, 1, 1)
        .activation(Activation::Relu)
        .gate_clip(Some(1.0));
    check_one_step(relu.build().unwrap(), &tensors, 2.0, 0.5, None, 1.0, None);
}

#[test]
fn lstm_gate_clip_and_input_forget_one_step() {
    // Pre-activations as in lstm_one_step (0.19, 0.34, 0.65, 0.84), gate clip 0.3:
    // i = σ(0.19), f = 1 − i (input_forget: the f row is unused),
    // g = tanh(0.3), o = σ(0.3); c = f·c0 + i·g = 0.02365946..., h = o·tanh(c).
    use ParamKind::*;
    let config = Config::builder(CellKind::Lstm, 1, 1)
        .gate_clip(Some(0.3))
        .input_forget(true)
        .build()
        .unwrap();
    check_one_step(
        config,
        &[(W, &LSTM_W), (R, &LSTM_R), (Wb, &LSTM_WB), (Rb, &LSTM_RB)],
        1.5,
        0.2,
        Some(-0.3),
        0.01358846616833125,
        Some(0.02365946312947051),
    );
}

#[test]
fn gru_gate_clip_one_step() {
    // Gate clip 0.3 on the GRU steps above: r = σ(0.3) (0.38 clamped),
    // z = σ(0.25) (passes), and the n pre-activation (0.762 before reset,
    // 0.677 linear before reset) clamped to 0.3: h = (1 − z)·tanh(0.3) + z·0.4.
    use ParamKind::*;
    for variant in [GruVariant::ResetBeforeMatmul, GruVariant::LinearBeforeReset] {
        let config = Config::builder(CellKind::Gru, 1, 1)
            .gru_variant(variant)
            .gate_clip(Some(0.3))
            .build()
            .unwrap();
        check_one_step(
            config,
            &[(W, &GRU_W), (R, &GRU_R), (Wb, &GRU_WB), (Rb, &GRU_RB)],
            1.0,
            0.4,
            None,
            0.3524141076739742,
            None,
        );
    }
}
