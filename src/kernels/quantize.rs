//! How int8 rows are quantised (see `engine::quantize` for the scheme):
//! written once, in portable Rust, and compiled into each ISA's kernel
//! table with its target features, where the row loop vectorises. Every
//! step is exact or correctly rounded, so every ISA gives the same bytes.

/// `u8` value of a quantised zero.
pub(crate) const ZERO_POINT: i32 = 128;

/// Values per word.
pub(crate) const PER_WORD: usize = 4;

/// Words a quantised row of `k` values takes: the values, four per word
/// (the last word padded), then the row's scale.
pub(crate) fn row_words(k: usize) -> usize {
    k.div_ceil(PER_WORD) + 1
}

/// `max |v|` over `values`, and whether they are all finite. On the bits:
/// for finite values and infinities, `|v|` orders as its bits do as
/// integers, and a NaN's bits exceed infinity's, so one integer max (which
/// vectorises) answers both.
pub(crate) fn magnitude(values: impl Iterator<Item = f32>) -> (f32, bool) {
    let bits = values.fold(0u32, |m, v| m.max(v.to_bits() & 0x7FFF_FFFF));
    (f32::from_bits(bits), bits < f32::INFINITY.to_bits())
}

/// The scale of a row or column of largest magnitude `max`, and the factor
/// that maps its values to `[-127, 127]`.
pub(crate) fn scales(max: f32, finite: bool) -> (f32, f32) {
    match (finite, max > 0.0) {
        (false, _) => (f32::NAN, 0.0),
        (true, false) => (0.0, 0.0),
        (true, true) => (max / 127.0, 127.0 / max),
    }
}

/// 1.5 · 2²³: adding it to a float of magnitude below 2²² rounds it to an
/// integer (in the nearest-even mode every target runs in), held in the
/// low bits of the sum's mantissa, whose low byte is otherwise zero.
const ROUND: f32 = 12_582_912.0;

/// `v · inv` clamped to `[-127, 127]`, plus [`ROUND`]: the level is the
/// low bits. Comparisons rather than `clamp`, and no float-to-int cast, so
/// that a row's loop vectorises (both would check for NaN per value).
#[inline(always)]
fn rounded(v: f32, inv: f32) -> f32 {
    let s = v * inv;
    let s = if s > 127.0 { 127.0 } else { s };
    let s = if s < -127.0 { -127.0 } else { s };
    s + ROUND
}

/// `v · inv` to the nearest integer (ties to even), in `[-127, 127]`
/// (0 for a NaN `v · inv`).
#[inline(always)]
pub(crate) fn level(v: f32, inv: f32) -> i32 {
    let r = rounded(v, inv);
    if r.is_nan() {
        0
    } else {
        r.to_bits() as i32 - ROUND.to_bits() as i32
    }
}

/// The `u8` of a finite `v · inv`: its level plus the zero point.
#[inline(always)]
fn byte(v: f32, inv: f32) -> u8 {
    // ROUND's low byte is zero: the sum's is the level's, mod 256.
    (rounded(v, inv).to_bits() as u8).wrapping_add(ZERO_POINT as u8)
}

/// Quantises the row `x` into `out` (at least [`row_words`]`(x.len())`
/// words): `u8` values four to a word, smallest index in the low byte, the
/// last word padded with zeros (as 128), then the scale.
#[inline(always)]
pub(crate) fn quantize_row(x: &[f32], out: &mut [f32]) {
    let words = x.len().div_ceil(PER_WORD);
    assert!(
        out.len() > words,
        "a quantised row holds its values and scale"
    );
    let (max, finite) = magnitude(x.iter().copied());
    let (scale, inv) = scales(max, finite);
    out[words] = scale;
    if !finite {
        // The NaN scale makes every product NaN, whatever the values.
        out[..words].fill(f32::from_bits(u32::from_ne_bytes(
            [ZERO_POINT as u8; PER_WORD],
        )));
        return;
    }
    let byte = |v: f32| byte(v, inv);
    let whole = x.len() / PER_WORD;
    for (word, v) in out[..whole].iter_mut().zip(x.chunks_exact(PER_WORD)) {
        let bytes = [byte(v[0]), byte(v[1]), byte(v[2]), byte(v[3])];
        *word = f32::from_bits(u32::from_le_bytes(bytes));
    }
    if whole < words {
        let mut bytes = [ZERO_POINT as u8; PER_WORD];
        for (b, &v) in bytes.iter_mut().zip(&x[whole * PER_WORD..]) {
            *b = byte(v);
        }
        out[whole] = f32::from_bits(u32::from_le_bytes(bytes));
    }
}
