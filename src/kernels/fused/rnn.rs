//! Vanilla RNN (tanh, relu or any ONNX function): the fused step and the element-wise backward.

#![allow(clippy::needless_range_loop)]

use super::*;

struct RnnEpilogue<'a> {
    p: &'a StepParams<'a>,
}

impl<S: Simd, const V: usize> Epilogue<S, StepRow, V> for RnnEpilogue<'_> {
    const PREFETCHES: bool = true;
    #[inline(always)]
    unsafe fn prefetch(&self, row: &StepRow, panel: usize) {
        let u = unit::<S>();
        prefetch_span(row.xw.wrapping_add(panel * u), u);
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
        for w in 0..S::W {
            let j = panel * unit::<S>() + w * S::LANES;
            // SAFETY: the row pointers address whole padded rows (StepRow docs).
            unsafe {
                let a = clip_gate::<S>(
                    self.p.gate_clip,
                    S::add(acc[w], S::load(row.xw.add(j))),
                    row.clip_mask,
                    j,
                );
                let h = if self.p.fns.relu {
                    S::clamp(a, S::zero(), S::splat(f32::INFINITY))
                } else {
                    activate::<S>(&self.p.fns, 0, a, tanh::<S>)
                };
                S::store(row.h_next.add(j), h);
                if !row.gates.is_null() {
                    S::store(row.gates.add(j), h);
                }
            }
        }
    }
}

/// Vanilla RNN step: `h = f(h_prev R + xw)`.
#[inline(always)]
pub(crate) unsafe fn rnn_step<S: Simd, F: Format<S>, const MR: usize>(
    p: &StepParams,
    rows: &[StepRow],
) {
    // SAFETY: r_packed holds Hp/U panels of k × U floats.
    unsafe {
        run_panels!(
            S,
            F,
            MR,
            1,
            p.k,
            p.r_packed.as_ptr(),
            p.streamed(),
            p.panels,
            rows,
            &RnnEpilogue { p }
        )
    }
}

/// Vanilla RNN backward: `dg = dh ⊙ f'`, from the stored output h = f(·).
#[inline(always)]
pub(crate) unsafe fn rnn_backward<S: Simd>(p: &BackParams, rows: &[BackRow]) {
    for row in rows {
        for j in (p.panels.0 * unit::<S>()..p.panels.1 * unit::<S>()).step_by(S::LANES) {
            // SAFETY: every pointer addresses a whole padded row (BackRow docs).
            unsafe { rnn_backward_at::<S>(p, row, j, S::load(row.dh.add(j))) }
        }
    }
}

/// The element-wise backward in a fused backward step (`backward_step`).
pub(crate) struct RnnBack;

impl FusedBackward for RnnBack {
    const GATES: usize = 1;
    const BEFORE: bool = true;
    #[inline(always)]
    unsafe fn at<S: Simd>(p: &BackParams, row: &BackRow, panel: usize, w: usize, dh: S::V) {
        let j = panel * unit::<S>() + w * S::LANES;
        // SAFETY: forwarded (BackStepRow docs).
        unsafe { rnn_backward_at::<S>(p, row, j, dh) }
    }
}

/// [`rnn_backward`] of the vector of units from `j`, from their output
/// gradient `dh`.
#[inline(always)]
unsafe fn rnn_backward_at<S: Simd>(p: &BackParams, row: &BackRow, j: usize, dh: S::V) {
    // SAFETY: every pointer addresses a whole padded row (BackRow docs).
    unsafe {
        let h = S::load(row.gates.add(j));
        let d = if p.fns.relu {
            S::select_lt(S::zero(), h, dh, S::zero())
        } else {
            S::mul(dh, derive::<S>(&p.fns, 0, h, tanh_derivative::<S>))
        };
        S::store(row.dg.add(j), unclip_gate::<S>(row.clip_mask, j, d));
    }
}
