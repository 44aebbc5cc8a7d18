//! Vanilla RNN step: `h = f(gate_clip(W x + Wb + R h_prev + Rb))`, `f`
//! tanh by default (or relu, or any ONNX function).

use super::block::Block;
use super::math::{add, affine, affine_backward, Gates};

/// Per unit: `h` and its derivative with respect to the pre-activation.
fn step(p: &Block<&[f64]>, gates: &Gates, x: &[f64], h_prev: &[f64]) -> Vec<(f64, f64)> {
    add(&affine(p.w, x, p.wb), &affine(p.r, h_prev, p.rb))
        .into_iter()
        .map(|a| gates.apply(0, a))
        .collect()
}

pub(super) fn forward(p: &Block<&[f64]>, gates: &Gates, x: &[f64], h_prev: &[f64]) -> Vec<f64> {
    step(p, gates, x, h_prev)
        .into_iter()
        .map(|(h, _)| h)
        .collect()
}

/// Accumulates weight gradients into `g`; returns `(dx, dh_prev)`.
pub(super) fn backward(
    p: &Block<&[f64]>,
    g: &mut Block<&mut [f64]>,
    gates: &Gates,
    x: &[f64],
    h_prev: &[f64],
    dh: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let da: Vec<f64> = step(p, gates, x, h_prev)
        .iter()
        .zip(dh)
        .map(|(&(_, d), &dh)| dh * d)
        .collect();
    let mut dx = vec![0.0; x.len()];
    let mut dh_prev = vec![0.0; h_prev.len()];
    affine_backward(p.w, x, &da, g.w, g.wb, &mut dx);
    affine_backward(p.r, h_prev, &da, g.r, g.rb, &mut dh_prev);
    (dx, dh_prev)
}
