//! The portable fallback: one lane, plain f32 arithmetic. It runs the same
//! generic kernel bodies as the SIMD paths, so it is also the path Miri runs.

use super::{Int8Dot, Simd};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar;

// SAFETY: no intrinsics; load/store require one valid float, as documented.
unsafe impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;
    const W: usize = 8;
    const REGISTERS: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees one readable float at `p`.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees one writable float at `p`.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        // Unfused: a software fmaf would be far slower than the rounding
        // difference is worth.
        a * b + c
    }
    #[inline(always)]
    unsafe fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
        if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        }
    }
    #[inline(always)]
    unsafe fn abs(x: f32) -> f32 {
        x.abs()
    }
    #[inline(always)]
    unsafe fn round(x: f32) -> f32 {
        x.round_ties_even()
    }
    #[inline(always)]
    unsafe fn pow2i(n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    unsafe fn select_lt(a: f32, b: f32, x: f32, y: f32) -> f32 {
        if a < b {
            x
        } else {
            y
        }
    }
    #[inline(always)]
    unsafe fn select_nan(v: f32, if_nan: f32, other: f32) -> f32 {
        if v.is_nan() {
            if_nan
        } else {
            other
        }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const f32) -> (f32, f32) {
        // SAFETY: the caller guarantees one readable word at `p`.
        let word = unsafe { *p.cast::<u32>() };
        (
            f32::from_bits(word << 16),
            f32::from_bits(word & 0xFFFF_0000),
        )
    }
}

/// int8 products one column at a time: the four `u8` × `i8` products of a
/// word, summed in `i32` (the oracle the SIMD dot products equal).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dot;

/// The four bytes of a word, smallest k first.
fn bytes(word: f32) -> [u8; 4] {
    word.to_bits().to_le_bytes()
}

// SAFETY: reads one word at each pointer.
unsafe impl Int8Dot<Scalar> for Dot {
    const REGS: usize = 1;
    type Slot = f32;
    type Row = f32;
    #[inline(always)]
    unsafe fn empty() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees one readable word at `p`.
        unsafe { p.read() }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees one readable word at `p`.
        unsafe { p.read() }
    }
    #[inline(always)]
    unsafe fn madd(acc: f32, a: f32, b: f32) -> f32 {
        let sum = bytes(a)
            .into_iter()
            .zip(bytes(b))
            .fold(acc.to_bits() as i32, |s, (a, w)| {
                s.wrapping_add(i32::from(a) * i32::from(w as i8))
            });
        f32::from_bits(sum as u32)
    }
    #[inline(always)]
    unsafe fn to_f32(acc: f32, corr: *const f32) -> f32 {
        // SAFETY: the caller guarantees one readable word at `corr`.
        let corr = unsafe { corr.read() }.to_bits() as i32;
        (acc.to_bits() as i32).wrapping_sub(corr) as f32
    }
}

super::fused::instantiate_kernels!(Scalar);
