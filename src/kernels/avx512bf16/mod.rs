//! AVX-512 with the BF16 extension: the AVX-512 kernels, with bf16
//! weights multiplied by `vdpbf16ps` (two bf16 products per lane, f32
//! accumulation) instead of widened to f32: the rows (inputs, states) are
//! rounded to bf16 too, a block of k at a time inside each tile, which
//! doubles the products per instruction. f32 models run exactly the
//! AVX-512 kernels.
//!
//! `vdpbf16ps` adds each lane's two products in its own order (the odd k
//! first) and flushes denormals, so this path does not reproduce the
//! widening path's bits; it is tested against it within bf16's accuracy.

use super::avx512::Avx512;
use super::fused::Format;
use super::Simd;
use std::arch::x86_64::*;

/// bf16 weights and bf16-rounded rows, multiplied by `vdpbf16ps`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16Dot;

/// The lowest `n` (at most 16) lanes.
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

// SAFETY: reached only through `Kernels::for_isa(Isa::Avx512Bf16)`, which
// checks avx512f and avx512bf16; loads 16 words at a slot, reads `count`
// floats when staging (masked loads past them touch nothing) and writes
// `count.div_ceil(2)` words.
unsafe impl Format<Avx512> for Bf16Dot {
    const K: usize = 2;
    const REGISTERS: usize = 1;
    const STAGED: bool = true;
    type Slot = __m512bh;
    type Row = __m512bh;
    #[inline(always)]
    unsafe fn empty() -> __m512bh {
        // SAFETY: the ISA is the caller's contract; a bit cast.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()) }
    }
    #[inline(always)]
    unsafe fn load(words: *const f32) -> __m512bh {
        // SAFETY: 16 readable words (the caller's contract); a bit cast.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(words.cast())) }
    }
    #[inline(always)]
    unsafe fn splat(_a: *const f32) -> __m512bh {
        unreachable!("a staged format broadcasts staged words")
    }
    #[inline(always)]
    unsafe fn splat_tail(_a: *const f32, _valid: usize) -> __m512bh {
        unreachable!("a staged format broadcasts staged words")
    }
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512bh, b: __m512bh) -> __m512 {
        // SAFETY: the ISA is the caller's contract.
        unsafe { _mm512_dpbf16_ps(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn stage(src: *const f32, count: usize, dst: *mut u32) {
        // SAFETY: `count` readable floats at `src` and `count.div_ceil(2)`
        // writable words at `dst` (the caller's contract); masked loads
        // and stores touch only their set lanes.
        unsafe {
            let mut i = 0;
            while i + 32 <= count {
                let low = _mm512_loadu_ps(src.add(i));
                let high = _mm512_loadu_ps(src.add(i + 16));
                let words =
                    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
                _mm512_storeu_si512(dst.add(i / 2).cast(), words);
                i += 32;
            }
            if i < count {
                let rest = count - i;
                let low = _mm512_maskz_loadu_ps(lanes(rest), src.add(i));
                let high =
                    _mm512_maskz_loadu_ps(lanes(rest.saturating_sub(16)), src.wrapping_add(i + 16));
                let words =
                    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
                _mm512_mask_storeu_epi32(dst.add(i / 2).cast(), lanes(rest.div_ceil(2)), words);
            }
        }
    }
    #[inline(always)]
    unsafe fn splat_staged(word: *const u32) -> __m512bh {
        // SAFETY: one readable word (the caller's contract); a bit cast.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*word as i32)) }
    }
}

super::fused::instantiate_kernels!(
    Avx512,
    bf16 = crate::kernels::avx512bf16::Bf16Dot,
    #[target_feature(enable = "avx512f,avx512bf16")]
);
