//! Gradient clipping, on any flat gradient vector (a model's `dparams`, an
//! output layer's, or both concatenated).

/// Scales `grads` so their global L2 norm is at most `max_norm`; returns the
/// norm before clipping. A non-finite norm leaves `grads` unchanged (and is
/// returned so the caller can skip the step).
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    clip_grad_norm_all(&mut [grads], max_norm)
}

/// [`clip_grad_norm`] over several gradient vectors taken together.
pub fn clip_grad_norm_all(parts: &mut [&mut [f32]], max_norm: f32) -> f32 {
    let sum: f64 = parts
        .iter()
        .flat_map(|p| p.iter())
        .map(|&g| f64::from(g) * f64::from(g))
        .sum();
    let norm = sum.sqrt() as f32;
    if norm.is_finite() && norm > max_norm && norm > 0.0 {
        let scale = max_norm / norm;
        for g in parts.iter_mut().flat_map(|p| p.iter_mut()) {
            *g *= scale;
        }
    }
    norm
}

/// Clamps every gradient to `[-limit, limit]` (NaN stays NaN).
pub fn clip_grad_value(grads: &mut [f32], limit: f32) {
    for g in grads {
        if *g > limit {
            *g = limit;
        } else if *g < -limit {
            *g = -limit;
        }
    }
}
