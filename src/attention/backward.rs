//! Attention backward: from the gradients of the contexts (and optionally
//! of the weights) to those of the decoder states, the encoder outputs and
//! the parameters, accumulated over any number of decoder-step calls.

use super::forward::{additive_hidden, dot};
use super::{Attended, Attention, AttentionParam, Memory, Score};
use crate::error::{check_len, try_vec, Error, Result};
use crate::gemm::{gemm, Mat};

/// Gradients gathered over the decoder steps of one [`Memory`]: start it
/// with [`Attention::start_backward`], feed it every step's gradients with
/// [`Attention::backward`], end it with [`Attention::finish_backward`].
#[derive(Clone, Debug)]
pub struct Backward {
    /// Gradient of the keys `[T, N, K]`.
    d_keys: Vec<f32>,
    /// Gradient of the encoder outputs through the contexts `[T, N, E]`.
    d_values: Vec<f32>,
    /// Gradient of the parameters so far (the key weights' part is added
    /// when the backward finishes).
    d_params: Vec<f32>,
}

/// The gradients of one memory's encoder outputs and of the parameters,
/// summed over every decoder step given to [`Attention::backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionGradients {
    /// `[T, N, E]`, zero past each item's length.
    pub d_encoder_outputs: Vec<f32>,
    /// Laid out like [`Attention::params`].
    pub d_params: Vec<f32>,
}

impl Attention {
    /// Zero gradients for the decoder steps over `memory`.
    pub fn start_backward(&self, memory: &Memory) -> Result<Backward> {
        let rows = memory.seq_len * memory.batch;
        Ok(Backward {
            d_keys: self.pool.take_zeroed(rows * self.key_size())?,
            d_values: self.pool.take_zeroed(rows * self.encoder_size)?,
            d_params: try_vec(self.params.len(), 0.0, "attention parameter gradients")?,
        })
    }

    /// The backward of [`attend`](Self::attend)`(memory, queries)`, which
    /// gave `attended`: given `d_context [M, N, E]` and, if the weights
    /// feed a loss too, `d_weights [M, N, T]`, returns the gradient of the
    /// queries `[M, N, D]` and adds the encoder outputs' and parameters'
    /// to `grads`.
    pub fn backward(
        &self,
        memory: &Memory,
        queries: &[f32],
        attended: &Attended,
        d_context: &[f32],
        d_weights: Option<&[f32]>,
        grads: &mut Backward,
    ) -> Result<Vec<f32>> {
        let super::Dims { m, t, n, e, d, k } = self.check_queries(memory, queries)?;
        if attended.steps != m || attended.batch != n {
            return Err(Error::InvalidArgument(format!(
                "attention backward: the attended output is of {} steps of {} items, \
                 the decoder states of {m} steps of {n}",
                attended.steps, attended.batch
            )));
        }
        check_len("attention weights", m * n * t, attended.weights.len())?;
        check_len("d_context", m * n * e, d_context.len())?;
        if let Some(dw) = d_weights {
            check_len("d_weights", m * n * t, dw.len())?;
        }
        check_len("attention key gradients", t * n * k, grads.d_keys.len())?;
        check_len("attention value gradients", t * n * e, grads.d_values.len())?;
        check_len(
            "attention parameter gradients",
            self.params.len(),
            grads.d_params.len(),
        )?;

        let weights = &attended.weights;
        // ds: gradient of the scores [M, N, T] (zero past each length);
        // d_q: of the projected queries [M, N, K].
        // Scratch from the layer's pool, given back at the end.
        let mut ds = self.pool.take_zeroed(m * n * t)?;
        let mut d_q = self.pool.take_zeroed(m * n * k)?;
        let projected = self.project_queries(queries, m * n)?;
        let kernels = match self.score {
            Score::Additive => Some(memory.kernels),
            _ => None,
        };
        let mut hidden = self.pool.take(if kernels.is_some() { t * k } else { 0 })?;
        let v_range = match self.score {
            Score::Additive => Some(self.param_range(AttentionParam::V)?),
            _ => None,
        };
        for b in 0..n {
            let len = memory.lens[b];
            if len == 0 {
                continue;
            }
            // da [M, len] = d_context_b × values_bᵀ (+ d_weights), in ds.
            gemm(
                Mat::rows(&d_context[b * e..], m, e, n * e),
                Mat::transposed(&memory.values[b * e..], e, len, n * e),
                0.0,
                &mut ds[b * t..],
                n * t,
            );
            // The contexts' share of the values: weights_bᵀ × d_context_b.
            gemm(
                Mat::transposed(&weights[b * t..], len, m, n * t),
                Mat::rows(&d_context[b * e..], m, e, n * e),
                1.0,
                &mut grads.d_values[b * e..],
                n * e,
            );
            for step in 0..m {
                let row = (step * n + b) * t;
                let (a, da) = (&weights[row..][..len], &mut ds[row..][..len]);
                if let Some(dw) = d_weights {
                    da.iter_mut().zip(&dw[row..]).for_each(|(x, g)| *x += g);
                }
                // Softmax backward: ds = a ⊙ (da − Σ a da).
                let mean = dot(a, da);
                da.iter_mut().zip(a).for_each(|(x, a)| *x = a * (*x - mean));
            }
            match (&kernels, &v_range) {
                (Some(kernels), Some(v_range)) => {
                    let v = &self.params[v_range.clone()];
                    for step in 0..m {
                        let qi = (step * n + b) * k;
                        additive_hidden(
                            kernels,
                            memory,
                            b,
                            len,
                            &projected[qi..qi + k],
                            &mut hidden,
                        );
                        let scores = &ds[(step * n + b) * t..][..len];
                        for (tt, (&g, z)) in scores.iter().zip(hidden.chunks_exact(k)).enumerate() {
                            // d v += g z; dz = g v ⊙ (1 − z²), into the key
                            // and the projected query alike.
                            let dv = &mut grads.d_params[v_range.clone()];
                            dv.iter_mut().zip(z).for_each(|(x, z)| *x += g * z);
                            let d_key = &mut grads.d_keys[(tt * n + b) * k..][..k];
                            let dq = &mut d_q[qi..qi + k];
                            for i in 0..k {
                                let dz = g * v[i] * (1.0 - z[i] * z[i]);
                                d_key[i] += dz;
                                dq[i] += dz;
                            }
                        }
                    }
                }
                _ => {
                    // Scores s · key: d_key += dsᵀ × s, d_s = ds × keys.
                    gemm(
                        Mat::transposed(&ds[b * t..], len, m, n * t),
                        Mat::rows(&queries[b * d..], m, k, n * d),
                        1.0,
                        &mut grads.d_keys[b * k..],
                        n * k,
                    );
                    gemm(
                        Mat::rows(&ds[b * t..], m, len, n * t),
                        Mat::rows(&memory.keys()[b * k..], len, k, n * k),
                        0.0,
                        &mut d_q[b * k..],
                        n * k,
                    );
                }
            }
        }
        self.pool.give_each([ds, hidden, projected]);
        if self.score != Score::Additive {
            return Ok(d_q);
        }
        // Additive: the projected queries' gradient back through W_d.
        let rows = m * n;
        let wd_range = self.param_range(AttentionParam::Wd)?;
        let mut d_queries = try_vec(rows * d, 0.0, "decoder state gradients")?;
        gemm(
            Mat::rows(&d_q, rows, k, k),
            Mat::rows(&self.params[wd_range.clone()], k, d, d),
            0.0,
            &mut d_queries,
            d,
        );
        gemm(
            Mat::transposed(&d_q, k, rows, k),
            Mat::rows(queries, rows, d, d),
            1.0,
            &mut grads.d_params[wd_range],
            d,
        );
        self.pool.give(d_q);
        Ok(d_queries)
    }

    /// Ends a backward: the encoder outputs' gradient (through the contexts
    /// and through the keys) and the parameters', key weights included.
    pub fn finish_backward(&self, memory: &Memory, grads: Backward) -> Result<AttentionGradients> {
        let Backward {
            d_keys,
            mut d_values,
            mut d_params,
        } = grads;
        let (rows, e, k) = (
            memory.seq_len * memory.batch,
            self.encoder_size,
            self.key_size(),
        );
        check_len("attention key gradients", rows * k, d_keys.len())?;
        check_len("attention value gradients", rows * e, d_values.len())?;
        check_len("encoder outputs", rows * e, memory.values.len())?;
        match self.key_weights() {
            None => d_values.iter_mut().zip(&d_keys).for_each(|(x, g)| *x += g),
            Some(w) => {
                gemm(
                    Mat::rows(&d_keys, rows, k, k),
                    Mat::rows(w, k, e, e),
                    1.0,
                    &mut d_values,
                    e,
                );
                gemm(
                    Mat::transposed(&d_keys, k, rows, k),
                    Mat::rows(&memory.values, rows, e, e),
                    1.0,
                    &mut d_params[..k * e],
                    e,
                );
            }
        }
        self.pool.give(d_keys);
        Ok(AttentionGradients {
            d_encoder_outputs: d_values,
            d_params,
        })
    }
}
