//! SIMD kernels: one folder per instruction set, one generic body per kernel.
//!
//! Public API here: [`Isa`] (also at the crate root), the vectorised
//! [`dispatch::tanh_in_place`] and [`dispatch::sigmoid_in_place`] with their
//! error bound [`math::MAX_ULP`], and [`dispatch::measure_fma_peak`]; the
//! kernels themselves are internal.
//!
//! Every kernel is written once, generically over the `Simd` trait (a
//! vector of f32 lanes with the dozen operations the kernels use), in
//! [`math`] (tanh, logistic) and `fused` (the recurrent step with its gate
//! epilogue, and the element-wise backward of each cell). Each ISA folder
//! implements `Simd` with its intrinsics and instantiates the generic
//! bodies inside `#[target_feature]` functions, so the generic code is
//! compiled for that ISA. [`dispatch`] picks the ISA once at run time.
//!
//! A kernel knows nothing of layers or directions: it sees rows, panels and
//! pointers.

pub(crate) mod activation;
pub(crate) mod bf16_rows;
pub(crate) mod cache;
pub mod dispatch;
pub(crate) mod fused;
pub mod math;
pub(crate) mod quantize;
pub(crate) mod transpose;

mod scalar;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) use avx512::{bw_int8_steps as avx512_bw_int8_steps, vnni_steps as avx512_vnni_steps};
pub use dispatch::Isa;
pub(crate) use dispatch::Kernels;
#[cfg(all(test, target_arch = "aarch64"))]
pub(crate) use neon::{
    sdot_steps as neon_sdot_steps, widening_int8_steps as neon_widening_int8_steps,
};

/// A vector of `LANES` f32 values and the operations the kernels need.
///
/// # Safety
/// Implementations call ISA intrinsics; every method may only run on a CPU
/// that has the ISA, and `load`/`store` need `LANES` valid floats at the
/// pointer. The generic kernels are only reached through [`Kernels`], which
/// is only built for an ISA the CPU supports.
pub(crate) unsafe trait Simd: Copy + 'static {
    type V: Copy;
    const LANES: usize;
    /// Vectors per gate in one panel: a panel covers `W * LANES` hidden units.
    const W: usize;
    /// Architectural vector registers, to size register tiles.
    const REGISTERS: usize;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused where the ISA has FMA.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `x` clamped to `[lo, hi]`; a NaN `x` stays NaN.
    unsafe fn clamp(x: Self::V, lo: Self::V, hi: Self::V) -> Self::V;
    unsafe fn abs(x: Self::V) -> Self::V;
    /// Round to the nearest integer (ties to even).
    unsafe fn round(x: Self::V) -> Self::V;
    /// `2^n` for integral `n` in `[-126, 127]`, by building the exponent bits.
    unsafe fn pow2i(n: Self::V) -> Self::V;
    /// Lane-wise `if a < b { x } else { y }`.
    unsafe fn select_lt(a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// Lane-wise `if v.is_nan() { if_nan } else { other }`.
    unsafe fn select_nan(v: Self::V, if_nan: Self::V, other: Self::V) -> Self::V;
    /// Loads `LANES` 32-bit words, each holding two bf16 values, and widens
    /// them to f32 (exactly: a bf16 is the upper half of an f32): the values
    /// in the low halves, then those in the high halves.
    unsafe fn widen_bf16_pairs(p: *const f32) -> (Self::V, Self::V);

    /// Whether an FMA can take a vector operand straight from memory (x86),
    /// so that a register tile may leave a panel vector out of the register
    /// file ([`Simd::madd_row_folded`]).
    const FOLDS_LOADS: bool = false;

    /// One k value of a row against a panel of four vectors, in a tile
    /// that holds three of them in registers and reads the fourth from
    /// memory: `acc[v] += a[0] · panel[v]`, with `held` the first three
    /// vectors and `fourth` the address of the last. The same FMAs as
    /// with all four held; only the register use differs. Only called
    /// where [`Simd::FOLDS_LOADS`], whose ISAs implement it.
    #[inline(always)]
    unsafe fn madd_row_folded(
        _acc: &mut [Self::V; 4],
        _a: *const f32,
        _held: [Self::V; 3],
        _fourth: *const f32,
    ) {
        unreachable!("only an ISA that folds loads reads a panel vector from memory")
    }
}

/// The integer dot product of an ISA, for int8 weights against quantised
/// rows (`kernels::fused::format::Int8`): accumulators are `S::V` vectors
/// whose lanes hold `i32` sums (as raw bits).
///
/// # Safety
/// As `Simd`: only run on a CPU with the ISA (and the dot product's own
/// features); `load` needs `S::LANES` readable words, `splat` and `to_f32`
/// one word and `S::LANES` words.
pub(crate) unsafe trait Int8Dot<S: Simd>: Copy + 'static {
    /// Registers a loaded slot (and a broadcast row) takes.
    const REGS: usize;
    type Slot: Copy;
    type Row: Copy;
    unsafe fn empty() -> Self::Slot;
    /// Loads `S::LANES` words, each four `i8` weights of one column (the
    /// smallest k in the low byte).
    unsafe fn load(p: *const f32) -> Self::Slot;
    /// Broadcasts the word at `p`: four `u8` values of a quantised row.
    unsafe fn splat(p: *const f32) -> Self::Row;
    /// Per lane, `acc + SCALE · Σ_{i<4} a_i · w_i` in wrapping `i32`
    /// arithmetic, where `SCALE` is 1 for a dot product with
    /// [`Int8Dot::BLOCK_WORDS`] unbounded (exact: see `engine::quantize`
    /// for the bounds), or the power of two that [`Int8Dot::fold`] divides
    /// by.
    unsafe fn madd(acc: S::V, a: Self::Row, b: Self::Slot) -> S::V;
    /// Whether a tile takes each word's even bytes, then its odd ones
    /// ([`Int8Dot::load_part`], [`Int8Dot::splat_part`],
    /// [`Int8Dot::madd_part`]; see `Format::BY_PART`).
    const BY_PART: bool = false;
    /// The even (`part` 0) or odd bytes of `S::LANES` weight words.
    #[inline(always)]
    unsafe fn load_part(_p: *const f32, _part: usize) -> S::V {
        unreachable!("only a dot product by part loads parts")
    }
    /// The even or odd bytes of the row word at `p`, broadcast.
    #[inline(always)]
    unsafe fn splat_part(_p: *const f32, _part: usize) -> S::V {
        unreachable!("only a dot product by part loads parts")
    }
    /// `acc` plus the products of one part (scaled as `madd`'s).
    #[inline(always)]
    unsafe fn madd_part(_acc: S::V, _a: S::V, _b: S::V) -> S::V {
        unreachable!("only a dot product by part loads parts")
    }
    /// The most words an accumulator of `madd` takes before [`Int8Dot::fold`]
    /// adds it to a total (unbounded: `madd` sums exactly, no fold).
    const BLOCK_WORDS: usize = usize::MAX;
    /// Per lane, `total + block / SCALE` (see [`Int8Dot::madd`]), exact:
    /// `block` is a multiple of `SCALE` that did not wrap.
    #[inline(always)]
    unsafe fn fold(_total: S::V, _block: S::V) -> S::V {
        unreachable!("only a dot product with a scaled madd folds")
    }
    /// Per lane, `acc − corr` in `i32`, converted to f32 (to nearest).
    unsafe fn to_f32(acc: S::V, corr: *const f32) -> S::V;
}

/// Hidden units per panel for ISA `S`: hidden sizes are padded to a multiple.
pub(crate) const fn unit<S: Simd>() -> usize {
    S::W * S::LANES
}
