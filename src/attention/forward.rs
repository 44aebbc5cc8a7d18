//! Attention forward: scores, masked softmax and contexts for any number of
//! decoder steps over one [`Memory`].

use super::{Attention, Memory, Score};
use crate::engine::pack::round_up;
use crate::error::{check_len, try_vec, Result};
use crate::gemm::{gemm, Mat};
use crate::kernels::fused::MatRow;
use crate::kernels::Kernels;
use crate::precision::Precision;

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
        let key = &memory.keys()[(tt * n + b) * a..][..a];
        row.iter_mut()
            .zip(key.iter().zip(q))
            .for_each(|(z, (k, q))| *z = k + q);
    }
    kernels.tanh_in_place(&mut out[..len * a]);
}

impl Attention {
    /// Attends `queries [M, N, D]` (decoder states of `M` steps, e.g. one)
    /// over `memory`: the contexts and weights of every step.
    pub fn attend(&self, memory: &Memory, queries: &[f32]) -> Result<Attended> {
        let super::Dims { m, t, n, e, d, k } = self.check_queries(memory, queries)?;
        let mut weights = try_vec(m * n * t, 0.0, "attention weights")?;
        let mut context = try_vec(m * n * e, 0.0, "attention contexts")?;
        let projected = self.project_queries(queries, m * n)?;
        let kernels = memory.kernels;
        let unit = kernels.unit();
        let (tp, ep) = (round_up(t, unit), round_up(e, unit));
        let product = kernels.steps(Precision::F32).panel_matmul;
        // The products write whole panels: rows of `tp` scores or `ep`
        // context values, copied out.
        // Scratch from the layer's pool, given back at the end.
        let mut out = self.pool.take(m * tp.max(ep))?;
        let additive = self.score == Score::Additive;
        let mut hidden = self.pool.take(if additive { t * k } else { 0 })?;
        let mut rows = Vec::with_capacity(m);
        let v = match additive {
            true => &self.params[self.param_range(super::AttentionParam::V)?],
            false => &[][..],
        };
        for b in 0..n {
            let len = memory.lens[b];
            if len == 0 {
                continue;
            }
            // Scores of every step of item b, [M, len], into its weight rows.
            if additive {
                for step in 0..m {
                    let q = &projected[(step * n + b) * k..][..k];
                    additive_hidden(&kernels, memory, b, len, q, &mut hidden);
                    let row = &mut weights[(step * n + b) * t..][..len];
                    for (score, z) in row.iter_mut().zip(hidden.chunks_exact(k)) {
                        *score = dot(z, v);
                    }
                }
            } else {
                let base = out.as_mut_ptr();
                rows.clear();
                rows.extend((0..m).map(|step| MatRow {
                    a: queries[(step * n + b) * d..][..k].as_ptr(),
                    // In bounds: `out` holds m rows of tp.
                    out: base.wrapping_add(step * tp),
                }));
                let keys = &memory.packed_keys[b * k * tp..][..k * tp];
                // SAFETY: the ISA is the CPU's (Kernels); each row reads k
                // floats of a query and writes tp floats of `out`; `keys`
                // holds tp/unit panels of k rows.
                unsafe { product(k, tp, keys, None, &rows) };
                for step in 0..m {
                    weights[(step * n + b) * t..][..len].copy_from_slice(&out[step * tp..][..len]);
                }
            }
            for step in 0..m {
                kernels.softmax_in_place(&mut weights[(step * n + b) * t..][..len]);
            }
            let base = out.as_mut_ptr();
            rows.clear();
            rows.extend((0..m).map(|step| MatRow {
                a: weights[(step * n + b) * t..][..t].as_ptr(),
                // In bounds: `out` holds m rows of ep.
                out: base.wrapping_add(step * ep),
            }));
            let values = &memory.packed_values[b * t * ep..][..t * ep];
            // SAFETY: as above: each row reads the t weights of its step
            // (zero past the length) and writes ep floats of `out`.
            unsafe { product(t, ep, values, None, &rows) };
            for step in 0..m {
                context[(step * n + b) * e..][..e].copy_from_slice(&out[step * ep..][..e]);
            }
        }
        self.pool.give_each([out, hidden, projected]);
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
        let mut out = self.pool.take_zeroed(rows * a)?;
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
