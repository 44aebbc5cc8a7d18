//! The few dense operations the reference needs, as plain loops in f64.

pub(super) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `m v + bias` for a row-major matrix `m` of `bias.len()` rows and `v.len()`
/// columns.
pub(super) fn affine(m: &[f64], v: &[f64], bias: &[f64]) -> Vec<f64> {
    let cols = v.len();
    debug_assert_eq!(m.len(), bias.len() * cols);
    bias.iter()
        .enumerate()
        .map(|(row, b)| {
            let dot: f64 = m[row * cols..(row + 1) * cols]
                .iter()
                .zip(v)
                .map(|(a, x)| a * x)
                .sum();
            dot + b
        })
        .collect()
}

/// Backward of `out = m v + bias` given `d_out`: accumulates `d_out vᵀ` into
/// `grad_m`, `d_out` into `grad_bias` and `mᵀ d_out` into `d_v`.
pub(super) fn affine_backward(
    m: &[f64],
    v: &[f64],
    d_out: &[f64],
    grad_m: &mut [f64],
    grad_bias: &mut [f64],
    d_v: &mut [f64],
) {
    let cols = v.len();
    for (row, &d) in d_out.iter().enumerate() {
        grad_bias[row] += d;
        let m_row = &m[row * cols..(row + 1) * cols];
        let g_row = &mut grad_m[row * cols..(row + 1) * cols];
        for k in 0..cols {
            g_row[k] += d * v[k];
            d_v[k] += m_row[k] * d;
        }
    }
}

/// Element-wise `a + b`.
pub(super) fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// The gate clip (ONNX `clip`) of one pre-activation: the value clamped to
/// `[-clip, clip]` and its derivative, 1 where it passes and 0 where it was
/// clamped (a value exactly at the bound passes).
pub(super) fn gate_clip(clip: Option<f64>, a: f64) -> (f64, f64) {
    match clip {
        Some(clip) if a.abs() > clip => (a.clamp(-clip, clip), 0.0),
        _ => (a, 1.0),
    }
}
