//! LSTM: the fused step (`h_prev × R` with the gate epilogue and the cell
//! update in registers) and the element-wise backward.

#![allow(clippy::needless_range_loop)]

use super::*;

struct LstmEpilogue<'a> {
    p: &'a StepParams<'a>,
}

impl<S: Simd, const V: usize> Epilogue<S, StepRow, V> for LstmEpilogue<'_> {
    const PREFETCHES: bool = true;
    #[inline(always)]
    unsafe fn prefetch(&self, row: &StepRow, panel: usize) {
        let u = unit::<S>();
        prefetch_span(row.xw.wrapping_add(panel * 4 * u), 4 * u);
        prefetch_span(row.c.wrapping_add(panel * u), u);
    }
    #[inline(always)]
    fn a(&self, row: &StepRow, quantized: bool) -> *const f32 {
        if quantized {
            row.h_prev_q
        } else {
            row.h_prev
        }
    }
    #[inline(always)]
    unsafe fn apply(&self, row: &StepRow, panel: usize, acc: &[S::V; V]) {
        let (p, u, wn) = (self.p, unit::<S>(), S::W);
        for w in 0..wn {
            let col = panel * 4 * u + w * S::LANES;
            let j = panel * u + w * S::LANES;
            // SAFETY: the row pointers address whole padded rows (StepRow docs).
            unsafe {
                let pre_i = S::add(acc[w], S::load(row.xw.add(col)));
                let pre_f = S::add(acc[wn + w], S::load(row.xw.add(col + u)));
                let pre_g = S::add(acc[2 * wn + w], S::load(row.xw.add(col + 2 * u)));
                let pre_o = S::add(acc[3 * wn + w], S::load(row.xw.add(col + 3 * u)));
                let c_prev = S::load(row.c.add(j));
                let (gc, mask) = (p.gate_clip, row.clip_mask);
                let fns = &p.fns;
                let i = activate::<S>(
                    fns,
                    0,
                    clip_gate::<S>(gc, peephole::<S>(p, 0, j, c_prev, pre_i), mask, col),
                    sigmoid::<S>,
                );
                let f = if p.input_forget {
                    if gc.is_some() && !mask.is_null() {
                        // f's pre-activation is unused: it passes no gradient.
                        S::store(mask.add(col + u), S::zero());
                    }
                    S::sub(S::splat(1.0), i)
                } else {
                    activate::<S>(
                        fns,
                        0,
                        clip_gate::<S>(gc, peephole::<S>(p, 1, j, c_prev, pre_f), mask, col + u),
                        sigmoid::<S>,
                    )
                };
                let g = activate::<S>(
                    fns,
                    1,
                    clip_gate::<S>(gc, pre_g, mask, col + 2 * u),
                    tanh::<S>,
                );
                let c_raw = S::fma(f, c_prev, S::mul(i, g));
                let c = match p.clip {
                    Some(clip) => S::clamp(c_raw, S::splat(-clip), S::splat(clip)),
                    None => c_raw,
                };
                let o = activate::<S>(
                    fns,
                    0,
                    clip_gate::<S>(gc, peephole::<S>(p, 2, j, c, pre_o), mask, col + 3 * u),
                    sigmoid::<S>,
                );
                S::store(row.c.add(j), c);
                S::store(
                    row.h_next.add(j),
                    S::mul(o, activate::<S>(fns, 2, c, tanh::<S>)),
                );
                if !row.gates.is_null() {
                    S::store(row.gates.add(col), i);
                    S::store(row.gates.add(col + u), f);
                    S::store(row.gates.add(col + 2 * u), g);
                    S::store(row.gates.add(col + 3 * u), o);
                    if !row.c_prev.is_null() {
                        S::store(row.c_prev.add(j), c_prev);
                    }
                    S::store(row.aux.add(j), c_raw);
                }
            }
        }
    }
}

/// LSTM step (gates i, f, g, o).
#[inline(always)]
pub(crate) unsafe fn lstm_step<S: Simd, F: Format<S>, const MR: usize>(
    p: &StepParams,
    rows: &[StepRow],
) {
    // SAFETY: r_packed holds Hp/U panels of k × 4U floats.
    unsafe {
        run_panels!(
            S,
            F,
            MR,
            4,
            p.k,
            p.r_packed.as_ptr(),
            p.streamed(),
            p.panels,
            rows,
            &LstmEpilogue { p }
        )
    }
}

/// LSTM backward of one step, element-wise: from the gradient of
/// `m = o ⊙ tanh c` (`dh`) and of c, the gradients of the four gate
/// pre-activations (gate-major) and of `c_prev` (the peephole gradients,
/// sums over every step, are formed afterwards from these).
#[inline(always)]
pub(crate) unsafe fn lstm_backward<S: Simd>(p: &BackParams, rows: &[BackRow]) {
    let u = unit::<S>();
    for row in rows {
        for panel in p.panels.0..p.panels.1 {
            for w in 0..S::W {
                // SAFETY: every pointer addresses a whole padded row (BackRow docs).
                unsafe {
                    let dm = S::load(row.dh.add(panel * u + w * S::LANES));
                    lstm_backward_at::<S>(p, row, panel, w, dm);
                }
            }
        }
    }
}

/// The element-wise backward in a fused backward step (`backward_step`).
pub(crate) struct LstmBack;

impl FusedBackward for LstmBack {
    const GATES: usize = 4;
    const BEFORE: bool = true;
    #[inline(always)]
    unsafe fn at<S: Simd>(p: &BackParams, row: &BackRow, panel: usize, w: usize, dm: S::V) {
        // SAFETY: forwarded (BackStepRow docs).
        unsafe { lstm_backward_at::<S>(p, row, panel, w, dm) }
    }
}

/// [`lstm_backward`] of one vector of units (`panel`, vector `w`), from
/// the gradient `dm` of `o ⊙ tanh c`.
#[inline(always)]
unsafe fn lstm_backward_at<S: Simd>(
    p: &BackParams,
    row: &BackRow,
    panel: usize,
    w: usize,
    dm: S::V,
) {
    let (u, hp) = (unit::<S>(), p.hp);
    let peep = |g: usize, j: usize| -> *const f32 {
        p.peephole
            .map_or(std::ptr::null(), |ph| ph[g * hp + j..].as_ptr())
    };
    let (col, j) = (panel * 4 * u + w * S::LANES, panel * u + w * S::LANES);
    // SAFETY: every pointer addresses a whole padded row (BackRow docs).
    unsafe {
        let i = S::load(row.gates.add(col));
        let f = S::load(row.gates.add(col + u));
        let g = S::load(row.gates.add(col + 2 * u));
        let o = S::load(row.gates.add(col + 3 * u));
        let c_prev = S::load(row.c_prev.add(j));
        let c_raw = S::load(row.aux.add(j));
        let c = match p.clip {
            Some(clip) => S::clamp(c_raw, S::splat(-clip), S::splat(clip)),
            None => c_raw,
        };
        let (p_i, p_f, p_o) = if p.peephole.is_some() {
            (
                S::load(peep(0, j)),
                S::load(peep(1, j)),
                S::load(peep(2, j)),
            )
        } else {
            (S::zero(), S::zero(), S::zero())
        };
        let fns = &p.fns;
        // h(c) and h'(c), h = tanh by default.
        let tc = activate::<S>(fns, 2, c, tanh::<S>);
        if !row.m_packed.is_null() {
            // (Its operand holds every panel of this row's unit
            // columns, `m_panel_stride` apart: BackRow docs.)
            let at = panel * p.m_panel_stride + w * S::LANES;
            S::store(row.m_packed.add(at), S::mul(o, tc));
        }
        let dtc = derive::<S>(fns, 2, tc, tanh_derivative::<S>);
        let mask = row.clip_mask;
        let do_pre = unclip_gate::<S>(
            mask,
            col + 3 * u,
            S::mul(
                S::mul(dm, tc),
                derive::<S>(fns, 0, o, sigmoid_derivative::<S>),
            ),
        );
        let mut dc = S::load(row.dc.add(j));
        dc = S::fma(S::mul(dm, o), dtc, dc);
        dc = S::fma(do_pre, p_o, dc);
        if let Some(clip) = p.clip {
            // A clamped lane does not depend on c_raw.
            dc = S::select_lt(S::splat(clip), S::abs(c_raw), S::zero(), dc);
        }
        // Gradients of the gate values, then of their pre-activations.
        let (mut d_i, mut d_f) = (S::mul(dc, g), S::mul(dc, c_prev));
        if p.input_forget {
            // f = 1 − i
            (d_i, d_f) = (S::sub(d_i, d_f), S::zero());
        }
        let di_pre = unclip_gate::<S>(
            mask,
            col,
            S::mul(d_i, derive::<S>(fns, 0, i, sigmoid_derivative::<S>)),
        );
        let df_pre = if p.input_forget {
            S::zero()
        } else {
            unclip_gate::<S>(
                mask,
                col + u,
                S::mul(d_f, derive::<S>(fns, 0, f, sigmoid_derivative::<S>)),
            )
        };
        let dg_pre = unclip_gate::<S>(
            mask,
            col + 2 * u,
            S::mul(S::mul(dc, i), derive::<S>(fns, 1, g, tanh_derivative::<S>)),
        );
        S::store(
            row.dc.add(j),
            S::fma(df_pre, p_f, S::fma(di_pre, p_i, S::mul(dc, f))),
        );
        S::store(row.dg.add(j), di_pre);
        S::store(row.dg.add(hp + j), df_pre);
        S::store(row.dg.add(2 * hp + j), dg_pre);
        S::store(row.dg.add(3 * hp + j), do_pre);
    }
}
