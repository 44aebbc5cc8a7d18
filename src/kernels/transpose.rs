//! The transpose of gradient columns (the backward's dGᵀ, whose rows are
//! the left operands of the weight-gradient products), with each column's
//! f64 sum over the rows (the bias gradients).
//!
//! Written once in portable Rust and compiled into each ISA's kernel table
//! with its target features (as `quantize.rs`); AVX-512 and AVX2 replace
//! its tile with 16 × 16 tiles transposed in registers
//! (`avx512::Tile16`, `avx2::Tile16`), all driven by [`tiled`].
//! Every version adds each column's values in row order, so the sums are
//! the same bits on every ISA.

/// Side of the square tiles values move in: a tile reads whole cache lines
/// of `TILE` rows and writes whole lines of `TILE` columns.
pub(crate) const TILE: usize = 16;

/// The row stride of a transposed buffer of `rows` rows (floats): whole
/// cache lines, and an odd number of them, so the `TILE` output rows a
/// tile writes fall in `TILE` different cache sets. (Rows a power of two
/// apart all fall in one set: the transpose at 2048 rows ran 1.7-2×
/// slower, measured on the Sapphire Rapids VM of BENCHMARKS.md.)
pub(crate) fn padded_stride(rows: usize) -> usize {
    let lines = rows.div_ceil(TILE);
    TILE * (lines | 1)
}

/// One transpose: `dst[c·dst_stride + r] = src[r·src_stride + c]` for
/// `rows × cols` values, and `sums[c] += src[r][c]` in f64 for each row in
/// order; `stream` (the output will not be read before it leaves the
/// caches) allows streaming stores where every column starts a line.
pub(crate) struct Columns<'a> {
    pub src: &'a [f32],
    pub src_stride: usize,
    pub rows: usize,
    pub cols: usize,
    pub dst: &'a mut [f32],
    pub dst_stride: usize,
    pub sums: &'a mut [f64],
    pub stream: bool,
}

/// Asserts what [`tiled`] reads and writes is inside its slices.
fn check(job: &Columns<'_>) {
    let Columns {
        src,
        src_stride,
        rows,
        cols,
        ref dst,
        dst_stride,
        ref sums,
        ..
    } = *job;
    assert!(sums.len() >= cols, "a sum per column");
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        cols <= src_stride && src.len() >= (rows - 1) * src_stride + cols,
        "source rows"
    );
    assert!(
        rows <= dst_stride && dst.len() >= (cols - 1) * dst_stride + rows,
        "output rows"
    );
}

/// One whole `TILE × TILE` tile of [`tiled`], in one ISA's registers.
pub(crate) trait Tile {
    /// Transposes the tile whose first row is at `src` (rows `src_stride`
    /// apart) into the columns starting at `dst` (`dst_stride` apart) and
    /// adds each of its rows to `sums[0..TILE]` in f64, in row order;
    /// `stream`: with streaming stores.
    ///
    /// # Safety
    /// `TILE` rows of `TILE` floats are readable at `src`, `TILE` columns of
    /// `TILE` floats writable at `dst`, `TILE` sums at `sums`; with
    /// `stream`, every column starts a cache line; the CPU has the ISA.
    unsafe fn tile(
        src: *const f32,
        src_stride: usize,
        dst: *mut f32,
        dst_stride: usize,
        sums: *mut f64,
        stream: bool,
    );

    /// Makes streaming stores visible before whatever publishes the
    /// output to another thread (they are weakly ordered).
    ///
    /// # Safety
    /// The CPU has the ISA.
    unsafe fn fence() {}
}

/// Runs `job` ([`Columns`]): whole tiles by `T`, the ragged edges value
/// by value; `T` streams its stores where `job.stream` and every column
/// starts a line.
///
/// # Safety
/// The CPU has `T`'s ISA (the slices' bounds are checked here).
#[inline(always)]
pub(crate) unsafe fn tiled<T: Tile>(job: Columns<'_>) {
    check(&job);
    let Columns {
        src,
        src_stride,
        rows,
        cols,
        dst,
        dst_stride,
        sums,
        stream,
    } = job;
    let (full_rows, full_cols) = (rows / TILE * TILE, cols / TILE * TILE);
    let line = 64;
    let stream =
        stream && (dst.as_ptr() as usize).is_multiple_of(line) && dst_stride.is_multiple_of(TILE);
    for r0 in (0..full_rows).step_by(TILE) {
        for c0 in (0..full_cols).step_by(TILE) {
            // SAFETY: the tile's rows and columns, and its sums, are inside
            // the slices (`check`); with `stream`, `dst` starts a line and
            // columns are whole lines apart, and r0 is a multiple of TILE;
            // the ISA is the caller's contract.
            unsafe {
                T::tile(
                    src.as_ptr().add(r0 * src_stride + c0),
                    src_stride,
                    dst.as_mut_ptr().add(c0 * dst_stride + r0),
                    dst_stride,
                    sums.as_mut_ptr().add(c0),
                    stream,
                )
            };
        }
    }
    if stream {
        // SAFETY: the ISA is the caller's contract.
        unsafe { T::fence() };
    }
    // The edges after the whole tiles: each column's rows stay in order.
    let edge = |(r0, rows): (usize, usize),
                (c0, cols): (usize, usize),
                dst: &mut [f32],
                sums: &mut [f64]| {
        for r in r0..r0 + rows {
            for c in c0..c0 + cols {
                let v = src[r * src_stride + c];
                dst[c * dst_stride + r] = v;
                sums[c] += f64::from(v);
            }
        }
    };
    edge((full_rows, rows - full_rows), (0, full_cols), dst, sums);
    edge((0, rows), (full_cols, cols - full_cols), dst, sums);
}

/// The portable tile: through a local array, which the compiler
/// vectorises with the ISA's features.
pub(crate) struct Portable;

impl Tile for Portable {
    #[inline(always)]
    unsafe fn tile(
        src: *const f32,
        src_stride: usize,
        dst: *mut f32,
        dst_stride: usize,
        sums: *mut f64,
        _stream: bool,
    ) {
        let mut tile = [[0f32; TILE]; TILE];
        // SAFETY: the trait's contract: whole rows, columns and sums.
        unsafe {
            for (r, line) in tile.iter_mut().enumerate() {
                std::ptr::copy_nonoverlapping(src.add(r * src_stride), line.as_mut_ptr(), TILE);
                for (c, &v) in line.iter().enumerate() {
                    *sums.add(c) += f64::from(v);
                }
            }
            for c in 0..TILE {
                let column = dst.add(c * dst_stride);
                for (r, line) in tile.iter().enumerate() {
                    *column.add(r) = line[c];
                }
            }
        }
    }
}

/// [`tiled`] with the portable tile (scalar and NEON; each ISA's table
/// compiles it with its features).
pub(crate) fn columns(job: Columns<'_>) {
    // SAFETY: the portable tile needs no ISA beyond the baseline.
    unsafe { tiled::<Portable>(job) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::pack::Aligned;
    use crate::kernels::{Isa, Kernels};
    use crate::rng::SplitMix64;

    /// Every ISA against a plain loop, bit for bit (values and sums), on
    /// sizes around the tile and strides with padding.
    #[test]
    fn every_isa_transposes_and_sums_as_a_plain_loop() {
        let mut rng = SplitMix64::new(11);
        // Miri takes the small sizes only (still whole tiles and edges).
        let sizes: &[_] = if cfg!(miri) {
            &[(0, 5), (3, 0), (1, 1), (17, 18)]
        } else {
            &[
                (0, 5),
                (3, 0),
                (1, 1),
                (16, 16),
                (17, 33),
                (40, 16),
                (100, 47),
                (64, 128),
            ]
        };
        for &(rows, cols) in sizes {
            let src_stride = cols + 3;
            let dst_stride = padded_stride(rows);
            let src = rng.uniform_vec(rows * src_stride, -1.0, 1.0);
            let mut want = vec![-7f32; cols * dst_stride];
            let mut want_sums = vec![0.25f64; cols];
            for c in 0..cols {
                for r in 0..rows {
                    want[c * dst_stride + r] = src[r * src_stride + c];
                    want_sums[c] += f64::from(src[r * src_stride + c]);
                }
            }
            let supported = Isa::ALL.into_iter().filter(|i| i.is_supported());
            for (isa, stream) in supported.flat_map(|i| [(i, false), (i, true)]) {
                let kernels = Kernels::for_isa(isa).unwrap();
                // Line-aligned, so that streaming stores run where they can.
                let len = cols * dst_stride;
                let mut got = Aligned::within(vec![-7f32; len + Aligned::SLACK], len);
                let mut sums = vec![0.25f64; cols];
                // SAFETY: the ISA is supported (checked above).
                unsafe {
                    (kernels.table.transpose_columns)(Columns {
                        src: &src,
                        src_stride,
                        rows,
                        cols,
                        dst: &mut got,
                        dst_stride,
                        sums: &mut sums,
                        stream,
                    })
                };
                assert_eq!(&got[..], &want[..], "{isa:?} {rows} x {cols} {stream}");
                let bits = |s: &[f64]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&sums),
                    bits(&want_sums),
                    "{isa:?} {rows} x {cols} sums"
                );
            }
        }
    }

    #[test]
    fn padded_strides_are_an_odd_number_of_lines() {
        for rows in [0, 1, 16, 17, 2048, 3200] {
            let s = padded_stride(rows);
            assert!(
                s >= rows && s.is_multiple_of(TILE) && (s / TILE) % 2 == 1,
                "{rows}: {s}"
            );
        }
        assert_eq!(padded_stride(2048), 2064);
        assert_eq!(padded_stride(100), 112);
    }
}
