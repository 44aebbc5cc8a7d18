//! Vectorised exp, logistic and tanh, generic over `Simd`.
//!
//! Accuracy (measured by `tests/kernels.rs` over a sweep of every 1021st f32
//! bit pattern, against f64): logistic and tanh are within [`MAX_ULP`] units
//! in the last place of the correctly rounded result (or within `1e-38` in
//! absolute terms where that result is subnormal). ±inf map to the limits
//! (tanh ±1; logistic 1, and below 1e-38 for -inf) and NaN stays NaN.

// Polynomial coefficients are kept as published.
#![allow(clippy::excessive_precision)]

use super::Simd;

/// Bound on the error of `tanh` and `sigmoid`, in ulp (see module docs).
pub const MAX_ULP: u32 = 2;

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that n * LN2_HI is exact for |n| <= 128.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// exp(x) is computed for x in [EXP_MIN, EXP_MAX]: the result then stays a
/// normal, finite float, which is all logistic and tanh need.
const EXP_MIN: f32 = -87.0;
const EXP_MAX: f32 = 88.0;

/// e^x for x clamped to `[EXP_MIN, EXP_MAX]`: a degree-6 polynomial on
/// `[-ln2/2, ln2/2]` (Cephes `expf` coefficients) scaled by 2^n.
#[inline(always)]
pub(crate) unsafe fn exp<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
    unsafe {
        let x = S::clamp(x, S::splat(EXP_MIN), S::splat(EXP_MAX));
        let n = S::round(S::mul(x, S::splat(LOG2E)));
        let r = S::fma(n, S::splat(-LN2_HI), x);
        let r = S::fma(n, S::splat(-LN2_LO), r);
        let mut p = S::splat(1.987_569_1e-4);
        p = S::fma(p, r, S::splat(1.398_199_9e-3));
        p = S::fma(p, r, S::splat(8.333_452e-3));
        p = S::fma(p, r, S::splat(4.166_579_6e-2));
        p = S::fma(p, r, S::splat(1.666_666_5e-1));
        p = S::fma(p, r, S::splat(5.000_000_1e-1));
        let r2 = S::mul(r, r);
        let p = S::add(S::fma(p, r2, r), S::splat(1.0));
        S::mul(p, S::pow2i(n))
    }
}

/// Logistic function 1 / (1 + e^-x).
#[inline(always)]
pub(crate) unsafe fn sigmoid<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
    unsafe {
        let one = S::splat(1.0);
        let s = S::div(one, S::add(one, exp::<S>(S::sub(S::zero(), x))));
        S::select_nan(x, x, s)
    }
}

/// Hyperbolic tangent: an odd polynomial below |x| = 0.625 (Cephes `tanhf`),
/// `1 - 2 / (e^{2|x|} + 1)` above, with the sign of x.
#[inline(always)]
pub(crate) unsafe fn tanh<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
    unsafe {
        let ax = S::abs(x);
        let z = S::mul(x, x);
        let mut p = S::splat(-5.704_988_7e-3);
        p = S::fma(p, z, S::splat(2.063_908_9e-2));
        p = S::fma(p, z, S::splat(-5.373_971_6e-2));
        p = S::fma(p, z, S::splat(1.333_144_2e-1));
        p = S::fma(p, z, S::splat(-3.333_328_2e-1));
        let small = S::fma(S::mul(p, z), x, x);

        let one = S::splat(1.0);
        let e = exp::<S>(S::add(ax, ax));
        let large = S::sub(one, S::div(S::splat(2.0), S::add(e, one)));
        let signed = S::select_lt(x, S::zero(), S::sub(S::zero(), large), large);
        let t = S::select_lt(ax, S::splat(0.625), small, signed);
        S::select_nan(x, x, t)
    }
}

/// Applies `f` to every element of `data` in place; the tail that does not
/// fill a vector goes through a zero-padded vector, so every element is
/// computed by the same instructions.
///
/// `f` is a plain `unsafe fn` so it inlines into the caller's target features.
#[inline(always)]
pub(crate) unsafe fn map_in_place<S: Simd>(data: &mut [f32], f: unsafe fn(S::V) -> S::V) {
    let mut chunks = data.chunks_exact_mut(S::LANES);
    for chunk in &mut chunks {
        // SAFETY: `chunk` holds exactly LANES floats.
        unsafe { S::store(chunk.as_mut_ptr(), f(S::load(chunk.as_ptr()))) };
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut buf = [0.0f32; 64];
        debug_assert!(S::LANES <= buf.len());
        buf[..tail.len()].copy_from_slice(tail);
        // SAFETY: `buf` holds at least LANES floats.
        unsafe { S::store(buf.as_mut_ptr(), f(S::load(buf.as_ptr()))) };
        tail.copy_from_slice(&buf[..tail.len()]);
    }
}

/// Softmax of `row` in place, numerically stable: the largest value is
/// taken away first (so every exponent is at most 0 and none overflows),
/// then [`exp`] (exponents below −87 give about 1.6e-38 rather than 0),
/// then division by the sum. A NaN anywhere makes the row NaN. An empty row
/// is left alone.
#[inline(always)]
pub(crate) unsafe fn softmax_in_place<S: Simd>(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = row.iter().fold(
        f32::NEG_INFINITY,
        |m, &x| if x > m || x.is_nan() { x } else { m },
    );
    row.iter_mut().for_each(|x| *x -= max);
    // SAFETY: the caller runs on a CPU with this ISA.
    unsafe { map_in_place::<S>(row, exp::<S>) };
    // Eight partial sums, so that the loop vectorises.
    let mut lanes = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            lanes[i] += c[i];
        }
    }
    let sum = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}
