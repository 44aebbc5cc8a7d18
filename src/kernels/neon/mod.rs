//! NEON (AArch64 Advanced SIMD): 4 lanes of f32 in a `float32x4_t`, two
//! vectors per gate so a panel covers 8 hidden units; int8 products with
//! the dot-product extension's `sdot` where the CPU has it, bf16 ones with
//! the BF16 extension's `bfdot` where it pays (`bf16_dot.rs`).

use super::dispatch::{Bf16Dot, StepKernels, Table};

pub(crate) mod bf16_dot;
use super::{Int8Dot, Simd};
use std::arch::aarch64::*;
use std::arch::asm;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon;

// SAFETY: NEON is part of the AArch64 baseline, and `Kernels::for_isa` checks
// it anyway; load/store need 4 valid floats, which the kernels guarantee by
// padding.
unsafe impl Simd for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;
    const W: usize = 2;
    const REGISTERS: usize = 32;

    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vdivq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn clamp(x: float32x4_t, lo: float32x4_t, hi: float32x4_t) -> float32x4_t {
        // vmaxq/vminq propagate NaN.
        unsafe { vmaxq_f32(lo, vminq_f32(hi, x)) }
    }
    #[inline(always)]
    unsafe fn abs(x: float32x4_t) -> float32x4_t {
        unsafe { vabsq_f32(x) }
    }
    #[inline(always)]
    unsafe fn round(x: float32x4_t) -> float32x4_t {
        unsafe { vrndnq_f32(x) }
    }
    #[inline(always)]
    unsafe fn pow2i(n: float32x4_t) -> float32x4_t {
        // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
        unsafe {
            let e = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
            vreinterpretq_f32_s32(vshlq_n_s32::<23>(e))
        }
    }
    #[inline(always)]
    unsafe fn select_lt(
        a: float32x4_t,
        b: float32x4_t,
        x: float32x4_t,
        y: float32x4_t,
    ) -> float32x4_t {
        unsafe { vbslq_f32(vcltq_f32(a, b), x, y) }
    }
    #[inline(always)]
    unsafe fn select_nan(v: float32x4_t, if_nan: float32x4_t, other: float32x4_t) -> float32x4_t {
        // v == v is false exactly for NaN lanes.
        unsafe { vbslq_f32(vceqq_f32(v, v), other, if_nan) }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const f32) -> (float32x4_t, float32x4_t) {
        // SAFETY: the caller guarantees 4 readable words at `p`.
        unsafe {
            let words = vld1q_u32(p.cast());
            let low = vshlq_n_u32::<16>(words);
            let high = vandq_u32(words, vdupq_n_u32(0xFFFF_0000));
            (vreinterpretq_f32_u32(low), vreinterpretq_f32_u32(high))
        }
    }
}

/// int8 products: weights widened to 16 bits, a row's four `u8` values
/// (widened, twice over in a vector) multiplied by two columns' weights at
/// once (each product at most 255 · 127: no 16-bit overflow), then pairwise
/// widening adds fold each column's four products into its 32-bit lane.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dot;

// SAFETY: NEON is the AArch64 baseline; reads 4 words at a slot, one at a
// row, 4 at a correction row.
unsafe impl Int8Dot<Neon> for Dot {
    const REGS: usize = 2;
    type Slot = (int16x8_t, int16x8_t);
    type Row = int16x8_t;
    #[inline(always)]
    unsafe fn empty() -> (int16x8_t, int16x8_t) {
        unsafe { (vdupq_n_s16(0), vdupq_n_s16(0)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> (int16x8_t, int16x8_t) {
        // SAFETY: the caller guarantees 4 readable words at `p`.
        unsafe {
            let w = vld1q_s8(p.cast());
            (vmovl_s8(vget_low_s8(w)), vmovl_high_s8(w))
        }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> int16x8_t {
        // SAFETY: the caller guarantees one readable word at `p`.
        unsafe {
            let a = vreinterpretq_u8_u32(vdupq_n_u32(p.cast::<u32>().read_unaligned()));
            vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(a)))
        }
    }
    #[inline(always)]
    unsafe fn madd(acc: float32x4_t, a: int16x8_t, b: (int16x8_t, int16x8_t)) -> float32x4_t {
        // SAFETY: register operations only; the ISA is the caller's contract.
        unsafe {
            // Columns 0 and 1: [c0 k0+k1, c0 k2+k3, c1 k0+k1, c1 k2+k3]; 2 and 3 alike.
            let low = vpaddlq_s16(vmulq_s16(a, b.0));
            let high = vpaddlq_s16(vmulq_s16(a, b.1));
            let sums = vpaddq_s32(low, high);
            vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(acc), sums))
        }
    }
    #[inline(always)]
    unsafe fn to_f32(acc: float32x4_t, corr: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable words at `corr`.
        unsafe {
            let c = vld1q_s32(corr.cast());
            vcvtq_f32_s32(vsubq_s32(vreinterpretq_s32_f32(acc), c))
        }
    }
}

/// int8 products with the dot-product extension (Armv8.2 `dotprod`): `sdot`
/// sums four `i8` × `i8` products into each 32-bit lane. The row's `u8`
/// values become its signed levels again (`u ^ 0x80 = u − 128`), so the
/// sums are `Σ q_x·q_w` already: `to_f32` leaves out the correction.
/// (Rust's `vdotq_s32` is not stable yet: one instruction of inline asm.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct SdotDot;

// SAFETY: reached only through the sdot step table, which `table` hands
// out after checking `dotprod`; reads 4 words at a slot, one at a row.
unsafe impl Int8Dot<Neon> for SdotDot {
    const REGS: usize = 1;
    type Slot = int8x16_t;
    type Row = int8x16_t;
    #[inline(always)]
    unsafe fn empty() -> int8x16_t {
        // SAFETY: a register-only intrinsic; NEON is baseline on aarch64.
        unsafe { vdupq_n_s8(0) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> int8x16_t {
        // SAFETY: the caller guarantees 4 readable words at `p`.
        unsafe { vld1q_s8(p.cast()) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> int8x16_t {
        // SAFETY: the caller guarantees one readable word at `p`.
        unsafe {
            let word = p.cast::<u32>().read_unaligned() ^ 0x8080_8080;
            vreinterpretq_s8_u32(vdupq_n_u32(word))
        }
    }
    #[inline(always)]
    unsafe fn madd(acc: float32x4_t, a: int8x16_t, b: int8x16_t) -> float32x4_t {
        // SAFETY: a register reinterpretation; NEON is the baseline.
        let mut sums = unsafe { vreinterpretq_s32_f32(acc) };
        // SAFETY: `sdot` only reads and writes these registers; the CPU
        // has the extension (the table is only used where it does).
        unsafe {
            asm!(
                ".arch_extension dotprod",
                "sdot {sums:v}.4s, {a:v}.16b, {b:v}.16b",
                sums = inout(vreg) sums,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags),
            );
            vreinterpretq_f32_s32(sums)
        }
    }
    #[inline(always)]
    unsafe fn to_f32(acc: float32x4_t, _corr: *const f32) -> float32x4_t {
        // The sums are of the signed levels: no correction to take away.
        // SAFETY: register operations only.
        unsafe { vcvtq_f32_s32(vreinterpretq_s32_f32(acc)) }
    }
}

super::fused::instantiate_kernels!(Neon, #[target_feature(enable = "neon")]);

super::fused::step_kernels!(
    Neon,
    sdot_steps,
    fused::Int8<SdotDot>,
    #[target_feature(enable = "neon,dotprod")]
);

/// The int8 step kernels with `sdot`, when this CPU has it.
pub(crate) fn sdot_steps() -> Option<StepKernels> {
    std::arch::is_aarch64_feature_detected!("dotprod").then_some(sdot_steps::STEPS)
}

/// The int8 step kernels without `sdot` (what a CPU without it runs).
#[cfg(test)]
pub(crate) fn widening_int8_steps() -> StepKernels {
    entry::TABLE.int8
}

/// The NEON kernel table, its int8 products on `sdot` where the CPU has it
/// (the same bits as without: the sums are exact), and bf16 LSTM and GRU
/// products on `bfdot` with rounded rows where it has the BF16 extension
/// and `bf16_dot` chooses them.
pub(crate) fn table(bf16_dot: Bf16Dot) -> Table {
    let mut table = entry::TABLE;
    table.bf16_rounded = bf16_dot::rounded_steps(bf16_dot);
    if let Some(steps) = sdot_steps() {
        table.int8 = steps;
        table.int8_one_row = steps;
    }
    table
}
