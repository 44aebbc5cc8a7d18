//! GRU step, gates r, z, n (`clip` is the optional gate clip, identity
//! without one; `f` is σ and `g` tanh by default):
//! ```text
//! r = f(clip(Wr x + Wbr + Rr h + Rbr))
//! z = f(clip(Wz x + Wbz + Rz h + Rbz))
//! n = g(clip(Wn x + Wbn + Rn (r ⊙ h) + Rbn))        reset before matmul (ONNX)
//! n = g(clip(Wn x + Wbn + r ⊙ (Rn h + Rbn)))        linear before reset (PyTorch)
//! h' = (1 − z) ⊙ n + z ⊙ h
//! ```

use super::block::Block;
use super::math::{affine, affine_backward, Gates};
use crate::config::GruVariant;

struct Step {
    r: Vec<f64>,
    z: Vec<f64>,
    n: Vec<f64>,
    /// The vector Rn multiplies: `r ⊙ h` (reset before) or `h` (linear before).
    rn_input: Vec<f64>,
    /// `Rn rn_input + Rbn`.
    rn_out: Vec<f64>,
    h: Vec<f64>,
    /// Derivatives of r, z and n with respect to their pre-activations
    /// (gate clip included).
    d_r: Vec<f64>,
    d_z: Vec<f64>,
    d_n: Vec<f64>,
}

fn step(p: &Block<&[f64]>, variant: GruVariant, gates: &Gates, x: &[f64], h_prev: &[f64]) -> Step {
    // R is [3H, H] (a GRU has no projection); its rows are r, z, n.
    let hidden = h_prev.len();
    let px = affine(p.w, x, p.wb);
    // Recurrent product for r and z: rows 0..2H of R.
    let ph_rz = affine(&p.r[..2 * hidden * hidden], h_prev, &p.rb[..2 * hidden]);
    let (r, d_r): (Vec<f64>, Vec<f64>) = (0..hidden)
        .map(|j| gates.apply(0, px[j] + ph_rz[j]))
        .unzip();
    let (z, d_z): (Vec<f64>, Vec<f64>) = (0..hidden)
        .map(|j| gates.apply(0, px[hidden + j] + ph_rz[hidden + j]))
        .unzip();
    let rn_input: Vec<f64> = match variant {
        GruVariant::ResetBeforeMatmul => (0..hidden).map(|j| r[j] * h_prev[j]).collect(),
        GruVariant::LinearBeforeReset => h_prev.to_vec(),
    };
    let rn_out = affine(&p.r[2 * hidden * hidden..], &rn_input, &p.rb[2 * hidden..]);
    let (n, d_n): (Vec<f64>, Vec<f64>) = (0..hidden)
        .map(|j| {
            let recurrent = match variant {
                GruVariant::ResetBeforeMatmul => rn_out[j],
                GruVariant::LinearBeforeReset => r[j] * rn_out[j],
            };
            gates.apply(1, px[2 * hidden + j] + recurrent)
        })
        .unzip();
    let h = (0..hidden)
        .map(|j| (1.0 - z[j]) * n[j] + z[j] * h_prev[j])
        .collect();
    Step {
        r,
        z,
        n,
        rn_input,
        rn_out,
        h,
        d_r,
        d_z,
        d_n,
    }
}

pub(super) fn forward(
    p: &Block<&[f64]>,
    variant: GruVariant,
    gates: &Gates,
    x: &[f64],
    h_prev: &[f64],
) -> Vec<f64> {
    step(p, variant, gates, x, h_prev).h
}

/// Accumulates weight gradients into `g`; returns `(dx, dh_prev)`.
pub(super) fn backward(
    p: &Block<&[f64]>,
    g: &mut Block<&mut [f64]>,
    variant: GruVariant,
    gates: &Gates,
    x: &[f64],
    h_prev: &[f64],
    dh: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let hidden = h_prev.len();
    let s = step(p, variant, gates, x, h_prev);
    let mut dh_prev: Vec<f64> = (0..hidden).map(|j| dh[j] * s.z[j]).collect();
    let dn_pre: Vec<f64> = (0..hidden)
        .map(|j| dh[j] * (1.0 - s.z[j]) * s.d_n[j])
        .collect();
    let dz_pre: Vec<f64> = (0..hidden)
        .map(|j| dh[j] * (h_prev[j] - s.n[j]) * s.d_z[j])
        .collect();

    // Through the recurrent product of the n gate.
    let (d_rn_out, dr): (Vec<f64>, Vec<f64>) = match variant {
        GruVariant::ResetBeforeMatmul => (dn_pre.clone(), vec![0.0; hidden]),
        GruVariant::LinearBeforeReset => (
            (0..hidden).map(|j| dn_pre[j] * s.r[j]).collect(),
            (0..hidden).map(|j| dn_pre[j] * s.rn_out[j]).collect(),
        ),
    };
    let mut d_rn_input = vec![0.0; hidden];
    affine_backward(
        &p.r[2 * hidden * hidden..],
        &s.rn_input,
        &d_rn_out,
        &mut g.r[2 * hidden * hidden..],
        &mut g.rb[2 * hidden..],
        &mut d_rn_input,
    );
    let dr: Vec<f64> = match variant {
        GruVariant::ResetBeforeMatmul => {
            for j in 0..hidden {
                dh_prev[j] += d_rn_input[j] * s.r[j];
            }
            (0..hidden).map(|j| d_rn_input[j] * h_prev[j]).collect()
        }
        GruVariant::LinearBeforeReset => {
            for j in 0..hidden {
                dh_prev[j] += d_rn_input[j];
            }
            dr
        }
    };
    let dr_pre: Vec<f64> = (0..hidden).map(|j| dr[j] * s.d_r[j]).collect();

    let d_rz: Vec<f64> = dr_pre.iter().chain(&dz_pre).copied().collect();
    affine_backward(
        &p.r[..2 * hidden * hidden],
        h_prev,
        &d_rz,
        &mut g.r[..2 * hidden * hidden],
        &mut g.rb[..2 * hidden],
        &mut dh_prev,
    );
    let d_px: Vec<f64> = d_rz.iter().chain(&dn_pre).copied().collect();
    let mut dx = vec![0.0; x.len()];
    affine_backward(p.w, x, &d_px, g.w, g.wb, &mut dx);
    (dx, dh_prev)
}
