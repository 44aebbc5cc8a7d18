//! Gradient clipping, on any flat gradient vector (a model's `dparams`, an
//! output layer's, or both concatenated).

/// Scales `grads` so their global L2 norm is at most `max_norm`; returns the
/// norm before clipping, rounded to f32.
///
/// The norm and the scale are computed in f64, which cannot overflow for
/// finite f32 gradients (a sum of squares is at most `len · 1.2e77`), so
/// every finite input is clipped correctly, even one whose norm exceeds
/// `f32::MAX` (the returned norm is then `+inf`, and the gradients *are*
/// scaled). If any gradient is NaN or infinite, the norm is NaN or `+inf`
/// and `grads` is left unchanged, so the caller can skip the step: check
/// the gradients (or the loss) for finiteness to tell the two `+inf` cases
/// apart.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    clip_grad_norm_all(&mut [grads], max_norm)
}

/// [`clip_grad_norm`] over several gradient vectors taken together.
pub fn clip_grad_norm_all(parts: &mut [&mut [f32]], max_norm: f32) -> f32 {
    // LANES independent sums (element i into sum i % LANES of its part),
    // added in order at the end: one f64 sum chain was bound by its add
    // latency (0.5 ms for char_rnn's 333k gradients); the order is fixed, so
    // the result is the same on every run and thread count.
    const LANES: usize = 8;
    let mut sums = [0.0f64; LANES];
    let mut all_finite = true;
    for part in parts.iter() {
        let mut chunks = part.chunks_exact(LANES);
        for chunk in chunks.by_ref() {
            for (s, &g) in sums.iter_mut().zip(chunk) {
                all_finite &= g.is_finite();
                *s += f64::from(g) * f64::from(g);
            }
        }
        for (s, &g) in sums.iter_mut().zip(chunks.remainder()) {
            all_finite &= g.is_finite();
            *s += f64::from(g) * f64::from(g);
        }
    }
    let norm = sums.iter().sum::<f64>().sqrt();
    let max_norm = f64::from(max_norm);
    if all_finite && norm > max_norm && norm > 0.0 {
        let scale = max_norm / norm;
        for g in parts.iter_mut().flat_map(|p| p.iter_mut()) {
            *g = (f64::from(*g) * scale) as f32;
        }
    }
    norm as f32
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
