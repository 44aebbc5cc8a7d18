//! Rows rounded to bf16 pairs, for the bf16 dot product kernels
//! (`vdpbf16ps` on AVX-512 BF16, `bfdot` on NEON with the BF16
//! extension): the portable conversion (NEON's, and the oracle of
//! AVX-512's), and the tests of every such kernel this CPU can run.

#[cfg(any(test, target_arch = "aarch64"))]
use crate::precision::to_bf16_bits;

/// Rounds the row `x` to bf16 (to nearest, ties to even) into `out`, two
/// values a word, the smaller index in the low half, as the bf16 panels'
/// words hold their k pairs; a ragged last word's high half is zero.
///
/// # Panics
/// If `out` holds fewer than `x.len().div_ceil(2)` words.
#[cfg(any(test, target_arch = "aarch64"))]
#[inline(always)]
pub(crate) fn round_row_pairs(x: &[f32], out: &mut [f32]) {
    let words = x.len().div_ceil(2);
    assert!(out.len() >= words, "room for the row's words");
    for (word, pair) in out[..words].iter_mut().zip(x.chunks(2)) {
        let low = u32::from(to_bf16_bits(pair[0]));
        let high = pair.get(1).map_or(0, |&v| u32::from(to_bf16_bits(v)));
        *word = f32::from_bits(low | high << 16);
    }
}

/// The issue rate of a bf16 dot product instruction over that of an f32
/// FMA on this core, the `RNN_BF16_DOT=auto` rule's measure: `dot(iters)`
/// and `fma(iters)` run `iters` rounds of as many independent chains of
/// each. The fastest of several short interleaved timings of each (about
/// 1 ms in all at FMA speed), so that a moment of other work on the core
/// slows single timings but does not decide the answer.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn dot_to_fma_rate(dot: impl Fn(usize), fma: impl Fn(usize)) -> f64 {
    const ITERS: usize = 1 << 13;
    const ROUNDS: usize = 7;
    let time = |f: &dyn Fn(usize)| {
        let start = std::time::Instant::now();
        f(ITERS);
        start.elapsed().as_secs_f64()
    };
    let (mut dot_best, mut fma_best) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..ROUNDS {
        dot_best = dot_best.min(time(&dot));
        fma_best = fma_best.min(time(&fma));
    }
    fma_best / dot_best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::pack::{pack_b, round_up, to_words};
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    use crate::kernels::dispatch::Bf16Dot;
    use crate::kernels::dispatch::StepKernels;
    use crate::kernels::fused::MatRow;
    use crate::kernels::{Isa, Kernels};
    use crate::precision::Precision;
    use crate::rng::SplitMix64;

    /// The rounded-row kernels this CPU can run whatever their measured
    /// rate, with the ISA whose table they join.
    fn rounded_row_kernels() -> Option<(Isa, StepKernels)> {
        #[cfg(target_arch = "x86_64")]
        return crate::kernels::avx512::bf16_dot::rounded_steps(Bf16Dot::On)
            .map(|s| (Isa::Avx512, s));
        #[cfg(target_arch = "aarch64")]
        return crate::kernels::neon::bf16_dot::rounded_steps(Bf16Dot::On).map(|s| (Isa::Neon, s));
        #[allow(unreachable_code)]
        None
    }

    /// A row converts to its values rounded as [`round_row_pairs`] rounds
    /// them (which `to_bf16_bits`'s tests pin down), whatever the ISA does
    /// it with; nothing past the row's words is written.
    #[test]
    fn rows_convert_to_rounded_bf16_pairs() {
        let Some((isa, steps)) = rounded_row_kernels() else {
            return; // no bf16 dot product here
        };
        let mut rng = SplitMix64::new(21);
        for k in [1usize, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1027] {
            let mut x: Vec<f32> = (0..k).map(|_| rng.normal() * 3.0).collect();
            // Ties (to even, both ways), zeros, an infinity, the largest
            // finite value (which rounds to infinity).
            let specials = [
                1.0 + 2f32.powi(-8),
                1.0 + 3.0 * 2f32.powi(-8),
                -0.0,
                0.0,
                f32::INFINITY,
                f32::MAX,
            ];
            for (v, s) in x.iter_mut().zip(specials) {
                *v = s;
            }
            let words = k.div_ceil(2);
            let (mut got, mut want) = (vec![7.0f32; words + 1], vec![7.0f32; words + 1]);
            steps
                .rows
                .expect("converted rows")
                .convert_row(&x, &mut got);
            round_row_pairs(&x, &mut want);
            let bits = |v: &[f32]| v.iter().map(|w| w.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{} k={k}", isa.name());
        }
    }

    /// The rounded-row panel product against an f64 oracle of the same
    /// rounded rows and weights. Each product of two bf16 values is exact
    /// in f32, so the kernels differ from the oracle only by their f32
    /// sums: an instruction adds two products to a lane with two roundings
    /// (to nearest on x86; to odd, under a 2⁻²³ relative bound, on Arm
    /// without EBF16), so at most `(k + 2) · 2⁻²² · Σ |x·w|` with the bias.
    /// A NaN in a row makes that row's outputs NaN and no other's.
    #[test]
    fn rounded_row_products_match_the_f64_oracle() {
        let Some((isa, steps)) = rounded_row_kernels() else {
            return; // no bf16 dot product here
        };
        let unit = Kernels::for_isa(isa).unwrap().unit();
        let round = |v: f32| f32::from_bits(u32::from(to_bf16_bits(v)) << 16) as f64;
        let mut rng = SplitMix64::new(22);
        let shapes = [
            (1, 3, 1),
            (5, 40, 9),
            (17, 7, 3),
            (3, 17, 2),
            (130, 70, 13),
            (1100, 40, 20),
        ];
        for (k, n, rows) in shapes {
            let np = round_up(n, unit);
            let w: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let mut x: Vec<f32> = (0..rows * k).map(|_| rng.normal() * 3.0).collect();
            if rows > 2 {
                x[2 * k + k / 2] = f32::NAN;
            }
            let bias: Vec<f32> = (0..np)
                .map(|j| if j < n { rng.normal() } else { 0.0 })
                .collect();
            let f32_panels = pack_b(k, n, unit, |kk, j| w[kk * n + j]).unwrap();
            let panels = to_words(&f32_panels, k, unit, Precision::Bf16).unwrap();
            let words = k.div_ceil(2);
            let mut q = vec![0.0; rows * words];
            for (row, out) in x.chunks(k).zip(q.chunks_mut(words)) {
                steps.rows.expect("converted rows").convert_row(row, out);
            }
            let mut out = vec![0.0; rows * np];
            let mat_rows: Vec<MatRow> = (0..rows)
                .map(|i| MatRow {
                    a: q[i * words..].as_ptr(),
                    out: out[i * np..].as_mut_ptr(),
                })
                .collect();
            // SAFETY: the ISA was checked (rounded_row_kernels); the panels
            // hold np/unit bf16 panels over k; each row is `words` converted
            // words and writes np floats of its own row of `out`.
            unsafe { (steps.panel_matmul)(k, np, &panels, Some(&bias), &mat_rows) };
            for i in 0..rows {
                let row = &x[i * k..(i + 1) * k];
                for j in 0..n {
                    let got = out[i * np + j];
                    if row.iter().any(|v| v.is_nan()) {
                        assert!(got.is_nan(), "k={k} n={n} row {i} col {j}: {got}, not NaN");
                        continue;
                    }
                    let products = (0..k).map(|kk| round(row[kk]) * round(w[kk * n + j]));
                    let want: f64 = products.clone().sum::<f64>() + bias[j] as f64;
                    let size: f64 = products.map(f64::abs).sum::<f64>() + (bias[j] as f64).abs();
                    let bound = (k as f64 + 2.0) * 2f64.powi(-22) * size;
                    assert!(
                        (got as f64 - want).abs() <= bound,
                        "{} k={k} n={n} row {i} col {j}: {got} vs {want} (bound {bound:e})",
                        isa.name()
                    );
                }
            }
        }
    }
}
