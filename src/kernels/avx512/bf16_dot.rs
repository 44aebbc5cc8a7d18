//! bf16 products on `vdpbf16ps` (AVX-512 BF16): the rows (inputs, states)
//! are rounded to bf16 pairs once per step, and each instruction
//! multiply-adds two k values per lane, twice the products of an f32 FMA.
//! Where the CPU issues it about as often as an FMA (Zen 4: 3.4 per ns
//! each) that doubles the arithmetic rate; where it issues a third as
//! often (Sapphire Rapids: 1.7 against 6.0) the widening kernels are
//! faster. [`rounded_steps`] measures which, once per process.
//!
//! Accuracy: every product of two bf16 values is exact in f32, so the
//! error beyond the rounded weights is the rounding of the rows (a
//! relative 2⁻⁹ each) and f32 sums in another order: `vdpbf16ps` adds a
//! lane's two products one after the other, the odd k first, and treats
//! denormals as zero. These kernels therefore do not give the widening
//! path's bits; `engine` tests bound their distance from f32.

use std::arch::x86_64::*;

use super::Avx512;
use crate::kernels::dispatch::{Bf16Dot, StepKernels};
use crate::kernels::fused::Format;

/// bf16 weights times rows rounded to bf16, two k values per word.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoundedRows;

/// The lowest `n` (at most 16) lanes.
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

// SAFETY: reached only through `rounded_steps`, which checks avx512bf16
// (and the table, avx512f and bw); reads 16 words at a slot and one word at
// a row (a converted row is whole words, its last one padded with zero);
// `convert_row` reads `x` and writes `x.len().div_ceil(2)` words of `out`.
unsafe impl Format<Avx512> for RoundedRows {
    const K: usize = 2;
    const ROW_STEP: usize = 1;
    const REGS: usize = 1;
    const QUANTIZED: bool = true;
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
    unsafe fn splat(a: *const f32) -> __m512bh {
        // SAFETY: one readable word (the caller's contract); a bit cast.
        unsafe {
            let word = a.cast::<i32>().read_unaligned();
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(word))
        }
    }
    #[inline(always)]
    unsafe fn splat_tail(a: *const f32, _valid: usize) -> __m512bh {
        // SAFETY: the last word of a converted row is whole (its high half
        // zero), as the panel's is.
        unsafe { Self::splat(a) }
    }
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512bh, b: __m512bh) -> __m512 {
        // SAFETY: the ISA is the caller's contract.
        unsafe { _mm512_dpbf16_ps(acc, a, b) }
    }
    #[inline(always)]
    fn row_words(k: usize) -> usize {
        k.div_ceil(2)
    }
    #[inline(always)]
    unsafe fn convert_row(x: &[f32], out: &mut [f32]) {
        let count = x.len();
        assert!(out.len() >= count.div_ceil(2), "room for the row's words");
        let (src, dst) = (x.as_ptr(), out.as_mut_ptr());
        // SAFETY: every load reads inside `x` (masked past its end) and
        // every store writes inside `out` (checked above); the ISA is the
        // caller's contract. vcvtne2ps2bf16 puts its second operand in
        // the low 16 values: pairs of consecutive x in each word, the
        // smaller index in the low half, as the panels' words.
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
}

crate::kernels::fused::step_kernels!(
    Avx512,
    rounded_rows_steps,
    crate::kernels::avx512::bf16_dot::RoundedRows,
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
);

/// `iters` rounds of twelve independent chains of the instruction `op`
/// (`vdpbf16ps` or `vfmadd231ps` on zmm registers), in inline asm so that
/// the loop is exactly those instructions: the compiler's version of a
/// `vdpbf16ps` loop spilled half its accumulators to the stack.
///
/// It ends with `vzeroupper`, which the compiler adds at the end of its
/// own AVX code but not after inline asm: without it the thread kept
/// dirty upper register halves, and every legacy-SSE instruction after it
/// on that thread (the caller's code, compiled for baseline x86-64, and
/// librnn's own) paid a merge on Intel cores: char_rnn's softmax, plain
/// scalar Rust, ran 30× slower on the Xeon (BENCHMARKS.md, twenty-ninth
/// session).
macro_rules! chains {
    ($op:literal, $iters:expr) => {{
        let mut n: usize = $iters;
        // SAFETY: register operations only (the caller checked the ISA);
        // every register written is declared clobbered.
        unsafe {
            std::arch::asm!(
                "vpxord zmm30, zmm30, zmm30",
                "vpxord zmm31, zmm31, zmm31",
                "2:",
                concat!($op, " zmm0, zmm30, zmm31"),
                concat!($op, " zmm1, zmm30, zmm31"),
                concat!($op, " zmm2, zmm30, zmm31"),
                concat!($op, " zmm3, zmm30, zmm31"),
                concat!($op, " zmm4, zmm30, zmm31"),
                concat!($op, " zmm5, zmm30, zmm31"),
                concat!($op, " zmm6, zmm30, zmm31"),
                concat!($op, " zmm7, zmm30, zmm31"),
                concat!($op, " zmm8, zmm30, zmm31"),
                concat!($op, " zmm9, zmm30, zmm31"),
                concat!($op, " zmm10, zmm30, zmm31"),
                concat!($op, " zmm11, zmm30, zmm31"),
                "dec {n}",
                "jnz 2b",
                "vzeroupper",
                n = inout(reg) n,
                // vzeroupper clears the upper halves of zmm0-15: all clobbered.
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                out("zmm30") _, out("zmm31") _,
                options(nostack, nomem),
            );
        }
        std::hint::black_box(n);
    }};
}

#[target_feature(enable = "avx512f,avx512bf16")]
fn dot_chains(iters: usize) {
    chains!("vdpbf16ps", iters.max(1));
}

#[target_feature(enable = "avx512f")]
fn fma_chains(iters: usize) {
    chains!("vfmadd231ps", iters.max(1));
}

/// The issue rate of the dot product over the FMA's here
/// (`bf16_rows::dot_to_fma_rate`).
fn dot_to_fma_rate() -> f64 {
    crate::kernels::bf16_rows::dot_to_fma_rate(
        // SAFETY: the callers checked avx512f and avx512bf16.
        |iters| unsafe { dot_chains(iters) },
        // SAFETY: as above.
        |iters| unsafe { fma_chains(iters) },
    )
}

/// Whether this CPU has the instruction.
fn detected() -> bool {
    is_x86_feature_detected!("avx512bf16")
}

/// The bf16 step kernels with rounded rows, where this CPU has the
/// instruction and `mode` picks them ([`Bf16Dot::pick`]).
pub(crate) fn rounded_steps(mode: Bf16Dot) -> Option<StepKernels> {
    mode.pick(detected(), dot_to_fma_rate, rounded_rows_steps::STEPS)
}

/// [`dot_to_fma_rate`], for the benchmarks' report.
pub(crate) fn measured_rate() -> Option<f64> {
    detected().then(dot_to_fma_rate)
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    /// Whether the upper halves of ymm0-15 or zmm0-15 are in use (not in
    /// their initial, zeroed state) on this thread: XINUSE bits 2 and 6,
    /// from `xgetbv` with ECX = 1; `None` where the CPU cannot say.
    fn upper_halves_in_use() -> Option<bool> {
        // CPUID leaf 0xD, sub-leaf 1, EAX bit 2: XGETBV takes ECX = 1.
        #[allow(unused_unsafe)]
        // SAFETY: cpuid exists on every x86-64 CPU.
        let leaf = unsafe { std::arch::x86_64::__cpuid_count(0xD, 1) };
        if leaf.eax & (1 << 2) == 0 {
            return None;
        }
        let in_use: u32;
        // SAFETY: xgetbv with ECX = 1 exists where the bit above says so;
        // it reads registers only.
        unsafe {
            std::arch::asm!(
                "xgetbv",
                in("ecx") 1u32,
                out("eax") in_use,
                out("edx") _,
                options(nomem, nostack, preserves_flags),
            )
        };
        Some(in_use & ((1 << 2) | (1 << 6)) != 0)
    }

    /// The measurement's inline asm leaves no dirty upper halves behind,
    /// which would slow every legacy-SSE instruction the thread runs next
    /// on Intel cores. Asserts where the CPU has AVX-512 BF16 and says
    /// which state is in use.
    #[test]
    fn measuring_the_dot_product_rate_leaves_the_upper_halves_clean() {
        if !detected() || upper_halves_in_use().is_none() {
            eprintln!("no AVX-512 BF16 or no XGETBV with ECX = 1 here: nothing to check");
            return;
        }
        let rate = dot_to_fma_rate();
        assert_eq!(
            upper_halves_in_use(),
            Some(false),
            "the rate measurement ({rate:.2}) left dirty upper halves"
        );
    }
}
