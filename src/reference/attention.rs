//! The attention oracle: [`crate::attention`]'s forward and backward as
//! plain loops in f64, every score computed from the parameters directly
//! (no keys kept between steps), one decoder step, item and encoder
//! position at a time.

// Index loops over tensor dimensions are how the formulas read.
#![allow(clippy::needless_range_loop)]

use crate::attention::{Attention, AttentionParam, Score};
use crate::error::{check_len, Error, Result};

/// Contexts `[M, N, E]` and weights `[M, N, T]`, in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOutput {
    /// `[M, N, E]`.
    pub context: Vec<f64>,
    /// `[M, N, T]`.
    pub weights: Vec<f64>,
}

/// Gradients of the decoder states `[M, N, D]`, the encoder outputs
/// `[T, N, E]` and the parameters, in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionGrads {
    /// `[M, N, D]`.
    pub d_queries: Vec<f64>,
    /// `[T, N, E]`.
    pub d_encoder_outputs: Vec<f64>,
    /// Laid out like [`Attention::params`].
    pub d_params: Vec<f64>,
}

/// The encoder side of a call, as the reference reads it.
#[derive(Clone, Copy, Debug)]
pub struct Encoded<'a> {
    /// `[T, N, E]`.
    pub outputs: &'a [f32],
    /// T.
    pub seq_len: usize,
    /// N.
    pub batch: usize,
    /// Per item; `None`: all `T`.
    pub seq_lens: Option<&'a [usize]>,
}

/// The parameters of `layer` in f64, by tensor.
struct Params {
    wa: Vec<f64>,
    we: Vec<f64>,
    wd: Vec<f64>,
    v: Vec<f64>,
}

impl Params {
    fn of(layer: &Attention) -> Params {
        let get = |kind| match layer.param_range(kind) {
            Ok(r) => layer.params()[r].iter().map(|&p| f64::from(p)).collect(),
            Err(_) => Vec::new(),
        };
        Params {
            wa: get(AttentionParam::Wa),
            we: get(AttentionParam::We),
            wd: get(AttentionParam::Wd),
            v: get(AttentionParam::V),
        }
    }
}

/// Checks the shapes; returns `(M, lens)`.
fn shapes(layer: &Attention, enc: &Encoded, queries: &[f32]) -> Result<(usize, Vec<usize>)> {
    let (t, n) = (enc.seq_len, enc.batch);
    check_len(
        "encoder outputs",
        t * n * layer.encoder_size(),
        enc.outputs.len(),
    )?;
    let per_step = n * layer.decoder_size();
    if per_step == 0 || !queries.len().is_multiple_of(per_step) {
        return Err(Error::InvalidArgument(
            "decoder states are not whole [N, D] steps".into(),
        ));
    }
    let lens = match enc.seq_lens {
        None => vec![t; n],
        Some(l) => {
            check_len("encoder seq_lens", n, l.len())?;
            if l.iter().any(|&x| x > t) {
                return Err(Error::InvalidArgument("an encoder length exceeds T".into()));
            }
            l.to_vec()
        }
    };
    Ok((queries.len() / per_step, lens))
}

/// One score and, for the additive score, its hidden `tanh(...)` values.
fn score(layer: &Attention, p: &Params, h: &[f32], s: &[f32]) -> (f64, Vec<f64>) {
    let (e, d, a) = (
        layer.encoder_size(),
        layer.decoder_size(),
        layer.attention_size(),
    );
    match layer.score() {
        Score::Dot => (
            h.iter()
                .zip(s)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum(),
            Vec::new(),
        ),
        Score::General => {
            let mut total = 0.0;
            for i in 0..d {
                let wh: f64 = (0..e).map(|j| p.wa[i * e + j] * f64::from(h[j])).sum();
                total += f64::from(s[i]) * wh;
            }
            (total, Vec::new())
        }
        Score::Additive => {
            let hidden: Vec<f64> = (0..a)
                .map(|r| {
                    let we: f64 = (0..e).map(|j| p.we[r * e + j] * f64::from(h[j])).sum();
                    let wd: f64 = (0..d).map(|i| p.wd[r * d + i] * f64::from(s[i])).sum();
                    (we + wd).tanh()
                })
                .collect();
            let total = hidden.iter().zip(&p.v).map(|(z, v)| z * v).sum();
            (total, hidden)
        }
    }
}

/// Weights of one decoder step of one item over positions `0..len`.
fn weights(
    layer: &Attention,
    p: &Params,
    enc: &Encoded,
    b: usize,
    len: usize,
    s: &[f32],
) -> Vec<f64> {
    let (n, e) = (enc.batch, layer.encoder_size());
    let scores: Vec<f64> = (0..len)
        .map(|t| score(layer, p, &enc.outputs[(t * n + b) * e..][..e], s).0)
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|x| x / sum).collect()
}

/// Attention forward for `queries [M, N, D]`.
pub fn attention_forward(
    layer: &Attention,
    enc: &Encoded,
    queries: &[f32],
) -> Result<AttentionOutput> {
    let (m, lens) = shapes(layer, enc, queries)?;
    let (t, n, e, d) = (
        enc.seq_len,
        enc.batch,
        layer.encoder_size(),
        layer.decoder_size(),
    );
    let p = Params::of(layer);
    let mut context = vec![0.0; m * n * e];
    let mut all = vec![0.0; m * n * t];
    for step in 0..m {
        for b in 0..n {
            let s = &queries[(step * n + b) * d..][..d];
            let a = weights(layer, &p, enc, b, lens[b], s);
            for (tt, &w) in a.iter().enumerate() {
                all[(step * n + b) * t + tt] = w;
                for j in 0..e {
                    context[(step * n + b) * e + j] +=
                        w * f64::from(enc.outputs[(tt * n + b) * e + j]);
                }
            }
        }
    }
    Ok(AttentionOutput {
        context,
        weights: all,
    })
}

/// Attention backward for `queries [M, N, D]`, given the gradients of the
/// contexts `[M, N, E]` and optionally of the weights `[M, N, T]`.
pub fn attention_backward(
    layer: &Attention,
    enc: &Encoded,
    queries: &[f32],
    d_context: &[f64],
    d_weights: Option<&[f64]>,
) -> Result<AttentionGrads> {
    let (m, lens) = shapes(layer, enc, queries)?;
    let (t, n) = (enc.seq_len, enc.batch);
    let (e, d, a) = (
        layer.encoder_size(),
        layer.decoder_size(),
        layer.attention_size(),
    );
    check_len("d_context", m * n * e, d_context.len())?;
    if let Some(dw) = d_weights {
        check_len("d_weights", m * n * t, dw.len())?;
    }
    let p = Params::of(layer);
    let mut d_queries = vec![0.0; m * n * d];
    let mut d_enc = vec![0.0; t * n * e];
    let mut d_params = vec![0.0; layer.params().len()];
    let range = |kind| layer.param_range(kind).unwrap_or(0..0);
    let (wa_r, we_r, wd_r, v_r) = (
        range(AttentionParam::Wa),
        range(AttentionParam::We),
        range(AttentionParam::Wd),
        range(AttentionParam::V),
    );
    for step in 0..m {
        for b in 0..n {
            let len = lens[b];
            let row = step * n + b;
            let s = &queries[row * d..][..d];
            let w = weights(layer, &p, enc, b, len, s);
            let h = |tt: usize| &enc.outputs[(tt * n + b) * e..][..e];
            let dc = &d_context[row * e..][..e];
            // dL/da_t, then the softmax backward.
            let da: Vec<f64> = (0..len)
                .map(|tt| {
                    let direct: f64 = (0..e).map(|j| dc[j] * f64::from(h(tt)[j])).sum();
                    direct + d_weights.map_or(0.0, |dw| dw[row * t + tt])
                })
                .collect();
            let mean: f64 = w.iter().zip(&da).map(|(w, g)| w * g).sum();
            for tt in 0..len {
                let ds = w[tt] * (da[tt] - mean);
                // The context's share: dh_t += a_t dc.
                for j in 0..e {
                    d_enc[(tt * n + b) * e + j] += w[tt] * dc[j];
                }
                let ht = h(tt);
                match layer.score() {
                    Score::Dot => {
                        for j in 0..e {
                            d_enc[(tt * n + b) * e + j] += ds * f64::from(s[j]);
                            d_queries[row * d + j] += ds * f64::from(ht[j]);
                        }
                    }
                    Score::General => {
                        for i in 0..d {
                            for j in 0..e {
                                let wij = p.wa[i * e + j];
                                d_queries[row * d + i] += ds * wij * f64::from(ht[j]);
                                d_enc[(tt * n + b) * e + j] += ds * f64::from(s[i]) * wij;
                                d_params[wa_r.start + i * e + j] +=
                                    ds * f64::from(s[i]) * f64::from(ht[j]);
                            }
                        }
                    }
                    Score::Additive => {
                        let (_, z) = score(layer, &p, ht, s);
                        for r in 0..a {
                            d_params[v_r.start + r] += ds * z[r];
                            let dz = ds * p.v[r] * (1.0 - z[r] * z[r]);
                            for j in 0..e {
                                d_enc[(tt * n + b) * e + j] += dz * p.we[r * e + j];
                                d_params[we_r.start + r * e + j] += dz * f64::from(ht[j]);
                            }
                            for i in 0..d {
                                d_queries[row * d + i] += dz * p.wd[r * d + i];
                                d_params[wd_r.start + r * d + i] += dz * f64::from(s[i]);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(AttentionGrads {
        d_queries,
        d_encoder_outputs: d_enc,
        d_params,
    })
}
