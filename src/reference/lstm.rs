//! LSTM step, gates i, f, g, o:
//! ```text
//! i = σ(Wi x + Wbi + Ri h + Rbi + p_i ⊙ c_prev)
//! f = σ(Wf x + Wbf + Rf h + Rbf + p_f ⊙ c_prev)
//! g = tanh(Wg x + Wbg + Rg h + Rbg)
//! c = clip(f ⊙ c_prev + i ⊙ g)
//! o = σ(Wo x + Wbo + Ro h + Rbo + p_o ⊙ c)
//! h = P_r (o ⊙ tanh c)        (P_r = identity without projection)
//! ```

use super::block::Block;
use super::math::{add, affine, affine_backward, sigmoid};

/// Every intermediate of one step, recomputed by the backward pass.
struct Step {
    i: Vec<f64>,
    f: Vec<f64>,
    g: Vec<f64>,
    o: Vec<f64>,
    c_raw: Vec<f64>,
    c: Vec<f64>,
    tanh_c: Vec<f64>,
    m: Vec<f64>,
    h: Vec<f64>,
}

fn peephole(p: &Block<&[f64]>, gate: usize, j: usize, hidden: usize) -> f64 {
    p.peephole.map_or(0.0, |peep| peep[gate * hidden + j])
}

fn step(p: &Block<&[f64]>, clip: Option<f64>, x: &[f64], h_prev: &[f64], c_prev: &[f64]) -> Step {
    let hidden = c_prev.len();
    let pre = add(&affine(p.w, x, p.wb), &affine(p.r, h_prev, p.rb));
    let gate = |k: usize| &pre[k * hidden..(k + 1) * hidden];
    let i: Vec<f64> = (0..hidden)
        .map(|j| sigmoid(gate(0)[j] + peephole(p, 0, j, hidden) * c_prev[j]))
        .collect();
    let f: Vec<f64> = (0..hidden)
        .map(|j| sigmoid(gate(1)[j] + peephole(p, 1, j, hidden) * c_prev[j]))
        .collect();
    let g: Vec<f64> = gate(2).iter().map(|v| v.tanh()).collect();
    let c_raw: Vec<f64> = (0..hidden)
        .map(|j| f[j] * c_prev[j] + i[j] * g[j])
        .collect();
    let c: Vec<f64> = match clip {
        Some(clip) => c_raw.iter().map(|v| v.clamp(-clip, clip)).collect(),
        None => c_raw.clone(),
    };
    let o: Vec<f64> = (0..hidden)
        .map(|j| sigmoid(gate(3)[j] + peephole(p, 2, j, hidden) * c[j]))
        .collect();
    let tanh_c: Vec<f64> = c.iter().map(|v| v.tanh()).collect();
    let m: Vec<f64> = (0..hidden).map(|j| o[j] * tanh_c[j]).collect();
    let h = match p.proj {
        Some(proj) => affine(proj, &m, &vec![0.0; proj.len() / hidden]),
        None => m.clone(),
    };
    Step {
        i,
        f,
        g,
        o,
        c_raw,
        c,
        tanh_c,
        m,
        h,
    }
}

/// Returns `(h, c)`.
pub(super) fn forward(
    p: &Block<&[f64]>,
    clip: Option<f64>,
    x: &[f64],
    h_prev: &[f64],
    c_prev: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let s = step(p, clip, x, h_prev, c_prev);
    (s.h, s.c)
}

/// Accumulates weight gradients into `g`; returns `(dx, dh_prev, dc_prev)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    p: &Block<&[f64]>,
    g: &mut Block<&mut [f64]>,
    clip: Option<f64>,
    x: &[f64],
    h_prev: &[f64],
    c_prev: &[f64],
    dh: &[f64],
    dc: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let hidden = c_prev.len();
    let s = step(p, clip, x, h_prev, c_prev);
    let dm = match (p.proj, g.proj.as_deref_mut()) {
        (Some(proj), Some(grad_proj)) => {
            let mut dm = vec![0.0; hidden];
            let mut unused_bias = vec![0.0; dh.len()];
            affine_backward(proj, &s.m, dh, grad_proj, &mut unused_bias, &mut dm);
            dm
        }
        _ => dh.to_vec(),
    };
    let mut d_pre = vec![0.0; 4 * hidden];
    let mut dc_prev = vec![0.0; hidden];
    for j in 0..hidden {
        let (i, f, gg, o) = (s.i[j], s.f[j], s.g[j], s.o[j]);
        let do_pre = dm[j] * s.tanh_c[j] * o * (1.0 - o);
        // dc: from the caller, through h = o ⊙ tanh(c), through the o peephole.
        let mut d_c = dc[j] + dm[j] * o * (1.0 - s.tanh_c[j].powi(2));
        d_c += do_pre * peephole(p, 2, j, hidden);
        // A clamped value does not depend on c_raw.
        let clipped = clip.is_some_and(|clip| s.c_raw[j].abs() > clip);
        let d_raw = if clipped { 0.0 } else { d_c };
        let di_pre = d_raw * gg * i * (1.0 - i);
        let df_pre = d_raw * c_prev[j] * f * (1.0 - f);
        let dg_pre = d_raw * i * (1.0 - gg * gg);
        dc_prev[j] =
            d_raw * f + di_pre * peephole(p, 0, j, hidden) + df_pre * peephole(p, 1, j, hidden);
        if let Some(grad_peep) = g.peephole.as_deref_mut() {
            grad_peep[j] += di_pre * c_prev[j];
            grad_peep[hidden + j] += df_pre * c_prev[j];
            grad_peep[2 * hidden + j] += do_pre * s.c[j];
        }
        d_pre[j] = di_pre;
        d_pre[hidden + j] = df_pre;
        d_pre[2 * hidden + j] = dg_pre;
        d_pre[3 * hidden + j] = do_pre;
    }
    let mut dx = vec![0.0; x.len()];
    let mut dh_prev = vec![0.0; h_prev.len()];
    affine_backward(p.w, x, &d_pre, g.w, g.wb, &mut dx);
    affine_backward(p.r, h_prev, &d_pre, g.r, g.rb, &mut dh_prev);
    (dx, dh_prev, dc_prev)
}
