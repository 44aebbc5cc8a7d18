//! The hot kernels, written once for any [`Simd`]:
//!
//! * the recurrent step of each cell: `h_prev × R` over weight panels packed
//!   so that one panel holds every gate of `U = W·LANES` hidden units, with
//!   the gate non-linearities and the state update applied to the
//!   accumulators in registers (the gate pre-activations never go to memory
//!   in inference);
//! * a plain panel product (the LSTM projection);
//! * the element-wise backward of each cell.
//!
//! Layouts (all padded so every load is a whole vector): a row of gate
//! values is *interleaved*, panel after panel, each panel holding gate after
//! gate of its `U` units: column `p·G·U + g·U + u` is gate `g` of unit
//! `p·U + u`. Packed weights use the same order, one panel after another,
//! each `K` rows of `G·U` floats. Gradient rows of gates are *gate-major*:
//! column `g·Hp + j`. `Hp` is the hidden size rounded up to a multiple of U.

use super::math::{sigmoid, tanh};
use super::{unit, Simd};

/// Pointers into the buffers of one batch row for one time step. Null where
/// a cell or mode does not use a buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepRow {
    /// Recurrent input, `K` floats (padded to a whole vector past the
    /// hidden size).
    pub h_prev: *const f32,
    /// Input projection plus bias, `G·Hp` interleaved.
    pub xw: *const f32,
    /// New hidden state (LSTM with projection: the unprojected `o ⊙ tanh c`), `Hp`.
    pub h_next: *mut f32,
    /// LSTM cell state, `Hp`, read and overwritten.
    pub c: *mut f32,
    /// Gate activations, `G·Hp` interleaved: written when training (and
    /// always for GRU, whose second phase reads r and z back).
    pub gates: *mut f32,
    /// Training, LSTM: `c` before the step.
    pub c_prev: *mut f32,
    /// LSTM training: c before clipping. GRU: reset-before-matmul `r ⊙ h`
    /// (always), linear-before-reset `Rn h + Rbn` (training).
    pub aux: *mut f32,
}

/// What every row of a step shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepParams<'a> {
    /// Length of the recurrent input (the state size).
    pub k: usize,
    /// Padded hidden size.
    pub hp: usize,
    /// Recurrent weights, packed: all gates (LSTM, RNN) or r and z (GRU).
    pub r_packed: &'a [f32],
    /// GRU: the n gate's recurrent weights, packed on their own.
    pub r_packed_n: &'a [f32],
    /// GRU linear-before-reset: Rbn, `Hp`.
    pub rb_n: &'a [f32],
    /// LSTM peepholes `[p_i, p_f, p_o]`, each `Hp`.
    pub peephole: Option<&'a [f32]>,
    pub clip: Option<f32>,
    pub relu: bool,
    pub linear_before_reset: bool,
}

/// A row of a plain product `out = a × B_packed`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRow {
    pub a: *const f32,
    pub out: *mut f32,
}

/// Pointers for the element-wise backward of one row at one step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackRow {
    /// Forward gate activations, interleaved.
    pub gates: *const f32,
    pub h_prev: *const f32,
    pub c_prev: *const f32,
    /// LSTM: c before clipping. GRU linear-before-reset: `Rn h + Rbn`.
    pub aux: *const f32,
    /// Incoming gradient of the step's output (LSTM: of `o ⊙ tanh c`).
    pub dh: *const f32,
    /// LSTM: gradient of c, in: from later steps; out: of `c_prev`.
    pub dc: *mut f32,
    /// Out: gradients of the gate pre-activations, gate-major `G·Hp`.
    pub dg: *mut f32,
    /// GRU out: gradient of `Rn v + Rbn` (v = r⊙h or h).
    pub d_rn: *mut f32,
    /// GRU: gradient of h_prev, written by phase A, completed by phase B.
    pub dh_prev: *mut f32,
    /// GRU scratch: gradient of r.
    pub dr: *mut f32,
    /// GRU phase B input: `d_rn × Rn` (gradient of the vector Rn multiplied).
    pub dv: *const f32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct BackParams<'a> {
    pub hp: usize,
    pub peephole: Option<&'a [f32]>,
    /// LSTM peephole gradient accumulator `[3·Hp]`, or null.
    pub peephole_grad: *mut f32,
    pub clip: Option<f32>,
    pub relu: bool,
    pub linear_before_reset: bool,
}

/// `MR` rows of `a` (each `k` floats) times a packed panel of `V` vectors per
/// `k` row: returns the `MR × V` accumulators.
#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize, const V: usize>(
    k: usize,
    a: [*const f32; MR],
    panel: *const f32,
) -> [[S::V; V]; MR] {
    unsafe {
        let mut acc = [[S::zero(); V]; MR];
        for kk in 0..k {
            let bp = panel.add(kk * V * S::LANES);
            let mut b = [S::zero(); V];
            for (v, bv) in b.iter_mut().enumerate() {
                *bv = S::load(bp.add(v * S::LANES));
            }
            for r in 0..MR {
                let av = S::splat(*a[r].add(kk));
                for v in 0..V {
                    acc[r][v] = S::fma(av, b[v], acc[r][v]);
                }
            }
        }
        acc
    }
}

/// Runs `tile` over `rows` in groups of `MR` (then singly for the rest) and
/// hands each row's accumulators to `epilogue`.
#[inline(always)]
unsafe fn for_rows<S: Simd, R: Copy, const MR: usize, const V: usize>(
    k: usize,
    panel: *const f32,
    rows: &[R],
    a_of: impl Fn(&R) -> *const f32,
    mut epilogue: impl FnMut(&R, &[S::V; V]),
) {
    unsafe {
        let mut groups = rows.chunks_exact(MR);
        for group in &mut groups {
            let acc = tile::<S, MR, V>(k, std::array::from_fn(|r| a_of(&group[r])), panel);
            for (row, acc) in group.iter().zip(&acc) {
                epilogue(row, acc);
            }
        }
        for row in groups.remainder() {
            let acc = tile::<S, 1, V>(k, [a_of(row)], panel);
            epilogue(row, &acc[0]);
        }
    }
}

/// Rows per register tile, so that MR × V accumulators fit the register file.
const fn rows_per_tile<S: Simd>(vectors: usize) -> usize {
    // Leave a quarter of the registers for the panel loads and the broadcast.
    let r = S::REGISTERS * 3 / 4 / vectors;
    if r == 0 {
        1
    } else {
        r
    }
}

/// LSTM step (gates i, f, g, o).
#[inline(always)]
pub(crate) unsafe fn lstm_step<S: Simd, const MR: usize>(p: &StepParams, rows: &[StepRow]) {
    const G: usize = 4;
    let (u, w_count, lanes) = (unit::<S>(), S::W, S::LANES);
    let panels = p.hp / u;
    for panel in 0..panels {
        let packed = unsafe { p.r_packed.as_ptr().add(panel * p.k * G * u) };
        // V = 4 gates × W vectors; instantiated for W = 1, 2, 8 below.
        macro_rules! run {
            ($v:literal) => {
                unsafe {
                    for_rows::<S, StepRow, MR, $v>(
                        p.k,
                        packed,
                        rows,
                        |r| r.h_prev,
                        |row, acc| {
                            for w in 0..w_count {
                                let col = panel * G * u + w * lanes;
                                let j = panel * u + w * lanes;
                                let pre = |g: usize| {
                                    S::add(acc[g * w_count + w], S::load(row.xw.add(col + g * u)))
                                };
                                let c_prev = S::load(row.c.add(j));
                                let peep = |g: usize, c: S::V, x: S::V| match p.peephole {
                                    Some(ph) => {
                                        S::fma(S::load(ph.as_ptr().add(g * p.hp + j)), c, x)
                                    }
                                    None => x,
                                };
                                let i = sigmoid::<S>(peep(0, c_prev, pre(0)));
                                let f = sigmoid::<S>(peep(1, c_prev, pre(1)));
                                let g = tanh::<S>(pre(2));
                                let c_raw = S::fma(f, c_prev, S::mul(i, g));
                                let c = match p.clip {
                                    Some(clip) => S::clamp(c_raw, S::splat(-clip), S::splat(clip)),
                                    None => c_raw,
                                };
                                let o = sigmoid::<S>(peep(2, c, pre(3)));
                                let h = S::mul(o, tanh::<S>(c));
                                S::store(row.c.add(j), c);
                                S::store(row.h_next.add(j), h);
                                if !row.gates.is_null() {
                                    for (gi, v) in [i, f, g, o].into_iter().enumerate() {
                                        S::store(row.gates.add(col + gi * u), v);
                                    }
                                    S::store(row.c_prev.add(j), c_prev);
                                    S::store(row.aux.add(j), c_raw);
                                }
                            }
                        },
                    )
                }
            };
        }
        match w_count {
            1 => run!(4),
            2 => run!(8),
            _ => run!(32),
        }
    }
}

/// GRU step (gates r, z, n): phase 1 computes r and z for all units (and
/// r ⊙ h for reset-before-matmul), phase 2 the n gate and the new state.
#[inline(always)]
pub(crate) unsafe fn gru_step<S: Simd, const MR: usize>(p: &StepParams, rows: &[StepRow]) {
    let (u, w_count, lanes) = (unit::<S>(), S::W, S::LANES);
    let panels = p.hp / u;
    for panel in 0..panels {
        let packed = unsafe { p.r_packed.as_ptr().add(panel * p.k * 2 * u) };
        macro_rules! run {
            ($v:literal) => {
                unsafe {
                    for_rows::<S, StepRow, MR, $v>(
                        p.k,
                        packed,
                        rows,
                        |r| r.h_prev,
                        |row, acc| {
                            for w in 0..w_count {
                                let col = panel * 3 * u + w * lanes;
                                let j = panel * u + w * lanes;
                                let r = sigmoid::<S>(S::add(acc[w], S::load(row.xw.add(col))));
                                let z = sigmoid::<S>(S::add(
                                    acc[w_count + w],
                                    S::load(row.xw.add(col + u)),
                                ));
                                S::store(row.gates.add(col), r);
                                S::store(row.gates.add(col + u), z);
                                if !p.linear_before_reset {
                                    S::store(row.aux.add(j), S::mul(r, S::load(row.h_prev.add(j))));
                                }
                            }
                        },
                    )
                }
            };
        }
        match w_count {
            1 => run!(2),
            2 => run!(4),
            _ => run!(16),
        }
    }
    for panel in 0..panels {
        let packed = unsafe { p.r_packed_n.as_ptr().add(panel * p.k * u) };
        let lbr = p.linear_before_reset;
        let a_of = move |r: &StepRow| if lbr { r.h_prev } else { r.aux.cast_const() };
        macro_rules! run {
            ($v:literal) => {
                unsafe {
                    for_rows::<S, StepRow, MR, $v>(p.k, packed, rows, a_of, |row, acc| {
                        for w in 0..w_count {
                            let col = panel * 3 * u + w * lanes;
                            let j = panel * u + w * lanes;
                            let xn = S::load(row.xw.add(col + 2 * u));
                            let r = S::load(row.gates.add(col));
                            let z = S::load(row.gates.add(col + u));
                            let n = if lbr {
                                let rn = S::add(acc[w], S::load(p.rb_n.as_ptr().add(j)));
                                if !row.aux.is_null() {
                                    S::store(row.aux.add(j), rn);
                                }
                                tanh::<S>(S::fma(r, rn, xn))
                            } else {
                                tanh::<S>(S::add(xn, acc[w]))
                            };
                            let h_prev = S::load(row.h_prev.add(j));
                            // (1 − z) n + z h = n + z (h − n)
                            let h = S::fma(z, S::sub(h_prev, n), n);
                            S::store(row.gates.add(col + 2 * u), n);
                            S::store(row.h_next.add(j), h);
                        }
                    })
                }
            };
        }
        match w_count {
            1 => run!(1),
            2 => run!(2),
            _ => run!(8),
        }
    }
}

/// Vanilla RNN step: `h = act(h_prev R + xw)`.
#[inline(always)]
pub(crate) unsafe fn rnn_step<S: Simd, const MR: usize>(p: &StepParams, rows: &[StepRow]) {
    let (u, w_count, lanes) = (unit::<S>(), S::W, S::LANES);
    for panel in 0..p.hp / u {
        let packed = unsafe { p.r_packed.as_ptr().add(panel * p.k * u) };
        macro_rules! run {
            ($v:literal) => {
                unsafe {
                    for_rows::<S, StepRow, MR, $v>(
                        p.k,
                        packed,
                        rows,
                        |r| r.h_prev,
                        |row, acc| {
                            for w in 0..w_count {
                                let j = panel * u + w * lanes;
                                let a = S::add(acc[w], S::load(row.xw.add(j)));
                                let h = if p.relu {
                                    S::clamp(a, S::zero(), S::splat(f32::INFINITY))
                                } else {
                                    tanh::<S>(a)
                                };
                                S::store(row.h_next.add(j), h);
                                if !row.gates.is_null() {
                                    S::store(row.gates.add(j), h);
                                }
                            }
                        },
                    )
                }
            };
        }
        match w_count {
            1 => run!(1),
            2 => run!(2),
            _ => run!(8),
        }
    }
}

/// `out = a × B` for rows of `a` (`k` floats each) and `B` packed as
/// one-gate panels (`n_padded / U` panels of `k × U`).
#[inline(always)]
pub(crate) unsafe fn panel_matmul<S: Simd, const MR: usize>(
    k: usize,
    n_padded: usize,
    packed: &[f32],
    rows: &[MatRow],
) {
    let (u, w_count, lanes) = (unit::<S>(), S::W, S::LANES);
    for panel in 0..n_padded / u {
        let b = unsafe { packed.as_ptr().add(panel * k * u) };
        macro_rules! run {
            ($v:literal) => {
                unsafe {
                    for_rows::<S, MatRow, MR, $v>(
                        k,
                        b,
                        rows,
                        |r| r.a,
                        |row, acc| {
                            for w in 0..w_count {
                                S::store(row.out.add(panel * u + w * lanes), acc[w]);
                            }
                        },
                    )
                }
            };
        }
        match w_count {
            1 => run!(1),
            2 => run!(2),
            _ => run!(8),
        }
    }
}

/// Calls `f(col, j)` for every vector of a row: `col` is the interleaved
/// offset of gate 0 of the vector's units and `j` their unit offset.
#[inline(always)]
fn for_vectors<S: Simd>(hp: usize, gates: usize, mut f: impl FnMut(usize, usize)) {
    let u = unit::<S>();
    for panel in 0..hp / u {
        for w in 0..S::W {
            f(panel * gates * u + w * S::LANES, panel * u + w * S::LANES);
        }
    }
}

/// LSTM backward of one step, element-wise: from the gradient of
/// `m = o ⊙ tanh c` (`dh`) and of c, the gradients of the four gate
/// pre-activations (gate-major), of `c_prev` and of the peepholes.
#[inline(always)]
pub(crate) unsafe fn lstm_backward<S: Simd>(p: &BackParams, rows: &[BackRow]) {
    let (u, hp) = (unit::<S>(), p.hp);
    for row in rows {
        for_vectors::<S>(hp, 4, |col, j| unsafe {
            let one = S::splat(1.0);
            let gate = |g: usize| S::load(row.gates.add(col + g * u));
            let (i, f, g, o) = (gate(0), gate(1), gate(2), gate(3));
            let c_prev = S::load(row.c_prev.add(j));
            let c_raw = S::load(row.aux.add(j));
            let c = match p.clip {
                Some(clip) => S::clamp(c_raw, S::splat(-clip), S::splat(clip)),
                None => c_raw,
            };
            let peep = |g: usize| match p.peephole {
                Some(ph) => S::load(ph.as_ptr().add(g * hp + j)),
                None => S::zero(),
            };
            let dm = S::load(row.dh.add(j));
            let tc = tanh::<S>(c);
            let do_pre = S::mul(S::mul(dm, tc), S::mul(o, S::sub(one, o)));
            let mut dc = S::load(row.dc.add(j));
            dc = S::fma(S::mul(dm, o), S::sub(one, S::mul(tc, tc)), dc);
            dc = S::fma(do_pre, peep(2), dc);
            if let Some(clip) = p.clip {
                // A clamped lane does not depend on c_raw.
                dc = S::select_lt(S::splat(clip), S::abs(c_raw), S::zero(), dc);
            }
            let di_pre = S::mul(S::mul(dc, g), S::mul(i, S::sub(one, i)));
            let df_pre = S::mul(S::mul(dc, c_prev), S::mul(f, S::sub(one, f)));
            let dg_pre = S::mul(S::mul(dc, i), S::sub(one, S::mul(g, g)));
            let dc_prev = S::fma(df_pre, peep(1), S::fma(di_pre, peep(0), S::mul(dc, f)));
            S::store(row.dc.add(j), dc_prev);
            for (k, v) in [di_pre, df_pre, dg_pre, do_pre].into_iter().enumerate() {
                S::store(row.dg.add(k * hp + j), v);
            }
            if !p.peephole_grad.is_null() {
                for (k, (d, x)) in [(di_pre, c_prev), (df_pre, c_prev), (do_pre, c)]
                    .into_iter()
                    .enumerate()
                {
                    let acc = p.peephole_grad.add(k * hp + j);
                    S::store(acc, S::fma(d, x, S::load(acc)));
                }
            }
        });
    }
}

/// GRU backward, phase A: from `dh` (gradient of the new state), the
/// gradients of the z and n pre-activations, of `Rn v + Rbn` (`d_rn`), the
/// direct part of `dh_prev` (`dh ⊙ z`) and, linear-before-reset, of r.
#[inline(always)]
pub(crate) unsafe fn gru_backward_a<S: Simd>(p: &BackParams, rows: &[BackRow]) {
    let (u, hp) = (unit::<S>(), p.hp);
    for row in rows {
        for_vectors::<S>(hp, 3, |col, j| unsafe {
            let one = S::splat(1.0);
            let r = S::load(row.gates.add(col));
            let z = S::load(row.gates.add(col + u));
            let n = S::load(row.gates.add(col + 2 * u));
            let h_prev = S::load(row.h_prev.add(j));
            let dh = S::load(row.dh.add(j));
            let dn_pre = S::mul(S::mul(dh, S::sub(one, z)), S::sub(one, S::mul(n, n)));
            let dz_pre = S::mul(S::mul(dh, S::sub(h_prev, n)), S::mul(z, S::sub(one, z)));
            S::store(row.dh_prev.add(j), S::mul(dh, z));
            S::store(row.dg.add(hp + j), dz_pre);
            S::store(row.dg.add(2 * hp + j), dn_pre);
            if p.linear_before_reset {
                S::store(row.d_rn.add(j), S::mul(dn_pre, r));
                S::store(row.dr.add(j), S::mul(dn_pre, S::load(row.aux.add(j))));
            } else {
                S::store(row.d_rn.add(j), dn_pre);
            }
        });
    }
}

/// GRU backward, phase B: given `dv = d_rn × Rn`, completes `dh_prev` and
/// writes the gradient of the r pre-activation.
#[inline(always)]
pub(crate) unsafe fn gru_backward_b<S: Simd>(p: &BackParams, rows: &[BackRow]) {
    let hp = p.hp;
    for row in rows {
        for_vectors::<S>(hp, 3, |col, j| unsafe {
            let one = S::splat(1.0);
            let r = S::load(row.gates.add(col));
            let dv = S::load(row.dv.add(j));
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
            S::store(row.dg.add(j), S::mul(dr, S::mul(r, S::sub(one, r))));
        });
    }
}

/// Vanilla RNN backward: `dg = dh ⊙ act'(h)`, from the stored output h.
#[inline(always)]
pub(crate) unsafe fn rnn_backward<S: Simd>(p: &BackParams, rows: &[BackRow]) {
    for row in rows {
        for_vectors::<S>(p.hp, 1, |col, j| unsafe {
            let h = S::load(row.gates.add(col));
            let dh = S::load(row.dh.add(j));
            let d = if p.relu {
                S::select_lt(S::zero(), h, dh, S::zero())
            } else {
                S::mul(dh, S::sub(S::splat(1.0), S::mul(h, h)))
            };
            S::store(row.dg.add(j), d);
        });
    }
}

/// Instantiates every generic kernel for one ISA inside functions compiled
/// with its target features, and collects them into a [`super::Kernels`]
/// table: `instantiate_kernels!(Type, #[target_feature(...)])`.
macro_rules! instantiate_kernels {
    ($S:ty $(, #[$attr:meta])?) => {
        pub(crate) mod entry {
            #![allow(clippy::missing_safety_doc)]
            use super::*;
            use crate::kernels::fused::{self, BackParams, BackRow, MatRow, StepParams, StepRow};
            use crate::kernels::math;

            const MR1: usize = fused::rows_per_tile_for::<$S>(1);
            const MR2: usize = fused::rows_per_tile_for::<$S>(2);
            const MR4: usize = fused::rows_per_tile_for::<$S>(4);

            $(#[$attr])?
            pub(crate) unsafe fn tanh_in_place(x: &mut [f32]) {
                unsafe { math::map_in_place::<$S>(x, |v| math::tanh::<$S>(v)) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn sigmoid_in_place(x: &mut [f32]) {
                unsafe { math::map_in_place::<$S>(x, |v| math::sigmoid::<$S>(v)) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn lstm_step(p: &StepParams, rows: &[StepRow]) {
                unsafe { fused::lstm_step::<$S, MR4>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn gru_step(p: &StepParams, rows: &[StepRow]) {
                unsafe { fused::gru_step::<$S, MR2>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn rnn_step(p: &StepParams, rows: &[StepRow]) {
                unsafe { fused::rnn_step::<$S, MR1>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn panel_matmul(k: usize, n_padded: usize, packed: &[f32], rows: &[MatRow]) {
                unsafe { fused::panel_matmul::<$S, MR1>(k, n_padded, packed, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn lstm_backward(p: &BackParams, rows: &[BackRow]) {
                unsafe { fused::lstm_backward::<$S>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn gru_backward_a(p: &BackParams, rows: &[BackRow]) {
                unsafe { fused::gru_backward_a::<$S>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn gru_backward_b(p: &BackParams, rows: &[BackRow]) {
                unsafe { fused::gru_backward_b::<$S>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn rnn_backward(p: &BackParams, rows: &[BackRow]) {
                unsafe { fused::rnn_backward::<$S>(p, rows) }
            }

            pub(crate) const TABLE: crate::kernels::dispatch::Table = crate::kernels::dispatch::Table {
                unit: crate::kernels::unit::<$S>(),
                tanh_in_place,
                sigmoid_in_place,
                lstm_step,
                gru_step,
                rnn_step,
                panel_matmul,
                lstm_backward,
                gru_backward_a,
                gru_backward_b,
                rnn_backward,
            };
        }
    };
}
pub(crate) use instantiate_kernels;

/// Rows per register tile for `gates` gates of `W` vectors each.
pub(crate) const fn rows_per_tile_for<S: Simd>(gates: usize) -> usize {
    rows_per_tile::<S>(gates * S::W)
}
