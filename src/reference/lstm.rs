//! LSTM step, gates i, f, g, o (`gclip` is the optional gate clip, `cclip`
//! the optional cell clip, both identity when not set; the activation
//! roles ONNX calls f, g and h are σ, tanh and tanh by default):
//! ```text
//! i = f(gclip(Wi x + Wbi + Ri h + Rbi + p_i ⊙ c_prev))
//! f = f(gclip(Wf x + Wbf + Rf h + Rbf + p_f ⊙ c_prev))   or 1 − i (input_forget)
//! g = g(gclip(Wg x + Wbg + Rg h + Rbg))
//! c = cclip(f ⊙ c_prev + i ⊙ g)
//! o = f(gclip(Wo x + Wbo + Ro h + Rbo + p_o ⊙ c))
//! h = P_r (o ⊙ h(c))        (P_r = identity without projection)
//! ```

use super::block::Block;
use super::math::{activation, activation_derivative, add, affine, affine_backward, Gates};

/// The LSTM options of a configuration, widened to f64.
#[derive(Clone, Copy, Debug)]
pub(super) struct Options {
    pub cell_clip: Option<f64>,
    /// The gate clip and the direction's functions.
    pub gates: Gates,
    pub input_forget: bool,
}

/// Every intermediate of one step, recomputed by the backward pass.
struct Step {
    i: Vec<f64>,
    f: Vec<f64>,
    g: Vec<f64>,
    o: Vec<f64>,
    c_raw: Vec<f64>,
    c: Vec<f64>,
    /// `h(c)` (tanh c by default) and its derivative.
    tanh_c: Vec<f64>,
    d_tanh_c: Vec<f64>,
    m: Vec<f64>,
    h: Vec<f64>,
    /// Derivatives of i, f, g, o with respect to their pre-activations
    /// (gate clip included).
    pass: [Vec<f64>; 4],
}

fn peephole(p: &Block<&[f64]>, gate: usize, j: usize, hidden: usize) -> f64 {
    p.peephole.map_or(0.0, |peep| peep[gate * hidden + j])
}

fn step(p: &Block<&[f64]>, opt: Options, x: &[f64], h_prev: &[f64], c_prev: &[f64]) -> Step {
    let hidden = c_prev.len();
    let pre = add(&affine(p.w, x, p.wb), &affine(p.r, h_prev, p.rb));
    let gate = |k: usize| &pre[k * hidden..(k + 1) * hidden];
    // Pre-activations through role `role`'s function, with derivatives.
    let activate = |pre: Vec<f64>, role: usize| -> (Vec<f64>, Vec<f64>) {
        pre.into_iter().map(|a| opt.gates.apply(role, a)).unzip()
    };
    let peeped = |k: usize, peep: usize, c: &[f64]| -> Vec<f64> {
        (0..hidden)
            .map(|j| gate(k)[j] + peephole(p, peep, j, hidden) * c[j])
            .collect()
    };
    let (i, pass_i) = activate(peeped(0, 0, c_prev), 0);
    let (f, pass_f) = if opt.input_forget {
        (i.iter().map(|i| 1.0 - i).collect(), vec![0.0; hidden])
    } else {
        activate(peeped(1, 1, c_prev), 0)
    };
    let (g, pass_g) = activate(gate(2).to_vec(), 1);
    let c_raw: Vec<f64> = (0..hidden)
        .map(|j| f[j] * c_prev[j] + i[j] * g[j])
        .collect();
    let c: Vec<f64> = match opt.cell_clip {
        Some(clip) => c_raw.iter().map(|v| v.clamp(-clip, clip)).collect(),
        None => c_raw.clone(),
    };
    let (o, pass_o) = activate(peeped(3, 2, &c), 0);
    let h_fn = &opt.gates.fns[2];
    let tanh_c: Vec<f64> = c.iter().map(|&v| activation(h_fn, v)).collect();
    let d_tanh_c: Vec<f64> = c.iter().map(|&v| activation_derivative(h_fn, v)).collect();
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
        d_tanh_c,
        m,
        h,
        pass: [pass_i, pass_f, pass_g, pass_o],
    }
}

/// Returns `(h, c)`.
pub(super) fn forward(
    p: &Block<&[f64]>,
    opt: Options,
    x: &[f64],
    h_prev: &[f64],
    c_prev: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let s = step(p, opt, x, h_prev, c_prev);
    (s.h, s.c)
}

/// Accumulates weight gradients into `g`; returns `(dx, dh_prev, dc_prev)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    p: &Block<&[f64]>,
    g: &mut Block<&mut [f64]>,
    opt: Options,
    x: &[f64],
    h_prev: &[f64],
    c_prev: &[f64],
    dh: &[f64],
    dc: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let hidden = c_prev.len();
    let s = step(p, opt, x, h_prev, c_prev);
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
        let pass = |gate: usize| s.pass[gate][j];
        let do_pre = dm[j] * s.tanh_c[j] * pass(3);
        // dc: from the caller, through h = o ⊙ h(c), through the o peephole.
        let mut d_c = dc[j] + dm[j] * o * s.d_tanh_c[j];
        d_c += do_pre * peephole(p, 2, j, hidden);
        // A clamped value does not depend on c_raw.
        let clipped = opt.cell_clip.is_some_and(|clip| s.c_raw[j].abs() > clip);
        let d_raw = if clipped { 0.0 } else { d_c };
        // Gradients of the gate values, then of their pre-activations.
        let (mut d_i, mut d_f) = (d_raw * gg, d_raw * c_prev[j]);
        if opt.input_forget {
            // f = 1 − i
            d_i -= d_f;
            d_f = 0.0;
        }
        let di_pre = d_i * pass(0);
        let df_pre = d_f * pass(1);
        let dg_pre = d_raw * i * pass(2);
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
