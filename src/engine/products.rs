//! The backward pass's products over all time steps at once (dW, dR, dP
//! and dX), on the kernels' own blocked product (`fused::blocked_matmul`):
//! the right operand packed once per call as one-gate panels, the left
//! operand's rows `k` floats each (a transposed gradient for the weight
//! gradients), and output rows written straight into their destination
//! (`dparams` or dX), unpadded.
//!
//! Bits do not depend on the threads: rows are split over the pool, and
//! each output is computed by one kernel call with the same `k` blocking.
//! Sums over rows (the bias gradients) run in f64, in row order.

use rayon::prelude::*;

use super::pack::fill_panels;
use super::SharedMut;
use crate::error::{try_with_capacity, Result};
use crate::kernels::fused::MatRow;
use crate::kernels::transpose::Columns;
use crate::kernels::Kernels;

/// Whether a product of `macs` multiply-adds, on vectors of `lanes` f32
/// lanes, is split over a call's `threads` threads (rather than run on
/// the calling one): where it pays for the hand-off ([`super::fork_pays`]).
pub(super) fn product_forks(macs: usize, threads: usize, lanes: usize) -> bool {
    threads > 1 && super::fork_pays(macs, lanes)
}

/// Whether transposing `cols` gate columns of `rows` rows
/// ([`transpose_gate_columns`]) is split over a call's `threads` threads.
pub(super) fn transpose_forks(cols: usize, rows: usize, threads: usize) -> bool {
    threads > 1 && cols.saturating_mul(rows) >= 1 << 16
}

/// Output rows per task when a product is split: a few register-tile
/// chunks, so the pool balances without a task per row.
const ROWS_PER_TASK: usize = 64;

/// `out[i·out_stride ..][..n] = a[i·a_stride ..][..k] × B` (`accumulate`:
/// `+=`) for `m` rows, `B [k, n]` packed as `ceil(n / U)` panels of `k × U`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_times_panels(
    kernels: Kernels,
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    a_stride: usize,
    packed: &[f32],
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let u = kernels.unit();
    assert!(a_stride >= k && out_stride >= n, "row strides");
    assert!(
        a.len() >= (m - 1) * a_stride + k,
        "left operand holds m rows"
    );
    assert!(out.len() >= (m - 1) * out_stride + n, "output holds m rows");
    assert!(packed.len() >= n.div_ceil(u) * u * k, "packed panels");
    let out = SharedMut::new(out);
    // Rows `first..end` times panels `p0..p1` (columns `p0·U ..`).
    let run = |(first, end): (usize, usize), (p0, p1): (usize, usize)| -> Result<()> {
        let mut rows: Vec<MatRow> = try_with_capacity(end - first, "a product's row list")?;
        // SAFETY: rows first..end of `a` and `out` are inside the buffers,
        // and column p0·U of `out` within its rows' n (checked above); each
        // task owns its output rows' columns of these panels.
        rows.extend((first..end).map(|i| unsafe {
            MatRow {
                a: a.as_ptr().add(i * a_stride),
                out: out.at(i * out_stride + p0 * u),
            }
        }));
        let width = n.min(p1 * u) - p0 * u;
        // SAFETY: `Kernels` exists only for a supported ISA; the rows and
        // panels are as `blocked_matmul` needs (checked above).
        unsafe {
            (kernels.table.blocked_matmul)(
                k,
                width,
                &packed[p0 * u * k..p1 * u * k],
                &rows,
                accumulate,
            )
        };
        Ok(())
    };
    let (threads, panels) = (crate::threads::num_threads().max(1), n.div_ceil(u));
    if !product_forks(m * k * n, threads, kernels.lanes()) {
        return run((0, m), (0, panels));
    }
    // A few tasks per thread: blocks of rows, and where there are too few
    // rows for that (a weight gradient's G·H rows), groups of panels too.
    // Each output is one kernel's sum over all of k, whatever the split.
    let row_tasks = m.div_ceil(ROWS_PER_TASK).min(4 * threads);
    let per = m.div_ceil(row_tasks);
    let groups = (4 * threads).div_ceil(row_tasks).min(panels);
    crate::threads::on_pool(|| {
        (0..row_tasks * groups)
            .into_par_iter()
            .try_for_each(|task| {
                let (block, group) = (task / groups, task % groups);
                let rows = ((block * per).min(m), m.min((block + 1) * per));
                let panels = (group * panels / groups, (group + 1) * panels / groups);
                match rows.0 < rows.1 && panels.0 < panels.1 {
                    true => run(rows, panels),
                    false => Ok(()),
                }
            })
    })?
}

/// Packs `rows` rows of `cols` floats (`stride` apart) of `src` as the right
/// operand of [`rows_times_panels`] (`k = rows`, `n = cols`): panel `p`,
/// then row, then `unit` columns, zero past `cols`. `out` holds
/// `ceil(cols / unit) · unit · rows` floats.
pub(crate) fn pack_rows(
    src: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    unit: usize,
    out: &mut [f32],
) {
    if rows > 0 {
        assert!(src.len() >= (rows - 1) * stride + cols, "source rows");
    }
    fill_panels((rows, cols, unit), out, |r, c0, dst| {
        let from = r * stride + c0;
        dst.copy_from_slice(&src[from..from + dst.len()]);
    });
}

/// [`pack_rows`] of the reset-before-matmul GRU's `r ⊙ h_prev`, from a
/// trace's interleaved gates (`[rows, gh]`, r first in each `unit`-wide
/// panel) and its states (`[rows, stride]`): the product the forward step
/// formed, the same bits, so the trace need not keep it.
pub(crate) fn pack_reset_states(
    (gates, gh): (&[f32], usize),
    (h_prev, stride): (&[f32], usize),
    (rows, cols): (usize, usize),
    unit: usize,
    out: &mut [f32],
) {
    if rows > 0 {
        assert!(gates.len() >= rows * gh, "gate rows");
        assert!(h_prev.len() >= (rows - 1) * stride + cols, "state rows");
    }
    fill_panels((rows, cols, unit), out, |r, c0, dst| {
        let r_gate = &gates[r * gh + 3 * c0..][..dst.len()];
        let h = &h_prev[r * stride + c0..][..dst.len()];
        for ((d, &g), &h) in dst.iter_mut().zip(r_gate).zip(h) {
            *d = g * h;
        }
    });
}

/// The row stride of a transposed gradient of `rows` rows, see
/// [`transpose::padded_stride`].
pub(crate) use crate::kernels::transpose::padded_stride as transposed_stride;

/// Bytes of a transposed output from which it is written past the caches:
/// a core's L2 (2 MiB on the Sapphire Rapids VM, 1 MiB on Zen 5).
const STREAM_BYTES: usize = 1 << 21;

/// Columns per task of the transpose: each column is one task's, so its
/// sum runs over every row in order whatever the split.
const TRANSPOSE_COLUMNS: usize = 128;

/// The transpose of a gradient's gate columns, without their padding:
/// `out[(g·h + j)·out_stride + r] = src[r·stride + g·hp + j]` for `gates`
/// gates of `h` units (`hp` apart) over `rows` rows, and each such column's
/// sum over the rows in f64, in row order, into `sums` (the bias
/// gradients). `out_stride` is best [`transposed_stride`]`(rows)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn transpose_gate_columns(
    kernels: Kernels,
    src: &[f32],
    rows: usize,
    stride: usize,
    (gates, h, hp): (usize, usize, usize),
    out: &mut [f32],
    out_stride: usize,
    sums: &mut [f64],
) {
    let cols = gates * h;
    assert!(
        rows <= out_stride && out.len() >= cols * out_stride && sums.len() >= cols,
        "output sizes"
    );
    if rows == 0 || cols == 0 {
        sums[..cols].fill(0.0);
        return;
    }
    assert!(
        (gates - 1) * hp + h <= stride && src.len() >= (rows - 1) * stride + (gates - 1) * hp + h,
        "source rows"
    );
    let group = TRANSPOSE_COLUMNS;
    // An output larger than a core's L2 leaves the caches before the
    // products read it: it may skip them (streaming stores, where the ISA
    // has them).
    let stream = cols * out_stride * std::mem::size_of::<f32>() > STREAM_BYTES;
    let work = |(task, (dst, sum)): (usize, (&mut [f32], &mut [f64]))| {
        // The task's columns as runs that are contiguous in `src` (a run
        // ends where a gate does), each transposed by the ISA's kernel.
        let (first, width) = (task * group, sum.len());
        sum.fill(0.0);
        let mut c = 0;
        while c < width {
            let (g, j) = ((first + c) / h, (first + c) % h);
            let len = (h - j).min(width - c);
            // SAFETY: `Kernels` exists only for a supported ISA; the kernel
            // checks its slices' bounds.
            unsafe {
                (kernels.table.transpose_columns)(Columns {
                    src: &src[g * hp + j..],
                    src_stride: stride,
                    rows,
                    cols: len,
                    dst: &mut dst[c * out_stride..],
                    dst_stride: out_stride,
                    sums: &mut sum[c..c + len],
                    stream,
                })
            };
            c += len;
        }
    };
    let (out, sums) = (&mut out[..cols * out_stride], &mut sums[..cols]);
    let forked = transpose_forks(cols, rows, crate::threads::num_threads())
        && crate::threads::on_pool(|| {
            out.par_chunks_mut(group * out_stride)
                .zip(sums.par_chunks_mut(group))
                .enumerate()
                .for_each(work)
        })
        .is_ok();
    if !forked {
        out.chunks_mut(group * out_stride)
            .zip(sums.chunks_mut(group))
            .enumerate()
            .for_each(work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;
    use crate::rng::SplitMix64;

    /// Every ISA, ragged sizes (k across several blocks, n not a multiple
    /// of a vector), store and accumulate, one and two threads: equal to an
    /// f64 product within f32 rounding, and the same bits on both pools.
    /// The last two shapes are past `FORK_FMAS` on every ISA: split into
    /// row blocks and, having few rows, into panel groups too.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "too slow under Miri; small_scalar_products covers the scalar product"
    )]
    fn rows_times_panels_equals_a_naive_product_on_every_isa() {
        let mut rng = SplitMix64::new(7);
        for isa in Isa::supported() {
            let kernels = Kernels::for_isa(isa).unwrap();
            let u = kernels.unit();
            for (m, k, n) in [
                (1, 1, 1),
                (5, 3, 17),
                (130, 600, 37),
                (70, 257, 64),
                (9, 0, 5),
                (65, 2100, 40),
                (300, 300, 50),
            ] {
                let (a_stride, out_stride) = (k + 3, n + 2);
                let a = rng.uniform_vec(m * a_stride, -1.0, 1.0);
                let b = rng.uniform_vec(k * n, -1.0, 1.0);
                let mut packed = vec![f32::NAN; n.div_ceil(u) * u * k];
                pack_rows(&b, k, n, n, u, &mut packed);
                for accumulate in [false, true] {
                    let start = rng.uniform_vec(m * out_stride, -1.0, 1.0);
                    let mut results = Vec::new();
                    for threads in [1, 2] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        let mut out = start.clone();
                        if !accumulate {
                            for row in out.chunks_mut(out_stride) {
                                row[..n].fill(f32::NAN); // never read
                            }
                        }
                        pool.install(|| {
                            rows_times_panels(
                                kernels,
                                (m, k, n),
                                &a,
                                a_stride,
                                &packed,
                                &mut out,
                                out_stride,
                                accumulate,
                            )
                        })
                        .unwrap();
                        for i in 0..m {
                            for j in 0..out_stride {
                                let got = out[i * out_stride + j];
                                if j >= n {
                                    assert_eq!(got.to_bits(), start[i * out_stride + j].to_bits());
                                    continue;
                                }
                                let dot: f64 = (0..k)
                                    .map(|p| {
                                        f64::from(a[i * a_stride + p]) * f64::from(b[p * n + j])
                                    })
                                    .sum();
                                let want = dot
                                    + if accumulate {
                                        f64::from(start[i * out_stride + j])
                                    } else {
                                        0.0
                                    };
                                let tol = 1e-5 * (k as f64 + 1.0);
                                assert!(
                                    (f64::from(got) - want).abs() < tol,
                                    "{isa:?} {m}x{k}x{n}: {got} vs {want}"
                                );
                            }
                        }
                        results.push(out);
                    }
                    let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&results[0]), bits(&results[1]), "{isa:?} {m}x{k}x{n}");
                }
            }
        }
    }

    /// The scalar path on small shapes, cheap enough for Miri
    /// (`cargo +nightly miri test --lib products::tests::small`).
    #[test]
    fn small_scalar_products() {
        let kernels = Kernels::for_isa(Isa::Scalar).unwrap();
        let u = kernels.unit();
        for (m, k, n) in [(3usize, 5usize, 9usize), (7, 2, 1), (2, 0, 3)] {
            let a: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.25).collect();
            let b: Vec<f32> = (0..k * n).map(|v| 1.0 - v as f32 * 0.125).collect();
            let mut packed = vec![f32::NAN; n.div_ceil(u) * u * k];
            pack_rows(&b, k, n, n, u, &mut packed);
            let mut out = vec![f32::NAN; m * n];
            rows_times_panels(kernels, (m, k, n), &a, k, &packed, &mut out, n, false).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                    assert!((out[i * n + j] - want).abs() < 1e-4, "{m}x{k}x{n}");
                }
            }
        }
    }

    /// Every ISA, gates with padding, runs that leave ragged tiles, and
    /// enough values to split over the pool: values and sums as plain loops.
    #[test]
    fn transposed_gate_columns_and_their_sums() {
        // Miri runs the small case only (the others take minutes there).
        let cases: &[_] = if cfg!(miri) {
            &[(130, 3, 5, 8)]
        } else {
            &[(130, 3, 5, 8), (130, 3, 37, 48), (700, 4, 37, 48)]
        };
        for &(rows, gates, h, hp) in cases {
            let stride = gates * hp + 1;
            let src: Vec<f32> = (0..rows * stride).map(|v| v as f32 * 0.5).collect();
            let out_stride = transposed_stride(rows);
            for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
                let kernels = Kernels::for_isa(isa).unwrap();
                let mut out = vec![f32::NAN; gates * h * out_stride];
                let mut sums = vec![f64::NAN; gates * h];
                let src_shape = (gates, h, hp);
                transpose_gate_columns(
                    kernels, &src, rows, stride, src_shape, &mut out, out_stride, &mut sums,
                );
                for g in 0..gates {
                    for j in 0..h {
                        let i = g * h + j;
                        let col: Vec<f32> =
                            (0..rows).map(|r| src[r * stride + g * hp + j]).collect();
                        assert_eq!(&out[i * out_stride..][..rows], &col[..], "{isa:?}");
                        let sum = col.iter().map(|&v| f64::from(v)).sum::<f64>();
                        assert_eq!(sums[i], sum, "{isa:?}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::engine::pack::Aligned;
    use crate::gemm::{gemm, Mat};
    use crate::kernels::Isa;

    #[test]
    #[ignore]
    fn time_products() {
        let kernels = Kernels::for_isa(Isa::best()).unwrap();
        let u = kernels.unit();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for (m, k, n) in [
            // dW and dR at batch 1 (k = T · N = 25, 50 rows of dG).
            (4096, 25, 1024),
            (1024, 50, 256),
            (1024, 2048, 256),
            (1024, 2048, 65),
            (2048, 3200, 512),
            (3200, 2048, 512),
            (4096, 50, 1024),
            (4096, 400, 1024),
            (400, 4096, 1024),
        ] {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let len = n.div_ceil(u) * u * k;
            // Aligned to a cache line, as the engine packs it.
            let mut packed = Aligned::within(vec![0f32; len + Aligned::SLACK], len);
            let mut out = vec![0f32; m * n];
            // Touched before timing: the first writes of a fresh allocation
            // fault its pages in, which only the first product timed would
            // pay (at k = 25 that made ours look half as fast).
            out.fill(1.0);
            let reps = 5;
            pool.install(|| {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    pack_rows(&b, k, n, n, u, &mut packed);
                    rows_times_panels(kernels, (m, k, n), &a, k, &packed, &mut out, n, false)
                        .unwrap();
                }
                let ours = t.elapsed().as_secs_f64() / reps as f64;
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    gemm(
                        Mat::rows(&a, m, k, k),
                        Mat::rows(&b, k, n, n),
                        0.0,
                        &mut out,
                        n,
                    );
                }
                let mm = t.elapsed().as_secs_f64() / reps as f64;
                let f = 2.0 * (m * k * n) as f64 / 1e9;
                println!(
                    "{m}x{k}x{n}: ours {:.1} GFLOP/s, matrixmultiply {:.1}",
                    f / ours,
                    f / mm
                );
            });
        }
    }

    /// The transpose of dG with the bias sums, on the shapes of char_rnn's
    /// LSTM (H = 256, 2048 rows) and LSTM 512×64×50, both operands starting
    /// a cache line as in the engine, on each ISA this CPU runs.
    #[test]
    #[ignore]
    fn time_transpose() {
        let isas = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar];
        for isa in isas.into_iter().filter(|i| i.is_supported()) {
            time_transpose_on(isa);
        }
    }

    fn time_transpose_on(isa: Isa) {
        let kernels = Kernels::for_isa(isa).unwrap();
        for (rows, h) in [(2048usize, 256usize), (3200, 512)] {
            let gh = 4 * h;
            let out_stride = transposed_stride(rows);
            let src = Aligned::within(vec![0.5f32; rows * gh + Aligned::SLACK], rows * gh);
            let len = gh * out_stride;
            let mut out = Aligned::within(vec![0f32; len + Aligned::SLACK], len);
            let mut sums = vec![0f64; gh];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            pool.install(|| {
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    let shape = (4, h, h);
                    transpose_gate_columns(
                        kernels, &src, rows, gh, shape, &mut out, out_stride, &mut sums,
                    );
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!("{isa:?} {rows} x {gh}: {:.2} ms", best * 1e3);
            });
        }
    }
}
