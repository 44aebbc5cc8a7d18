//! AVX2 + FMA: 8 lanes of f32 in a `__m256`.

use super::{transpose, Int8Dot, Simd};
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
    const FOLDS_LOADS: bool = true;

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
    unsafe fn madd_row_folded(
        acc: &mut [__m256; 4],
        a: *const f32,
        held: [__m256; 3],
        fourth: *const f32,
    ) {
        // SAFETY: forwarded from the caller; the kernels calling this run
        // with AVX2 and FMA enabled (`instantiate_kernels!` below).
        unsafe { madd_row_folded(acc, a, held, fourth) }
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
/// pair of products into 32 bits, exactly (as `vpmaddubsw` would not: it
/// saturates). A weight byte goes to the top of its 16-bit lane, 256 times
/// its value (a shift for the even bytes, a mask for the odd ones), rather
/// than sign-extended into the lane's low byte (two more shifts): on Zen 1
/// the 256-bit shifts, one pipe's work, bounded the product, and a row
/// times the weights ran 1.4-1.6× faster this way (BENCHMARKS.md, "int8 on
/// AVX2"). The accumulators so hold 256 times the sums: each word adds at
/// most 256 · 4 · 255 · 128 = 33,423,360 in magnitude, so 64 words stay
/// below 2³¹, and [`Int8Dot::fold`] moves them, divided by 256, into the
/// total every 64 words. Tiles take the even bytes of a weight vector into
/// every row, then its odd bytes ([`Int8Dot::BY_PART`]), so that a split
/// vector takes one register, not two, and a tile holds two rows rather
/// than one: the split is shared by both (int8 at batch 16 1.1-1.15× faster).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dot;

// SAFETY: reached only through the AVX2 table (AVX2 checked); reads 8
// words at a slot, one at a row, 8 at a correction row.
unsafe impl Int8Dot<Avx2> for Dot {
    const REGS: usize = 2;
    const BLOCK_WORDS: usize = 64;
    const BY_PART: bool = true;
    #[inline(always)]
    unsafe fn load_part(p: *const f32, part: usize) -> __m256 {
        // SAFETY: forwarded from the caller; the unused part is dropped.
        unsafe {
            let (even, odd) = Self::load(p);
            _mm256_castsi256_ps(if part == 0 { even } else { odd })
        }
    }
    #[inline(always)]
    unsafe fn splat_part(p: *const f32, part: usize) -> __m256 {
        // SAFETY: forwarded from the caller; the unused part is dropped.
        unsafe {
            let (even, odd) = Self::splat(p);
            _mm256_castsi256_ps(if part == 0 { even } else { odd })
        }
    }
    #[inline(always)]
    unsafe fn madd_part(acc: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: register operations only; the ISA is the caller's contract.
        unsafe {
            let products = _mm256_madd_epi16(_mm256_castps_si256(a), _mm256_castps_si256(b));
            _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(acc), products))
        }
    }
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
            // 256 × bytes 0 and 2 of each word (as i16); then bytes 1 and 3.
            let even = _mm256_slli_epi16::<8>(w);
            let odd = _mm256_and_si256(w, _mm256_set1_epi32(0xFF00_FF00u32 as i32));
            (even, odd)
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
        // (Tiles take int8 on AVX2 by part; this is the same sum, both parts.)
        // SAFETY: register operations only; the ISA is the caller's contract.
        unsafe {
            let even = Self::madd_part(acc, _mm256_castsi256_ps(a.0), _mm256_castsi256_ps(b.0));
            Self::madd_part(even, _mm256_castsi256_ps(a.1), _mm256_castsi256_ps(b.1))
        }
    }
    #[inline(always)]
    unsafe fn fold(total: __m256, block: __m256) -> __m256 {
        // SAFETY: register operations only; the ISA is the caller's contract.
        unsafe {
            let block = _mm256_srai_epi32::<8>(_mm256_castps_si256(block));
            _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(total), block))
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

/// [`Simd::madd_row_folded`] as one block of instructions: a broadcast into
/// one scratch register, then four FMAs, the last reading its panel vector
/// from memory. Written out because the compiler, given the same FMAs as
/// intrinsics, keeps each row's broadcast alive into the next row's (two
/// scratch registers) and spills an accumulator of a 3-row × 4-vector tile
/// to the stack in every k step; this way the tile takes exactly the 16
/// registers (12 accumulators, 3 panel vectors, 1 broadcast). Inlined into
/// the AVX2 kernels, which have the same target features.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn madd_row_folded(
    acc: &mut [__m256; 4],
    a: *const f32,
    held: [__m256; 3],
    fourth: *const f32,
) {
    let [c0, c1, c2, c3] = acc;
    // SAFETY: the caller guarantees one readable float at `a` and eight at
    // `fourth`; the block only reads them (readonly), writes no memory,
    // leaves the stack and the flags alone, and its outputs depend only on
    // its inputs and the memory it reads (pure).
    unsafe {
        std::arch::asm!(
            "vbroadcastss {x}, dword ptr [{a}]",
            "vfmadd231ps {c0}, {x}, {b0}",
            "vfmadd231ps {c1}, {x}, {b1}",
            "vfmadd231ps {c2}, {x}, {b2}",
            "vfmadd231ps {c3}, {x}, ymmword ptr [{fourth}]",
            x = out(ymm_reg) _,
            a = in(reg) a,
            fourth = in(reg) fourth,
            b0 = in(ymm_reg) held[0],
            b1 = in(ymm_reg) held[1],
            b2 = in(ymm_reg) held[2],
            c0 = inout(ymm_reg) *c0,
            c1 = inout(ymm_reg) *c1,
            c2 = inout(ymm_reg) *c2,
            c3 = inout(ymm_reg) *c3,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
}

/// `transpose::columns` with whole 16 × 16 tiles in registers, as on
/// AVX-512.
#[target_feature(enable = "avx2")]
unsafe fn transpose_columns(job: transpose::Columns<'_>) {
    // SAFETY: this function has the tile's features.
    unsafe { transpose::tiled::<Tile16>(job) }
}

/// A 16 × 16 tile as four 8 × 8 blocks transposed in registers, a
/// column's two halves stored one after the other (a whole line, so
/// streaming stores fill it); each row is added to the f64 sums as it is
/// loaded (row order: the portable tile's bits).
struct Tile16;

impl transpose::Tile for Tile16 {
    #[inline(always)]
    unsafe fn tile(
        src: *const f32,
        src_stride: usize,
        dst: *mut f32,
        dst_stride: usize,
        sums: *mut f64,
        stream: bool,
    ) {
        // SAFETY: the trait's contract: whole rows, columns (line-aligned
        // when streaming) and sums; AVX2.
        unsafe {
            let mut acc = [_mm256_setzero_pd(); 4];
            for (q, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_pd(sums.add(4 * q));
            }
            // blocks[i][j]: rows 8i .., columns 8j ...
            let mut blocks = [[[_mm256_setzero_ps(); 8]; 2]; 2];
            for r in 0..16 {
                for j in 0..2 {
                    let v = _mm256_loadu_ps(src.add(r * src_stride + 8 * j));
                    blocks[r / 8][j][r % 8] = v;
                    let low = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
                    let high = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
                    acc[2 * j] = _mm256_add_pd(acc[2 * j], low);
                    acc[2 * j + 1] = _mm256_add_pd(acc[2 * j + 1], high);
                }
            }
            for (q, a) in acc.iter().enumerate() {
                _mm256_storeu_pd(sums.add(4 * q), *a);
            }
            // (No closures: they would not get the caller's features.)
            for line in blocks.iter_mut() {
                for block in line.iter_mut() {
                    *block = transpose_8x8(*block);
                }
            }
            for j in 0..2 {
                for c in 0..8 {
                    let at = dst.add((8 * j + c) * dst_stride);
                    for (i, line) in blocks.iter().enumerate() {
                        if stream {
                            _mm256_stream_ps(at.add(8 * i), line[j][c]);
                        } else {
                            _mm256_storeu_ps(at.add(8 * i), line[j][c]);
                        }
                    }
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn fence() {
        // SAFETY: SSE is baseline on x86-64.
        unsafe { _mm_sfence() }
    }
}

/// Rows `r` of an 8 × 8 block as its columns.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved by value, then pairs of values gathered,
    // then 128-bit halves exchanged: element (i, j) ends in column j, lane i.
    let mut t = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm256_setzero_ps(); 8];
    for i in 0..2 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        u[4 * i] = _mm256_shuffle_ps::<0x44>(a, c);
        u[4 * i + 1] = _mm256_shuffle_ps::<0xEE>(a, c);
        u[4 * i + 2] = _mm256_shuffle_ps::<0x44>(b, d);
        u[4 * i + 3] = _mm256_shuffle_ps::<0xEE>(b, d);
    }
    let mut out = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        out[i] = _mm256_permute2f128_ps::<0x20>(u[i], u[4 + i]);
        out[4 + i] = _mm256_permute2f128_ps::<0x31>(u[i], u[4 + i]);
    }
    out
}

/// The AVX2 kernel table, with its transpose in registers.
pub(crate) fn table() -> super::dispatch::Table {
    let mut table = entry::TABLE;
    table.transpose_columns = transpose_columns;
    table
}
