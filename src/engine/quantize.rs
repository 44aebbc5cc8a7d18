//! int8 quantisation ([`Precision::Int8`](crate::Precision::Int8)): weight
//! panels as words of four `i8` with a correction and a scale per column,
//! and rows as words of four `u8` with a scale per row.
//!
//! A weight column `w` (one output: a gate of a hidden unit, or a
//! projection output) is quantised symmetrically: `s_w = max |w| / 127`,
//! `q_w = round(w / s_w)` in `[-127, 127]`. A row `x` the same way, per row,
//! `q_x` in `[-127, 127]`, stored as `u = q_x + 128` in `[1, 255]` (VNNI
//! multiplies `u8` by `i8`). The kernels sum `Σ u·q_w` exactly in `i32` and
//! subtract the column's correction `128 · Σ q_w`, leaving `Σ q_x·q_w`,
//! which they scale by `s_w · s_x`. Rows rather than tensors get a scale of
//! their own so that one large input or state does not coarsen the others.
//!
//! Exactness: `|Σ q_x·q_w| ≤ 127² · k`, which fits `i32` for
//! `k ≤ MAX_K`; the partial sums may wrap, but wrapping `i32` arithmetic is
//! exact modulo 2³², so the final difference is exact. A row or column with
//! a non-finite value gets a NaN scale, so its products are NaN as they
//! would be in f32; an all-zero one gets scale 0 (products exactly 0).

use crate::error::{try_vec, Error, Result};
use crate::kernels::quantize::{level, magnitude, scales, PER_WORD, ZERO_POINT};
#[cfg(test)]
use crate::kernels::quantize::{quantize_row, row_words};

/// The largest `k` (layer input or state size) whose int8 sums are exact.
pub(crate) const MAX_K: usize = (i32::MAX as usize) / (127 * 127);

/// f32 panels of `k` rows of `width` columns each, as int8 panels of
/// `k.div_ceil(4) + 2` rows of words: per column, four weights per word
/// (row `4i + j` in byte `j` of row `i`, missing rows zero), then the
/// column's correction `128 · Σ q_w` (as `i32` bits), then its scale.
pub(crate) fn pack_panels(panels: &[f32], k: usize, width: usize) -> Result<Vec<f32>> {
    if k > MAX_K {
        return Err(Error::InvalidArgument(format!(
            "int8 products of {k} values could overflow 32-bit sums: \
             int8 supports layer inputs and states of at most {MAX_K} values"
        )));
    }
    let per = k * width;
    let rows = k.div_ceil(PER_WORD) + 2;
    let count = panels.len().checked_div(per).unwrap_or(0);
    let mut out = try_vec(count * rows * width, 0.0, "packed weights")?;
    for (src, dst) in panels
        .chunks_exact(per.max(1))
        .zip(out.chunks_exact_mut((rows * width).max(1)))
    {
        for c in 0..width {
            let column = (0..k).map(|kk| src[kk * width + c]);
            let (max, finite) = magnitude(column.clone());
            let (scale, inv) = scales(max, finite);
            let mut sum = 0i32;
            let mut bytes = [0u8; PER_WORD];
            for (kk, w) in column.enumerate() {
                let q = level(w, inv);
                sum += q;
                bytes[kk % PER_WORD] = q as i8 as u8;
                if kk % PER_WORD == PER_WORD - 1 || kk + 1 == k {
                    dst[kk / PER_WORD * width + c] = f32::from_bits(u32::from_le_bytes(bytes));
                    bytes = [0; PER_WORD];
                }
            }
            // Modulo 2³², as the kernels' sums (see the module docs).
            dst[(rows - 2) * width + c] = f32::from_bits(ZERO_POINT.wrapping_mul(sum) as u32);
            dst[(rows - 1) * width + c] = scale;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::pack::{pack_b, round_up};
    use crate::kernels::dispatch::StepKernels;
    use crate::kernels::fused::MatRow;
    use crate::kernels::{Isa, Kernels};
    use crate::precision::Precision;
    use crate::rng::SplitMix64;

    /// The int8 step tables this CPU can run, by name: each ISA's, and also
    /// the one without VNNI (AVX-512) or `sdot` (NEON) where `Kernels` uses
    /// those.
    fn int8_tables() -> Vec<(String, Kernels, StepKernels)> {
        let mut tables = Vec::new();
        for isa in Isa::supported() {
            let kernels = Kernels::for_isa(isa).unwrap();
            tables.push((
                isa.name().to_string(),
                kernels,
                *kernels.steps(Precision::Int8),
            ));
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 && crate::kernels::avx512_vnni_steps().is_some() {
                tables.push((
                    "avx512 without vnni".into(),
                    kernels,
                    crate::kernels::avx512_bw_int8_steps(),
                ));
            }
            #[cfg(target_arch = "aarch64")]
            if isa == Isa::Neon && crate::kernels::neon_sdot_steps().is_some() {
                tables.push((
                    "neon without sdot".into(),
                    kernels,
                    crate::kernels::neon_widening_int8_steps(),
                ));
            }
        }
        tables
    }

    /// The int8 product the kernels must give, bit for bit: exact integer
    /// sums scaled by the column's, then the row's scale, plus the bias.
    fn expected(x: &[f32], w: &[f32], k: usize, n: usize, bias: &[f32]) -> Vec<f32> {
        let quantise = |values: Vec<f32>| {
            let (max, finite) = magnitude(values.iter().copied());
            let (scale, inv) = scales(max, finite);
            (
                values.iter().map(|&v| level(v, inv)).collect::<Vec<i32>>(),
                scale,
            )
        };
        let rows = x.len() / k;
        let mut out = vec![0.0; rows * n];
        for i in 0..rows {
            let (qx, sx) = quantise(x[i * k..(i + 1) * k].to_vec());
            for j in 0..n {
                let (qw, sw) = quantise((0..k).map(|kk| w[kk * n + j]).collect());
                let sum: i32 = qx.iter().zip(&qw).map(|(a, b)| a * b).sum();
                out[i * n + j] = sum as f32 * sw * sx + bias[j];
            }
        }
        out
    }

    /// The int8 panel product equals the integer oracle bit for bit on every
    /// ISA and dot product, for odd k (a part-filled last word), odd column
    /// counts, every row-tile size, zero and NaN rows.
    /// (Under Miri, only the scalar ISA is detected: it runs that one.)
    #[test]
    fn int8_products_are_the_same_bits_on_every_isa() {
        let mut rng = SplitMix64::new(8);
        for (name, kernels, steps) in int8_tables() {
            println!("int8 products on {name}");
            let unit = kernels.unit();
            // Miri (about 100× slower) takes the small half.
            let shapes = [
                (1, 3, 1),
                (5, 40, 9),
                (17, 7, 3),
                (3, 17, 2),
                (4, 16, 5),
                (130, 70, 13),
                // More rows than a tile holds (AMX: two groups and a short
                // last block of k).
                (70, 33, 40),
                // A long k: hundreds of words per panel.
                (1100, 40, 20),
            ];
            for (k, n, rows) in shapes.into_iter().take(if cfg!(miri) { 3 } else { 8 }) {
                let np = round_up(n, unit);
                let w: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
                let mut x: Vec<f32> = (0..rows * k).map(|_| rng.normal() * 3.0).collect();
                if rows > 2 {
                    x[k..2 * k].fill(0.0);
                    x[2 * k + k / 2] = f32::NAN;
                }
                let bias: Vec<f32> = (0..np)
                    .map(|j| if j < n { rng.normal() } else { 0.0 })
                    .collect();
                let panels =
                    pack_panels(&pack_b(k, n, unit, |kk, j| w[kk * n + j]).unwrap(), k, unit)
                        .unwrap();
                let mut q = vec![0.0; rows * row_words(k)];
                for (row, words) in x.chunks(k).zip(q.chunks_mut(row_words(k))) {
                    quantize_row(row, words);
                }
                let mut out = vec![0.0; rows * np];
                let mat_rows: Vec<MatRow> = (0..rows)
                    .map(|i| MatRow {
                        a: q[i * row_words(k)..].as_ptr(),
                        out: out[i * np..].as_mut_ptr(),
                    })
                    .collect();
                // SAFETY: the kernels' ISA is supported (Kernels::for_isa); panels
                // hold np/unit int8 panels over k; each row is quantised over k
                // and writes np floats of its own row of `out`.
                unsafe { (steps.panel_matmul)(k, np, &panels, Some(&bias), &mat_rows) };
                let want = expected(&x, &w, k, n, &bias);
                for i in 0..rows {
                    for j in 0..n {
                        let (got, want) = (out[i * np + j], want[i * n + j]);
                        // (A NaN's payload may differ between ISAs.)
                        assert!(
                            got.to_bits() == want.to_bits() || got.is_nan() && want.is_nan(),
                            "{name} k={k} n={n} row {i} col {j}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    fn bytes(word: f32) -> [u8; 4] {
        word.to_bits().to_le_bytes()
    }

    #[test]
    fn rows_map_their_largest_magnitude_to_127_and_pad_with_zero() {
        let x = [1.0, -2.0, 0.5, 0.0, 2.0];
        let mut out = vec![0.0; row_words(x.len())];
        quantize_row(&x, &mut out);
        // 127/2 per unit: 63.5 → 64 (ties to even), −127, 31.75 → 32, 0, 127.
        assert_eq!(bytes(out[0]), [128 + 64, 1, 128 + 32, 128]);
        assert_eq!(bytes(out[1]), [255, 128, 128, 128]);
        assert_eq!(out[2], 2.0 / 127.0);
    }

    /// An int8 model through the engine (its quantised rows: x, h₋₁, GRU's
    /// r ⊙ h, the LSTM's m before projecting), close to its f32 self; small
    /// enough for Miri, which checks the engine's pointers on this path.
    #[test]
    fn int8_models_run_every_quantised_operand_close_to_f32() {
        use crate::config::{CellKind, Config, Direction};
        use crate::{Input, Model};
        let cases = [
            Config::builder(CellKind::Lstm, 3, 5)
                .proj_size(2)
                .num_layers(2),
            Config::builder(CellKind::Gru, 3, 5).direction(Direction::BidirectionalConcat),
            Config::builder(CellKind::Rnn, 6, 4),
        ];
        let mut rng = SplitMix64::new(4);
        for builder in cases {
            let config = builder.build().unwrap();
            let model = Model::random(config.clone(), 2);
            let (t, n) = (3, 2);
            let x: Vec<f32> = (0..t * n * config.input_size())
                .map(|_| rng.normal())
                .collect();
            let lens = [3, 2];
            let input = Input::new(&x, t, n).with_seq_lens(&lens);
            let want = model.forward_inference(&input).unwrap();
            let got = model
                .clone()
                .with_precision(Precision::Int8)
                .forward_inference(&input)
                .unwrap();
            for (a, b) in got
                .y
                .iter()
                .zip(&want.y)
                .chain(got.h_n.iter().zip(&want.h_n))
            {
                assert!((a - b).abs() <= 5e-2, "{:?}: {a} vs {b}", config.cell());
            }
        }
    }

    #[test]
    fn levels_round_half_to_even() {
        // max 127: one unit per level, so these are the values' own ties.
        let x = [127.0, 0.5, 1.5, 2.5, -0.5, -2.5, -126.5, 3.4999998];
        let mut out = vec![0.0; row_words(x.len())];
        quantize_row(&x, &mut out);
        let levels: Vec<i32> = out[..2]
            .iter()
            .flat_map(|w| bytes(*w))
            .map(|b| i32::from(b) - 128)
            .collect();
        assert_eq!(levels, [127, 0, 2, 2, 0, -2, -126, 3]);
        assert_eq!(out[2], 1.0);
    }

    /// Each ISA's int8 kernels quantise rows (vectorised with their
    /// features) to the same words as the portable loop.
    #[test]
    fn every_isa_quantises_rows_to_the_same_words() {
        let mut rng = SplitMix64::new(3);
        for (name, _, steps) in int8_tables() {
            let sizes = [1, 5, 17, 65, 2, 3, 4, 15, 16, 63, 64, 1000, 1027];
            for k in sizes.into_iter().take(if cfg!(miri) { 4 } else { 13 }) {
                let mut x: Vec<f32> = (0..k).map(|_| rng.normal() * 2.0).collect();
                for variant in 0..3 {
                    match variant {
                        1 => x.fill(0.0),
                        2 => x[k / 2] = f32::NAN,
                        _ => {}
                    }
                    let (mut want, mut got) = (vec![7.0; row_words(k)], vec![7.0; row_words(k)]);
                    quantize_row(&x, &mut want);
                    steps
                        .rows
                        .expect("converted rows")
                        .convert_row(&x, &mut got);
                    let bits = |v: &[f32]| v.iter().map(|w| w.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{name} k={k} variant {variant}");
                }
            }
        }
    }

    #[test]
    fn zero_and_non_finite_rows_get_zero_and_nan_scales() {
        let mut out = vec![1.0; row_words(3)];
        quantize_row(&[0.0; 3], &mut out);
        assert_eq!((bytes(out[0]), out[1]), ([128; 4], 0.0));
        for bad in [f32::NAN, f32::INFINITY] {
            quantize_row(&[1.0, bad, 0.0], &mut out);
            assert!(out[1].is_nan(), "{bad}");
        }
    }

    #[test]
    fn panels_hold_weights_corrections_and_scales_per_column() {
        // One panel, k = 5 rows, 2 columns.
        let k = 5;
        let col0 = [1.0, -1.0, 0.5, 0.25, 1.0];
        let col1 = [0.0; 5];
        let panels: Vec<f32> = (0..k).flat_map(|kk| [col0[kk], col1[kk]]).collect();
        let out = pack_panels(&panels, k, 2).unwrap();
        assert_eq!(out.len(), (2 + 2) * 2);
        // 127 per unit: 127, −127, 63.5 → 64, 31.75 → 32; then 127 (sum 64 + 32 + 127).
        assert_eq!(bytes(out[0]), [127, (-127i8) as u8, 64, 32]);
        assert_eq!(bytes(out[2]), [127, 0, 0, 0]);
        assert_eq!(out[4].to_bits() as i32, 128 * (64 + 32 + 127));
        assert_eq!(out[6], 1.0 / 127.0);
        assert_eq!(
            (out[1].to_bits(), out[3].to_bits(), out[5].to_bits()),
            (0, 0, 0)
        );
        assert_eq!(out[7], 0.0);
        assert!(pack_panels(&panels, MAX_K + 1, 0).is_err());
    }
}
