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
//!
//! int8 ([`Int8`]) multiplies quantised rows: its left operands are not f32
//! values but rows of `u8` quads with a scale (`engine::quantize`), its
//! accumulators hold exact `i32` sums, and each panel carries two more rows
//! of words after its `k.div_ceil(4)` rows: the zero-point corrections and
//! the column scales, which [`Format::finish`] applies to turn the sums into
//! f32 products before the epilogue sees them.

use std::marker::PhantomData;

use crate::kernels::{Int8Dot, Simd};

/// How a tile loads and multiplies one group of `K` k values.
///
/// # Safety
/// Implementations read `S::LANES` words at a slot pointer and `K` floats
/// (or `valid`) at a row pointer: the callers guarantee those are readable.
pub(crate) unsafe trait Format<S: Simd>: Copy + 'static {
    /// k values per word.
    const K: usize;
    /// Floats a row advances per group of `K` k values: `K` for f32 rows,
    /// one word for a quantised row.
    const ROW_STEP: usize = Self::K;
    /// Registers a loaded panel vector (and a broadcast row group) takes,
    /// to size register tiles.
    const REGS: usize;
    /// Rows of words a panel holds after its `k.div_ceil(K)` rows.
    const EXTRA_ROWS: usize = 0;
    /// Whether the left operands are rows converted into the format's own
    /// words ([`Format::convert_row`]: int8's quantised rows, or rows
    /// rounded to bf16 pairs); the epilogues then hand the tile the rows'
    /// converted copies.
    const QUANTIZED: bool = false;
    /// Whether the products run on AMX tiles (`tiles.rs`) instead of the
    /// register tile (`load`, `splat` and `madd` are then never called).
    const TILES: bool = false;
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
    /// Whether a tile multiplies a group in two parts, one after the other
    /// ([`Format::load_part`], [`Format::splat_part`], [`Format::madd_part`]:
    /// bf16's two k values, int8's even and odd bytes), so that a panel
    /// vector and a row's part take one register each, rather than the
    /// whole group at once (`load`, `splat`, `madd`).
    const BY_PART: bool = false;
    /// Registers a panel vector takes in a tile: `REGS`, or one by part.
    const TILE_REGS: usize = if Self::BY_PART { 1 } else { Self::REGS };
    /// Whether a tile over panels of four vectors may read the fourth
    /// from memory ([`Format::madd_folded`]): f32 on an ISA whose FMA
    /// takes a memory operand.
    const FOLDS: bool = false;
    /// [`Simd::madd_row_folded`] for this format: one k value of the row
    /// at `a` against a panel of four vectors, three `held`, the fourth at
    /// `fourth`. Only called where [`Format::FOLDS`].
    #[inline(always)]
    unsafe fn madd_folded(
        _acc: &mut [S::V; 4],
        _a: *const f32,
        _held: [Self::Slot; 3],
        _fourth: *const f32,
    ) {
        unreachable!("only a format that folds loads reads a panel vector from memory")
    }
    /// Part `part` (0 or 1) of a group's panel vector.
    #[inline(always)]
    unsafe fn load_part(_words: *const f32, _part: usize) -> S::V {
        unreachable!("only a format multiplied by part loads parts")
    }
    /// Part `part` of a row's group, broadcast, of which `valid` k values
    /// are the row's (fewer than `K` in a ragged last group).
    #[inline(always)]
    unsafe fn splat_part(_a: *const f32, _part: usize, _valid: usize) -> S::V {
        unreachable!("only a format multiplied by part loads parts")
    }
    /// `acc` plus the products of one part.
    #[inline(always)]
    unsafe fn madd_part(_acc: S::V, _a: S::V, _b: S::V) -> S::V {
        unreachable!("only a format multiplied by part loads parts")
    }
    /// The most groups an accumulator of `madd` takes before [`Format::fold`]
    /// adds it to the tile's total (unbounded for every format but int8 on
    /// a dot product that scales its sums: see `Int8Dot::BLOCK_WORDS`).
    const BLOCK_WORDS: usize = usize::MAX;
    /// `total` plus an accumulator of at most `BLOCK_WORDS` groups.
    #[inline(always)]
    unsafe fn fold(_total: S::V, _block: S::V) -> S::V {
        unreachable!("only a format with BLOCK_WORDS folds")
    }
    /// Words a converted row of `k` values takes (formats with
    /// [`Format::QUANTIZED`] rows).
    #[inline(always)]
    fn row_words(_k: usize) -> usize {
        unreachable!("only formats with converted rows size them")
    }
    /// Converts the row `x` into `out` (at least `row_words(x.len())`
    /// words), for formats with [`Format::QUANTIZED`] rows.
    #[inline(always)]
    unsafe fn convert_row(_x: &[f32], _out: &mut [f32]) {
        unreachable!("only formats with converted rows convert them")
    }
    /// Turns one panel's accumulators of a row (`V` vectors) into its f32
    /// products: `panel` is the panel's first word, `words` its rows of
    /// k words, `a` the row. Nothing to do where the sums are products.
    #[inline(always)]
    unsafe fn finish<const V: usize>(
        _acc: &mut [S::V; V],
        _panel: *const f32,
        _words: usize,
        _a: *const f32,
    ) {
    }
}

/// f32 weights: one value per word.
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32;

// SAFETY: reads one vector at a slot and one float at a row.
unsafe impl<S: Simd> Format<S> for F32 {
    const K: usize = 1;
    const REGS: usize = 1;
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
    const FOLDS: bool = S::FOLDS_LOADS;
    #[inline(always)]
    unsafe fn madd_folded(acc: &mut [S::V; 4], a: *const f32, held: [S::V; 3], fourth: *const f32) {
        // SAFETY: forwarded from the caller (one float at `a`, a vector at `fourth`).
        unsafe { S::madd_row_folded(acc, a, held, fourth) }
    }
}

/// bfloat16 weights, two per word, widened to f32 in registers: every
/// product is the f32 FMA of the rounded weight, in the order the f32
/// format takes (see [`crate::Precision::Bf16`]). With 16 registers (AVX2)
/// a tile takes a word's two k values one at a time ([`Format::BY_PART`]):
/// widened whole, a panel vector takes two registers and the LSTM's
/// four-vector tile one row, whose widening then costs as much as its
/// FMAs (batched bf16 ran at 0.6× f32 on a Zen 1, BENCHMARKS.md "bf16 on
/// AVX2"); by part it takes two rows, as f32 does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16;

// SAFETY: reads one vector of words at a slot and two floats (or `valid`)
// at a row.
unsafe impl<S: Simd> Format<S> for Bf16 {
    const K: usize = 2;
    const REGS: usize = 2;
    const BY_PART: bool = S::REGISTERS <= 16;
    #[inline(always)]
    unsafe fn load_part(words: *const f32, part: usize) -> S::V {
        // SAFETY: forwarded from the caller; the unused half is dropped.
        let (low, high) = unsafe { S::widen_bf16_pairs(words) };
        if part == 0 {
            low
        } else {
            high
        }
    }
    #[inline(always)]
    unsafe fn splat_part(a: *const f32, part: usize, valid: usize) -> S::V {
        // SAFETY: forwarded from the caller; nothing past `valid` is read.
        unsafe {
            match part < valid {
                true => S::splat(*a.add(part)),
                false => S::zero(),
            }
        }
    }
    #[inline(always)]
    unsafe fn madd_part(acc: S::V, a: S::V, b: S::V) -> S::V {
        // SAFETY: the ISA is the caller's contract.
        unsafe { S::fma(a, b, acc) }
    }
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

/// int8 weights, four per word, against quantised rows, with the integer
/// dot product `D` of the ISA: each output is
/// `(Σ u_k·w_k − 128·Σ w_k) · scale_col · scale_row` (see
/// [`crate::Precision::Int8`]). The sums are exact integers, so every ISA
/// and dot product gives the same bits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Int8<D>(PhantomData<D>);

// SAFETY: reads one vector of words at a slot and one word at a row (a
// quantised row is whole words, so a ragged last group reads its word too);
// `finish` reads the panel's two extra rows and the row's scale word, which
// the packing and the quantisation put there.
unsafe impl<S: Simd, D: Int8Dot<S>> Format<S> for Int8<D> {
    const K: usize = 4;
    const REGS: usize = D::REGS;
    const ROW_STEP: usize = 1;
    const EXTRA_ROWS: usize = 2;
    const QUANTIZED: bool = true;
    type Slot = D::Slot;
    type Row = D::Row;
    #[inline(always)]
    unsafe fn empty() -> D::Slot {
        // SAFETY: the ISA is the caller's contract.
        unsafe { D::empty() }
    }
    #[inline(always)]
    unsafe fn load(words: *const f32) -> D::Slot {
        // SAFETY: forwarded from the caller.
        unsafe { D::load(words) }
    }
    #[inline(always)]
    unsafe fn splat(a: *const f32) -> D::Row {
        // SAFETY: forwarded from the caller.
        unsafe { D::splat(a) }
    }
    #[inline(always)]
    unsafe fn splat_tail(a: *const f32, _valid: usize) -> D::Row {
        // SAFETY: a quantised row pads its last word (the weights there are
        // zero), so the whole word is readable.
        unsafe { D::splat(a) }
    }
    #[inline(always)]
    unsafe fn madd(acc: S::V, a: D::Row, b: D::Slot) -> S::V {
        // SAFETY: the ISA is the caller's contract.
        unsafe { D::madd(acc, a, b) }
    }
    const BLOCK_WORDS: usize = D::BLOCK_WORDS;
    const BY_PART: bool = D::BY_PART;
    #[inline(always)]
    unsafe fn load_part(words: *const f32, part: usize) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { D::load_part(words, part) }
    }
    #[inline(always)]
    unsafe fn splat_part(a: *const f32, part: usize, _valid: usize) -> S::V {
        // SAFETY: a quantised row pads its last word, so the whole word is
        // readable (as in `splat_tail`).
        unsafe { D::splat_part(a, part) }
    }
    #[inline(always)]
    unsafe fn madd_part(acc: S::V, a: S::V, b: S::V) -> S::V {
        // SAFETY: the ISA is the caller's contract.
        unsafe { D::madd_part(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn fold(total: S::V, block: S::V) -> S::V {
        // SAFETY: the ISA is the caller's contract.
        unsafe { D::fold(total, block) }
    }
    #[inline(always)]
    fn row_words(k: usize) -> usize {
        crate::kernels::quantize::row_words(k)
    }
    #[inline(always)]
    unsafe fn convert_row(x: &[f32], out: &mut [f32]) {
        crate::kernels::quantize::quantize_row(x, out)
    }
    #[inline(always)]
    unsafe fn finish<const V: usize>(
        acc: &mut [S::V; V],
        panel: *const f32,
        words: usize,
        a: *const f32,
    ) {
        let step = V * S::LANES;
        // SAFETY: a panel holds `words + 2` rows of `V` vectors, a quantised
        // row `words` words and then its scale.
        unsafe {
            let row_scale = S::splat(*a.add(words));
            for v in 0..V {
                let corrections = panel.add(words * step + v * S::LANES);
                let scales = S::load(panel.add((words + 1) * step + v * S::LANES));
                acc[v] = S::mul(S::mul(D::to_f32(acc[v], corrections), scales), row_scale);
            }
        }
    }
}

/// Format `F`'s panels and rows multiplied on AMX tiles (`tiles.rs`):
/// `Tiles<Bf16>` (rows split into two bf16 parts) and `Tiles<Int8<_>>`
/// (`tdpbusd`, the same exact sums). The register methods are `F`'s, and
/// `finish` too, which the tiles call as the register tile does.
#[derive(Clone, Copy, Debug)]
#[cfg(target_arch = "x86_64")]
pub(crate) struct Tiles<F>(PhantomData<F>);

#[cfg(target_arch = "x86_64")]
// SAFETY: as F's, which it forwards to.
unsafe impl<S: Simd, F: Format<S>> Format<S> for Tiles<F> {
    const K: usize = F::K;
    const ROW_STEP: usize = F::ROW_STEP;
    const REGS: usize = F::REGS;
    const EXTRA_ROWS: usize = F::EXTRA_ROWS;
    const QUANTIZED: bool = F::QUANTIZED;
    const TILES: bool = true;
    type Slot = F::Slot;
    type Row = F::Row;
    #[inline(always)]
    unsafe fn empty() -> F::Slot {
        // SAFETY: forwarded from the caller.
        unsafe { F::empty() }
    }
    #[inline(always)]
    unsafe fn load(words: *const f32) -> F::Slot {
        // SAFETY: forwarded from the caller.
        unsafe { F::load(words) }
    }
    #[inline(always)]
    unsafe fn splat(a: *const f32) -> F::Row {
        // SAFETY: forwarded from the caller.
        unsafe { F::splat(a) }
    }
    #[inline(always)]
    unsafe fn splat_tail(a: *const f32, valid: usize) -> F::Row {
        // SAFETY: forwarded from the caller.
        unsafe { F::splat_tail(a, valid) }
    }
    #[inline(always)]
    unsafe fn madd(acc: S::V, a: F::Row, b: F::Slot) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { F::madd(acc, a, b) }
    }
    const BLOCK_WORDS: usize = F::BLOCK_WORDS;
    #[inline(always)]
    unsafe fn fold(total: S::V, block: S::V) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { F::fold(total, block) }
    }
    const BY_PART: bool = F::BY_PART;
    #[inline(always)]
    unsafe fn load_part(words: *const f32, part: usize) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { F::load_part(words, part) }
    }
    #[inline(always)]
    unsafe fn splat_part(a: *const f32, part: usize, valid: usize) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { F::splat_part(a, part, valid) }
    }
    #[inline(always)]
    unsafe fn madd_part(acc: S::V, a: S::V, b: S::V) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { F::madd_part(acc, a, b) }
    }
    #[inline(always)]
    fn row_words(k: usize) -> usize {
        F::row_words(k)
    }
    #[inline(always)]
    unsafe fn convert_row(x: &[f32], out: &mut [f32]) {
        // SAFETY: forwarded from the caller.
        unsafe { F::convert_row(x, out) }
    }
    #[inline(always)]
    unsafe fn finish<const V: usize>(
        acc: &mut [S::V; V],
        panel: *const f32,
        words: usize,
        a: *const f32,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { F::finish(acc, panel, words, a) }
    }
}
