//! A dense output layer and the losses that train through it.

use crate::error::{check_len, Result};
use crate::gemm::{gemm, Mat};
use crate::rng::SplitMix64;

/// `y = x Wᵀ + b` with `W [outputs, inputs]` and `b [outputs]`, stored as
/// one flat vector (`W` then `b`) so optimisers and clipping treat it like a
/// model's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Features of each input row.
    pub inputs: usize,
    /// Outputs of each row.
    pub outputs: usize,
    /// `W [outputs, inputs]` then `b [outputs]`.
    pub params: Vec<f32>,
}

impl Dense {
    /// Weights uniform in `[-1/sqrt(inputs), 1/sqrt(inputs))`, biases zero.
    pub fn new(inputs: usize, outputs: usize, seed: u64) -> Dense {
        let bound = 1.0 / (inputs.max(1) as f32).sqrt();
        let mut params = SplitMix64::new(seed).uniform_vec(inputs * outputs, -bound, bound);
        params.resize(inputs * outputs + outputs, 0.0);
        Dense {
            inputs,
            outputs,
            params,
        }
    }

    /// Rebuilds a layer from its flat parameters.
    pub fn from_params(inputs: usize, outputs: usize, params: Vec<f32>) -> Result<Dense> {
        check_len("dense params", inputs * outputs + outputs, params.len())?;
        Ok(Dense {
            inputs,
            outputs,
            params,
        })
    }

    fn weights(&self) -> &[f32] {
        &self.params[..self.inputs * self.outputs]
    }

    /// `[rows, outputs]` for `x [rows, inputs]`.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let rows = self.rows(x)?;
        let mut y: Vec<f32> = Vec::with_capacity(rows * self.outputs);
        for _ in 0..rows {
            y.extend_from_slice(&self.params[self.inputs * self.outputs..]);
        }
        gemm(
            Mat::rows(x, rows, self.inputs, self.inputs),
            Mat::transposed(self.weights(), self.inputs, self.outputs, self.inputs),
            1.0,
            &mut y,
            self.outputs,
        );
        Ok(y)
    }

    /// Given the forward input `x` and `dy = dL/dy`, returns `(dL/dx,
    /// dL/dparams)`.
    pub fn backward(&self, x: &[f32], dy: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let rows = self.rows(x)?;
        check_len("dy", rows * self.outputs, dy.len())?;
        let mut dx = vec![0.0; rows * self.inputs];
        gemm(
            Mat::rows(dy, rows, self.outputs, self.outputs),
            Mat::rows(self.weights(), self.outputs, self.inputs, self.inputs),
            0.0,
            &mut dx,
            self.inputs,
        );
        let mut dparams = vec![0.0; self.params.len()];
        let (dw, db) = dparams.split_at_mut(self.inputs * self.outputs);
        gemm(
            Mat::transposed(dy, self.outputs, rows, self.outputs),
            Mat::rows(x, rows, self.inputs, self.inputs),
            0.0,
            dw,
            self.inputs,
        );
        crate::gemm::add_column_sums(dy, rows, self.outputs, db)?;
        Ok((dx, dparams))
    }

    fn rows(&self, x: &[f32]) -> Result<usize> {
        let rows = x.len() / self.inputs.max(1);
        check_len("x", rows * self.inputs, x.len())?;
        Ok(rows)
    }
}

/// Softmax of one row of logits, in place (numerically stable).
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// Row targets that take no part in a loss (padding past a sequence's end).
pub const IGNORE: usize = usize::MAX;

/// Mean softmax cross-entropy of `logits [rows, classes]` against one class
/// per row (`IGNORE` skips a row), and its gradient with respect to the
/// logits.
pub fn softmax_cross_entropy(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
) -> Result<(f32, Vec<f32>)> {
    let rows = targets.len();
    check_len("logits", rows * classes, logits.len())?;
    if let Some(&bad) = targets.iter().find(|&&t| t != IGNORE && t >= classes) {
        return Err(crate::Error::InvalidArgument(format!(
            "target class {bad} >= {classes} classes"
        )));
    }
    let counted = targets.iter().filter(|&&t| t != IGNORE).count().max(1) as f32;
    let mut grad = logits.to_vec();
    let mut loss = 0.0f64;
    for (row, &t) in grad.chunks_exact_mut(classes).zip(targets) {
        if t == IGNORE {
            row.fill(0.0);
            continue;
        }
        softmax_in_place(row);
        // Clamped away from 0 so that a certain miss costs 69 nats, not
        // infinity; a NaN (from NaN logits) stays NaN, and so does the
        // loss (`f32::max` would return the other operand).
        let p = row[t];
        loss -= f64::from(if p.is_nan() { p } else { p.max(1e-30) }).ln();
        row[t] -= 1.0;
        row.iter_mut().for_each(|g| *g /= counted);
    }
    Ok(((loss / f64::from(counted)) as f32, grad))
}

/// Mean squared error and its gradient with respect to `predictions`.
pub fn mse(predictions: &[f32], targets: &[f32]) -> Result<(f32, Vec<f32>)> {
    check_len("targets", predictions.len(), targets.len())?;
    let n = predictions.len().max(1) as f32;
    let loss = predictions
        .iter()
        .zip(targets)
        .map(|(p, t)| f64::from(p - t).powi(2))
        .sum::<f64>() as f32
        / n;
    let grad = predictions
        .iter()
        .zip(targets)
        .map(|(p, t)| 2.0 * (p - t) / n)
        .collect();
    Ok((loss, grad))
}
