//! Attention over a batch of encoder outputs (Luong and Bahdanau), for
//! encoder–decoder models: each decoder step takes a weighted sum of the
//! encoder's outputs (the *context*), weighted by how well each output
//! matches the decoder's current state.
//!
//! Shapes are time-major like librnn's layers: encoder outputs `[T, N, E]`
//! (a [`Model`](crate::Model)'s `y`, bidirectional included), decoder
//! states ("queries") `[M, N, D]` for `M` decoder steps (one step: `M = 1`),
//! contexts `[M, N, E]`, attention weights `[M, N, T]`.
//!
//! For item `b` with encoder length `len_b` (`seq_lens`, default `T`), at
//! every decoder step, over encoder positions `t < len_b`:
//!
//! * score `e_t`: [`Score::Dot`] `s · h_t` (`E = D`); [`Score::General`]
//!   `s · (W_a h_t)` with `W_a [D, E]`; [`Score::Additive`]
//!   `v · tanh(W_e h_t + W_d s)` with `W_e [A, E]`, `W_d [A, D]`, `v [A]`;
//! * weights `a = softmax(e)`, computed stably (the largest score is taken
//!   away first); positions `t ≥ len_b` get weight exactly 0, and an item
//!   of length 0 gets all-zero weights and a zero context (no NaN);
//! * context `c = Σ_t a_t h_t`.
//!
//! Bad input is an error, never a panic: a dot score with `E ≠ D`, a length
//! past `T`, an empty batch, buffers of the wrong size. Non-finite values
//! are not errors: a NaN encoder output or decoder state makes the scores,
//! weights and contexts it touches NaN (NaN in, NaN out); an infinite one
//! gives what IEEE arithmetic gives (NaN through the products, a saturated
//! tanh in the additive score).
//!
//! The encoder side of each score (`W_a h_t`, `W_e h_t`, or `h_t` itself,
//! the *keys*) depends only on the encoder outputs: [`Attention::memory`]
//! computes it once per sequence, and every decoder step reuses it.
//! Backward accumulates over any number of decoder-step calls (teacher
//! forcing gives all steps at once; input feeding calls it step by step)
//! and maps the keys' gradient back to the encoder outputs and weights once,
//! in [`Attention::finish_backward`].
//!
//! The forward runs on librnn's own kernels, dispatched like a model's
//! ([`Attention::with_isa`] pins an ISA; `RNN_ISA` and the CPU choose
//! otherwise): the score and context products are the register-tiled panel
//! products of the recurrent layers, over keys and encoder outputs packed
//! once per memory; the softmax and the additive score's tanh are the SIMD
//! `exp` and `tanh`. The projections of whole batches (`W_a h`, `W_e h`,
//! `W_d s`) and the backward's products run through `matrixmultiply`.
//!
//! The f64 oracle is [`crate::reference::attention`].

mod backward;
mod forward;

use std::sync::Arc;

use crate::engine::pack::round_up;
use crate::engine::BufferPool;
use crate::error::{check_len, Error, Result};
use crate::gemm::{gemm, Mat};
use crate::kernels::{Isa, Kernels};
use crate::rng::SplitMix64;

pub use backward::{AttentionGradients, Backward};
pub use forward::Attended;

/// How a decoder state is scored against an encoder output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Score {
    /// Luong's dot product `s · h` (encoder and decoder sizes equal).
    Dot,
    /// Luong's general score `s · (W_a h)`, `W_a [D, E]`.
    General,
    /// Bahdanau's additive score `v · tanh(W_e h + W_d s)`, `W_e [A, E]`,
    /// `W_d [A, D]`, `v [A]`.
    Additive,
}

impl Score {
    /// Every score, in the C ABI's code order (`RNN_SCORE_*`).
    pub const ALL: [Score; 3] = [Score::Dot, Score::General, Score::Additive];

    /// The score's name: `dot`, `general` or `additive`.
    pub fn name(self) -> &'static str {
        match self {
            Score::Dot => "dot",
            Score::General => "general",
            Score::Additive => "additive",
        }
    }
}

/// An attention layer: its score function, sizes and parameters (and a
/// pool of the buffers its memories used, so that a memory per batch does
/// not map fresh pages each time; clones share it).
///
/// ```
/// use rnn::attention::{Attention, Score};
///
/// // Encoder outputs [T = 4, N = 2, E = 6], decoder states of D = 5.
/// let layer = Attention::new(Score::Additive, 6, 5, 8, 1)?;
/// let encoded = vec![0.1f32; 4 * 2 * 6];
/// // The second item is 2 steps long: its positions 2 and 3 get weight 0.
/// let memory = layer.memory(&encoded, 4, 2, Some(&[4, 2]))?;
/// let states = vec![0.3f32; 2 * 5]; // one decoder step [1, N, D]
/// let out = layer.attend(&memory, &states)?;
/// assert_eq!(out.context.len(), 2 * 6);
/// assert_eq!(&out.weights[4..], &[0.5, 0.5, 0.0, 0.0]); // weights [M, N, T]
///
/// // Training: the gradients of every decoder step, then finish once.
/// let mut grads = layer.start_backward(&memory)?;
/// let d_states = layer.backward(&memory, &states, &out, &[1.0; 12], None, &mut grads)?;
/// let grads = layer.finish_backward(&memory, grads)?;
/// assert_eq!((d_states.len(), grads.d_params.len()), (10, layer.params().len()));
/// # Ok::<(), rnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Attention {
    score: Score,
    encoder_size: usize,
    decoder_size: usize,
    attention_size: usize,
    /// `W_a` (general) or `W_e`, `W_d`, `v` (additive), row-major, one
    /// after the other; empty for dot.
    params: Vec<f32>,
    /// The ISA of its kernels; `None`: `RNN_ISA` or the best the CPU has.
    isa: Option<Isa>,
    pub(crate) pool: Arc<BufferPool>,
}

impl PartialEq for Attention {
    /// The same score, sizes, parameters and ISA (pools aside).
    fn eq(&self, other: &Self) -> bool {
        (
            self.score,
            self.encoder_size,
            self.decoder_size,
            self.attention_size,
            self.isa,
        ) == (
            other.score,
            other.encoder_size,
            other.decoder_size,
            other.attention_size,
            other.isa,
        ) && self.params == other.params
    }
}

/// The sizes of one call: `M` decoder steps, `T` encoder steps, `N` items,
/// encoder, decoder and key widths.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub m: usize,
    pub t: usize,
    pub n: usize,
    pub e: usize,
    pub d: usize,
    pub k: usize,
}

/// A parameter tensor of an attention layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionParam {
    /// General: `W_a [D, E]`.
    Wa,
    /// Additive: `W_e [A, E]`.
    We,
    /// Additive: `W_d [A, D]`.
    Wd,
    /// Additive: `v [A]`.
    V,
}

/// The encoder side of a batch, ready for any number of decoder steps:
/// the encoder outputs, their keys and the lengths, packed for the kernels
/// of the layer's ISA.
#[derive(Clone, Debug)]
pub struct Memory {
    pub(crate) kernels: Kernels,
    /// Per item, `keysᵀ [K, T]` as panels of the kernels (dot and general;
    /// empty for additive, whose score is not a product).
    pub(crate) packed_keys: Vec<f32>,
    /// Per item, the encoder outputs `[T, E]` as panels.
    pub(crate) packed_values: Vec<f32>,
    pub(crate) seq_len: usize,
    pub(crate) batch: usize,
    pub(crate) lens: Vec<usize>,
    /// Encoder outputs `[T, N, E]`.
    pub(crate) values: Vec<f32>,
    /// Keys `[T, N, K]`: `W_a h` (general), `W_e h` (additive); empty for
    /// dot, whose keys are the values ([`Memory::keys`]).
    pub(crate) keys: Vec<f32>,
    /// Where the buffers go back to.
    pool: Arc<BufferPool>,
}

impl Drop for Memory {
    fn drop(&mut self) {
        let bufs = [
            std::mem::take(&mut self.packed_keys),
            std::mem::take(&mut self.packed_values),
            std::mem::take(&mut self.values),
            std::mem::take(&mut self.keys),
        ];
        self.pool.give_each(bufs);
    }
}

impl Memory {
    /// Encoder steps `T`.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
    /// Items `N`.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Each item's encoder length.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }
    /// Floats of the encoder outputs (and of their gradient), `T·N·E`.
    #[cfg(feature = "capi")]
    pub(crate) fn values_len(&self) -> usize {
        self.values.len()
    }
    /// The keys `[T, N, K]` (for dot, the encoder outputs themselves).
    pub(crate) fn keys(&self) -> &[f32] {
        match self.keys.is_empty() {
            true => &self.values,
            false => &self.keys,
        }
    }
}

impl Attention {
    /// A layer with parameters uniform in `±1/√fan_in` (fan_in: the size
    /// each matrix multiplies; `v`: `A`), from `seed`. `attention_size`
    /// (`A`) is used by [`Score::Additive`] only; [`Score::Dot`] needs
    /// `encoder_size == decoder_size`.
    pub fn new(
        score: Score,
        encoder_size: usize,
        decoder_size: usize,
        attention_size: usize,
        seed: u64,
    ) -> Result<Attention> {
        let mut layer = Attention::zeros(score, encoder_size, decoder_size, attention_size)?;
        let mut rng = SplitMix64::new(seed);
        for kind in layer.param_kinds() {
            let fan_in = match kind {
                AttentionParam::Wa | AttentionParam::We => encoder_size,
                AttentionParam::Wd => decoder_size,
                AttentionParam::V => attention_size,
            };
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let range = layer.param_range(kind)?;
            rng.fill_uniform(&mut layer.params[range], -bound, bound);
        }
        Ok(layer)
    }

    /// A layer with zero parameters.
    pub fn zeros(
        score: Score,
        encoder_size: usize,
        decoder_size: usize,
        attention_size: usize,
    ) -> Result<Attention> {
        if encoder_size == 0 || decoder_size == 0 {
            return Err(Error::InvalidArgument(
                "attention: encoder and decoder sizes must be positive".into(),
            ));
        }
        let attention_size = match score {
            Score::Additive if attention_size == 0 => {
                return Err(Error::InvalidArgument(
                    "additive attention: the attention size must be positive".into(),
                ))
            }
            Score::Additive => attention_size,
            _ => 0,
        };
        if score == Score::Dot && encoder_size != decoder_size {
            return Err(Error::InvalidArgument(format!(
                "dot attention scores s · h: the encoder size ({encoder_size}) must equal \
                 the decoder size ({decoder_size}); use general or additive attention"
            )));
        }
        let len = match score {
            Score::Dot => 0,
            Score::General => decoder_size * encoder_size,
            Score::Additive => attention_size * (encoder_size + decoder_size + 1),
        };
        Ok(Attention {
            score,
            encoder_size,
            decoder_size,
            attention_size,
            params: vec![0.0; len],
            isa: None,
            pool: Arc::default(),
        })
    }

    /// This layer with its kernels on `isa` (an error if the CPU lacks it).
    pub fn with_isa(mut self, isa: Isa) -> Result<Attention> {
        Kernels::for_isa(isa)?;
        self.isa = Some(isa);
        Ok(self)
    }

    /// The ISA its kernels run on.
    pub fn isa(&self) -> Result<Isa> {
        match self.isa {
            Some(isa) => Ok(isa),
            None => Isa::selected(),
        }
    }

    /// A layer with the given parameters (`params().len()` of them, in
    /// [`param_range`](Self::param_range) order).
    pub fn from_params(
        score: Score,
        encoder_size: usize,
        decoder_size: usize,
        attention_size: usize,
        params: Vec<f32>,
    ) -> Result<Attention> {
        let mut layer = Attention::zeros(score, encoder_size, decoder_size, attention_size)?;
        check_len("attention params", layer.params.len(), params.len())?;
        layer.params = params;
        Ok(layer)
    }

    /// The score function.
    pub fn score(&self) -> Score {
        self.score
    }
    /// `E`.
    pub fn encoder_size(&self) -> usize {
        self.encoder_size
    }
    /// `D`.
    pub fn decoder_size(&self) -> usize {
        self.decoder_size
    }
    /// `A` (additive; 0 otherwise).
    pub fn attention_size(&self) -> usize {
        self.attention_size
    }
    /// All parameters, flat (for optimisers and clipping).
    pub fn params(&self) -> &[f32] {
        &self.params
    }
    /// All parameters, flat, to change in place (an optimiser's step). A
    /// [`Memory`] made before keeps the keys of the old parameters: make a
    /// new one.
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// The tensors this score has.
    pub fn param_kinds(&self) -> Vec<AttentionParam> {
        match self.score {
            Score::Dot => vec![],
            Score::General => vec![AttentionParam::Wa],
            Score::Additive => vec![AttentionParam::We, AttentionParam::Wd, AttentionParam::V],
        }
    }

    /// Where tensor `kind` lies in [`params`](Self::params).
    pub fn param_range(&self, kind: AttentionParam) -> Result<std::ops::Range<usize>> {
        let (e, d, a) = (self.encoder_size, self.decoder_size, self.attention_size);
        match (self.score, kind) {
            (Score::General, AttentionParam::Wa) => Ok(0..d * e),
            (Score::Additive, AttentionParam::We) => Ok(0..a * e),
            (Score::Additive, AttentionParam::Wd) => Ok(a * e..a * (e + d)),
            (Score::Additive, AttentionParam::V) => Ok(a * (e + d)..a * (e + d + 1)),
            (score, kind) => Err(Error::InvalidArgument(format!(
                "{} attention has no {kind:?} parameter",
                score.name()
            ))),
        }
    }

    /// Width of a key: `E` (dot), `D` (general), `A` (additive).
    pub(crate) fn key_size(&self) -> usize {
        match self.score {
            Score::Dot => self.encoder_size,
            Score::General => self.decoder_size,
            Score::Additive => self.attention_size,
        }
    }

    /// The matrix that makes keys from encoder outputs (`[K, E]`), if any.
    pub(crate) fn key_weights(&self) -> Option<&[f32]> {
        match self.score {
            Score::Dot => None,
            Score::General => Some(&self.params[..self.decoder_size * self.encoder_size]),
            Score::Additive => Some(&self.params[..self.attention_size * self.encoder_size]),
        }
    }

    /// The encoder side of a batch: `encoder_outputs [T, N, E]` (time-major,
    /// e.g. a model's `y`) and each item's length (`None`: all `T`; each
    /// at most `T`). Computes the keys once, for every decoder step.
    pub fn memory(
        &self,
        encoder_outputs: &[f32],
        seq_len: usize,
        batch: usize,
        seq_lens: Option<&[usize]>,
    ) -> Result<Memory> {
        let e = self.encoder_size;
        if batch == 0 {
            return Err(Error::InvalidArgument(
                "attention memory: the batch is empty (N = 0)".into(),
            ));
        }
        let rows = seq_len
            .checked_mul(batch)
            .filter(|r| r.checked_mul(e).is_some())
            .ok_or_else(|| Error::InvalidArgument("attention memory: shape overflows".into()))?;
        check_len("encoder outputs", rows * e, encoder_outputs.len())?;
        let lens = match seq_lens {
            None => vec![seq_len; batch],
            Some(lens) => {
                check_len("encoder seq_lens", batch, lens.len())?;
                if let Some((b, &len)) = lens.iter().enumerate().find(|(_, &l)| l > seq_len) {
                    return Err(Error::InvalidArgument(format!(
                        "encoder seq_lens[{b}] = {len} exceeds the {seq_len} encoder steps"
                    )));
                }
                lens.to_vec()
            }
        };
        let pool = &self.pool;
        let keys = match self.key_weights() {
            None => Vec::new(),
            Some(w) => {
                let k = self.key_size();
                let mut keys = pool.take_zeroed(rows * k)?;
                gemm(
                    Mat::rows(encoder_outputs, rows, e, e),
                    Mat::transposed(w, e, k, e),
                    0.0,
                    &mut keys,
                    k,
                );
                keys
            }
        };
        let kernels = Kernels::for_isa(self.isa()?)?;
        let unit = kernels.unit();
        let k = self.key_size();
        let all_keys = if keys.is_empty() {
            encoder_outputs
        } else {
            &keys[..]
        };
        let packed_keys = match self.score {
            Score::Additive => Vec::new(),
            _ => {
                let mut out = pool.take_zeroed(batch * k * round_up(seq_len, unit))?;
                pack_transposed(all_keys, seq_len, batch, k, unit, &mut out);
                out
            }
        };
        let mut packed_values = pool.take_zeroed(batch * seq_len * round_up(e, unit))?;
        pack_rows(encoder_outputs, seq_len, batch, e, unit, &mut packed_values);
        let mut values = pool.take(encoder_outputs.len())?;
        values.copy_from_slice(encoder_outputs);
        Ok(Memory {
            kernels,
            packed_keys,
            packed_values,
            seq_len,
            batch,
            lens,
            values,
            keys,
            pool: Arc::clone(pool),
        })
    }

    /// Checks that `memory` was made for a layer of this key size and that
    /// `queries` holds whole `[M, N, D]` steps; returns the call's sizes.
    fn check_queries(&self, memory: &Memory, queries: &[f32]) -> Result<Dims> {
        let (n, d) = (memory.batch, self.decoder_size);
        check_len(
            "attention memory keys",
            memory.seq_len * n * self.key_size(),
            memory.keys().len(),
        )?;
        check_len(
            "attention memory values",
            memory.seq_len * n * self.encoder_size,
            memory.values.len(),
        )?;
        let per_step = n * d;
        if per_step == 0 || !queries.len().is_multiple_of(per_step) {
            return Err(Error::InvalidArgument(format!(
                "decoder states: {} floats are not whole steps of [N = {n}, D = {d}]",
                queries.len()
            )));
        }
        Ok(Dims {
            m: queries.len() / per_step,
            t: memory.seq_len,
            n,
            e: self.encoder_size,
            d,
            k: self.key_size(),
        })
    }
}

/// Per item `b`, the rows `[T, width]` of `rows [T, N, width]` as panels of
/// `unit` columns (`pack_b`'s layout: panel, then row, then column), one
/// contiguous run per row and panel, into `out` (zeroed: padding stays 0).
fn pack_rows(rows: &[f32], t: usize, n: usize, width: usize, unit: usize, out: &mut [f32]) {
    let wp = round_up(width, unit);
    for (b, item) in out.chunks_exact_mut((t * wp).max(1)).enumerate().take(n) {
        for (p, panel) in item.chunks_exact_mut((t * unit).max(1)).enumerate() {
            let (c0, len) = (p * unit, unit.min(width - p * unit));
            for (tt, dst) in panel.chunks_exact_mut(unit).enumerate() {
                dst[..len].copy_from_slice(&rows[(tt * n + b) * width + c0..][..len]);
            }
        }
    }
}

/// Per item `b`, `rows [T, N, width]`'s `[T, width]` transposed (`[width,
/// T]`) as panels of `unit` columns of T: the keys for the score product.
/// A panel at a time: its `unit` rows are read along (each cache line of
/// them serves 16 values) while the panel is written in order.
fn pack_transposed(rows: &[f32], t: usize, n: usize, width: usize, unit: usize, out: &mut [f32]) {
    let tp = round_up(t, unit);
    for (b, item) in out
        .chunks_exact_mut((width * tp).max(1))
        .enumerate()
        .take(n)
    {
        for (p, panel) in item.chunks_exact_mut((width * unit).max(1)).enumerate() {
            let first = p * unit;
            let count = unit.min(t - first);
            for u in 0..count {
                let row = &rows[((first + u) * n + b) * width..][..width];
                for (dst, &v) in panel[u..].iter_mut().step_by(unit).zip(row) {
                    *dst = v;
                }
            }
        }
    }
}
