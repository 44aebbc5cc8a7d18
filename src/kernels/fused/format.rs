//! Weight formats of the packed panels, as the tile core multiplies them.
//!
//! A packed panel is rows of 32-bit words, one vector's width of words per
//! gate vector, each word holding `K` consecutive k values of one output
//! column (f32: one value; bf16: two, the smaller k in the low half). So a
//! panel of `k` rows holds `k.div_ceil(K)` rows of words, laid out as the
//! f32 panel is, and the one tile core runs every format: per group of `K`
//! k values it loads each panel vector once ([`Format::load`]), broadcasts
//! the row's `K` values ([`Format::splat`]) and multiply-adds
//! ([`Format::madd`]). Words are stored in `f32` buffers (as raw bits for
//! the reduced formats); only the packing and these loads look inside.

use crate::kernels::Simd;

/// How a tile loads and multiplies one group of `K` k values.
///
/// # Safety
/// Implementations read `S::LANES` words at a slot pointer and `K` floats
/// (or `valid`) at a row pointer: the callers guarantee those are readable.
pub(crate) unsafe trait Format<S: Simd>: Copy + 'static {
    /// k values per word.
    const K: usize;
    /// A group's panel vector, loaded (and widened).
    type Slot: Copy;
    /// A row's group of `K` values, broadcast.
    type Row: Copy;
    /// A placeholder to initialise register arrays.
    unsafe fn empty() -> Self::Slot;
    unsafe fn load(words: *const f32) -> Self::Slot;
    /// Broadcasts `a[0..K]`.
    unsafe fn splat(a: *const f32) -> Self::Row;
    /// Broadcasts `a[0..valid]` (`valid < K`, the last group of a ragged
    /// `k`) and zeros for the rest; nothing past `valid` is read.
    unsafe fn splat_tail(a: *const f32, valid: usize) -> Self::Row;
    /// `acc` plus the group's products, one FMA per k value, in k order.
    unsafe fn madd(acc: S::V, a: Self::Row, b: Self::Slot) -> S::V;
}

/// f32 weights: one value per word.
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32;

// SAFETY: reads one vector at a slot and one float at a row.
unsafe impl<S: Simd> Format<S> for F32 {
    const K: usize = 1;
    type Slot = S::V;
    type Row = S::V;
    #[inline(always)]
    unsafe fn empty() -> S::V {
        // SAFETY: the ISA is the caller's contract.
        unsafe { S::zero() }
    }
    #[inline(always)]
    unsafe fn load(words: *const f32) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { S::load(words) }
    }
    #[inline(always)]
    unsafe fn splat(a: *const f32) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { S::splat(*a) }
    }
    #[inline(always)]
    unsafe fn splat_tail(_a: *const f32, _valid: usize) -> S::V {
        unreachable!("one value per word leaves no partial group")
    }
    #[inline(always)]
    unsafe fn madd(acc: S::V, a: S::V, b: S::V) -> S::V {
        // SAFETY: the ISA is the caller's contract.
        unsafe { S::fma(a, b, acc) }
    }
}

/// bfloat16 weights, two per word, widened to f32 in registers: every
/// product is the f32 FMA of the rounded weight, in the order the f32
/// format takes (see [`crate::Precision::Bf16`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16;

// SAFETY: reads one vector of words at a slot and two floats (or `valid`)
// at a row.
unsafe impl<S: Simd> Format<S> for Bf16 {
    const K: usize = 2;
    type Slot = (S::V, S::V);
    type Row = (S::V, S::V);
    #[inline(always)]
    unsafe fn empty() -> (S::V, S::V) {
        // SAFETY: the ISA is the caller's contract.
        unsafe { (S::zero(), S::zero()) }
    }
    #[inline(always)]
    unsafe fn load(words: *const f32) -> (S::V, S::V) {
        // SAFETY: forwarded from the caller.
        unsafe { S::widen_bf16_pairs(words) }
    }
    #[inline(always)]
    unsafe fn splat(a: *const f32) -> (S::V, S::V) {
        // SAFETY: forwarded from the caller.
        unsafe { (S::splat(*a), S::splat(*a.add(1))) }
    }
    #[inline(always)]
    unsafe fn splat_tail(a: *const f32, _valid: usize) -> (S::V, S::V) {
        // SAFETY: `valid` is 1 here: only `a[0]` is read.
        unsafe { (S::splat(*a), S::zero()) }
    }
    #[inline(always)]
    unsafe fn madd(acc: S::V, a: (S::V, S::V), b: (S::V, S::V)) -> S::V {
        // SAFETY: the ISA is the caller's contract.
        unsafe { S::fma(a.1, b.1, S::fma(a.0, b.0, acc)) }
    }
}
