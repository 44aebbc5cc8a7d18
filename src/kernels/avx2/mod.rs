//! AVX2 + FMA: 8 lanes of f32 in a `__m256`.

use super::{Int8Dot, Simd};
use std::arch::x86_64::*;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2;

// SAFETY: every method is only reached through `Kernels::for_isa(Isa::Avx2)`,
// which checks `is_x86_feature_detected!("avx2")` and `("fma")` first;
// load/store need 8 valid floats, which the kernels guarantee by padding.
unsafe impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    const W: usize = 1;
    const REGISTERS: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn clamp(x: __m256, lo: __m256, hi: __m256) -> __m256 {
        // min/max return their second operand when either is NaN: keep x second.
        unsafe { _mm256_max_ps(lo, _mm256_min_ps(hi, x)) }
    }
    #[inline(always)]
    unsafe fn abs(x: __m256) -> __m256 {
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), x) }
    }
    #[inline(always)]
    unsafe fn round(x: __m256) -> __m256 {
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x) }
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m256) -> __m256 {
        // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
        unsafe {
            let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            _mm256_castsi256_ps(bits)
        }
    }
    #[inline(always)]
    unsafe fn select_lt(a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
        unsafe { _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)) }
    }
    #[inline(always)]
    unsafe fn select_nan(v: __m256, if_nan: __m256, other: __m256) -> __m256 {
        unsafe { _mm256_blendv_ps(other, if_nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const f32) -> (__m256, __m256) {
        // SAFETY: the caller guarantees 8 readable words at `p`.
        unsafe {
            let words = _mm256_loadu_si256(p.cast());
            let low = _mm256_slli_epi32::<16>(words);
            let high = _mm256_and_si256(words, _mm256_set1_epi32(0xFFFF_0000u32 as i32));
            (_mm256_castsi256_ps(low), _mm256_castsi256_ps(high))
        }
    }
}

/// int8 products: the `u8` row values and `i8` weights of each word split
/// into their even and odd bytes as 16-bit lanes, and `vpmaddwd` sums each
/// pair of products into 32 bits. Every product is at most 255 · 128 in
/// magnitude, so nothing saturates (as `vpmaddubsw` would): exact sums.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dot;

// SAFETY: reached only through the AVX2 table (AVX2 checked); reads 8
// words at a slot, one at a row, 8 at a correction row.
unsafe impl Int8Dot<Avx2> for Dot {
    const REGS: usize = 2;
    type Slot = (__m256i, __m256i);
    type Row = (__m256i, __m256i);
    #[inline(always)]
    unsafe fn empty() -> (__m256i, __m256i) {
        unsafe { (_mm256_setzero_si256(), _mm256_setzero_si256()) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> (__m256i, __m256i) {
        // SAFETY: the caller guarantees 8 readable words at `p`.
        unsafe {
            let w = _mm256_loadu_si256(p.cast());
            // Bytes 0 and 2 of each word, sign-extended; then bytes 1 and 3.
            let even = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(w));
            (even, _mm256_srai_epi16::<8>(w))
        }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> (__m256i, __m256i) {
        // SAFETY: the caller guarantees one readable word at `p`.
        unsafe {
            let a = _mm256_set1_epi32(p.cast::<i32>().read_unaligned());
            let even = _mm256_and_si256(a, _mm256_set1_epi32(0x00FF_00FF));
            (even, _mm256_srli_epi16::<8>(a))
        }
    }
    #[inline(always)]
    unsafe fn madd(acc: __m256, a: (__m256i, __m256i), b: (__m256i, __m256i)) -> __m256 {
        // SAFETY: register operations only; the ISA is the caller's contract.
        unsafe {
            let pairs = _mm256_add_epi32(_mm256_madd_epi16(a.0, b.0), _mm256_madd_epi16(a.1, b.1));
            _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(acc), pairs))
        }
    }
    #[inline(always)]
    unsafe fn to_f32(acc: __m256, corr: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable words at `corr`.
        unsafe {
            let c = _mm256_loadu_si256(corr.cast());
            _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_castps_si256(acc), c))
        }
    }
}

super::fused::instantiate_kernels!(Avx2, #[target_feature(enable = "avx2,fma")]);
