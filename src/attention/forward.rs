//! Attention forward: scores, masked softmax and contexts for any number of
//! decoder steps over one [`Memory`].

use super::{Attention, Memory, Score};
use crate::error::{check_len, try_vec, Result};
use crate::gemm::{gemm, Mat};
use crate::kernels::{Isa, Kernels};

/// What attention gives for `M` decoder steps of `N` items.
#[derive(Clone, Debug, PartialEq)]
pub struct Attended {
    /// Decoder steps `M`.
    pub steps: usize,
    /// Items `N`.
    pub batch: usize,
    /// Contexts `[M, N, E]`.
    pub context: Vec<f32>,
    /// Attention weights `[M, N, T]`: each row sums to 1 over the item's
    /// encoder length and is exactly 0 past it (all 0 for length 0).
    pub weights: Vec<f32>,
}

/// The additive score's `tanh(W_e h_t + q)` for positions `0..len` of item
/// `b`: `out [len, A]`, with `q = W_d s` (`A` floats).
pub(super) fn additive_hidden(
    kernels: &Kernels,
    memory: &Memory,
    b: usize,
    len: usize,
    q: &[f32],
    out: &mut [f32],
) {
    let (n, a) = (memory.batch, q.len());
    for (tt, row) in out[..len * a].chunks_exact_mut(a).enumerate() {
        let key = &memory.keys[(tt * n + b) * a..][..a];
        row.iter_mut()
            .zip(key.iter().zip(q))
            .for_each(|(z, (k, q))| *z = k + q);
    }
    kernels.tanh_in_place(&mut out[..len * a]);
}

/// Softmax in place over `scores`, with the largest taken away first so
/// that no exponential overflows.
fn softmax(scores: &mut [f32]) {
    let max =
        scores.iter().copied().fold(
            f32::NEG_INFINITY,
            |m, s| {
                if s > m || s.is_nan() {
                    s
                } else {
                    m
                }
            },
        );
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    scores.iter_mut().for_each(|s| *s *= inv);
}

impl Attention {
    /// Attends `queries [M, N, D]` (decoder states of `M` steps, e.g. one)
    /// over `memory`: the contexts and weights of every step.
    pub fn attend(&self, memory: &Memory, queries: &[f32]) -> Result<Attended> {
        let m = self.check_queries(memory, queries)?;
        let (t, n, e, d, k) = (
            memory.seq_len,
            memory.batch,
            self.encoder_size,
            self.decoder_size,
            self.key_size(),
        );
        let mut weights = try_vec(m * n * t, 0.0, "attention weights")?;
        let mut context = try_vec(m * n * e, 0.0, "attention contexts")?;
        let projected = self.project_queries(queries, m * n)?;
        let kernels = match self.score {
            Score::Additive => Some(Kernels::for_isa(Isa::selected()?)?),
            _ => None,
        };
        let mut hidden = try_vec(
            if kernels.is_some() { t * k } else { 0 },
            0.0,
            "attention scratch",
        )?;
        for b in 0..n {
            let len = memory.lens[b];
            if len == 0 {
                continue;
            }
            // Scores of every step of item b, [M, len], into its weight rows.
            match &kernels {
                None => gemm(
                    Mat::rows(&queries[b * d..], m, k, n * d),
                    Mat::transposed(&memory.keys[b * k..], k, len, n * k),
                    0.0,
                    &mut weights[b * t..],
                    n * t,
                ),
                Some(kernels) => {
                    let v = &self.params[self.param_range(super::AttentionParam::V)?];
                    for step in 0..m {
                        let q = &projected[(step * n + b) * k..][..k];
                        additive_hidden(kernels, memory, b, len, q, &mut hidden);
                        let row = &mut weights[(step * n + b) * t..][..len];
                        for (score, z) in row.iter_mut().zip(hidden.chunks_exact(k)) {
                            *score = dot(z, v);
                        }
                    }
                }
            }
            for step in 0..m {
                softmax(&mut weights[(step * n + b) * t..][..len]);
            }
            gemm(
                Mat::rows(&weights[b * t..], m, len, n * t),
                Mat::rows(&memory.values[b * e..], len, e, n * e),
                0.0,
                &mut context[b * e..],
                n * e,
            );
        }
        Ok(Attended {
            steps: m,
            batch: n,
            context,
            weights,
        })
    }

    /// Additive: `queries [rows, D] × W_dᵀ` (`[rows, A]`); otherwise empty
    /// (the queries are their own projections).
    pub(super) fn project_queries(&self, queries: &[f32], rows: usize) -> Result<Vec<f32>> {
        if self.score != Score::Additive {
            return Ok(Vec::new());
        }
        let (d, a) = (self.decoder_size, self.attention_size);
        check_len("decoder states", rows * d, queries.len())?;
        let w_d = &self.params[self.param_range(super::AttentionParam::Wd)?];
        let mut out = try_vec(rows * a, 0.0, "projected decoder states")?;
        gemm(
            Mat::rows(queries, rows, d, d),
            Mat::transposed(w_d, d, a, d),
            0.0,
            &mut out,
            a,
        );
        Ok(out)
    }
}

/// `Σ a_i b_i` in eight lanes (so that it vectorises), then the lanes.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
