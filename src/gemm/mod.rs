//! Matrix products through `matrixmultiply::sgemm`, bounds-checked: the
//! attention layer's batch projections and backward (`attention`). The
//! engine's own products over all steps are in `engine::products`, which
//! the training helpers' dense layer (`train::dense`) also runs on.

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

/// Checks that `a × b` fits `c` (row stride `c_stride`); returns whether there
/// is any work, i.e. every dimension is non-zero.
fn check_product(a: &Mat, b: &Mat, c_len: usize, c_stride: usize) -> bool {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    a.check();
    b.check();
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return false;
    }
    assert!((m - 1) * c_stride + n <= c_len, "output exceeds its buffer");
    k > 0
}

/// `c = a × b + beta · c` through matrixmultiply.
///
/// # Safety
/// `check_product` accepted the views for a buffer `c` points into, and
/// nothing else accesses the part of it this product writes.
unsafe fn sgemm_raw(a: Mat, b: Mat, beta: f32, c: *mut f32, c_stride: usize) {
    // SAFETY: forwarded to the caller; the views are bounds-checked.
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            1.0,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c,
            c_stride as isize,
            1,
        );
    }
}

/// `c = a × b + beta · c` where `c` is row-major with row stride `c_stride`.
/// With `beta = 0`, `c` is not read (it may hold anything, NaN included).
pub(crate) fn gemm(a: Mat, b: Mat, beta: f32, c: &mut [f32], c_stride: usize) {
    if a.rows > 0 && b.cols > 0 && a.cols == 0 {
        // No inner dimension: the product is zero.
        check_product(&a, &b, c.len(), c_stride);
        for row in 0..a.rows {
            let c_row = &mut c[row * c_stride..row * c_stride + b.cols];
            if beta == 0.0 {
                c_row.fill(0.0);
            } else {
                c_row.iter_mut().for_each(|v| *v *= beta);
            }
        }
        return;
    }
    if check_product(&a, &b, c.len(), c_stride) {
        // SAFETY: checked above; `c` is borrowed mutably, so nothing else aliases it.
        unsafe { sgemm_raw(a, b, beta, c.as_mut_ptr(), c_stride) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn naive(a: &Mat, b: &Mat, beta: f32, c: &[f32], c_stride: usize) -> Vec<f32> {
        let mut out = c.to_vec();
        for i in 0..a.rows {
            for j in 0..b.cols {
                let dot: f64 = (0..a.cols)
                    .map(|p| {
                        f64::from(a.data[i * a.row_stride + p * a.col_stride])
                            * f64::from(b.data[p * b.row_stride + j * b.col_stride])
                    })
                    .sum();
                let idx = i * c_stride + j;
                out[idx] = (f64::from(beta) * f64::from(c[idx]) + dot) as f32;
            }
        }
        out
    }

    /// Transposed views, beta 0 and 1, empty dimensions.
    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri (matrixmultiply on many shapes)")]
    fn gemm_equals_a_naive_product() {
        let mut rng = SplitMix64::new(1);
        for (m, k, n) in [
            (300, 7, 5),
            (5, 7, 300),
            (130, 65, 140),
            (1, 3, 1),
            (0, 4, 4),
            (4, 0, 5),
        ] {
            for transposed_a in [false, true] {
                let a_data = rng.uniform_vec(m * k, -1.0, 1.0);
                let b_data = rng.uniform_vec(k * n, -1.0, 1.0);
                let a = if transposed_a {
                    Mat::transposed(&a_data, m, k, m)
                } else {
                    Mat::rows(&a_data, m, k, k)
                };
                let b = Mat::rows(&b_data, k, n, n);
                let c_stride = n + 3;
                for beta in [0.0, 1.0] {
                    let mut c0 = rng.uniform_vec(m * c_stride, -1.0, 1.0);
                    let want = naive(&a, &b, beta, &c0, c_stride);
                    if beta == 0.0 {
                        // beta = 0 must not read c, even a NaN in it (the
                        // padding past n columns must stay untouched).
                        for row in c0.chunks_mut(c_stride) {
                            row[..n].fill(f32::NAN);
                        }
                    }
                    let mut got = c0.clone();
                    gemm(a, b, beta, &mut got, c_stride);
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-4, "{m}x{k}x{n}: {g} vs {w}");
                    }
                }
            }
        }
    }
}
