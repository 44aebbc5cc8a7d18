//! Vanilla RNN step: `h = act(gate_clip(W x + Wb + R h_prev + Rb))`.

use super::block::Block;
use super::math::{add, affine, affine_backward, gate_clip};
use crate::config::Activation;

/// The clipped pre-activation and its clip derivative (0 or 1), per unit.
fn pre_activation(
    p: &Block<&[f64]>,
    clip: Option<f64>,
    x: &[f64],
    h_prev: &[f64],
) -> Vec<(f64, f64)> {
    add(&affine(p.w, x, p.wb), &affine(p.r, h_prev, p.rb))
        .into_iter()
        .map(|a| gate_clip(clip, a))
        .collect()
}

pub(super) fn forward(
    p: &Block<&[f64]>,
    act: Activation,
    clip: Option<f64>,
    x: &[f64],
    h_prev: &[f64],
) -> Vec<f64> {
    let a = pre_activation(p, clip, x, h_prev);
    match act {
        Activation::Tanh => a.iter().map(|(v, _)| v.tanh()).collect(),
        // `max` would turn NaN into 0; relu keeps NaN, as the kernels and
        // PyTorch do.
        Activation::Relu => a
            .iter()
            .map(|&(v, _)| if v.is_nan() { v } else { v.max(0.0) })
            .collect(),
    }
}

/// Accumulates weight gradients into `g`; returns `(dx, dh_prev)`.
pub(super) fn backward(
    p: &Block<&[f64]>,
    g: &mut Block<&mut [f64]>,
    act: Activation,
    clip: Option<f64>,
    x: &[f64],
    h_prev: &[f64],
    dh: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let a = pre_activation(p, clip, x, h_prev);
    let da: Vec<f64> = a
        .iter()
        .zip(dh)
        .map(|(&(a, passes), &d)| {
            passes
                * match act {
                    Activation::Tanh => d * (1.0 - a.tanh().powi(2)),
                    // relu'(0) = 0, as in PyTorch.
                    Activation::Relu => {
                        if a > 0.0 {
                            d
                        } else {
                            0.0
                        }
                    }
                }
        })
        .collect();
    let mut dx = vec![0.0; x.len()];
    let mut dh_prev = vec![0.0; h_prev.len()];
    affine_backward(p.w, x, &da, g.w, g.wb, &mut dx);
    affine_backward(p.r, h_prev, &da, g.r, g.rb, &mut dh_prev);
    (dx, dh_prev)
}
