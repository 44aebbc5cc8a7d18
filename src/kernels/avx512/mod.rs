//! AVX-512F: 16 lanes of f32 in a `__m512`.

use super::Simd;
use std::arch::x86_64::*;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512;

// SAFETY: every method is only reached through `Kernels::for_isa(Isa::Avx512)`,
// which checks `is_x86_feature_detected!("avx512f")` first; load/store need
// 16 valid floats, which the kernels guarantee by padding.
unsafe impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    const W: usize = 1;
    const REGISTERS: usize = 32;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn clamp(x: __m512, lo: __m512, hi: __m512) -> __m512 {
        // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
        unsafe {
            let clamped = _mm512_max_ps(lo, _mm512_min_ps(hi, x));
            Self::select_nan(x, x, clamped)
        }
    }
    #[inline(always)]
    unsafe fn abs(x: __m512) -> __m512 {
        unsafe { _mm512_abs_ps(x) }
    }
    #[inline(always)]
    unsafe fn round(x: __m512) -> __m512 {
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x) }
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m512) -> __m512 {
        // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
        unsafe {
            let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
                _mm512_cvtps_epi32(n),
                _mm512_set1_epi32(127),
            ));
            _mm512_castsi512_ps(bits)
        }
    }
    #[inline(always)]
    unsafe fn select_lt(a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
        unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b), y, x) }
    }
    #[inline(always)]
    unsafe fn select_nan(v: __m512, if_nan: __m512, other: __m512) -> __m512 {
        unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), other, if_nan) }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const f32) -> (__m512, __m512) {
        // SAFETY: the caller guarantees 16 readable words at `p`.
        unsafe {
            let words = _mm512_loadu_si512(p.cast());
            let low = _mm512_slli_epi32::<16>(words);
            let high = _mm512_and_si512(words, _mm512_set1_epi32(0xFFFF_0000u32 as i32));
            (_mm512_castsi512_ps(low), _mm512_castsi512_ps(high))
        }
    }
}

super::fused::instantiate_kernels!(Avx512, #[target_feature(enable = "avx512f")]);
