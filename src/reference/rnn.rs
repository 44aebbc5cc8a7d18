//! Vanilla RNN step: `h = act(W x + Wb + R h_prev + Rb)`.

use super::block::Block;
use super::math::{add, affine, affine_backward};
use crate::config::Activation;

fn pre_activation(p: &Block<&[f64]>, x: &[f64], h_prev: &[f64]) -> Vec<f64> {
    add(&affine(p.w, x, p.wb), &affine(p.r, h_prev, p.rb))
}

pub(super) fn forward(p: &Block<&[f64]>, act: Activation, x: &[f64], h_prev: &[f64]) -> Vec<f64> {
    let a = pre_activation(p, x, h_prev);
    match act {
        Activation::Tanh => a.iter().map(|v| v.tanh()).collect(),
        Activation::Relu => a.iter().map(|v| v.max(0.0)).collect(),
    }
}

/// Accumulates weight gradients into `g`; returns `(dx, dh_prev)`.
pub(super) fn backward(
    p: &Block<&[f64]>,
    g: &mut Block<&mut [f64]>,
    act: Activation,
    x: &[f64],
    h_prev: &[f64],
    dh: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let a = pre_activation(p, x, h_prev);
    let da: Vec<f64> = a
        .iter()
        .zip(dh)
        .map(|(&a, &d)| match act {
            Activation::Tanh => d * (1.0 - a.tanh().powi(2)),
            // relu'(0) = 0, as in PyTorch.
            Activation::Relu => {
                if a > 0.0 {
                    d
                } else {
                    0.0
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
