//! bf16 products on `bfdot` (the Armv8.6 BF16 extension): the rows
//! (inputs, states) are rounded to bf16 pairs once per step, and each
//! instruction multiply-adds two k values per lane, twice the products of
//! an `fmla`. Whether that pays depends on the core's issue rate of
//! `bfdot` against `fmla`: [`rounded_steps`] measures it once per process,
//! by the rule `vdpbf16ps` follows on x86 (`Bf16Dot::pick`). Not
//! measured on Arm hardware: tested under qemu (`-cpu max`) only.
//!
//! Accuracy: each product of two bf16 values is exact in f32; without the
//! EBF16 extension `bfdot` adds a lane's two products and then the
//! accumulator with round-to-odd and flushes denormals, so these kernels
//! do not give the widening path's bits (tested within bf16's accuracy).

use std::arch::aarch64::*;
use std::arch::asm;

use super::Neon;
use crate::kernels::dispatch::{Bf16Dot, StepKernels};
use crate::kernels::fused::Format;

/// bf16 weights times rows rounded to bf16, two k values per word.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoundedRows;

// SAFETY: reached only through `rounded_steps`, which checks `bf16`;
// reads 4 words at a slot and one word at a row (a converted row is whole
// words, its last one padded with zero); `convert_row` writes
// `x.len().div_ceil(2)` words of `out` (checked).
unsafe impl Format<Neon> for RoundedRows {
    const K: usize = 2;
    const ROW_STEP: usize = 1;
    const REGS: usize = 1;
    const QUANTIZED: bool = true;
    type Slot = float32x4_t;
    type Row = float32x4_t;
    #[inline(always)]
    unsafe fn empty() -> float32x4_t {
        // SAFETY: a register-only intrinsic; NEON is baseline on aarch64.
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn load(words: *const f32) -> float32x4_t {
        // SAFETY: 4 readable words (the caller's contract).
        unsafe { vld1q_f32(words) }
    }
    #[inline(always)]
    unsafe fn splat(a: *const f32) -> float32x4_t {
        // SAFETY: one readable word (the caller's contract).
        unsafe { vreinterpretq_f32_u32(vdupq_n_u32(a.cast::<u32>().read_unaligned())) }
    }
    #[inline(always)]
    unsafe fn splat_tail(a: *const f32, _valid: usize) -> float32x4_t {
        // SAFETY: the last word of a converted row is whole (its high half
        // zero), as the panel's is.
        unsafe { Self::splat(a) }
    }
    #[inline(always)]
    unsafe fn madd(acc: float32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        let mut sums = acc;
        // SAFETY: `bfdot` only reads and writes these registers; the CPU
        // has the extension (the table is only used where it does).
        unsafe {
            asm!(
                ".arch_extension bf16",
                "bfdot {sums:v}.4s, {a:v}.8h, {b:v}.8h",
                sums = inout(vreg) sums,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        sums
    }
    #[inline(always)]
    fn row_words(k: usize) -> usize {
        k.div_ceil(2)
    }
    #[inline(always)]
    unsafe fn convert_row(x: &[f32], out: &mut [f32]) {
        crate::kernels::bf16_rows::round_row_pairs(x, out)
    }
}

crate::kernels::fused::step_kernels!(
    Neon,
    rounded_rows_steps,
    crate::kernels::neon::bf16_dot::RoundedRows,
    #[target_feature(enable = "neon,bf16")]
);

/// `iters` rounds of twelve independent chains of the instruction `op`
/// (`bfdot` on `.8h` or `fmla` on `.4s` operands), in inline asm so that
/// the loop is exactly those instructions.
macro_rules! chains {
    ($op:literal, $operands:literal, $iters:expr) => {{
        let mut n: usize = $iters;
        // SAFETY: register operations only (the caller checked the
        // extension); every register written is declared clobbered.
        unsafe {
            asm!(
                ".arch_extension bf16",
                "movi v30.4s, #0",
                "movi v31.4s, #0",
                "2:",
                concat!($op, " v0", $operands),
                concat!($op, " v1", $operands),
                concat!($op, " v2", $operands),
                concat!($op, " v3", $operands),
                concat!($op, " v4", $operands),
                concat!($op, " v5", $operands),
                concat!($op, " v6", $operands),
                concat!($op, " v7", $operands),
                concat!($op, " v16", $operands),
                concat!($op, " v17", $operands),
                concat!($op, " v18", $operands),
                concat!($op, " v19", $operands),
                "subs {n}, {n}, #1",
                "b.ne 2b",
                n = inout(reg) n,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v30") _, out("v31") _,
                options(nostack, nomem),
            );
        }
        std::hint::black_box(n);
    }};
}

#[target_feature(enable = "neon,bf16")]
fn dot_chains(iters: usize) {
    chains!("bfdot", ".4s, v30.8h, v31.8h", iters.max(1));
}

#[target_feature(enable = "neon")]
fn fma_chains(iters: usize) {
    chains!("fmla", ".4s, v30.4s, v31.4s", iters.max(1));
}

/// The issue rate of the dot product over the FMA's here
/// (`bf16_rows::dot_to_fma_rate`).
fn dot_to_fma_rate() -> f64 {
    crate::kernels::bf16_rows::dot_to_fma_rate(
        // SAFETY: the callers checked the BF16 extension.
        |iters| unsafe { dot_chains(iters) },
        // SAFETY: as above.
        |iters| unsafe { fma_chains(iters) },
    )
}

/// Whether this CPU has the instruction.
fn detected() -> bool {
    std::arch::is_aarch64_feature_detected!("bf16")
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
