//! The precision a model's inference runs in: the format its weights are
//! packed in for the kernels.
//!
//! Reduced precision applies to the weight products (`W`, `R` and the LSTM
//! projection): the weights are rounded once, when the model packs them.
//! bf16 multiplies f32 rows by them (or, for LSTM and GRU on CPUs where
//! `vdpbf16ps` pays, rows rounded to bf16: see [`Precision::Bf16`]); int8
//! also quantises each row it multiplies (inputs and states, once per
//! step). The biases, the
//! peepholes, the gate non-linearities, the cell state and the outputs stay
//! f32. Training always runs in f32 on the f32 parameters, which a model
//! keeps whatever its precision.

use crate::error::{Error, Result};

/// How a model's weights are stored and multiplied in inference.
///
/// ```
/// use rnn::{CellKind, Config, Input, Model, Precision};
///
/// let model = Model::random(Config::builder(CellKind::Gru, 16, 64).build()?, 7);
/// let x = vec![0.25f32; 10 * 16];
/// let exact = model.forward_inference(&Input::new(&x, 10, 1))?;
/// let int8 = model.clone().with_precision(Precision::Int8);
/// let fast = int8.forward_inference(&Input::new(&x, 10, 1))?;
/// let worst = exact.y.iter().zip(&fast.y).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
/// assert!(worst < 0.05);
/// // Training needs f32.
/// assert!(int8.forward_training(&Input::new(&x, 10, 1)).is_err());
/// # Ok::<(), rnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 weights (the default; training needs it).
    #[default]
    F32,
    /// bfloat16 weights (8 bits of mantissa, f32's range), rounded to
    /// nearest even from the f32 parameters: half the weight memory and
    /// bandwidth. Products are exact f32 multiply-adds of the rounded
    /// weights, so a bf16 model gives, bit for bit, what an f32 model with
    /// [`round_to_bf16`]-rounded weights gives on the same ISA.
    ///
    /// On [`Isa::Amx`](crate::Isa::Amx) the products run on AMX tiles,
    /// which multiply bf16 by bf16: each input and state row is split into
    /// two bf16 parts, `hi = bf16(x)` and `lo = bf16(x − hi)`, both
    /// multiplied (16 of its 24 significant bits), and the sums are f32 in
    /// the tiles' order. The result is then within about 1e-5 of the
    /// rounded-weight f32 model rather than equal to it (1e-4 is tested),
    /// and as accurate against f32 as the other ISAs; a batch of one runs
    /// the widening kernels there (see `Kernels::layer_steps`).
    ///
    /// On [`Isa::Avx512`](crate::Isa::Avx512), where the CPU has AVX-512
    /// BF16 and issues `vdpbf16ps` at least three quarters as often as an
    /// FMA (measured once per process: Zen 4 does, Sapphire Rapids does
    /// not), LSTM and GRU layers round their rows (inputs, states, GRU's
    /// `r ⊙ h`, the projection's input) to bf16 too, once per step, and
    /// multiply them with `vdpbf16ps`: twice the products per instruction,
    /// 1.6-2.1× the widening path at batch (BENCHMARKS.md). On
    /// [`Isa::Neon`](crate::Isa::Neon) the same, with `bfdot` (the BF16
    /// extension) measured against `fmla`. Their outputs
    /// are then within about 1e-3 of the rounded-weight f32 model (5e-3 is
    /// tested) and within 4e-3 of f32 on DESIGN.md's shapes (1e-2 is
    /// tested), and differ between CPUs that choose differently.
    /// Vanilla RNN layers keep their rows in f32: rounded, they reached
    /// 1.01e-2 of f32. The environment variable `RNN_BF16_DOT` overrides
    /// the measurement: `on` wherever the CPU has the instruction, `off`
    /// never (the same bits as every other ISA); see
    /// [`bf16_rounds_rows`](crate::kernels::dispatch::bf16_rounds_rows).
    Bf16,
    /// int8 weights, quantised symmetrically per output (one f32 scale per
    /// row of `W`, `R` and the projection: `max |w| / 127`), a quarter of
    /// the f32 weight memory. Every row a product multiplies (an input, a
    /// state, GRU's `r ⊙ h`, the LSTM's `o ⊙ tanh c` before its projection)
    /// is quantised when it is produced, symmetrically per row
    /// (`max |x| / 127`, to nearest), and stored as `u8` with zero point
    /// 128 so that VNNI's `u8 × i8` product applies. The integer sums are
    /// exact and are scaled back to f32 before the bias and the gate
    /// non-linearities, so the products are the same bits on every ISA.
    Int8,
}

impl Precision {
    /// Every precision, in the C ABI's code order (`RNN_PRECISION_*`).
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

    /// The name `--precision` takes: `f32`, `bf16` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// The precision called `name` (any case).
    pub fn from_name(name: &str) -> Result<Precision> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown precision {name:?}: expected f32, bf16 or int8"
                ))
            })
    }

    /// Rows of 32-bit words a packed panel of `k` weight rows takes: the
    /// weights (one, two or four per word), and for int8 two more rows, the
    /// zero-point corrections and the scales (see `kernels::fused::format`).
    pub(crate) fn panel_rows(self, k: usize) -> usize {
        match self {
            Precision::F32 => k,
            Precision::Bf16 => k.div_ceil(2),
            Precision::Int8 => k.div_ceil(4) + 2,
        }
    }
}

/// `x` as a bfloat16 (its upper 16 bits after rounding to nearest, ties to
/// even); a NaN stays a (quiet) NaN, infinities stay infinite, and finite
/// values too large for bf16 round to infinity as f32 → bf16 conversions do.
pub fn to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let round = 0x7FFF + ((bits >> 16) & 1);
    ((bits + round) >> 16) as u16
}

/// `x` rounded to the nearest bfloat16, as an f32 (exact: a bf16 is the
/// upper half of an f32).
pub fn round_to_bf16(x: f32) -> f32 {
    f32::from_bits(u32::from(to_bf16_bits(x)) << 16)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 2^e, exactly (Miri perturbs `powi`, as it may be inexact elsewhere).
    pub(crate) fn pow2(e: i32) -> f32 {
        f32::from_bits(((127 + e) as u32) << 23)
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_specials() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
        assert_eq!(round_to_bf16(1.0 + pow2(-8)), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to even.
        assert_eq!(round_to_bf16(1.0 + 3.0 * pow2(-8)), 1.0 + pow2(-6));
        assert_eq!(round_to_bf16(1.0 + pow2(-8) + pow2(-20)), 1.0 + pow2(-7));
        assert_eq!(round_to_bf16(-2.5), -2.5);
        assert_eq!(round_to_bf16(0.0).to_bits(), 0);
        assert_eq!(round_to_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert!(
            round_to_bf16(f32::from_bits(0x7F80_0001)).is_nan(),
            "a NaN with only low payload bits"
        );
        assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_to_bf16(f32::MIN_POSITIVE), f32::MIN_POSITIVE);
        // Relative error at most 2^-8 (half an ulp of 8 significant bits).
        let mut x = 1e-30f32;
        while x < 1e30 {
            let r = round_to_bf16(x);
            assert!(((r - x) / x).abs() <= pow2(-8), "{x} -> {r}");
            x *= 1.37;
        }
    }

    #[test]
    fn names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(Precision::from_name(p.name()).unwrap(), p);
        }
        assert!(Precision::from_name("int4").is_err());
        assert_eq!(Precision::from_name(" INT8").unwrap(), Precision::Int8);
    }
}
