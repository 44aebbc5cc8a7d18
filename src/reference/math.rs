//! The few dense operations the reference needs, as plain loops in f64.

use crate::config::{ActivationFunction, ActivationKind};

pub(super) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `m v + bias` for a row-major matrix `m` of `bias.len()` rows and `v.len()`
/// columns.
pub(super) fn affine(m: &[f64], v: &[f64], bias: &[f64]) -> Vec<f64> {
    let cols = v.len();
    debug_assert_eq!(m.len(), bias.len() * cols);
    bias.iter()
        .enumerate()
        .map(|(row, b)| {
            let dot: f64 = m[row * cols..(row + 1) * cols]
                .iter()
                .zip(v)
                .map(|(a, x)| a * x)
                .sum();
            dot + b
        })
        .collect()
}

/// Backward of `out = m v + bias` given `d_out`: accumulates `d_out vᵀ` into
/// `grad_m`, `d_out` into `grad_bias` and `mᵀ d_out` into `d_v`.
pub(super) fn affine_backward(
    m: &[f64],
    v: &[f64],
    d_out: &[f64],
    grad_m: &mut [f64],
    grad_bias: &mut [f64],
    d_v: &mut [f64],
) {
    let cols = v.len();
    for (row, &d) in d_out.iter().enumerate() {
        grad_bias[row] += d;
        let m_row = &m[row * cols..(row + 1) * cols];
        let g_row = &mut grad_m[row * cols..(row + 1) * cols];
        for k in 0..cols {
            g_row[k] += d * v[k];
            d_v[k] += m_row[k] * d;
        }
    }
}

/// Element-wise `a + b`.
pub(super) fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// The gate clip (ONNX `clip`) of one pre-activation: the value clamped to
/// `[-clip, clip]` and its derivative, 1 where it passes and 0 where it was
/// clamped (a value exactly at the bound passes).
pub(super) fn gate_clip(clip: Option<f64>, a: f64) -> (f64, f64) {
    match clip {
        Some(clip) if a.abs() > clip => (a.clamp(-clip, clip), 0.0),
        _ => (a, 1.0),
    }
}

/// `f(x)` in f64 (ONNX's formulas; see [`ActivationKind`]). NaN stays NaN.
pub(super) fn activation(f: &ActivationFunction, x: f64) -> f64 {
    let (a, b) = (f64::from(f.alpha), f64::from(f.beta));
    if x.is_nan() {
        return x;
    }
    match f.kind {
        ActivationKind::Sigmoid => sigmoid(x),
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

/// `f'(x)` in f64; at a kink, the derivative of the branch below it
/// (`relu'(0) = 0`, as in PyTorch).
pub(super) fn activation_derivative(f: &ActivationFunction, x: f64) -> f64 {
    let (a, b) = (f64::from(f.alpha), f64::from(f.beta));
    match f.kind {
        ActivationKind::Sigmoid => sigmoid(x) * (1.0 - sigmoid(x)),
        ActivationKind::Tanh => 1.0 - x.tanh().powi(2),
        ActivationKind::Relu => f64::from(u8::from(x > 0.0)),
        ActivationKind::Affine => a,
        ActivationKind::LeakyRelu => {
            if x > 0.0 {
                1.0
            } else {
                a
            }
        }
        ActivationKind::ThresholdedRelu => f64::from(u8::from(x > a)),
        ActivationKind::ScaledTanh => a * b * (1.0 - (b * x).tanh().powi(2)),
        ActivationKind::HardSigmoid => {
            let v = a * x + b;
            if v > 0.0 && v < 1.0 {
                a
            } else {
                0.0
            }
        }
        ActivationKind::Elu => {
            if x > 0.0 {
                1.0
            } else {
                a * x.exp()
            }
        }
        ActivationKind::Softsign => 1.0 / (1.0 + x.abs()).powi(2),
        ActivationKind::Softplus => sigmoid(x),
    }
}

/// A direction's gate functions (per role, see
/// [`CellKind::default_activations`](crate::CellKind::default_activations))
/// and the gate clip.
#[derive(Clone, Copy, Debug)]
pub(super) struct Gates {
    pub clip: Option<f64>,
    pub fns: [ActivationFunction; 3],
}

impl Gates {
    /// Role `role`'s function of the pre-activation `a` (gate clip first):
    /// its value and its derivative with respect to `a`.
    pub fn apply(&self, role: usize, a: f64) -> (f64, f64) {
        let (a, pass) = gate_clip(self.clip, a);
        let f = &self.fns[role];
        (activation(f, a), pass * activation_derivative(f, a))
    }
}
