//! ONNX's activation functions ([`ActivationKind`]) and their derivatives,
//! vectorised, generic over `Simd`.
//!
//! The fused kernels run each gate role's *default* function (sigmoid,
//! tanh; relu for a vanilla RNN) inline. Any other function runs through
//! [`apply_in_place`] / [`derivative_in_place`], compiled into each ISA's
//! table and called out of line one vector at a time, so that the eleven
//! functions are not inlined into every instance of every epilogue.
//!
//! Backward, the training trace keeps each gate's *output*, so derivatives
//! are computed from `y = f(x)` ([`derivative`]); that is exact for every
//! function except a LeakyRelu or Elu with α < 0, which training refuses
//! ([`ActivationFunction::invertible_for_training`]). Kinks take the
//! derivative of the branch that holds below the kink, as the reference
//! does (`relu'(0) = 0`, LeakyRelu `f'(0) = α`, Elu `f'(0) = α`,
//! ThresholdedRelu `f'(α) = 0`, HardSigmoid 0 at both ends of its ramp).
//!
//! Accuracy against f64 (`tests/kernels.rs`): sigmoid, tanh and ScaledTanh
//! as [`super::math::MAX_ULP`]; Elu and Softplus within 4e-7 relative (or
//! 1e-38 absolute), using `expm1(x) = 2t / (1 − t)` with `t = tanh(x / 2)`
//! and a series for `ln(1 + u)`, so that neither cancels near 0.

#![allow(clippy::excessive_precision)]

use super::math::{exp, sigmoid, tanh};
use super::Simd;
use crate::config::{ActivationFunction, ActivationKind};

/// `e^x − 1` without cancellation near 0, for `x ≤ 0` (and any `x` below
/// about 88): `2t / (1 − t)` with `t = tanh(x / 2)`.
#[inline(always)]
unsafe fn expm1<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
    unsafe {
        let t = tanh::<S>(S::mul(x, S::splat(0.5)));
        S::div(S::add(t, t), S::sub(S::splat(1.0), t))
    }
}

/// `ln(1 + u)` for `u` in `[0, 1]`: `2 atanh(s)` with `s = u / (2 + u)` (at
/// most 1/3), as the odd series `2 (s + s³/3 + … + s¹⁵/15)`, whose next term
/// is below 2⁻²⁶ of the sum.
#[inline(always)]
unsafe fn ln_1p<S: Simd>(u: S::V) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
    unsafe {
        let s = S::div(u, S::add(S::splat(2.0), u));
        let s2 = S::mul(s, s);
        let mut p = S::splat(1.0 / 15.0);
        for c in [
            1.0 / 13.0,
            1.0 / 11.0,
            1.0 / 9.0,
            1.0 / 7.0,
            1.0 / 5.0,
            1.0 / 3.0,
            1.0,
        ] {
            p = S::fma(p, s2, S::splat(c));
        }
        S::mul(S::add(s, s), p)
    }
}

/// `f(x)`, lane-wise. NaN stays NaN.
#[inline(always)]
pub(crate) unsafe fn apply<S: Simd>(f: &ActivationFunction, x: S::V) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
    unsafe {
        let (a, b) = (S::splat(f.alpha), S::splat(f.beta));
        let (zero, one) = (S::zero(), S::splat(1.0));
        match f.kind {
            ActivationKind::Sigmoid => sigmoid::<S>(x),
            ActivationKind::Tanh => tanh::<S>(x),
            ActivationKind::Relu => S::clamp(x, zero, S::splat(f32::INFINITY)),
            ActivationKind::Affine => S::fma(a, x, b),
            ActivationKind::LeakyRelu => S::select_lt(x, zero, S::mul(a, x), x),
            ActivationKind::ThresholdedRelu => S::select_nan(x, x, S::select_lt(a, x, x, zero)),
            ActivationKind::ScaledTanh => S::mul(a, tanh::<S>(S::mul(b, x))),
            ActivationKind::HardSigmoid => S::clamp(S::fma(a, x, b), zero, one),
            ActivationKind::Elu => S::select_lt(x, zero, S::mul(a, expm1::<S>(x)), x),
            ActivationKind::Softsign => {
                // Bounded first, so that ±inf gives ±1 rather than inf/inf.
                let x = S::clamp(x, S::splat(-1e30), S::splat(1e30));
                S::div(x, S::add(one, S::abs(x)))
            }
            ActivationKind::Softplus => {
                // max(x, 0) + ln(1 + e^-|x|): no overflow, no cancellation.
                let e = exp::<S>(S::sub(zero, S::abs(x)));
                let y = S::add(S::clamp(x, zero, S::splat(f32::INFINITY)), ln_1p::<S>(e));
                S::select_nan(x, x, y)
            }
        }
    }
}

/// `f'(x)` from `y = f(x)`, lane-wise (see the module docs).
#[inline(always)]
pub(crate) unsafe fn derivative<S: Simd>(f: &ActivationFunction, y: S::V) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
    unsafe {
        let (a, b) = (S::splat(f.alpha), S::splat(f.beta));
        let (zero, one) = (S::zero(), S::splat(1.0));
        match f.kind {
            ActivationKind::Sigmoid => sigmoid_derivative::<S>(y),
            ActivationKind::Tanh => tanh_derivative::<S>(y),
            ActivationKind::Relu => S::select_lt(zero, y, one, zero),
            ActivationKind::Affine => a,
            ActivationKind::LeakyRelu => S::select_lt(zero, y, one, a),
            ActivationKind::ThresholdedRelu => S::select_lt(zero, S::abs(y), one, zero),
            ActivationKind::ScaledTanh => {
                if f.alpha == 0.0 {
                    zero
                } else {
                    // y = α t with t = tanh(βx): f' = αβ (1 − t²).
                    let t = S::div(y, a);
                    S::mul(S::mul(a, b), S::sub(one, S::mul(t, t)))
                }
            }
            ActivationKind::HardSigmoid => {
                S::select_lt(zero, y, S::select_lt(y, one, a, zero), zero)
            }
            // x < 0: y = α (e^x − 1), so f' = α e^x = y + α.
            ActivationKind::Elu => S::select_lt(zero, y, one, S::add(y, a)),
            ActivationKind::Softsign => {
                let d = S::sub(one, S::abs(y));
                S::mul(d, d)
            }
            // f' = σ(x) = 1 − e^-y.
            ActivationKind::Softplus => S::sub(zero, expm1::<S>(S::sub(zero, y))),
        }
    }
}

/// The logistic function's derivative from its value: `y (1 − y)`.
#[inline(always)]
pub(crate) unsafe fn sigmoid_derivative<S: Simd>(y: S::V) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
    unsafe { S::mul(y, S::sub(S::splat(1.0), y)) }
}

/// tanh's derivative from its value: `1 − y²`.
#[inline(always)]
pub(crate) unsafe fn tanh_derivative<S: Simd>(y: S::V) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
    unsafe { S::sub(S::splat(1.0), S::mul(y, y)) }
}

/// Applies `op(f, ·)` to every element in place; the tail that does not
/// fill a vector goes through a zero-padded vector.
#[inline(always)]
unsafe fn map<S: Simd>(
    f: &ActivationFunction,
    data: &mut [f32],
    op: unsafe fn(&ActivationFunction, S::V) -> S::V,
) {
    let mut chunks = data.chunks_exact_mut(S::LANES);
    for chunk in &mut chunks {
        // SAFETY: `chunk` holds exactly LANES floats.
        unsafe { S::store(chunk.as_mut_ptr(), op(f, S::load(chunk.as_ptr()))) };
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut buf = [0.0f32; 64];
        debug_assert!(S::LANES <= buf.len());
        buf[..tail.len()].copy_from_slice(tail);
        // SAFETY: `buf` holds at least LANES floats.
        unsafe { S::store(buf.as_mut_ptr(), op(f, S::load(buf.as_ptr()))) };
        tail.copy_from_slice(&buf[..tail.len()]);
    }
}

/// `x ← f(x)` for every element.
#[inline(always)]
pub(crate) unsafe fn apply_in_place<S: Simd>(f: &ActivationFunction, x: &mut [f32]) {
    // SAFETY: the caller runs on a CPU with this ISA.
    unsafe { map::<S>(f, x, apply::<S>) }
}

/// `y ← f'(x)` for every element, from `y = f(x)`.
#[inline(always)]
pub(crate) unsafe fn derivative_in_place<S: Simd>(f: &ActivationFunction, y: &mut [f32]) {
    // SAFETY: the caller runs on a CPU with this ISA.
    unsafe { map::<S>(f, y, derivative::<S>) }
}
