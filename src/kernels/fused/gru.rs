//! GRU, both variants: the two-phase fused step (r and z, then n and the
//! new state) and the two-phase element-wise backward.

#![allow(clippy::needless_range_loop)]

use super::*;

struct GruRzEpilogue<'a> {
    p: &'a StepParams<'a>,
}

impl<S: Simd, const V: usize> Epilogue<S, StepRow, V> for GruRzEpilogue<'_> {
    const PREFETCHES: bool = true;
    #[inline(always)]
    unsafe fn prefetch(&self, row: &StepRow, panel: usize) {
        let u = unit::<S>();
        prefetch_span(row.xw.wrapping_add(panel * 3 * u), 2 * u);
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
        let (u, wn) = (unit::<S>(), S::W);
        for w in 0..wn {
            let col = panel * 3 * u + w * S::LANES;
            let j = panel * u + w * S::LANES;
            // SAFETY: the row pointers address whole padded rows (StepRow docs).
            unsafe {
                let (gc, mask) = (self.p.gate_clip, row.clip_mask);
                let pre_r = S::add(acc[w], S::load(row.xw.add(col)));
                let pre_z = S::add(acc[wn + w], S::load(row.xw.add(col + u)));
                let fns = &self.p.fns;
                let r = activate::<S>(fns, 0, clip_gate::<S>(gc, pre_r, mask, col), sigmoid::<S>);
                let z = activate::<S>(
                    fns,
                    0,
                    clip_gate::<S>(gc, pre_z, mask, col + u),
                    sigmoid::<S>,
                );
                S::store(row.gates.add(col), r);
                S::store(row.gates.add(col + u), z);
                if !self.p.linear_before_reset {
                    S::store(row.aux.add(j), S::mul(r, S::load(row.h_prev.add(j))));
                }
            }
        }
    }
}

struct GruNEpilogue<'a> {
    p: &'a StepParams<'a>,
}

impl<S: Simd, const V: usize> Epilogue<S, StepRow, V> for GruNEpilogue<'_> {
    const PREFETCHES: bool = true;
    #[inline(always)]
    unsafe fn prefetch(&self, row: &StepRow, panel: usize) {
        let u = unit::<S>();
        // r and z were written by the first phase, over the whole batch.
        prefetch_span(row.gates.wrapping_add(panel * 3 * u), 2 * u);
        prefetch_span(row.xw.wrapping_add(panel * 3 * u + 2 * u), u);
        prefetch_span(row.h_prev.wrapping_add(panel * u), u);
    }
    #[inline(always)]
    fn a(&self, row: &StepRow, quantized: bool) -> *const f32 {
        match (self.p.linear_before_reset, quantized) {
            (true, false) => row.h_prev,
            (true, true) => row.h_prev_q,
            (false, false) => row.aux,
            (false, true) => row.aux_q,
        }
    }
    #[inline(always)]
    unsafe fn apply(&self, row: &StepRow, panel: usize, acc: &[S::V; V]) {
        let (u, wn) = (unit::<S>(), S::W);
        for w in 0..wn {
            let col = panel * 3 * u + w * S::LANES;
            let j = panel * u + w * S::LANES;
            // SAFETY: the row pointers address whole padded rows (StepRow docs).
            unsafe {
                let xn = S::load(row.xw.add(col + 2 * u));
                let r = S::load(row.gates.add(col));
                let z = S::load(row.gates.add(col + u));
                let pre_n = if self.p.linear_before_reset {
                    let rn = S::add(acc[w], S::load(self.p.rb_n.as_ptr().add(j)));
                    if !row.aux.is_null() {
                        S::store(row.aux.add(j), rn);
                    }
                    S::fma(r, rn, xn)
                } else {
                    S::add(xn, acc[w])
                };
                let n = activate::<S>(
                    &self.p.fns,
                    1,
                    clip_gate::<S>(self.p.gate_clip, pre_n, row.clip_mask, col + 2 * u),
                    tanh::<S>,
                );
                let h_prev = S::load(row.h_prev.add(j));
                // (1 − z) n + z h = n + z (h − n)
                S::store(row.gates.add(col + 2 * u), n);
                S::store(row.h_next.add(j), S::fma(z, S::sub(h_prev, n), n));
            }
        }
    }
}

/// GRU step (gates r, z, n): phase 1 computes r and z for all units (and
/// r ⊙ h for reset-before-matmul), phase 2 the n gate and the new state.
/// Phase 2 reads r ⊙ h of every unit, so when the panels are split across
/// threads each phase runs on its own (`StepParams::gru_phases`).
#[inline(always)]
pub(crate) unsafe fn gru_step<S: Simd, F: Format<S>, const MR2: usize, const MR1: usize>(
    p: &StepParams,
    rows: &[StepRow],
) {
    // SAFETY: r_packed holds Hp/U panels of k × 2U floats, r_packed_n of k × U.
    unsafe {
        if p.gru_phases.0 {
            run_panels!(
                S,
                F,
                MR2,
                2,
                p.k,
                p.r_packed.as_ptr(),
                p.streamed(),
                p.panels,
                rows,
                &GruRzEpilogue { p }
            );
        }
        if p.gru_phases.1 {
            run_panels!(
                S,
                F,
                MR1,
                1,
                p.k,
                p.r_packed_n.as_ptr(),
                p.streamed(),
                p.panels,
                rows,
                &GruNEpilogue { p }
            );
        }
    }
}

/// GRU backward, phase A: from `dh` (gradient of the new state), the
/// gradients of the z and n pre-activations, of `Rn v + Rbn` (`d_rn`), the
/// direct part of `dh_prev` (`dh ⊙ z`) and, linear-before-reset, of r.
#[inline(always)]
pub(crate) unsafe fn gru_backward_a<S: Simd>(p: &BackParams, rows: &[BackRow]) {
    let u = unit::<S>();
    for row in rows {
        for panel in p.panels.0..p.panels.1 {
            for w in 0..S::W {
                // SAFETY: every pointer addresses a whole padded row (BackRow docs).
                unsafe {
                    let dh = S::load(row.dh.add(panel * u + w * S::LANES));
                    gru_backward_a_at::<S>(p, row, panel, w, dh);
                }
            }
        }
    }
}

/// GRU backward, phase B: given `dv = d_rn × Rn`, completes `dh_prev` and
/// writes the gradient of the r pre-activation.
#[inline(always)]
pub(crate) unsafe fn gru_backward_b<S: Simd>(p: &BackParams, rows: &[BackRow]) {
    let u = unit::<S>();
    for row in rows {
        for panel in p.panels.0..p.panels.1 {
            for w in 0..S::W {
                // SAFETY: every pointer addresses a whole padded row (BackRow docs).
                unsafe {
                    let dv = S::load(row.dv.add(panel * u + w * S::LANES));
                    gru_backward_b_at::<S>(p, row, panel, w, dv);
                }
            }
        }
    }
}

/// Phase B in the epilogue of `dv = d_rn × Rn` of its own step
/// (`backward_step`, `a`: the row's `d_rn`).
pub(crate) struct GruBackB;

impl FusedBackward for GruBackB {
    const GATES: usize = 3;
    const READS_H_PREV: bool = true;
    const BEFORE: bool = false;
    #[inline(always)]
    unsafe fn at<S: Simd>(p: &BackParams, row: &BackRow, panel: usize, w: usize, dv: S::V) {
        // SAFETY: forwarded (BackStepRow docs).
        unsafe { gru_backward_b_at::<S>(p, row, panel, w, dv) }
    }
}

/// Phase A of the step before in the epilogue of `[dr, dz] × R_rz`
/// (`backward_step`): the product completes the gradient carried to that
/// step's output, added to the `dh_prev` that phases A and B left.
pub(crate) struct GruBackA;

impl FusedBackward for GruBackA {
    const GATES: usize = 3;
    const READS_H_PREV: bool = true;
    const BEFORE: bool = true;
    const ADDS_TO_DH_PREV: bool = true;
    #[inline(always)]
    unsafe fn at<S: Simd>(p: &BackParams, row: &BackRow, panel: usize, w: usize, dh: S::V) {
        // SAFETY: forwarded (BackStepRow docs).
        unsafe { gru_backward_a_at::<S>(p, row, panel, w, dh) }
    }
}

/// Phase A of one vector of units (`panel`, vector `w`) from the gradient
/// `dh` of the new state.
#[inline(always)]
unsafe fn gru_backward_a_at<S: Simd>(
    p: &BackParams,
    row: &BackRow,
    panel: usize,
    w: usize,
    dh: S::V,
) {
    let (u, hp) = (unit::<S>(), p.hp);
    let (col, j) = (panel * 3 * u + w * S::LANES, panel * u + w * S::LANES);
    // SAFETY: every pointer addresses a whole padded row (BackRow docs).
    unsafe {
        let one = S::splat(1.0);
        let r = S::load(row.gates.add(col));
        let z = S::load(row.gates.add(col + u));
        let n = S::load(row.gates.add(col + 2 * u));
        let h_prev = S::load(row.h_prev.add(j));
        let fns = &p.fns;
        let dn_pre = unclip_gate::<S>(
            row.clip_mask,
            col + 2 * u,
            S::mul(
                S::mul(dh, S::sub(one, z)),
                derive::<S>(fns, 1, n, tanh_derivative::<S>),
            ),
        );
        let dz_pre = unclip_gate::<S>(
            row.clip_mask,
            col + u,
            S::mul(
                S::mul(dh, S::sub(h_prev, n)),
                derive::<S>(fns, 0, z, sigmoid_derivative::<S>),
            ),
        );
        S::store(row.dh_prev.add(j), S::mul(dh, z));
        S::store(row.dg.add(hp + j), dz_pre);
        S::store(row.dg.add(2 * hp + j), dn_pre);
        if p.linear_before_reset {
            S::store(row.d_rn.add(j), S::mul(dn_pre, r));
            S::store(row.dr.add(j), S::mul(dn_pre, S::load(row.aux.add(j))));
        } else {
            S::store(row.d_rn.add(j), dn_pre);
        }
    }
}

/// Phase B of one vector of units from `dv`, their part of `d_rn × Rn`.
#[inline(always)]
unsafe fn gru_backward_b_at<S: Simd>(
    p: &BackParams,
    row: &BackRow,
    panel: usize,
    w: usize,
    dv: S::V,
) {
    let u = unit::<S>();
    let (col, j) = (panel * 3 * u + w * S::LANES, panel * u + w * S::LANES);
    // SAFETY: every pointer addresses a whole padded row (BackRow docs).
    unsafe {
        let r = S::load(row.gates.add(col));
        let dh_prev = S::load(row.dh_prev.add(j));
        let (dr, dh_prev) = if p.linear_before_reset {
            (S::load(row.dr.add(j)), S::add(dh_prev, dv))
        } else {
            // v = r ⊙ h_prev
            (
                S::mul(dv, S::load(row.h_prev.add(j))),
                S::fma(dv, r, dh_prev),
            )
        };
        S::store(row.dh_prev.add(j), dh_prev);
        let dr_pre = S::mul(dr, derive::<S>(&p.fns, 0, r, sigmoid_derivative::<S>));
        S::store(row.dg.add(j), unclip_gate::<S>(row.clip_mask, col, dr_pre));
    }
}
