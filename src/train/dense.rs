//! A dense output layer and the losses that train through it.

use crate::engine::pack::{fill_panels, round_up, Aligned};
use crate::engine::products::{rows_times_panels, transpose_gate_columns, transposed_stride};
use crate::engine::BufferPool;
use crate::error::{check_len, try_vec, try_zeros_untouched, Result};
use crate::kernels::{Isa, Kernels};
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
        let (inputs, outputs, w) = (self.inputs, self.outputs, self.weights());
        let mut y = try_vec(rows * outputs, 0.0, "the dense layer's output")?;
        for row in y.chunks_exact_mut(outputs.max(1)) {
            row.copy_from_slice(&self.params[inputs * outputs..]);
        }
        // y += x Wᵀ: B = Wᵀ [inputs, outputs], read down W's columns.
        product(
            (rows, inputs, outputs),
            (x, inputs),
            &mut y,
            true,
            |kk, q0, dst| {
                for (c, v) in dst.iter_mut().enumerate() {
                    *v = w[(q0 + c) * inputs + kk];
                }
            },
        )?;
        Ok(y)
    }

    /// Given the forward input `x` and `dy = dL/dy`, returns `(dL/dx,
    /// dL/dparams)`.
    pub fn backward(&self, x: &[f32], dy: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let rows = self.rows(x)?;
        check_len("dy", rows * self.outputs, dy.len())?;
        let (inputs, outputs, w) = (self.inputs, self.outputs, self.weights());
        // dx = dy W: B = W [outputs, inputs], row by row.
        let mut dx = try_zeros_untouched(rows * inputs, "dx")?;
        product(
            (rows, outputs, inputs),
            (dy, outputs),
            &mut dx,
            false,
            |kk, q0, dst| {
                dst.copy_from_slice(&w[kk * inputs + q0..][..dst.len()]);
            },
        )?;
        // dW = dyᵀ x over the rows, with db = dy's column sums (in f64, in
        // row order) taken as dy is transposed.
        let mut dparams = try_zeros_untouched(self.params.len(), "dparams")?;
        let (dw, db) = dparams.split_at_mut(inputs * outputs);
        let stride = transposed_stride(rows);
        let mut dy_t = SCRATCH.take(outputs * stride)?; // written but for the padding
        let mut sums = try_vec(outputs, 0f64, "the bias gradient")?;
        let kernels = Kernels::for_isa(Isa::selected()?)?;
        let shape = (1, outputs, outputs);
        transpose_gate_columns(
            kernels, dy, rows, outputs, shape, &mut dy_t, stride, &mut sums,
        );
        for (d, s) in db.iter_mut().zip(sums) {
            *d = s as f32;
        }
        let done = product(
            (outputs, rows, inputs),
            (&dy_t, stride),
            dw,
            false,
            |kk, q0, dst| {
                dst.copy_from_slice(&x[kk * inputs + q0..][..dst.len()]);
            },
        );
        SCRATCH.give(dy_t);
        done?;
        Ok((dx, dparams))
    }

    fn rows(&self, x: &[f32]) -> Result<usize> {
        let rows = x.len() / self.inputs.max(1);
        check_len("x", rows * self.inputs, x.len())?;
        Ok(rows)
    }
}

/// The dense layers' scratch (packed operands, a transposed gradient),
/// kept for the next call: fresh pages for megabytes of it cost a third of
/// a backward at char_rnn's size. Shared by the process's dense layers,
/// capped like a model's pool.
static SCRATCH: BufferPool = BufferPool::new();

/// `out [m, n] = a [m, k] × B` (`accumulate`: `+=`), `B [k, n]` given by
/// `fill` as `fill_panels` takes it, on librnn's register-tiled products
/// and its thread pool, with the ISA models use by default
/// ([`Isa::selected`]). Each output is one sum over k in order, so the bits
/// do not depend on the threads.
fn product(
    (m, k, n): (usize, usize, usize),
    (a, a_stride): (&[f32], usize),
    out: &mut [f32],
    accumulate: bool,
    fill: impl Fn(usize, usize, &mut [f32]) + Sync + Send,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return Ok(());
    }
    let kernels = Kernels::for_isa(Isa::selected()?)?;
    let len = k * round_up(n, kernels.unit());
    // Every element is written by `fill_panels`. Both fork onto librnn's
    // pool where large enough, and run on the caller's thread otherwise.
    let mut packed = Aligned::within(SCRATCH.take(len + Aligned::SLACK)?, len);
    fill_panels((k, n, kernels.unit()), &mut packed, fill);
    let done = rows_times_panels(kernels, (m, k, n), a, a_stride, &packed, out, n, accumulate);
    SCRATCH.give(packed.into_buffer());
    done
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Forward and backward against plain f64 loops, on sizes that do not
    /// fill a panel, with more rows than one product task, and empty ones.
    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri (products over hundreds of rows)")]
    fn dense_layer_matches_plain_loops() {
        let mut rng = SplitMix64::new(5);
        for (inputs, outputs, rows) in [(37, 19, 150), (1, 1, 1), (256, 65, 70), (5, 3, 0)] {
            let mut dense = Dense::new(inputs, outputs, 3);
            let bias = rng.uniform_vec(outputs, -1.0, 1.0);
            dense.params[inputs * outputs..].copy_from_slice(&bias);
            let w = dense.params[..inputs * outputs].to_vec();
            let x = rng.uniform_vec(rows * inputs, -1.0, 1.0);
            let dy = rng.uniform_vec(rows * outputs, -1.0, 1.0);
            let dot = |f: &dyn Fn(usize) -> f64, n: usize| (0..n).map(f).sum::<f64>();
            let close = |what: &str, got: f32, want: f64| {
                assert!(
                    (f64::from(got) - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{inputs}x{outputs}x{rows} {what}: {got} vs {want}"
                );
            };
            let y = dense.forward(&x).unwrap();
            let (dx, dparams) = dense.backward(&x, &dy).unwrap();
            assert_eq!((y.len(), dx.len()), (rows * outputs, rows * inputs));
            for r in 0..rows {
                for o in 0..outputs {
                    let want = f64::from(bias[o])
                        + dot(
                            &|i| f64::from(x[r * inputs + i]) * f64::from(w[o * inputs + i]),
                            inputs,
                        );
                    close("y", y[r * outputs + o], want);
                }
                for i in 0..inputs {
                    let want = dot(
                        &|o| f64::from(dy[r * outputs + o]) * f64::from(w[o * inputs + i]),
                        outputs,
                    );
                    close("dx", dx[r * inputs + i], want);
                }
            }
            for o in 0..outputs {
                for i in 0..inputs {
                    let want = dot(
                        &|r| f64::from(dy[r * outputs + o]) * f64::from(x[r * inputs + i]),
                        rows,
                    );
                    close("dW", dparams[o * inputs + i], want);
                }
                close(
                    "db",
                    dparams[inputs * outputs + o],
                    dot(&|r| f64::from(dy[r * outputs + o]), rows),
                );
            }
        }
    }
}
