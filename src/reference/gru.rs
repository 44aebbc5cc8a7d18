//! GRU step, gates r, z, n (`clip` is the optional gate clip, identity
//! without one):
//! ```text
//! r = σ(clip(Wr x + Wbr + Rr h + Rbr))
//! z = σ(clip(Wz x + Wbz + Rz h + Rbz))
//! n = tanh(clip(Wn x + Wbn + Rn (r ⊙ h) + Rbn))        reset before matmul (ONNX)
//! n = tanh(clip(Wn x + Wbn + r ⊙ (Rn h + Rbn)))        linear before reset (PyTorch)
//! h' = (1 − z) ⊙ n + z ⊙ h
//! ```

use super::block::Block;
use super::math::{affine, affine_backward, gate_clip, sigmoid};
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
    /// Gate-clip derivatives (1 = passed, 0 = clamped) of r, z and n.
    pass_r: Vec<f64>,
    pass_z: Vec<f64>,
    pass_n: Vec<f64>,
}

fn step(
    p: &Block<&[f64]>,
    variant: GruVariant,
    clip: Option<f64>,
    x: &[f64],
    h_prev: &[f64],
) -> Step {
    // R is [3H, H] (a GRU has no projection); its rows are r, z, n.
    let hidden = h_prev.len();
    let px = affine(p.w, x, p.wb);
    // Recurrent product for r and z: rows 0..2H of R.
    let ph_rz = affine(&p.r[..2 * hidden * hidden], h_prev, &p.rb[..2 * hidden]);
    let (r, pass_r): (Vec<f64>, Vec<f64>) = (0..hidden)
        .map(|j| gate_clip(clip, px[j] + ph_rz[j]))
        .map(|(a, pass)| (sigmoid(a), pass))
        .unzip();
    let (z, pass_z): (Vec<f64>, Vec<f64>) = (0..hidden)
        .map(|j| gate_clip(clip, px[hidden + j] + ph_rz[hidden + j]))
        .map(|(a, pass)| (sigmoid(a), pass))
        .unzip();
    let rn_input: Vec<f64> = match variant {
        GruVariant::ResetBeforeMatmul => (0..hidden).map(|j| r[j] * h_prev[j]).collect(),
        GruVariant::LinearBeforeReset => h_prev.to_vec(),
    };
    let rn_out = affine(&p.r[2 * hidden * hidden..], &rn_input, &p.rb[2 * hidden..]);
    let (n, pass_n): (Vec<f64>, Vec<f64>) = (0..hidden)
        .map(|j| {
            let recurrent = match variant {
                GruVariant::ResetBeforeMatmul => rn_out[j],
                GruVariant::LinearBeforeReset => r[j] * rn_out[j],
            };
            let (a, pass) = gate_clip(clip, px[2 * hidden + j] + recurrent);
            (a.tanh(), pass)
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
        pass_r,
        pass_z,
        pass_n,
    }
}

pub(super) fn forward(
    p: &Block<&[f64]>,
    variant: GruVariant,
    clip: Option<f64>,
    x: &[f64],
    h_prev: &[f64],
) -> Vec<f64> {
    step(p, variant, clip, x, h_prev).h
}

/// Accumulates weight gradients into `g`; returns `(dx, dh_prev)`.
pub(super) fn backward(
    p: &Block<&[f64]>,
    g: &mut Block<&mut [f64]>,
    variant: GruVariant,
    clip: Option<f64>,
    x: &[f64],
    h_prev: &[f64],
    dh: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let hidden = h_prev.len();
    let s = step(p, variant, clip, x, h_prev);
    let mut dh_prev: Vec<f64> = (0..hidden).map(|j| dh[j] * s.z[j]).collect();
    let dn_pre: Vec<f64> = (0..hidden)
        .map(|j| dh[j] * (1.0 - s.z[j]) * (1.0 - s.n[j] * s.n[j]) * s.pass_n[j])
        .collect();
    let dz_pre: Vec<f64> = (0..hidden)
        .map(|j| dh[j] * (h_prev[j] - s.n[j]) * s.z[j] * (1.0 - s.z[j]) * s.pass_z[j])
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
    let dr_pre: Vec<f64> = (0..hidden)
        .map(|j| dr[j] * s.r[j] * (1.0 - s.r[j]) * s.pass_r[j])
        .collect();

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
