//! Large matrix products through `matrixmultiply::sgemm`, bounds-checked and
//! split over rayon: the input projection of all time steps, and in the
//! backward pass dX, dW, dR and the per-step `dG × R`.

use rayon::prelude::*;

/// A row-major or transposed view of a matrix inside a slice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Distance between consecutive rows and consecutive columns.
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix whose rows are `stride` apart.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            row_stride: stride,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major `cols × rows` matrix with row stride `stride`.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: stride,
        }
    }
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "matrix view exceeds its buffer");
        }
    }
}

/// `c = a × b + beta · c` where `c` is row-major with row stride `c_stride`.
pub(crate) fn gemm(a: Mat, b: Mat, beta: f32, c: &mut [f32], c_stride: usize) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    a.check();
    b.check();
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * c_stride + n <= c.len(),
        "output exceeds its buffer"
    );
    if k == 0 {
        c.iter_mut().for_each(|v| *v *= beta);
        return;
    }
    // SAFETY: the asserts above keep every index of a, b and c in bounds, and
    // `c` is borrowed mutably, so nothing else aliases it.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.as_mut_ptr(),
            c_stride as isize,
            1,
        );
    }
}

/// [`gemm`] with the rows of `a` and `c` split over rayon's threads (`a` may
/// be a transposed view: a block of its rows is still `row_stride` apart).
pub(crate) fn par_gemm(a: Mat, b: Mat, beta: f32, c: &mut [f32], c_stride: usize) {
    const MIN_ROWS: usize = 64;
    let m = a.rows;
    let threads = rayon::current_num_threads().max(1);
    if m < 2 * MIN_ROWS || threads == 1 {
        return gemm(a, b, beta, c, c_stride);
    }
    let chunk = m.div_ceil(threads * 2).max(MIN_ROWS);
    let c_len = ((m - 1) * c_stride + b.cols).min(c.len());
    c[..c_len]
        .par_chunks_mut(chunk * c_stride)
        .enumerate()
        .for_each(|(i, c_part)| {
            let first = i * chunk;
            let rows = chunk.min(m - first);
            let a_part = Mat {
                rows,
                data: &a.data[first * a.row_stride..],
                ..a
            };
            gemm(a_part, b, beta, c_part, c_stride);
        });
}

/// Column sums of a row-major `rows × cols` matrix added into `out`.
pub(crate) fn add_column_sums(m: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    for row in m.chunks_exact(cols).take(rows) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}
