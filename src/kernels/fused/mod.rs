//! The hot kernels, written once for any [`Simd`]; this file holds the
//! shared tile core (register tiles over packed panels, with an epilogue
//! per cell) and each cell's step and backward live in a file of their own
//! (`lstm.rs`, `gru.rs`, `rnn.rs`), as in `reference/`:
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
//! each `K` rows of `G·U` floats (the LSTM's panels of f32 weights on AVX2
//! hold those rows in two halves instead, two gates each: see
//! [`pairs_apart`]). Gradient rows of gates are *gate-major*:
//! column `g·Hp + j`. `Hp` is the hidden size rounded up to a multiple of U.

// Index loops over constant bounds are how the register tiles are written.
#![allow(clippy::needless_range_loop)]

use super::activation::{sigmoid_derivative, tanh_derivative};
use super::dispatch::ActivationMap;
use super::math::{sigmoid, tanh};
use super::{unit, Simd};
use crate::config::ActivationFunction;

/// One direction's activation functions, per role (RNN `f`; LSTM `f` on
/// i, f, o, `g` on the cell input, `h` on c; GRU `f` on r, z, `g` on n).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GateFns {
    pub fns: [ActivationFunction; 3],
    /// Per role: the function is not the role's default, so it runs out of
    /// line through `apply` and `derive` (see `kernels::activation`).
    pub custom: [bool; 3],
    /// RNN: relu, run inline.
    pub relu: bool,
    pub apply: ActivationMap,
    pub derive: ActivationMap,
}

/// `op(f, x)` through a stack buffer: an out-of-line call per vector.
#[inline(always)]
unsafe fn out_of_line<S: Simd>(op: ActivationMap, f: &ActivationFunction, x: S::V) -> S::V {
    let mut buf = [0f32; 16];
    debug_assert!(S::LANES <= buf.len());
    // SAFETY: `buf` holds LANES floats; `op` is this ISA's map (GateFns
    // comes from the same kernel table as the calling kernel).
    unsafe {
        S::store(buf.as_mut_ptr(), x);
        op(f, &mut buf[..S::LANES]);
        S::load(buf.as_ptr())
    }
}

/// Role `role`'s function of `x`: `default` inline, else the configured one.
#[inline(always)]
unsafe fn activate<S: Simd>(
    fns: &GateFns,
    role: usize,
    x: S::V,
    default: unsafe fn(S::V) -> S::V,
) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA.
    unsafe {
        if fns.custom[role] {
            out_of_line::<S>(fns.apply, &fns.fns[role], x)
        } else {
            default(x)
        }
    }
}

/// Role `role`'s derivative from its value `y`: `default` inline (the
/// derivative of the role's default function), else the configured one.
#[inline(always)]
unsafe fn derive<S: Simd>(
    fns: &GateFns,
    role: usize,
    y: S::V,
    default: unsafe fn(S::V) -> S::V,
) -> S::V {
    // SAFETY: the caller runs on a CPU with this ISA.
    unsafe {
        if fns.custom[role] {
            out_of_line::<S>(fns.derive, &fns.fns[role], y)
        } else {
            default(y)
        }
    }
}

/// Pointers into the buffers of one batch row for one time step. Null where
/// a cell or mode does not use a buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepRow {
    /// Recurrent input, `K` floats (padded to a whole vector past the
    /// hidden size).
    pub h_prev: *const f32,
    /// int8: `h_prev` quantised (`engine::quantize`), the tile's left
    /// operand; null otherwise.
    pub h_prev_q: *const f32,
    /// Input projection plus bias, `G·Hp` interleaved.
    pub xw: *const f32,
    /// New hidden state (LSTM with projection: the unprojected `o ⊙ tanh c`), `Hp`.
    pub h_next: *mut f32,
    /// LSTM cell state, `Hp`, read and overwritten.
    pub c: *mut f32,
    /// Gate activations, `G·Hp` interleaved: written when training (and
    /// always for GRU, whose second phase reads r and z back).
    pub gates: *mut f32,
    /// Training, LSTM with a cell clip: `c` before the step; null otherwise
    /// (without a clip it is the previous step's `aux`).
    pub c_prev: *mut f32,
    /// LSTM training: c before clipping. GRU: reset-before-matmul `r ⊙ h`
    /// (always), linear-before-reset `Rn h + Rbn` (training).
    pub aux: *mut f32,
    /// Training with a gate clip: per gate value, interleaved like `gates`,
    /// 1 where the pre-activation passed the clip and 0 where it was clamped.
    pub clip_mask: *mut f32,
    /// int8, reset-before-matmul GRU: `aux` (`r ⊙ h`) quantised, the n
    /// gate's left operand; null otherwise.
    pub aux_q: *const f32,
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
    /// LSTM cell clip (on c).
    pub clip: Option<f32>,
    /// Gate clip (on every activation's input).
    pub gate_clip: Option<f32>,
    /// LSTM: f = 1 − i.
    pub input_forget: bool,
    /// This direction's activation functions.
    pub fns: GateFns,
    pub linear_before_reset: bool,
    /// The panels (units `first·U .. end·U`) this call computes: all of
    /// them, or one thread's share when a step is split across threads.
    pub panels: (usize, usize),
    /// GRU: run phase 1 (r, z) and phase 2 (n, h).
    pub gru_phases: (bool, bool),
}

impl StepParams<'_> {
    /// The floats of recurrent weights each step reads.
    fn streamed(&self) -> usize {
        self.r_packed.len() + self.r_packed_n.len()
    }
}

/// A row of a plain product `out = a × B_packed`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRow {
    /// The left operand: `k` floats, or for int8 weights a quantised row.
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
    /// Gate-clip derivatives ([`StepRow::clip_mask`]), or null without a gate clip.
    pub clip_mask: *const f32,
    /// LSTM with projection, out: where this row's `m = o ⊙ h(c)` goes in
    /// the packed right operand of the projection's gradient (its first
    /// panel; panel `p` is `p · BackParams::m_panel_stride` floats on, and
    /// the operand holds `Hp / U` panels of `U` floats for this row), or
    /// null. The forward formed the same values and did not keep them.
    pub m_packed: *mut f32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct BackParams<'a> {
    /// Floats between two panels of [`BackRow::m_packed`]'s operand.
    pub m_panel_stride: usize,
    pub hp: usize,
    pub peephole: Option<&'a [f32]>,
    /// LSTM cell clip.
    pub clip: Option<f32>,
    /// LSTM: f = 1 − i.
    pub input_forget: bool,
    /// This direction's activation functions.
    pub fns: GateFns,
    pub linear_before_reset: bool,
    /// The panels (units `first·U .. end·U`) this call computes.
    pub panels: (usize, usize),
}

/// A row of a backward step's product fused with an element-wise
/// backward in its epilogue (the same bits as the two apart). Mostly the
/// product `dG_t × Rᵀ` of step t's gate gradients (`a`, gate-major) is
/// the gradient carried to step t − 1's output; with step t − 1's own
/// output gradient added (`dy`), the cell's element-wise backward of step
/// t − 1 (`back`, whose `dh` is not read) runs on it in registers (LSTM
/// without projection, vanilla RNN, GRU's phase A). GRU's phase B runs in
/// the epilogue of `d_rn × Rn` of its own step (`back` at step t, no `dy`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackStepRow {
    /// The product's left operand, `k` floats.
    pub a: *const f32,
    /// Step t − 1's output gradient of this row: the unpadded state's
    /// width of floats (`dy_width` of the kernel), from column 0; unread by
    /// GRU's phase B.
    pub dy: *const f32,
    pub back: BackRow,
}

/// `carried + dy` in columns `col .. col + LANES` of a padded row whose
/// first `dy_width` columns have an output gradient `dy`: as the unfused
/// backward adds them (f32 adds, lane by lane; padding keeps `carried`).
///
/// # Safety
/// `dy` holds `dy_width` floats.
#[inline(always)]
unsafe fn plus_output_gradient<S: Simd>(
    carried: S::V,
    dy: *const f32,
    dy_width: usize,
    col: usize,
) -> S::V {
    // SAFETY: every read is of a column below `dy_width` (the caller's contract).
    unsafe {
        if col + S::LANES <= dy_width {
            S::add(carried, S::load(dy.add(col)))
        } else if col >= dy_width {
            carried
        } else {
            let mut lanes = [0.0f32; MOST_LANES];
            S::store(lanes.as_mut_ptr(), carried);
            for (l, v) in lanes[..dy_width - col].iter_mut().enumerate() {
                *v += *dy.add(col + l);
            }
            S::load(lanes.as_ptr())
        }
    }
}

/// The widest vector of any ISA, in f32 lanes (AVX-512).
const MOST_LANES: usize = 16;

/// A cell's element-wise backward (or part of it) that a backward step's
/// product runs in its epilogue, one vector of units at a time.
pub(crate) trait FusedBackward {
    /// Gates of the cell (the interleaved width of `BackRow::gates`).
    const GATES: usize;
    /// The product is the gradient carried to the step before (whose
    /// output gradient is added): `BackStepRow::back` is that step's.
    const BEFORE: bool;
    /// The product adds to what the step left in `BackRow::dh_prev`
    /// (GRU, whose phases form part of that gradient first).
    const ADDS_TO_DH_PREV: bool = false;
    /// The element-wise part reads `BackRow::h_prev` (GRU).
    const READS_H_PREV: bool = false;
    /// The element-wise part for the units of vector `w` of `panel`, given
    /// their gradient `d` (what the unfused backward reads from memory).
    unsafe fn at<S: Simd>(p: &BackParams, row: &BackRow, panel: usize, w: usize, d: S::V);
}

struct FusedBackEpilogue<'a, C> {
    p: &'a BackParams<'a>,
    dy_width: usize,
    cell: std::marker::PhantomData<C>,
}

impl<S: Simd, C: FusedBackward, const V: usize> Epilogue<S, BackStepRow, V>
    for FusedBackEpilogue<'_, C>
{
    const PREFETCHES: bool = true;
    /// The rows of a tile's epilogue lie a trace row apart (as the
    /// forward's inputs): their gates and per-unit rows are asked for.
    #[inline(always)]
    unsafe fn prefetch(&self, row: &BackStepRow, panel: usize) {
        let (u, back) = (unit::<S>(), &row.back);
        prefetch_span(back.gates.wrapping_add(panel * C::GATES * u), C::GATES * u);
        let h_prev = if C::READS_H_PREV {
            back.h_prev
        } else {
            std::ptr::null()
        };
        for per_unit in [back.aux, back.c_prev, back.dc.cast_const(), h_prev] {
            if !per_unit.is_null() {
                prefetch_span(per_unit.wrapping_add(panel * u), u);
            }
        }
    }
    #[inline(always)]
    fn a(&self, row: &BackStepRow, _quantized: bool) -> *const f32 {
        row.a
    }
    #[inline(always)]
    unsafe fn apply(&self, row: &BackStepRow, panel: usize, acc: &[S::V; V]) {
        for w in 0..S::W {
            let col = panel * unit::<S>() + w * S::LANES;
            // SAFETY: `dy` holds `dy_width` floats (where `C::BEFORE`) and
            // the other pointers whole padded rows (BackStepRow docs).
            unsafe {
                let mut d = acc[w];
                if C::ADDS_TO_DH_PREV {
                    d = S::add(S::load(row.back.dh_prev.add(col)), d);
                }
                if C::BEFORE {
                    d = plus_output_gradient::<S>(d, row.dy, self.dy_width, col);
                }
                C::at::<S>(self.p, &row.back, panel, w, d);
            }
        }
    }
}

// No closure in this file touches a vector: a closure cannot be marked
// `#[inline(always)]`, and an intrinsic only inlines into code compiled with
// its target feature, so SIMD work inside a closure would become a call per
// operation. Epilogues are trait impls instead.

/// `MR` rows of `a` (each `k` floats) times `NP` packed panels of `V`
/// vectors per `k` row (`panel_stride` words apart, in format `F`: see
/// `format.rs`), over the groups `g0..g1` of `F::K` k values, added to the
/// `MR × NP × V` accumulators. Every accumulator is one FMA chain over `k`
/// in order, so an output's bits do not depend on the tile it was computed
/// in (nor on where the k loop is split): any split of rows into blocks or
/// of panels into thread shares gives the same result (the engine's
/// determinism rests on this). A format whose accumulators take at most
/// `F::BLOCK_WORDS` groups (int8 on AVX2, whose products are scaled:
/// exact integer sums, so the blocks do not change them) sums blocks of
/// groups and folds each into the accumulators. With `AHEAD`, each k group
/// also asks for the line `ahead` says.
#[inline(always)]
unsafe fn tile<
    S: Simd,
    F: Format<S>,
    const MR: usize,
    const V: usize,
    const NP: usize,
    const AHEAD: bool,
>(
    acc: &mut [[[S::V; V]; NP]; MR],
    k: usize,
    a: [*const f32; MR],
    panel: *const f32,
    panel_stride: usize,
    (g0, g1): (usize, usize),
    ahead: Ahead,
) {
    // SAFETY: forwarded from this unsafe fn's contract.
    unsafe {
        if F::BLOCK_WORDS == usize::MAX {
            return tile_block::<S, F, MR, V, NP, AHEAD>(
                acc,
                k,
                a,
                panel,
                panel_stride,
                (g0, g1),
                ahead,
            );
        }
        let mut start = g0;
        while start < g1 {
            let end = g1.min(start + F::BLOCK_WORDS);
            let mut block = [[[S::zero(); V]; NP]; MR];
            tile_block::<S, F, MR, V, NP, AHEAD>(
                &mut block,
                k,
                a,
                panel,
                panel_stride,
                (start, end),
                ahead,
            );
            for r in 0..MR {
                for q in 0..NP {
                    for v in 0..V {
                        acc[r][q][v] = F::fold(acc[r][q][v], block[r][q][v]);
                    }
                }
            }
            start = end;
        }
    }
}

/// [`tile`] over groups `g0..g1`, at most `F::BLOCK_WORDS` of them.
#[inline(always)]
unsafe fn tile_block<
    S: Simd,
    F: Format<S>,
    const MR: usize,
    const V: usize,
    const NP: usize,
    const AHEAD: bool,
>(
    acc: &mut [[[S::V; V]; NP]; MR],
    k: usize,
    a: [*const f32; MR],
    panel: *const f32,
    panel_stride: usize,
    (g0, g1): (usize, usize),
    ahead: Ahead,
) {
    // SAFETY: forwarded from this unsafe fn's contract (valid, padded rows and panels; see the module docs).
    unsafe {
        let vectors = PanelVectors::of::<S, F, V>(panel_stride);
        let step = vectors.step;
        let (groups, tail) = (k / F::K, k % F::K);
        if F::BY_PART {
            // The same FMAs in the same order as `madd` below (per
            // accumulator: part 0, then part 1 of each group; a zero row
            // value past a ragged end), but each panel vector is widened
            // one part at a time and multiplied into every row before the
            // next, so that it takes one register, not two for the whole
            // tile (the row values are broadcasts from L1; held in
            // registers they spilled accumulators).
            for g in g0..g1 {
                if AHEAD {
                    ahead.ask(g);
                }
                let valid = if g < groups { F::K } else { tail };
                for q in 0..NP {
                    let bp = panel.add(q * panel_stride + g * step);
                    for v in 0..V {
                        for part in 0..2 {
                            let w = F::load_part(bp.add(vectors.at::<S>(v)), part);
                            for r in 0..MR {
                                let row = a[r].add(g * F::ROW_STEP);
                                let av = F::splat_part(row, part, valid);
                                acc[r][q][v] = F::madd_part(acc[r][q][v], av, w);
                            }
                        }
                    }
                }
            }
            return;
        }
        let fold = folds_fourth::<S, F>(MR, V, NP);
        let mut b = [[F::empty(); V]; NP];
        for g in g0..g1 {
            if AHEAD {
                ahead.ask(g);
            }
            for q in 0..NP {
                let bp = panel.add(q * panel_stride + g * step);
                for v in 0..V {
                    if !(fold && v == 3) {
                        b[q][v] = F::load(bp.add(vectors.at::<S>(v)));
                    }
                }
            }
            for r in 0..MR {
                let row = a[r].add(g * F::ROW_STEP);
                if fold {
                    // One panel of four vectors (NP = 1, V = 4).
                    let acc: &mut [S::V; 4] = (&mut acc[r][0][..]).try_into().unwrap();
                    let fourth = panel.add(g * step + vectors.at::<S>(3));
                    F::madd_folded(acc, row, [b[0][0], b[0][1], b[0][2]], fourth);
                    continue;
                }
                let av = if g < groups {
                    F::splat(row)
                } else {
                    F::splat_tail(row, tail)
                };
                for q in 0..NP {
                    for v in 0..V {
                        acc[r][q][v] = F::madd(acc[r][q][v], av, b[q][v]);
                    }
                }
            }
        }
    }
}

/// k groups before the end of a tile's loop at which it asks for its
/// epilogue's inputs ([`Epilogue::prefetch`]): 48 groups are about a
/// thousand multiply-adds of a 6 × 4-vector tile (some 300 ns, more than a
/// miss to memory takes), while the panel lines read meanwhile (12 KiB at
/// four vectors a group) leave the fetched lines in a 32 KiB L1.
const PREFETCH_GROUPS: usize = 48;

/// Asks for the cache lines of `floats` floats from `p` (a hint: it never
/// faults). Only x86-64 asks: elsewhere it is measured nowhere yet.
#[inline(always)]
fn prefetch_span(p: *const f32, floats: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..floats).step_by(LINE_FLOATS) {
        // SAFETY: a prefetch does not access memory architecturally (SSE,
        // baseline on x86-64).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(line).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, floats);
}

/// The lines of the next panels a tile asks for while it runs: where the
/// rows of a step go down each panel in several tiles, the first tile
/// would otherwise wait for the panel to come from memory while the
/// others find it in L2 and never wait, so the core computes and waits in
/// turn (measured on a Zen 1 core: a step of LSTM H = 1024, batch 8, took
/// about the sum of its memory time and its compute time, not the larger
/// of them). Spread over every tile of a panel (see [`down_rows`]), the
/// next panel arrives while this one is computed. A tile of `words` k groups
/// asks at group `g` for line `g · lines / words` from `from` (in 1/2¹⁶ of
/// a line per group, at most a line a group), so the k loop stays one
/// block of straight code: a branch in it made the compiler spill the
/// accumulators of the 6 × 2 tiles.
#[derive(Clone, Copy)]
struct Ahead {
    from: *const f32,
    rate: usize,
}

impl Ahead {
    const NONE: Ahead = Ahead {
        from: std::ptr::null(),
        rate: 0,
    };

    /// `lines` lines from `from`, spread over a tile of `words` k groups.
    fn spread(from: *const f32, lines: usize, words: usize) -> Ahead {
        Ahead {
            from,
            rate: ((lines << 16) / words.max(1)).min(1 << 16),
        }
    }

    /// Asks for k group `g`'s line.
    #[inline(always)]
    fn ask(&self, g: usize) {
        prefetch_span(
            self.from
                .wrapping_add(((g * self.rate) >> 16) * LINE_FLOATS),
            1,
        );
    }
}

/// Floats in a 64-byte cache line.
const LINE_FLOATS: usize = 16;

/// What to do with a row's accumulators for one panel.
trait Epilogue<S: Simd, R, const V: usize> {
    /// The row's left operand (`k` floats), or its quantised copy when
    /// the weights are int8 (`quantized`).
    fn a(&self, row: &R, quantized: bool) -> *const f32;
    unsafe fn apply(&self, row: &R, panel: usize, acc: &[S::V; V]);
    /// Whether [`Self::prefetch`] asks for anything.
    const PREFETCHES: bool = false;
    /// Asks for the lines `apply` will read for this row and panel, so that
    /// a tile of several rows, whose epilogue inputs lie a whole row apart
    /// (a pattern the hardware prefetchers do not follow), finds them in
    /// cache.
    #[inline(always)]
    unsafe fn prefetch(&self, _row: &R, _panel: usize) {}
}

/// One group of `MR` rows against `NP` panels starting at `panel`, asking
/// meanwhile for the lines `ahead` says; `FETCH`: prefetch the epilogue's
/// inputs (tiles that go down the rows of a panel; a single row's epilogue
/// reads its inputs in order, panel after panel, which the hardware
/// prefetchers follow).
#[inline(always)]
unsafe fn group<
    S: Simd,
    F: Format<S>,
    R,
    E: Epilogue<S, R, V>,
    const MR: usize,
    const V: usize,
    const NP: usize,
    const FETCH: bool,
    const AHEAD: bool,
>(
    k: usize,
    packed: *const f32,
    panel: usize,
    panel_stride: usize,
    rows: &[R],
    epi: &E,
    ahead: Ahead,
) {
    // SAFETY: forwarded from this unsafe fn's contract (valid, padded rows and panels; see the module docs).
    unsafe {
        let a = operands::<S, F, R, E, MR, V>(rows, epi);
        let first = packed.add(panel * panel_stride);
        let mut acc = [[[S::zero(); V]; NP]; MR];
        let words = k.div_ceil(F::K);
        let asks = (FETCH && E::PREFETCHES).then_some((epi, rows, panel..panel + NP));
        tile_asking::<S, F, R, E, MR, V, NP, AHEAD, V>(
            &mut acc,
            (k, a),
            (first, panel_stride),
            ahead,
            asks,
        );
        for r in 0..MR {
            for q in 0..NP {
                F::finish(&mut acc[r][q], first.add(q * panel_stride), words, a[r]);
                epi.apply(&rows[r], panel + q, &acc[r][q]);
            }
        }
    }
}

/// The left operands of a tile's `MR` rows (their quantised copies for a
/// quantised format).
#[inline(always)]
fn operands<S: Simd, F: Format<S>, R, E: Epilogue<S, R, V>, const MR: usize, const V: usize>(
    rows: &[R],
    epi: &E,
) -> [*const f32; MR] {
    std::array::from_fn(|r| epi.a(&rows[r], F::QUANTIZED))
}

/// [`tile`] over all of a tile's k groups; with `asks`, the epilogue's
/// inputs for those rows and panels are asked for [`PREFETCH_GROUPS`]
/// groups before the end ([`Epilogue::prefetch`]). The epilogue's vectors
/// per panel (`VE`) may be more than the tile's (`V`: a tile over half a
/// panel, [`group_pairs`]).
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn tile_asking<
    S: Simd,
    F: Format<S>,
    R,
    E: Epilogue<S, R, VE>,
    const MR: usize,
    const V: usize,
    const NP: usize,
    const AHEAD: bool,
    const VE: usize,
>(
    acc: &mut [[[S::V; V]; NP]; MR],
    (k, a): (usize, [*const f32; MR]),
    (first, panel_stride): (*const f32, usize),
    ahead: Ahead,
    asks: Option<(&E, &[R], std::ops::Range<usize>)>,
) {
    let words = k.div_ceil(F::K);
    // SAFETY: forwarded from this unsafe fn's contract (valid, padded rows and panels; see the module docs).
    unsafe {
        match asks {
            Some((epi, rows, panels)) => {
                let split = words.saturating_sub(PREFETCH_GROUPS);
                tile::<S, F, MR, V, NP, AHEAD>(acc, k, a, first, panel_stride, (0, split), ahead);
                for row in rows {
                    for panel in panels.clone() {
                        epi.prefetch(row, panel);
                    }
                }
                tile::<S, F, MR, V, NP, AHEAD>(
                    acc,
                    k,
                    a,
                    first,
                    panel_stride,
                    (split, words),
                    ahead,
                );
            }
            None => {
                tile::<S, F, MR, V, NP, AHEAD>(acc, k, a, first, panel_stride, (0, words), ahead)
            }
        }
    }
}

/// Runs every row against the panels `first..end` (each `panel_stride`
/// floats, from `packed`) in register tiles of `MR` rows × `NP` panels, then
/// the leftover rows in tiles of 4 rows × `NP` panels and of 2 and 1 rows ×
/// `NP2` panels (`NP2` a multiple of `NP`, so that a short tile keeps about
/// as many FMA chains), and the leftover panels singly. A single row
/// (batch 1) takes `NP1` panels per tile instead, so that it still has
/// about eight independent FMA chains.
///
/// `streamed` (beside `packed`): the floats of weights a step reads (all
/// its panels, which lie one after another, `panel_stride` floats each,
/// as a step's weights are packed), or 0 for other products: while
/// several tiles go down the rows of some panels they may ask for the
/// next ones ([`Ahead`], [`looks_ahead`]).
#[inline(always)]
unsafe fn for_rows<
    S: Simd,
    F: Format<S>,
    R,
    E: Epilogue<S, R, V>,
    const MR: usize,
    const V: usize,
    const NP: usize,
    const NP2: usize,
    const NP1: usize,
>(
    k: usize,
    (packed, streamed): (*const f32, usize),
    (first, end): (usize, usize),
    panel_stride: usize,
    rows: &[R],
    epi: &E,
) {
    if F::TILES {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: forwarded; a tile format's kernels are only in the AMX table.
            unsafe {
                tiles::for_rows::<S, F, R, E, V>(k, packed, (first, end), panel_stride, rows, epi)
            };
            return;
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("AMX tiles exist only on x86-64");
    }
    // SAFETY: forwarded from this unsafe fn's contract (valid, padded rows and panels; see the module docs).
    unsafe {
        if let [row] = rows {
            let row = std::slice::from_ref(row);
            let wide = first + (end - first) / NP1 * NP1;
            for panel in (first..wide).step_by(NP1) {
                group::<S, F, R, E, 1, V, NP1, false, false>(
                    k,
                    packed,
                    panel,
                    panel_stride,
                    row,
                    epi,
                    Ahead::NONE,
                );
            }
            let mid = wide + (end - wide) / NP * NP;
            for panel in (wide..mid).step_by(NP) {
                group::<S, F, R, E, 1, V, NP, false, false>(
                    k,
                    packed,
                    panel,
                    panel_stride,
                    row,
                    epi,
                    Ahead::NONE,
                );
            }
            for panel in mid..end {
                group::<S, F, R, E, 1, V, 1, false, false>(
                    k,
                    packed,
                    panel,
                    panel_stride,
                    row,
                    epi,
                    Ahead::NONE,
                );
            }
            return;
        }
        let span = (first, end);
        if folds_fourth::<S, F>(MR, V, NP)
            && rows.len() % MR == 1
            && rows.len() > MR
            && across_fits(rows.len(), k, panel_stride, streamed)
        {
            across_panels::<S, F, R, E, MR, V, NP>(k, packed, span, panel_stride, rows, epi);
            return;
        }
        if looks_ahead(NP2 * panel_stride, rows.len() * k, streamed) {
            down_panels::<S, F, R, E, MR, V, NP, NP2, true>(
                k,
                packed,
                span,
                panel_stride,
                rows,
                epi,
            );
        } else {
            down_panels::<S, F, R, E, MR, V, NP, NP2, false>(
                k,
                packed,
                span,
                panel_stride,
                rows,
                epi,
            );
        }
    }
}

/// [`for_rows`] for two rows or more; with `AHEAD`, tiles ask for the
/// panels after theirs.
#[inline(always)]
unsafe fn down_panels<
    S: Simd,
    F: Format<S>,
    R,
    E: Epilogue<S, R, V>,
    const MR: usize,
    const V: usize,
    const NP: usize,
    const NP2: usize,
    const AHEAD: bool,
>(
    k: usize,
    packed: *const f32,
    (first, end): (usize, usize),
    panel_stride: usize,
    rows: &[R],
    epi: &E,
) {
    // SAFETY: forwarded from this unsafe fn's contract (valid, padded rows and panels; see the module docs).
    unsafe {
        let panels = (panel_stride, end);
        // The rows of MR- and 4-row tiles, and the 2- and 1-row tiles after
        // them ([`tile_plan`]). Every row runs against a group of NP2
        // panels before the next group (its weights are read again while
        // still in cache).
        let (full, fours, _, _) = tile_plan::<MR>(rows.len());
        let short = rows.len() - full * MR - fours * 4;
        let (tall, short) = rows.split_at(rows.len() - short);
        let wide = first + (end - first) / NP2 * NP2;
        for panel in (first..wide).step_by(NP2) {
            for sub in (panel..panel + NP2).step_by(NP) {
                down_rows::<S, F, R, E, MR, V, NP, AHEAD>(k, packed, sub, panels, tall, epi);
            }
            down_rows::<S, F, R, E, MR, V, NP2, AHEAD>(k, packed, panel, panels, short, epi);
        }
        let full = wide + (end - wide) / NP * NP;
        for panel in (wide..full).step_by(NP) {
            down_rows::<S, F, R, E, MR, V, NP, AHEAD>(k, packed, panel, panels, rows, epi);
        }
        for panel in full..end {
            let mut rest = rows;
            while rest.len() >= 4 {
                group::<S, F, R, E, 4, V, 1, true, false>(
                    k,
                    packed,
                    panel,
                    panel_stride,
                    &rest[..4],
                    epi,
                    Ahead::NONE,
                );
                rest = &rest[4..];
            }
            for row in rest {
                let row = std::slice::from_ref(row);
                group::<S, F, R, E, 1, V, 1, true, false>(
                    k,
                    packed,
                    panel,
                    panel_stride,
                    row,
                    epi,
                    Ahead::NONE,
                );
            }
        }
    }
}

/// `rows` against the `NP` panels from `panel` (each `panel_stride`
/// floats), in tiles of `MR`, then 4, 2 and 1 rows; with `AHEAD`, the
/// tiles share between them asking for the `NP` panels after these (up to
/// `end`), each tile an even part ([`Ahead`]).
#[inline(always)]
unsafe fn down_rows<
    S: Simd,
    F: Format<S>,
    R,
    E: Epilogue<S, R, V>,
    const MR: usize,
    const V: usize,
    const NP: usize,
    const AHEAD: bool,
>(
    k: usize,
    packed: *const f32,
    panel: usize,
    (panel_stride, end): (usize, usize),
    rows: &[R],
    epi: &E,
) {
    let (full, fours, twos, ones) = tile_plan::<MR>(rows.len());
    let tiles = full + fours + twos + ones;
    let next = panel + NP;
    let lines = NP.min(end.saturating_sub(next)) * panel_stride / LINE_FLOATS;
    let words = k.div_ceil(F::K);
    // Tile `t`'s part of the lines: an even share, in order (the last
    // panels' tiles, with none to ask for, ask for their own first line).
    // Without `AHEAD` nothing is asked, and no division is paid per tile.
    let mut t = 0;
    let mut part = || {
        if !AHEAD {
            return Ahead::NONE;
        }
        let (a, b) = (lines * t / tiles, lines * (t + 1) / tiles);
        t += 1;
        if a == b {
            return Ahead::spread(packed.wrapping_add(panel * panel_stride), 0, words);
        }
        Ahead::spread(
            packed.wrapping_add(next * panel_stride + a * LINE_FLOATS),
            b - a,
            words,
        )
    };
    // SAFETY: forwarded from this unsafe fn's contract (valid, padded rows and panels; see the module docs).
    unsafe {
        let mut rest = rows;
        for _ in 0..full {
            group::<S, F, R, E, MR, V, NP, true, AHEAD>(
                k,
                packed,
                panel,
                panel_stride,
                &rest[..MR],
                epi,
                part(),
            );
            rest = &rest[MR..];
        }
        for _ in 0..fours {
            group::<S, F, R, E, 4, V, NP, true, AHEAD>(
                k,
                packed,
                panel,
                panel_stride,
                &rest[..4],
                epi,
                part(),
            );
            rest = &rest[4..];
        }
        for _ in 0..twos {
            group::<S, F, R, E, 2, V, NP, true, AHEAD>(
                k,
                packed,
                panel,
                panel_stride,
                &rest[..2],
                epi,
                part(),
            );
            rest = &rest[2..];
        }
        if let [row] = rest {
            let row = std::slice::from_ref(row);
            group::<S, F, R, E, 1, V, NP, true, AHEAD>(
                k,
                packed,
                panel,
                panel_stride,
                row,
                epi,
                part(),
            );
        }
    }
}

/// Bytes of `floats` f32 values.
const fn bytes(floats: usize) -> usize {
    floats * std::mem::size_of::<f32>()
}

/// The L2 a tile's panels and rows may take: three quarters of it, the
/// rest for what the epilogues read and write.
fn l2_room() -> usize {
    super::cache::l2_bytes() / 4 * 3
}

/// Whether `n` rows of `k` floats may take [`across_panels`] over panels
/// of `panel_stride` floats, for a step that reads `streamed` floats of
/// weights: where a panel and the rows fit in three quarters of the L2 (the
/// tiles after [`group_pairs`] read the panel again) and the weights fit
/// the L3 (a known one). From memory, the 2-row tiles that ask for the next
/// panels ([`looks_ahead`]) keep the step fed instead: measured on a Zen 3
/// core (512 KiB L2, 32 MiB L3), one thread, LSTM H = 2048 (64 MiB of
/// weights) at batch 4, the earlier group of three panels at a time, which
/// did not ask either, ran at 12.1-14.4 GFLOP/s against 33.8-41.5
/// (BENCHMARKS.md).
fn across_fits(n: usize, k: usize, panel_stride: usize, streamed: usize) -> bool {
    bytes(panel_stride + n * k) <= l2_room() && bytes(streamed) <= super::cache::l3_bytes()
}

/// [`for_rows`] for `MR·m + 4` rows where the `MR`-row tile reads its
/// fourth vector from memory ([`folds_fourth`]: AVX2's LSTM, 3 rows; f32
/// weights, in halves: [`pairs_apart`]): panel by panel, the last four rows
/// in [`group_pairs`], then the others in `MR`-row tiles over the panel it
/// left in cache. Nothing asks ahead (the weights fit the L3:
/// [`across_fits`]).
///
/// Why: a 4-row tile of four vectors does not fit the 16 registers, and
/// the two 2-row tiles [`tile_plan`] gives instead have eight FMA chains
/// each, for two pipes of latency 4 (no slack for a load's wait), and read
/// 128 bytes of panel per 8 FMAs (Zen 3's whole L2-to-L1 width of 32
/// bytes a cycle); four rows against two vectors read 64 bytes per 8.
#[inline(always)]
unsafe fn across_panels<
    S: Simd,
    F: Format<S>,
    R,
    E: Epilogue<S, R, V>,
    const MR: usize,
    const V: usize,
    const NP: usize,
>(
    k: usize,
    packed: *const f32,
    (first, end): (usize, usize),
    panel_stride: usize,
    rows: &[R],
    epi: &E,
) {
    // SAFETY: forwarded from this unsafe fn's contract (valid, padded rows and panels; see the module docs).
    unsafe {
        let panels = (panel_stride, end);
        let (tall, four) = rows.split_at(rows.len() - 4);
        for panel in first..end {
            group_pairs::<S, F, R, E, V>(k, packed, panel, panel_stride, four, epi);
            down_rows::<S, F, R, E, MR, V, NP, false>(k, packed, panel, panels, tall, epi);
        }
    }
}

/// Four rows against the panel `panel` of four vectors in halves
/// ([`pairs_apart`]): each half in turn as a tile of 4 rows × 2 vectors
/// (eight FMA chains, 64 bytes of panel per 8 FMAs, read in order), then
/// the epilogue over all four vectors. Every accumulator is the same FMA
/// chain over k in order as in any other tile, so the bits are the same.
#[inline(always)]
unsafe fn group_pairs<S: Simd, F: Format<S>, R, E: Epilogue<S, R, V>, const V: usize>(
    k: usize,
    packed: *const f32,
    panel: usize,
    panel_stride: usize,
    rows: &[R],
    epi: &E,
) {
    const HALF: usize = 2;
    debug_assert!(pairs_apart::<S, F>(V) && V == 2 * HALF);
    // SAFETY: forwarded from this unsafe fn's contract (valid, padded rows and panels; see the module docs).
    unsafe {
        let a = operands::<S, F, R, E, 4, V>(rows, epi);
        let first = packed.add(panel * panel_stride);
        let apart = PanelVectors::of::<S, F, V>(panel_stride).apart;
        let words = k.div_ceil(F::K);
        let mut acc = [[[S::zero(); V]; 1]; 4];
        for half in 0..V / HALF {
            // A half is a panel of two vectors side by side to `tile`.
            let at = first.add(half * apart);
            let mut part = [[[S::zero(); HALF]; 1]; 4];
            let last = half + 1 == V / HALF;
            let asks = (last && E::PREFETCHES).then_some((epi, rows, panel..panel + 1));
            tile_asking::<S, F, R, E, 4, HALF, 1, false, V>(
                &mut part,
                (k, a),
                (at, apart),
                Ahead::NONE,
                asks,
            );
            for r in 0..4 {
                acc[r][0][half * HALF..][..HALF].copy_from_slice(&part[r][0]);
            }
        }
        for r in 0..4 {
            F::finish(&mut acc[r][0], first, words, a[r]);
            epi.apply(&rows[r], panel, &acc[r][0]);
        }
    }
}

/// The register tiles that cover `n` rows, as counts of `MR`-, 4-, 2- and
/// 1-row tiles, in that order. Where an odd `MR` below four would leave a
/// single row, the last `MR`-row tile and that row take 2-row tiles
/// instead (`MR + 1` rows): a 1-row tile has a quarter of the FMA chains
/// that two FMA pipes need, and a 4-row tile does not fit the registers
/// where `MR` is below four (where it can, [`for_rows`] runs those four
/// rows against each half of a panel instead: [`across_panels`]).
const fn tile_plan<const MR: usize>(n: usize) -> (usize, usize, usize, usize) {
    let (mut full, mut rest) = (n / MR, n % MR);
    if MR % 2 == 1 && MR < 4 && rest == 1 && full > 0 {
        full -= 1;
        rest += MR;
    }
    let fours = if MR < 4 { 0 } else { rest / 4 };
    rest -= fours * 4;
    (full, fours, rest / 2, rest % 2)
}

/// Whether tiles going down the rows (`row_floats` floats in all) of
/// panels of `floats` floats may ask for the next as many ([`Ahead`]),
/// for a step that reads `streamed` floats of weights:
/// - where the weights come from memory, larger than the L3 (when one is
///   known). From an L3, the hardware prefetchers keep the first tile fed,
///   and the asking only costs a load slot per k group (measured on a Zen
///   1 core: RNN and GRU with H = 512-1024, 3-4 MiB, within noise of
///   nothing or up to 5 % slower with it; BENCHMARKS.md);
/// - and where both sets of panels and the rows fit in three quarters of
///   the L2 (the rest for what the epilogues read and write), so that the
///   lines asked for stay until they are read and push out neither the
///   panels the later tiles read again nor the rows every panel reads. A
///   long product's rows do not fit (they stream through the L2 from each
///   panel to the next, and would push out the lines asked for before
///   their turn); a step's do.
fn looks_ahead(floats: usize, row_floats: usize, streamed: usize) -> bool {
    bytes(streamed) > super::cache::l3_bytes() && bytes(2 * floats + row_floats) <= l2_room()
}

/// Rows per register tile, so that the tile's MR × `vectors` accumulators,
/// the panel vectors they share (`vectors × k_per_word` once widened) and
/// a row's broadcasts (`k_per_word`) all fit the register file (one
/// register more spills accumulators to the stack inside the k loop, which
/// on AVX2 halved the throughput).
const fn rows_per_tile<S: Simd>(vectors: usize, k_per_word: usize) -> usize {
    let free = S::REGISTERS.saturating_sub(vectors * k_per_word + k_per_word);
    let r = free / vectors;
    if r == 0 {
        1
    } else {
        r
    }
}

/// Rows per register tile for a kernel of `gates` gates per panel over
/// weights of `k_per_word` values per word, given that tiles of fewer than
/// four vectors per row take several panels, and that a tile of four
/// vectors per row may read the fourth from memory ([`folds_fourth`]).
pub(crate) const fn tile_rows<S: Simd>(gates: usize, k_per_word: usize, k: usize) -> usize {
    let vectors = S::W * gates;
    if narrow_tiles::<S>(k_per_word, k) && vectors < 4 {
        return rows_per_tile::<S>(2, k_per_word);
    }
    if vectors == 4 && S::FOLDS_LOADS && k_per_word == 1 && k == 1 {
        let folded = S::REGISTERS.saturating_sub(vectors);
        if folded / vectors > rows_per_tile::<S>(vectors, 1) {
            return folded / vectors;
        }
    }
    rows_per_tile::<S>(if vectors < 4 { 4 } else { vectors }, k_per_word)
}

/// Whether panels of `v` vectors hold each k value's vectors in two
/// halves, two vectors each, `[half][k][2 vectors]`, rather than all `v`
/// side by side, `[k][v vectors]`: the LSTM's four-gate panels of f32
/// weights on an ISA whose FMA folds loads (AVX2), where a batch of four
/// (or any `3m + 1`) takes [`group_pairs`], four rows against one half of a
/// panel at a time. With four vectors side by side, tiles that read only
/// some of a k value's vectors skip part of every 128 bytes, and the L2
/// prefetchers keep up with that pattern less well than with runs read in
/// order (a four-row tile over two of the four vectors ran no faster than
/// two two-row tiles over all four; the same tile over the backward's
/// one-gate panels, whose runs are read in order, runs at 93-95 % of the
/// FMA peak with the panels in L3). In halves, every tile reads each half
/// in order: the pairs of [`group_pairs`], and the whole-panel tiles two
/// runs of 64 bytes a k value. Measured on a Zen 3 core, one thread, LSTM
/// H = 512 against the side-by-side layout, builds alternating, medians:
/// batch 4 80.5 → 88 GFLOP/s (the whole call, its input projection
/// included), 8 +16 %, 2, 3 and 16 +5-8 %, batch 1 level (each vector
/// apart, `[v][k]`, lost 4-6 % there: eight runs for the single row's two
/// panels; BENCHMARKS.md). The packing follows the same rule
/// ([`crate::engine::pack`]); the bits do not change (each accumulator is
/// the same FMA chain over k).
pub(crate) const fn pairs_apart<S: Simd, F: Format<S>>(v: usize) -> bool {
    F::FOLDS && v == 4 && S::W == 1
}

/// Where a panel's vectors lie ([`pairs_apart`]): `step` floats from one k
/// value to the next, vector `v` at `at(v)` from the k value's first.
#[derive(Clone, Copy)]
struct PanelVectors {
    step: usize,
    /// Vectors side by side at each k value.
    side: usize,
    /// Floats from one run of `side` vectors to the next.
    apart: usize,
}

impl PanelVectors {
    /// For panels of `V` vectors, `panel_stride` floats each.
    #[inline(always)]
    const fn of<S: Simd, F: Format<S>, const V: usize>(panel_stride: usize) -> PanelVectors {
        let side = if pairs_apart::<S, F>(V) { 2 } else { V };
        PanelVectors {
            step: side * S::LANES,
            side,
            apart: panel_stride / (V / side),
        }
    }

    #[inline(always)]
    const fn at<S: Simd>(&self, v: usize) -> usize {
        v / self.side * self.apart + v % self.side * S::LANES
    }
}

/// Whether a tile of `mr` rows against `np` panels of `v` vectors reads
/// each row's fourth panel vector from memory, in its FMA, rather than
/// from a register: where the tile (mr × 4 accumulators, the panel vectors
/// and a broadcast) is one register larger than the file, and the format
/// folds loads ([`Format::FOLDS`]: f32 weights on an ISA whose FMA takes a
/// memory operand, [`Simd::madd_row_folded`]) to make room. [`tile_rows`]
/// picks `MR` so that this holds. On AVX2 that turns the LSTM's 2-row × 4-vector tile (8
/// accumulators: on a core with two FMA pipes of latency 4, exactly the
/// chains that keep them busy, with no slack, and 128 bytes of panel per 8
/// FMAs) into 3 rows × 4 vectors (12 accumulators, 128 bytes per 12).
/// Measured in a loop over an L2-resident panel on a Zen 3 core: 2 × 4 at
/// 88-92 % of the FMA peak, 3 × 4 folded at 97-100 % (BENCHMARKS.md).
const fn folds_fourth<S: Simd, F: Format<S>>(mr: usize, v: usize, np: usize) -> bool {
    F::FOLDS && np == 1 && v == 4 && mr * v + v + 1 > S::REGISTERS && mr * v + v <= S::REGISTERS
}

/// Whether tiles of several rows over panels of fewer than four vectors
/// take two vectors per row (and more rows) rather than four: where the
/// register file is 16 vectors and the weights are f32 (`k_per_word`
/// registers per panel vector and `k` values per word both 1). Each k step of a
/// tile reads its vectors of panel from L1 (filled from L2, as a panel of
/// 512 k values is larger than L1); 6 rows × 2 vectors read 64 bytes per
/// 12 FMAs, 2 rows × 4 vectors 128 bytes per 8. Measured on a Zen 1 core
/// (128-bit FMA units, 512 KiB L2; BENCHMARKS.md): GRU 512×16×25 28 → 31
/// GFLOP/s, RNN and the LSTM projection a few %. With 32 registers a
/// 4-vector tile takes 6 rows already.
pub(crate) const fn narrow_tiles<S: Simd>(k_per_word: usize, k: usize) -> bool {
    S::REGISTERS == 16 && k_per_word == 1 && k == 1
}

/// `p ⊙ c + x` for peephole gate `g`, or `x` without peepholes.
#[inline(always)]
unsafe fn peephole<S: Simd>(p: &StepParams, g: usize, j: usize, c: S::V, x: S::V) -> S::V {
    match p.peephole {
        // SAFETY: the peephole vector holds 3·Hp floats and j + LANES <= Hp.
        Some(ph) => unsafe { S::fma(S::load(ph.as_ptr().add(g * p.hp + j)), c, x) },
        None => x,
    }
}

/// The gate clip of pre-activations `x` (identity without one). With a
/// mask row, also stores at `col` which lanes passed (1) or were clamped (0).
#[inline(always)]
unsafe fn clip_gate<S: Simd>(clip: Option<f32>, x: S::V, mask: *mut f32, col: usize) -> S::V {
    match clip {
        None => x,
        Some(clip) => {
            if !mask.is_null() {
                let passed = S::select_lt(S::splat(clip), S::abs(x), S::zero(), S::splat(1.0));
                // SAFETY: a non-null mask row holds G·Hp floats, like the gate row.
                unsafe { S::store(mask.add(col), passed) };
            }
            S::clamp(x, S::splat(-clip), S::splat(clip))
        }
    }
}

/// Backward of the gate clip: `d` where the pre-activation passed, 0 where
/// it was clamped (no mask: no gate clip).
#[inline(always)]
unsafe fn unclip_gate<S: Simd>(mask: *const f32, col: usize, d: S::V) -> S::V {
    if mask.is_null() {
        d
    } else {
        // SAFETY: a non-null mask row holds G·Hp floats, like the gate row.
        unsafe { S::mul(d, S::load(mask.add(col))) }
    }
}

/// The register tile of a kernel over panels of `GATES` gates in format
/// `F`, as one constant per instance: `S::W · GATES` vectors per panel,
/// plus [`NARROW`] where [`narrow_tiles`] takes two vectors per row.
///
/// Why a constant and not a `match` on `S::W * GATES` at the call: rustc
/// compiles only the taken arm of a `match` on a constant it can evaluate
/// per instance, but every arm of a `match` on an expression. Matching on
/// the expression compiled all eight tile shapes for every ISA, format and
/// cell (2,158 copies of `group`, 80 % of the crate's LLVM IR).
struct PanelTiles<S, F, const GATES: usize>(std::marker::PhantomData<(S, F)>);

/// Marks a [`PanelTiles::SHAPE`] whose tiles take two vectors per row.
const NARROW: usize = 1 << 8;
/// The narrow shapes, as `match` patterns.
const NARROW_1: usize = NARROW | 1;
const NARROW_2: usize = NARROW | 2;

impl<S: Simd, F: Format<S>, const GATES: usize> PanelTiles<S, F, GATES> {
    const SHAPE: usize = {
        let vectors = S::W * GATES;
        if vectors <= 2 && narrow_tiles::<S>(F::TILE_REGS, F::K) {
            vectors | NARROW
        } else {
            vectors
        }
    };
}

/// Instantiates `for_rows` with the epilogue `$epi` for `$gates` gates of
/// `S::W` vectors per panel (W is 1, 2 or 8 across the ISAs), with as many
/// panels per tile as give about four vectors per row (eight for a single
/// row).
macro_rules! run_panels {
    ($S:ty, $F:ty, $mr:ident, $gates:literal, $k:expr, $packed:expr, $streamed:expr, $panels:expr, $rows:expr, $epi:expr) => {{
        let stride = (($k).div_ceil(<$F as Format<$S>>::K) + <$F as Format<$S>>::EXTRA_ROWS)
            * $gates
            * unit::<$S>();
        let weights = ($packed, $streamed);
        match PanelTiles::<$S, $F, $gates>::SHAPE {
            NARROW_1 => {
                for_rows::<$S, $F, _, _, $mr, 1, 2, 4, 8>($k, weights, $panels, stride, $rows, $epi)
            }
            NARROW_2 => {
                for_rows::<$S, $F, _, _, $mr, 2, 1, 2, 4>($k, weights, $panels, stride, $rows, $epi)
            }
            1 => {
                for_rows::<$S, $F, _, _, $mr, 1, 4, 4, 8>($k, weights, $panels, stride, $rows, $epi)
            }
            2 => {
                for_rows::<$S, $F, _, _, $mr, 2, 2, 2, 4>($k, weights, $panels, stride, $rows, $epi)
            }
            4 => {
                for_rows::<$S, $F, _, _, $mr, 4, 1, 1, 2>($k, weights, $panels, stride, $rows, $epi)
            }
            8 => {
                for_rows::<$S, $F, _, _, $mr, 8, 1, 1, 1>($k, weights, $panels, stride, $rows, $epi)
            }
            16 => for_rows::<$S, $F, _, _, $mr, 16, 1, 1, 1>(
                $k, weights, $panels, stride, $rows, $epi,
            ),
            32 => for_rows::<$S, $F, _, _, $mr, 32, 1, 1, 1>(
                $k, weights, $panels, stride, $rows, $epi,
            ),
            v => unreachable!("no kernel instance for tile shape {v:#x}"),
        }
    }};
}

mod format;
mod gru;
mod lstm;
mod product;
mod rnn;
#[cfg(target_arch = "x86_64")]
mod tiles;

#[cfg(target_arch = "x86_64")]
pub(crate) use format::Tiles;
pub(crate) use format::{Bf16, Format, Int8, F32};

pub(crate) use gru::{gru_backward_a, gru_backward_b, gru_step, GruBackA, GruBackB};
pub(crate) use lstm::{lstm_backward, lstm_step, LstmBack};
pub(crate) use product::blocked_matmul;
pub(crate) use rnn::{rnn_backward, rnn_step, RnnBack};

/// Stores a plain product, plus a bias row when `bias` is not null.
struct StoreEpilogue {
    bias: *const f32,
}

impl<S: Simd, const V: usize> Epilogue<S, MatRow, V> for StoreEpilogue {
    #[inline(always)]
    fn a(&self, row: &MatRow, _quantized: bool) -> *const f32 {
        row.a
    }
    #[inline(always)]
    unsafe fn apply(&self, row: &MatRow, panel: usize, acc: &[S::V; V]) {
        for w in 0..S::W {
            let col = panel * unit::<S>() + w * S::LANES;
            // SAFETY: `out` and a non-null `bias` hold a whole padded row.
            unsafe {
                let v = if self.bias.is_null() {
                    acc[w]
                } else {
                    S::add(acc[w], S::load(self.bias.add(col)))
                };
                S::store(row.out.add(col), v);
            }
        }
    }
}

/// `out = a × B (+ bias)` for rows of `a` (`k` floats each, or quantised
/// rows for int8) and `B` packed in format `F` as one-gate panels
/// (`n_padded / U` panels of `ceil(k / F::K) + F::EXTRA_ROWS` rows of `U`
/// words); `bias`, when given, holds `n_padded` floats added to every row.
#[inline(always)]
pub(crate) unsafe fn panel_matmul<S: Simd, F: Format<S>, const MR: usize>(
    k: usize,
    n_padded: usize,
    packed: &[f32],
    bias: Option<&[f32]>,
    rows: &[MatRow],
) {
    let bias = match bias {
        Some(b) => {
            assert!(b.len() >= n_padded, "bias shorter than a row");
            b.as_ptr()
        }
        None => std::ptr::null(),
    };
    // SAFETY: `packed` holds n_padded/U panels of (ceil(k / K) + EXTRA_ROWS) × U words; bias was checked.
    unsafe {
        run_panels!(
            S,
            F,
            MR,
            1,
            k,
            packed.as_ptr(),
            packed.len(),
            (0, n_padded / unit::<S>()),
            rows,
            &StoreEpilogue { bias }
        )
    }
}

/// A backward step's product `out = a × B` (one-gate f32 panels
/// `p.panels` of `packed`, `k` floats a unit column) with `C`'s
/// element-wise part in its epilogue instead of `out` ([`BackStepRow`]):
/// the same bits as the product stored, the output gradient added, and the
/// element-wise kernel run apart.
#[inline(always)]
pub(crate) unsafe fn backward_step<S: Simd, const MR: usize, C: FusedBackward>(
    k: usize,
    packed: &[f32],
    dy_width: usize,
    p: &BackParams,
    rows: &[BackStepRow],
) {
    let epilogue = FusedBackEpilogue::<C> {
        p,
        dy_width,
        cell: std::marker::PhantomData,
    };
    // SAFETY: `packed` holds k × U floats per panel up to `p.panels.1`
    // (the caller's contract, as the rows' pointers).
    unsafe {
        run_panels!(
            S,
            F32,
            MR,
            1,
            k,
            packed.as_ptr(),
            packed.len(),
            p.panels,
            rows,
            &epilogue
        )
    }
}

/// `iters` rounds of `ACC` independent FMA chains: peak FMA throughput, for
/// the benchmarks' "fraction of peak". Returns a value that depends on every
/// chain so none is optimised away.
#[inline(always)]
pub(crate) unsafe fn fma_chains<S: Simd, const ACC: usize>(iters: usize) -> f32 {
    // SAFETY: the ISA is the caller's contract (Kernels::for_isa checked it); the
    // only memory touched is `lanes`, 64 floats, at least one whole vector.
    unsafe {
        let (a, b) = (S::splat(0.999_999), S::splat(1e-7));
        let mut acc = [S::splat(1.0); ACC];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = S::fma(*v, a, b);
            }
        }
        let mut lanes = [0.0f32; 64];
        let mut total = 0.0;
        for v in acc {
            S::store(lanes.as_mut_ptr(), v);
            total += lanes[..S::LANES].iter().sum::<f32>();
        }
        total
    }
}

/// Instantiates the step kernels of ISA `$S` over weights in format `$F` in
/// a module `$module` whose functions carry `$attr` (the ISA's target
/// features), with their [`StepKernels`](crate::kernels::dispatch::StepKernels)
/// table as `$module::STEPS`.
macro_rules! step_kernels {
    ($S:ty, $module:ident, $F:ty $(, #[$attr:meta])?) => {
        pub(crate) mod $module {
            #![allow(clippy::missing_safety_doc)]
            use super::*;
            use crate::kernels::fused::{self, MatRow, StepParams, StepRow};
            /// Registers per panel vector and per row group, to size tiles.
            const R: usize = <$F as fused::Format<$S>>::TILE_REGS;
            /// k values per weight word.
            const K: usize = <$F as fused::Format<$S>>::K;
            $(#[$attr])?
            pub(crate) unsafe fn lstm_step(p: &StepParams, rows: &[StepRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::lstm_step::<$S, $F, { fused::tile_rows::<$S>(4, R, K) }>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn gru_step(p: &StepParams, rows: &[StepRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::gru_step::<$S, $F, { fused::tile_rows::<$S>(2, R, K) }, { fused::tile_rows::<$S>(1, R, K) }>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn rnn_step(p: &StepParams, rows: &[StepRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::rnn_step::<$S, $F, { fused::tile_rows::<$S>(1, R, K) }>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn panel_matmul(k: usize, n_padded: usize, packed: &[f32], bias: Option<&[f32]>, rows: &[MatRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::panel_matmul::<$S, $F, { fused::tile_rows::<$S>(1, R, K) }>(k, n_padded, packed, bias, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn convert_row(x: &[f32], out: &mut [f32]) {
                // SAFETY: as above; `out` holds a converted row (the caller's contract).
                unsafe { <$F as fused::Format<$S>>::convert_row(x, out) }
            }
            fn row_words(k: usize) -> usize {
                <$F as fused::Format<$S>>::row_words(k)
            }
            pub(crate) const STEPS: crate::kernels::dispatch::StepKernels =
                crate::kernels::dispatch::StepKernels {
                    lstm_step,
                    gru_step,
                    rnn_step,
                    panel_matmul,
                    lstm_pairs_apart: fused::pairs_apart::<$S, $F>(4 * <$S as crate::kernels::Simd>::W),
                    rows: if <$F as fused::Format<$S>>::QUANTIZED {
                        Some(crate::kernels::dispatch::RowConversion { words: row_words, convert: convert_row })
                    } else {
                        None
                    },
                };
        }
    };
}
pub(crate) use step_kernels;

/// Instantiates every generic kernel for one ISA inside functions compiled
/// with its target features, and collects them into a [`super::Kernels`]
/// table: `instantiate_kernels!(Type, #[target_feature(...)])`.
macro_rules! instantiate_kernels {
    ($S:ty $(, #[$attr:meta])?) => {
        pub(crate) mod entry {
            #![allow(clippy::missing_safety_doc)]
            use super::*;
            use crate::kernels::fused::{self, BackParams, BackRow, MatRow};
            use crate::kernels::math;

            $(#[$attr])?
            pub(crate) unsafe fn tanh_in_place(x: &mut [f32]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { math::map_in_place::<$S>(x, math::tanh::<$S>) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn softmax_in_place(x: &mut [f32]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU.
                unsafe { math::softmax_in_place::<$S>(x) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn transpose_columns(job: crate::kernels::transpose::Columns<'_>) {
                // The portable tiles, vectorised with this ISA's features.
                crate::kernels::transpose::columns(job)
            }
            $(#[$attr])?
            pub(crate) unsafe fn activation_in_place(f: &crate::config::ActivationFunction, x: &mut [f32]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU.
                unsafe { crate::kernels::activation::apply_in_place::<$S>(f, x) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn activation_derivative_in_place(f: &crate::config::ActivationFunction, y: &mut [f32]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU.
                unsafe { crate::kernels::activation::derivative_in_place::<$S>(f, y) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn sigmoid_in_place(x: &mut [f32]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { math::map_in_place::<$S>(x, math::sigmoid::<$S>) }
            }
            crate::kernels::fused::step_kernels!($S, f32_steps, fused::F32 $(, #[$attr])?);
            crate::kernels::fused::step_kernels!($S, bf16_steps, fused::Bf16 $(, #[$attr])?);
            crate::kernels::fused::step_kernels!($S, int8_steps, fused::Int8<Dot> $(, #[$attr])?);
            $(#[$attr])?
            pub(crate) unsafe fn blocked_matmul(k: usize, n: usize, packed: &[f32], rows: &[MatRow], accumulate: bool) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::blocked_matmul::<$S, { fused::tile_rows::<$S>(1, 1, 1) }>(k, n, packed, rows, accumulate) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn lstm_backward(p: &BackParams, rows: &[BackRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::lstm_backward::<$S>(p, rows) }
            }
            /// Rows of the fused backward steps' tiles: as the plain f32
            /// product's (`panel_matmul`).
            const BACK_ROWS: usize = fused::tile_rows::<$S>(
                1,
                <fused::F32 as fused::Format<$S>>::TILE_REGS,
                <fused::F32 as fused::Format<$S>>::K,
            );
            $(#[$attr])?
            pub(crate) unsafe fn lstm_backward_step(k: usize, packed: &[f32], dy_width: usize, p: &BackParams, rows: &[fused::BackStepRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::backward_step::<$S, BACK_ROWS, fused::LstmBack>(k, packed, dy_width, p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn rnn_backward_step(k: usize, packed: &[f32], dy_width: usize, p: &BackParams, rows: &[fused::BackStepRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::backward_step::<$S, BACK_ROWS, fused::RnnBack>(k, packed, dy_width, p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn gru_backward_b_step(k: usize, packed: &[f32], dy_width: usize, p: &BackParams, rows: &[fused::BackStepRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::backward_step::<$S, BACK_ROWS, fused::GruBackB>(k, packed, dy_width, p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn gru_backward_a_step(k: usize, packed: &[f32], dy_width: usize, p: &BackParams, rows: &[fused::BackStepRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::backward_step::<$S, BACK_ROWS, fused::GruBackA>(k, packed, dy_width, p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn gru_backward_a(p: &BackParams, rows: &[BackRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::gru_backward_a::<$S>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn gru_backward_b(p: &BackParams, rows: &[BackRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::gru_backward_b::<$S>(p, rows) }
            }
            $(#[$attr])?
            pub(crate) unsafe fn rnn_backward(p: &BackParams, rows: &[BackRow]) {
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU; pointer validity is the caller's contract.
                unsafe { fused::rnn_backward::<$S>(p, rows) }
            }

            $(#[$attr])?
            pub(crate) unsafe fn fma_chains(iters: usize) -> f32 {
                // Enough independent chains to cover FMA latency × ports,
                // few enough to stay in registers.
                // SAFETY: only reachable through Kernels::for_isa, which checked the CPU.
                unsafe {
                    if <$S as Simd>::REGISTERS >= 32 {
                        fused::fma_chains::<$S, 24>(iters)
                    } else {
                        fused::fma_chains::<$S, 12>(iters)
                    }
                }
            }

            pub(crate) const TABLE: crate::kernels::dispatch::Table = crate::kernels::dispatch::Table {
                unit: crate::kernels::unit::<$S>(),
                vectors_per_gate: <$S as Simd>::W,
                fma_chains,
                tanh_in_place,
                sigmoid_in_place,
                activation_in_place,
                activation_derivative_in_place,
                softmax_in_place,
                transpose_columns,
                f32: f32_steps::STEPS,
                bf16: bf16_steps::STEPS,
                bf16_one_row: bf16_steps::STEPS,
                int8: int8_steps::STEPS,
                int8_one_row: int8_steps::STEPS,
                bf16_rounded: None,
                blocked_matmul,
                lstm_backward,
                lstm_backward_step,
                rnn_backward_step,
                gru_backward_b_step,
                gru_backward_a_step,
                gru_backward_a,
                gru_backward_b,
                rnn_backward,
            };
        }
    };
}
pub(crate) use instantiate_kernels;

#[cfg(test)]
mod tests {
    use crate::kernels::cache;
    use crate::{CellKind, Config, Input, Isa, Model, OutputGrads, Precision};

    /// Outputs and gradients of a few steps, as bits.
    fn run(model: &Model, x: &[f32], (t, n): (usize, usize)) -> Vec<u32> {
        let input = Input::new(x, t, n);
        let mut bits: Vec<u32> = Vec::new();
        let y = model.forward_inference(&input).unwrap().y;
        bits.extend(y.iter().map(|v| v.to_bits()));
        if model.precision() == Precision::F32 {
            let (out, trace) = model.forward_training(&input).unwrap();
            let grads = model.backward(&trace, &OutputGrads::new(&out.y)).unwrap();
            bits.extend(grads.dx.iter().map(|v| v.to_bits()));
            bits.extend(grads.dparams.iter().map(|v| v.to_bits()));
        }
        bits
    }

    /// Every row lands in exactly one tile, and after an odd `MR` below
    /// four no row is left alone where two 2-row tiles can take it.
    #[test]
    fn tile_plans_cover_every_row_once() {
        fn check<const MR: usize>() {
            for n in 0..50 {
                let (full, fours, twos, ones) = super::tile_plan::<MR>(n);
                assert_eq!(
                    full * MR + fours * 4 + twos * 2 + ones,
                    n,
                    "MR {MR}, {n} rows"
                );
                assert!(ones <= 1 && twos <= 2, "MR {MR}, {n} rows");
                if MR == 3 && n >= 2 {
                    assert_eq!(ones, 0, "MR 3, {n} rows");
                }
                if MR != 3 {
                    // Unchanged from MR-, then 4-, 2- and 1-row tiles.
                    let rest = n % MR;
                    assert_eq!(
                        (full, fours, twos, ones),
                        (n / MR, rest / 4, rest % 4 / 2, rest % 2)
                    );
                }
            }
        }
        check::<1>();
        check::<2>();
        check::<3>();
        check::<6>();
        check::<14>();
    }

    /// A batch gives each item the bits that item gets alone, for every
    /// cell on every ISA this CPU has, at batch sizes that make every kind
    /// of tile (3-row tiles with the fourth panel vector read from memory
    /// on AVX2, 2-row tiles in their place, 1-row tiles, and on AVX2 4-row
    /// tiles over each half of a panel, four panels, the last ragged).
    #[test]
    #[cfg_attr(
        miri,
        ignore = "about a minute of interpretation; Miri runs the scalar path, whose tiles are one row, and the other Miri tests index them"
    )]
    fn a_batch_gives_each_item_its_bits_alone() {
        let (t, input, hidden) = (2, 5, 27);
        for isa in Isa::supported() {
            for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
                let config = Config::builder(cell, input, hidden).build().unwrap();
                let model = Model::random(config, 5).with_isa(isa).unwrap();
                for n in 1..=8 {
                    let x =
                        crate::rng::SplitMix64::new(n as u64).uniform_vec(t * n * input, -1.0, 1.0);
                    let y = model.forward_inference(&Input::new(&x, t, n)).unwrap().y;
                    for item in 0..n {
                        let x1: Vec<f32> = (0..t)
                            .flat_map(|s| x[(s * n + item) * input..][..input].iter().copied())
                            .collect();
                        let y1 = model.forward_inference(&Input::new(&x1, t, 1)).unwrap().y;
                        for s in 0..t {
                            let got = &y[(s * n + item) * hidden..][..hidden];
                            let alone = &y1[s * hidden..][..hidden];
                            assert!(
                                got.iter()
                                    .zip(alone)
                                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{isa:?} {cell:?}: item {item} of {n}, step {s}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Tiles that ask for the next panels (`Ahead`, all of them where the
    /// L3 is taken as 0) give the same bits as tiles that do not, on every
    /// ISA this CPU has, for each cell and weight format, with a batch of
    /// tall and short tiles and a hidden size that does not fill a vector.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "74 s of CI's 40 minutes for one case, and nothing Miri could find: the lines asked for are addressed with wrapping_add and a prefetch reads nothing, and tiles index their panels and rows the same with or without asking (the other Miri tests run them)"
    )]
    fn asking_ahead_changes_no_bits() {
        let (t, n, input, hidden) = (2, 5, 5, 9);
        let x = crate::rng::SplitMix64::new(7).uniform_vec(t * n * input, -1.0, 1.0);
        let real = cache::l3_bytes();
        let cells = [CellKind::Lstm, CellKind::Gru, CellKind::Rnn];
        let precisions = [Precision::F32, Precision::Bf16, Precision::Int8];
        let cases: Vec<_> = cells
            .iter()
            .flat_map(|&c| precisions.iter().map(move |&p| (c, p)))
            .collect();
        for isa in Isa::supported() {
            for &(cell, precision) in &cases {
                let config = Config::builder(cell, input, hidden).build().unwrap();
                let model = Model::random(config, 3)
                    .with_precision(precision)
                    .with_isa(isa)
                    .unwrap();
                cache::set_l3_for_test(usize::MAX / 8);
                // Not vacuous: a step of this size (its panels and rows far
                // below 4096 floats) asks ahead with the L3 at 0 only.
                assert!(!super::looks_ahead(4096, 4096, 1));
                let plain = run(&model, &x, (t, n));
                cache::set_l3_for_test(0);
                assert!(super::looks_ahead(4096, 4096, 1));
                let ahead = run(&model, &x, (t, n));
                assert!(plain == ahead, "{isa:?} {cell:?} {precision:?}");
            }
        }
        cache::set_l3_for_test(real);
    }
}
