//! Rows times packed bf16 or int8 panels on AMX tiles
//! ([`crate::Isa::Amx`]): what `for_rows` does for the formats multiplied
//! in registers, with the products formed by `tdpbf16ps` (bf16) or
//! `tdpbusd` (int8), for the same panels and epilogues.
//!
//! int8 needs nothing new: its quantised rows are `u8` quads and its panel
//! words `i8` quads, the layouts `tdpbusd` takes, and its exact `i32` sums
//! are finished (corrections, scales) as in registers: the same bits as
//! every ISA. The rest of these notes are about bf16.
//!
//! The weights are the bf16 panels as packed for every ISA (each word two
//! consecutive k values of one column, the smaller k in the low half: the
//! layout AMX takes for B). The rows are f32, and each becomes two bf16
//! rows, `hi = bf16(x)` and `lo = bf16(x − hi)`, both multiplied: `x` is
//! carried to 16 significant bits (the widening path carries all 24), so a
//! bf16 model's error on AMX stays that of its rounded weights rather than
//! adding the rounding of every state and input (see `Precision::Bf16`).
//!
//! Tiles: the rows go in groups of at most 16, as equal in size as can be,
//! two groups at a time; the columns in tiles of 16 (one gate vector of a
//! panel on AVX-512), two at a time. tmm0–3 accumulate (group × column
//! tile), tmm4–5 hold a group's 32 k values of one part (hi, then lo), and
//! tmm6–7 the 16 word rows of a column tile. Each output is one chain of
//! tile products over k in blocks of 32, in k order, hi before lo, and the
//! products of a row do not depend on the other rows of its tile: any split
//! of the rows or panels across threads gives the same bits.

use super::{Epilogue, Format, Simd};
use crate::kernels::amx::{self, TileConfig, MAX_ROWS, ROW_BYTES};

/// f32 columns of an accumulator tile (one 64-byte row).
const TILE_COLUMNS: usize = ROW_BYTES / 4;
/// bf16 k values of a left-operand tile row.
const K_BLOCK: usize = ROW_BYTES / 2;
/// Word rows (k pairs) of a weight tile.
const WORD_ROWS: usize = K_BLOCK / 2;
/// Column tiles per chunk of panels: the accumulator buffer's width.
const CHUNK_TILES: usize = 4;
/// The most staged values a thread keeps between calls (1 MiB).
const STAGE_KEPT: usize = 1 << 19;
/// Blocks ahead that the one-group loop asks for its weights.
const PREFETCH: usize = 2;

crate::thread_slot::thread_slot!(
    /// This thread's rows as bf16 parts, reused from call to call (a
    /// thread slot: freed with the thread even where a C thread's TLS
    /// destructor made the call).
    static STAGE: Vec<u16>
);

#[repr(C, align(64))]
struct Aligned<T>(T);

/// Splits `valid` (≤ 32) floats at `x` (zeros past them) into their hi
/// and lo bf16 parts, 32 of each at `hi` and `lo`: `hi = bf16(x)` and
/// `lo = bf16(x − hi)`, both rounded to nearest even (`vcvtne2ps2bf16`),
/// `lo` 0 where `x − hi` is not finite so that an infinity multiplies as
/// on the f32 path.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 are available; `valid` floats are readable at
/// `x`, 32 values writable at `hi` and `lo`.
#[inline(always)]
unsafe fn split_block(x: *const f32, valid: usize, hi: *mut u16, lo: *mut u16) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract; the masked loads read only `valid` floats.
    unsafe {
        // (No closures: one would not get the caller's target features.)
        let lanes = |from: usize| valid.saturating_sub(from).min(16) as u32;
        let x0 = _mm512_maskz_loadu_ps(((1u32 << lanes(0)) - 1) as __mmask16, x);
        let x1 = _mm512_maskz_loadu_ps(((1u32 << lanes(16)) - 1) as __mmask16, x.wrapping_add(16));
        let h: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(x1, x0));
        // hi as f32: each bf16 in the upper half of a word.
        let h0 = widen_bf16(_mm512_castsi512_si256(h));
        let h1 = widen_bf16(_mm512_extracti64x4_epi64::<1>(h));
        let r0 = finite_or_zero(_mm512_sub_ps(x0, h0));
        let r1 = finite_or_zero(_mm512_sub_ps(x1, h1));
        let l: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(r1, r0));
        _mm512_storeu_si512(hi.cast(), h);
        _mm512_storeu_si512(lo.cast(), l);
    }
}

/// 16 bf16 values as f32 (each in the upper half of its word).
///
/// # Safety
/// AVX-512F is available.
#[inline(always)]
unsafe fn widen_bf16(half: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(half))) }
}

/// `r` where it is finite, else 0.
///
/// # Safety
/// AVX-512F is available.
#[inline(always)]
unsafe fn finite_or_zero(r: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let finite = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_sub_ps(r, r), _mm512_setzero_ps());
        _mm512_maskz_mov_ps(finite, r)
    }
}

/// The `i`-th of `count` groups `n` rows split into as equal parts as can
/// be: its first row and its length.
fn group(n: usize, count: usize, i: usize) -> (usize, usize) {
    let (base, extra) = (n / count, n % count);
    (i * base + i.min(extra), base + usize::from(i < extra))
}

/// The tile shapes for groups of `m0` and `m1` rows. Two groups: tmm0–3
/// accumulate (group × two column tiles), tmm4–5 hold each group's rows.
/// One group (`m1` = 0): tmm0–3 accumulate four column tiles, tmm4–5 hold
/// the rows' hi and lo parts. Weights in tmm6–7 either way.
fn config(m0: usize, m1: usize) -> TileConfig {
    let mut c = TileConfig::new();
    let shapes = if m1 == 0 {
        [m0; 6]
    } else {
        [m0, m0, m1, m1, m0, m1]
    };
    for (tile, rows) in shapes.into_iter().enumerate() {
        c.shape(tile, rows, ROW_BYTES);
    }
    c.shape(6, WORD_ROWS, ROW_BYTES);
    c.shape(7, WORD_ROWS, ROW_BYTES);
    c
}

/// Where one block of a column tile's weights is read: the panel itself,
/// or a zero-padded copy of a short last block.
struct Weights {
    /// Word rows of the last block.
    tail_rows: usize,
    blocks: usize,
    /// Bytes from one word row of a panel to the next.
    panel_row_bytes: usize,
    /// Four zero-padded tiles (one per column tile of a chunk) for a short
    /// last block: the rows past `tail_rows` are zeroed once per call (only
    /// where k leaves the last block short), the others copied per use.
    tail: std::mem::MaybeUninit<[[[u32; TILE_COLUMNS]; WORD_ROWS]; CHUNK_TILES]>,
}

impl Weights {
    fn new(tail_rows: usize, blocks: usize, panel_row_bytes: usize) -> Weights {
        let mut tail =
            std::mem::MaybeUninit::<[[[u32; TILE_COLUMNS]; WORD_ROWS]; CHUNK_TILES]>::uninit();
        if tail_rows < WORD_ROWS {
            let base = tail.as_mut_ptr().cast::<u32>();
            for slot in 0..CHUNK_TILES {
                let pad = (slot * WORD_ROWS + tail_rows) * TILE_COLUMNS;
                // SAFETY: rows tail_rows..16 of each slot are inside `tail`.
                unsafe {
                    base.add(pad)
                        .write_bytes(0, (WORD_ROWS - tail_rows) * TILE_COLUMNS)
                };
            }
        }
        Weights {
            tail_rows,
            blocks,
            panel_row_bytes,
            tail,
        }
    }

    /// Block `b` of the column tile at `words` (its first word row), as a
    /// pointer and a row stride, using tail buffer `slot` for a short block.
    ///
    /// # Safety
    /// `words` addresses a column tile of `(blocks − 1)·16 + tail_rows` word
    /// rows, `panel_row_bytes` apart.
    #[inline(always)]
    unsafe fn block(&mut self, words: *const f32, b: usize, slot: usize) -> (*const u8, usize) {
        // SAFETY: the caller's contract; block b starts at word row 16·b.
        unsafe {
            let src = words.cast::<u8>().add(b * WORD_ROWS * self.panel_row_bytes);
            if b + 1 < self.blocks || self.tail_rows == WORD_ROWS {
                return (src, self.panel_row_bytes);
            }
            // Rows past tail_rows stay zero from `Weights::new`.
            let tile = self
                .tail
                .as_mut_ptr()
                .cast::<u32>()
                .add(slot * WORD_ROWS * TILE_COLUMNS);
            for i in 0..self.tail_rows {
                let row = src.add(i * self.panel_row_bytes).cast::<u32>();
                std::ptr::copy_nonoverlapping(row, tile.add(i * TILE_COLUMNS), TILE_COLUMNS);
            }
            (tile.cast(), ROW_BYTES)
        }
    }
}

/// Asks for block `b` of the column tile at `words` to be brought into L1
/// (a tile load waits for its 16 rows; the hardware prefetchers do not see
/// far enough ahead of one when the weights come from memory).
///
/// # Safety
/// Block `b` is inside the panel (its rows are `panel_row_bytes` apart).
#[inline(always)]
unsafe fn prefetch_block(words: *const f32, b: usize, panel_row_bytes: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: the caller's contract (a prefetch does not fault anyway).
    unsafe {
        let ahead = words.cast::<i8>().add(b * WORD_ROWS * panel_row_bytes);
        for i in 0..WORD_ROWS {
            _mm_prefetch::<_MM_HINT_T0>(ahead.add(i * panel_row_bytes));
        }
    }
}

/// Loads weights into tmm6 (`j` even) or tmm7.
#[inline(always)]
unsafe fn load_weights(j: usize, (src, stride): (*const u8, usize)) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if j.is_multiple_of(2) {
            amx::load::<6>(src, stride)
        } else {
            amx::load::<7>(src, stride)
        }
    }
}

/// One group, column tile `t` (0–3): `C_t += hi × B + lo × B` (bf16), or
/// `C_t += rows × B` (int8), B in tmm6 (`t` even) or tmm7.
#[inline(always)]
unsafe fn dot_one_group(t: usize, int8: bool) {
    // SAFETY: the one-group shapes are configured (caller).
    unsafe {
        match t {
            0 => amx::dot::<0, 4, 6>(int8),
            1 => amx::dot::<1, 4, 7>(int8),
            2 => amx::dot::<2, 4, 6>(int8),
            _ => amx::dot::<3, 4, 7>(int8),
        }
        if !int8 {
            match t {
                0 => amx::dot_bf16::<0, 5, 6>(),
                1 => amx::dot_bf16::<1, 5, 7>(),
                2 => amx::dot_bf16::<2, 5, 6>(),
                _ => amx::dot_bf16::<3, 5, 7>(),
            }
        }
    }
}

/// Copies the `valid` (≤ 16) words of block `b` of a quantised row (`u8`
/// quads) to `dst` and zeros the rest of its 16 words.
///
/// # Safety
/// The row holds `16·b + valid` words; 64 bytes are writable at `dst`.
#[inline(always)]
unsafe fn copy_block(row: *const f32, b: usize, valid: usize, dst: *mut u16) {
    // SAFETY: the caller's contract.
    unsafe {
        let (src, dst) = (row.add(b * WORD_ROWS).cast::<u8>(), dst.cast::<u8>());
        std::ptr::copy_nonoverlapping(src, dst, valid * 4);
        std::ptr::write_bytes(dst.add(valid * 4), 0, (WORD_ROWS - valid) * 4);
    }
}

/// Stores accumulator tile `t` (0–3) at `dst`, `stride` bytes per row.
#[inline(always)]
unsafe fn store_accumulator(t: usize, dst: *mut u8, stride: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match t {
            0 => amx::store::<0>(dst, stride),
            1 => amx::store::<1>(dst, stride),
            2 => amx::store::<2>(dst, stride),
            _ => amx::store::<3>(dst, stride),
        }
    }
}

/// Zeroes accumulator tile `t` (0–3).
#[inline(always)]
unsafe fn zero_accumulator(t: usize) {
    // SAFETY: the caller configured the tile.
    unsafe {
        match t {
            0 => amx::zero::<0>(),
            1 => amx::zero::<1>(),
            2 => amx::zero::<2>(),
            _ => amx::zero::<3>(),
        }
    }
}

/// A unit's sums (one pair of groups against one chunk of panels) waiting
/// for their epilogues, which the next unit's tile loop runs a few rows at
/// a time: the vector units work through them while the tiles multiply.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Its first row, its rows and those done.
    start: usize,
    rows: usize,
    done: usize,
    /// Its first panel and panels.
    chunk: usize,
    panels: usize,
    /// The sums' buffer.
    sums: *const f32,
}

/// Runs up to `count` rows' epilogues of `pending` (and forgets it once
/// done): each row's sums of each panel, finished by `F`, handed to `epi`.
///
/// # Safety
/// As `for_rows`; `pending.sums` holds the unit's stored sums, in rows of
/// `CHUNK_TILES` tiles.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn run_epilogues<S: Simd, F: Format<S>, R, E: Epilogue<S, R, V>, const V: usize>(
    pending: &mut Option<Pending>,
    count: usize,
    rows: &[R],
    epi: &E,
    packed: *const f32,
    panel_stride: usize,
    word_rows: usize,
) {
    let Some(p) = pending.as_mut() else {
        return;
    };
    let end = p.done.saturating_add(count).min(p.rows);
    for r in p.done..end {
        let row = &rows[p.start + r];
        for q in 0..p.panels {
            // SAFETY: the ISA is the caller's contract; column tile q·V + v
            // of row r was stored; the panel and the row are the caller's
            // (finish reads int8's extra rows and scale).
            unsafe {
                let mut sums = [S::zero(); V];
                for (v, sum) in sums.iter_mut().enumerate() {
                    *sum = S::load(
                        p.sums
                            .add(r * CHUNK_TILES * TILE_COLUMNS + (q * V + v) * TILE_COLUMNS),
                    );
                }
                let panel = packed.add((p.chunk + q) * panel_stride);
                F::finish(&mut sums, panel, word_rows, epi.a(row, F::QUANTIZED));
                epi.apply(row, p.chunk + q, &sums);
            }
        }
    }
    p.done = end;
    if p.done == p.rows {
        *pending = None;
    }
}

/// Every row of `rows` against the panels `first..end` of `packed` (each
/// `panel_stride` floats of `k.div_ceil(F::K)` word rows of `V` vectors, in
/// format `F`: bf16 or int8), the accumulators of each row and panel
/// finished by `F` and handed to `epi`, as `for_rows` does.
///
/// # Safety
/// As `for_rows`; and AMX is available ([`amx::available`]), `S` has
/// 16 lanes, and `V ≤ 4`.
#[inline(always)]
pub(super) unsafe fn for_rows<S: Simd, F: Format<S>, R, E: Epilogue<S, R, V>, const V: usize>(
    k: usize,
    packed: *const f32,
    (first, end): (usize, usize),
    panel_stride: usize,
    rows: &[R],
    epi: &E,
) {
    assert!(S::LANES == TILE_COLUMNS && V <= CHUNK_TILES);
    if rows.is_empty() || first >= end {
        return;
    }
    // int8: one part, the quantised row (its words are 4 k values, the
    // tile product `tdpbusd`); bf16: hi and lo.
    let int8 = F::QUANTIZED;
    let parts = if int8 { 1 } else { 2 };
    let word_rows = k.div_ceil(F::K);
    let blocks = word_rows.div_ceil(WORD_ROWS);
    // (k = 0 leaves no block: the sums stay zero.)
    let tail_rows = word_rows + WORD_ROWS - blocks.max(1) * WORD_ROWS;
    let mut weights = Weights::new(tail_rows, blocks, V * TILE_COLUMNS * 4);
    let per_chunk = CHUNK_TILES / V;
    let n = rows.len();
    let groups = n.div_ceil(MAX_ROWS);
    // Taken out rather than borrowed in a closure: a closure does not get
    // the caller's target features, and the epilogue's intrinsics would
    // become calls.
    let mut stage = STAGE.take();
    // Tile-blocked: each group's 16 × 32 values of one part and k block lie
    // together, so a tile load reads one contiguous KiB.
    let tile_values = MAX_ROWS * K_BLOCK;
    let at = |g: usize, part: usize, b: usize| ((g * parts + part) * blocks + b) * tile_values;
    if stage.len() < at(groups, 0, 0) {
        stage.resize(at(groups, 0, 0), 0);
    }
    for g in 0..groups {
        let (start, len) = group(n, groups, g);
        for (r, row) in rows[start..start + len].iter().enumerate() {
            let a = epi.a(row, int8);
            for b in 0..blocks {
                if int8 {
                    let valid = word_rows.saturating_sub(b * WORD_ROWS).min(WORD_ROWS);
                    // SAFETY: a quantised row holds `word_rows` words; the
                    // stage holds this row's 16 words of block b.
                    unsafe {
                        copy_block(
                            a,
                            b,
                            valid,
                            stage.as_mut_ptr().add(at(g, 0, b) + r * K_BLOCK),
                        )
                    };
                    continue;
                }
                let (hi_at, lo_at) = (at(g, 0, b) + r * K_BLOCK, at(g, 1, b) + r * K_BLOCK);
                let valid = k.saturating_sub(b * K_BLOCK).min(K_BLOCK);
                // SAFETY: a row holds `k` floats (for_rows' contract), of
                // which this block reads `valid`; the stage holds both
                // parts' K_BLOCK values of this row (sized above).
                unsafe {
                    let stage = stage.as_mut_ptr();
                    split_block(
                        a.wrapping_add(b * K_BLOCK),
                        valid,
                        stage.add(hi_at),
                        stage.add(lo_at),
                    );
                }
            }
        }
    }
    // Group g's rows of `part` in k block b.
    let rows_at =
        |part: usize, g: usize, b: usize| -> *const u8 { stage[at(g, part, b)..].as_ptr().cast() };
    // Each unit's (group pair, chunk) sums: written by the tile stores
    // before the epilogues read them, so never zeroed; two buffers, as a
    // unit's tiles store into one while the previous unit's epilogues read
    // the other.
    let mut acc = std::mem::MaybeUninit::<
        Aligned<[[[f32; CHUNK_TILES * TILE_COLUMNS]; 2 * MAX_ROWS]; 2]>,
    >::uninit();
    let acc_base = acc.as_mut_ptr().cast::<f32>();
    let unit_sums = 2 * MAX_ROWS * CHUNK_TILES * TILE_COLUMNS;
    let mut pending: Option<Pending> = None;
    // Up to `count` rows of the pending unit's epilogues (a macro: a closure
    // would not get this function's target features).
    macro_rules! epilogues {
        ($count:expr) => {
            run_epilogues::<S, F, R, E, V>(
                &mut pending,
                $count,
                rows,
                epi,
                packed,
                panel_stride,
                word_rows,
            )
        };
    }
    let acc_stride = CHUNK_TILES * TILE_COLUMNS * 4;
    let a_stride = K_BLOCK * 2;
    // Rows and shapes of the pair of groups from group `pair`: all pairs but
    // the last have the same; the configuration is loaded when it changes.
    let pair_shape = |pair: usize| {
        let (start, m0) = group(n, groups, pair);
        let m1 = if pair + 1 < groups {
            group(n, groups, pair + 1).1
        } else {
            0
        };
        (start, m0, m1)
    };
    let mut current = None;
    // Panels outer, rows inner: a chunk's weights are read from memory
    // once and from cache for every further pair of groups.
    let chunks = (end - first).div_ceil(per_chunk);
    let pairs = groups.div_ceil(2);
    for i in 0..chunks * pairs {
        let sums = acc_base.wrapping_add(i % 2 * unit_sums);
        let acc_at = |r: usize, t: usize| {
            sums.wrapping_add(r * CHUNK_TILES * TILE_COLUMNS + t * TILE_COLUMNS)
        };
        let chunk = first + i / pairs * per_chunk;
        let pair = 2 * (i % pairs);
        let panels = per_chunk.min(end - chunk);
        let tiles = panels * V;
        // Column tile t of the chunk: gate vector t % V of panel chunk + t / V.
        // SAFETY: t < tiles, so the panel is one of first..end.
        let column = |t: usize| unsafe {
            packed.add((chunk + t / V) * panel_stride + (t % V) * TILE_COLUMNS)
        };
        {
            let (start, m0, m1) = pair_shape(pair);
            if current != Some((m0, m1)) {
                // SAFETY: AMX is available (contract); the shapes are palette 1's.
                unsafe { amx::configure(&config(m0, m1)) };
                current = Some((m0, m1));
            }
            // SAFETY (whole block): the tiles are configured for these
            // groups; every load reads whole tile rows inside the stage
            // (whole tiles of every group and block), the panels or the tail buffers
            // (`Weights::block`), and every store writes inside `acc`.
            unsafe {
                // The previous unit's epilogues, spread over this unit's
                // iterations of k blocks.
                let iterations = blocks * if m1 == 0 { 1 } else { tiles.div_ceil(2) };
                let quota = pending.map_or(0, |p| p.rows.div_ceil(iterations.max(1)));
                if m1 == 0 {
                    for t in 0..tiles {
                        zero_accumulator(t);
                    }
                    for b in 0..blocks {
                        epilogues!(quota);
                        amx::load::<4>(rows_at(0, pair, b), a_stride);
                        if !int8 {
                            amx::load::<5>(rows_at(1, pair, b), a_stride);
                        }
                        for t in 0..tiles {
                            if b + PREFETCH < blocks {
                                prefetch_block(column(t), b + PREFETCH, weights.panel_row_bytes);
                            }
                            load_weights(t, weights.block(column(t), b, t));
                            dot_one_group(t, int8);
                        }
                    }
                    for t in 0..tiles {
                        let dst = acc_at(0, t).cast();
                        store_accumulator(t, dst, acc_stride);
                    }
                } else {
                    for t0 in (0..tiles).step_by(2) {
                        let two = t0 + 1 < tiles;
                        amx::zero::<0>();
                        amx::zero::<2>();
                        if two {
                            amx::zero::<1>();
                            amx::zero::<3>();
                        }
                        for b in 0..blocks {
                            epilogues!(quota);
                            load_weights(0, weights.block(column(t0), b, 0));
                            if two {
                                load_weights(1, weights.block(column(t0 + 1), b, 1));
                            }
                            for part in 0..parts {
                                amx::load::<4>(rows_at(part, pair, b), a_stride);
                                amx::load::<5>(rows_at(part, pair + 1, b), a_stride);
                                amx::dot::<0, 4, 6>(int8);
                                amx::dot::<2, 5, 6>(int8);
                                if two {
                                    amx::dot::<1, 4, 7>(int8);
                                    amx::dot::<3, 5, 7>(int8);
                                }
                            }
                        }
                        for (j, r) in [(0, 0), (2, m0)] {
                            let dst = acc_at(r, t0).cast();
                            store_accumulator(j, dst, acc_stride);
                            if two {
                                let dst = acc_at(r, t0 + 1).cast();
                                store_accumulator(j + 1, dst, acc_stride);
                            }
                        }
                    }
                }
            }
            // SAFETY: as for_rows; the previous unit's sums are in the other buffer.
            unsafe {
                epilogues!(usize::MAX);
            }
            pending = Some(Pending {
                start,
                rows: m0 + m1,
                done: 0,
                chunk,
                panels,
                sums,
            });
        }
    }
    // SAFETY: as for_rows; the last unit's sums are stored.
    unsafe {
        epilogues!(usize::MAX);
    }
    // SAFETY: AMX is available (contract).
    unsafe { amx::release() };
    // Kept for the next call unless a large batch made it large.
    if stage.len() <= STAGE_KEPT {
        STAGE.keep(stage);
    }
}
