//! AVX-512F and BW: 16 lanes of f32 in a `__m512`; int8 products with
//! BW's exact 16-bit multiply-add, or VNNI's `vpdpbusd` where the CPU has it.

use super::dispatch::{Bf16Dot, StepKernels, Table};

pub(crate) mod bf16_dot;
use super::{transpose, Int8Dot, Simd};
use std::arch::x86_64::*;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512;

// SAFETY: every method is only reached through `Kernels::for_isa(Isa::Avx512)`,
// which checks `is_x86_feature_detected!("avx512f")` and `("avx512bw")` first; load/store need
// 16 valid floats, which the kernels guarantee by padding.
unsafe impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    const W: usize = 1;
    const REGISTERS: usize = 32;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn clamp(x: __m512, lo: __m512, hi: __m512) -> __m512 {
        // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
        unsafe {
            let clamped = _mm512_max_ps(lo, _mm512_min_ps(hi, x));
            Self::select_nan(x, x, clamped)
        }
    }
    #[inline(always)]
    unsafe fn abs(x: __m512) -> __m512 {
        unsafe { _mm512_abs_ps(x) }
    }
    #[inline(always)]
    unsafe fn round(x: __m512) -> __m512 {
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x) }
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m512) -> __m512 {
        // SAFETY: the caller runs on a CPU with this ISA (Simd trait contract).
        unsafe {
            let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
                _mm512_cvtps_epi32(n),
                _mm512_set1_epi32(127),
            ));
            _mm512_castsi512_ps(bits)
        }
    }
    #[inline(always)]
    unsafe fn select_lt(a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
        unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b), y, x) }
    }
    #[inline(always)]
    unsafe fn select_nan(v: __m512, if_nan: __m512, other: __m512) -> __m512 {
        unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), other, if_nan) }
    }
    #[inline(always)]
    unsafe fn widen_bf16_pairs(p: *const f32) -> (__m512, __m512) {
        // SAFETY: the caller guarantees 16 readable words at `p`.
        unsafe {
            let words = _mm512_loadu_si512(p.cast());
            let low = _mm512_slli_epi32::<16>(words);
            let high = _mm512_and_si512(words, _mm512_set1_epi32(0xFFFF_0000u32 as i32));
            (_mm512_castsi512_ps(low), _mm512_castsi512_ps(high))
        }
    }
}

/// int8 products with AVX-512BW: the `u8` row values and `i8` weights of
/// each word split into their even and odd bytes as 16-bit lanes, and
/// `vpmaddwd` sums each pair of products into 32 bits. Every product is at
/// most 255 · 128 in magnitude, so no step saturates: the sums are exact.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dot;

// SAFETY: reached only through the AVX-512 table (F and BW checked);
// reads 16 words at a slot, one at a row, 16 at a correction row.
unsafe impl Int8Dot<Avx512> for Dot {
    const REGS: usize = 2;
    type Slot = (__m512i, __m512i);
    type Row = (__m512i, __m512i);
    #[inline(always)]
    unsafe fn empty() -> (__m512i, __m512i) {
        unsafe { (_mm512_setzero_si512(), _mm512_setzero_si512()) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> (__m512i, __m512i) {
        // SAFETY: the caller guarantees 16 readable words at `p`.
        unsafe {
            let w = _mm512_loadu_si512(p.cast());
            // Bytes 0 and 2 of each word, sign-extended; then bytes 1 and 3.
            let even = _mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(w));
            (even, _mm512_srai_epi16::<8>(w))
        }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> (__m512i, __m512i) {
        // SAFETY: the caller guarantees one readable word at `p`.
        unsafe {
            let a = _mm512_set1_epi32(p.cast::<i32>().read_unaligned());
            let even = _mm512_and_si512(a, _mm512_set1_epi32(0x00FF_00FF));
            (even, _mm512_srli_epi16::<8>(a))
        }
    }
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: (__m512i, __m512i), b: (__m512i, __m512i)) -> __m512 {
        // SAFETY: register operations only; the ISA is the caller's contract.
        unsafe {
            let pairs = _mm512_add_epi32(_mm512_madd_epi16(a.0, b.0), _mm512_madd_epi16(a.1, b.1));
            _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(acc), pairs))
        }
    }
    #[inline(always)]
    unsafe fn to_f32(acc: __m512, corr: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable words at `corr`.
        unsafe {
            let c = _mm512_loadu_si512(corr.cast());
            _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_castps_si512(acc), c))
        }
    }
}

/// int8 products with AVX-512 VNNI: `vpdpbusd` multiplies the four `u8`
/// row values by the four `i8` weights of each word and adds them to the
/// 32-bit lane, exactly (the same sums as [`Dot`], in one instruction).
#[derive(Clone, Copy, Debug)]
pub(crate) struct VnniDot;

// SAFETY: reached only through the VNNI step table, which `table` hands
// out after checking `avx512vnni`; reads as `Dot`.
unsafe impl Int8Dot<Avx512> for VnniDot {
    const REGS: usize = 1;
    type Slot = __m512i;
    type Row = __m512i;
    #[inline(always)]
    unsafe fn empty() -> __m512i {
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512i {
        // SAFETY: the caller guarantees 16 readable words at `p`.
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m512i {
        // SAFETY: the caller guarantees one readable word at `p`.
        unsafe { _mm512_set1_epi32(p.cast::<i32>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn madd(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
        unsafe { _mm512_castsi512_ps(_mm512_dpbusd_epi32(_mm512_castps_si512(acc), a, b)) }
    }
    #[inline(always)]
    unsafe fn to_f32(acc: __m512, corr: *const f32) -> __m512 {
        // SAFETY: forwarded from the caller.
        unsafe { Dot::to_f32(acc, corr) }
    }
}

super::fused::instantiate_kernels!(Avx512, #[target_feature(enable = "avx512f,avx512bw")]);

super::fused::step_kernels!(
    Avx512,
    vnni_steps,
    fused::Int8<VnniDot>,
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
);

super::fused::step_kernels!(
    Avx512,
    amx_steps,
    fused::Tiles<fused::Bf16>,
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
);

super::fused::step_kernels!(
    Avx512,
    amx_int8_steps,
    fused::Tiles<fused::Int8<VnniDot>>,
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vnni")]
);

/// The AVX-512 table with bf16 and int8 products on AMX tiles ([`crate::Isa::Amx`]),
/// when this CPU and the OS allow them.
pub(crate) fn amx_table() -> Option<Table> {
    super::amx::available().then(|| {
        // Tiles outrun rounded rows at batch, and a batch of one keeps the
        // widening kernels, as on the CPUs measured (BENCHMARKS.md).
        let mut table = table(Bf16Dot::Off);
        table.bf16 = amx_steps::STEPS;
        table.int8 = amx_int8_steps::STEPS;
        table
    })
}

/// The int8 step kernels with VNNI, when this CPU has it.
pub(crate) fn vnni_steps() -> Option<StepKernels> {
    is_x86_feature_detected!("avx512vnni").then_some(vnni_steps::STEPS)
}

/// The int8 step kernels without VNNI (what a CPU without it runs).
#[cfg(test)]
pub(crate) fn bw_int8_steps() -> StepKernels {
    entry::TABLE.int8
}

/// `transpose::columns` with whole 16 × 16 tiles transposed in registers
/// (four rounds of shuffles instead of 256 single moves).
/// Streaming stores skip reading each output line first (2048 × 1024
/// from dG: 1.1-2.5 → 0.6 ms on one core, measured on the EPYC VM of
/// BENCHMARKS.md).
#[target_feature(enable = "avx512f")]
unsafe fn transpose_columns(job: transpose::Columns<'_>) {
    // SAFETY: this function has the tile's features.
    unsafe { transpose::tiled::<Tile16>(job) }
}

/// A 16 × 16 tile in sixteen registers; each row is added to the f64 sums
/// as it is loaded (row order: the portable tile's bits).
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
        // when streaming) and sums; AVX-512F.
        unsafe {
            let (mut lo, mut hi) = (_mm512_loadu_pd(sums), _mm512_loadu_pd(sums.add(8)));
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, v) in r.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(src.add(i * src_stride));
                let upper = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*v));
                lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(*v)));
                hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(upper)));
            }
            _mm512_storeu_pd(sums, lo);
            _mm512_storeu_pd(sums.add(8), hi);
            for (c, v) in transpose_16x16(r).iter().enumerate() {
                let at = dst.add(c * dst_stride);
                if stream {
                    _mm512_stream_ps(at, *v);
                } else {
                    _mm512_storeu_ps(at, *v);
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

/// Rows `r` of a 16 × 16 tile as its columns.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose_16x16(r: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved by value, then by pairs of values, then
    // 128-bit lanes gathered twice: element (i, j) ends in column j, lane i.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        let pd = _mm512_castps_pd;
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    for i in 0..4 {
        t[i] = _mm512_shuffle_f32x4::<0x88>(u[i], u[4 + i]);
        t[4 + i] = _mm512_shuffle_f32x4::<0xDD>(u[i], u[4 + i]);
        t[8 + i] = _mm512_shuffle_f32x4::<0x88>(u[8 + i], u[12 + i]);
        t[12 + i] = _mm512_shuffle_f32x4::<0xDD>(u[8 + i], u[12 + i]);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        out[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
        out[8 + i] = _mm512_shuffle_f32x4::<0xDD>(t[i], t[8 + i]);
    }
    out
}

/// The AVX-512 kernel table, its int8 products on VNNI where the CPU has it
/// (the same bits as without: the sums are exact), and its transpose in
/// registers.
pub(crate) fn table(bf16_dot: Bf16Dot) -> Table {
    let mut table = entry::TABLE;
    table.bf16_rounded = bf16_dot::rounded_steps(bf16_dot);
    table.transpose_columns = transpose_columns;
    if let Some(steps) = vnni_steps() {
        table.int8 = steps;
        table.int8_one_row = steps;
    }
    table
}
