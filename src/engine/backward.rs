//! Backward pass of the fast engine: BPTT over a training trace.

use super::forward::{DirTrace, Trace};
use super::pack::{round_up, Aligned, PackedBlock};
use super::products::{
    pack_reset_states, pack_rows, product_forks, rows_times_panels, transpose_forks,
    transpose_gate_columns, transposed_stride,
};
use super::workspace::BufferPool;
use super::{copy_columns, layer_shape, pad_rows, row, team, Packed, SharedMut, Span};
use crate::config::{CellKind, Config, Direction, GruVariant, ParamKind};
use crate::error::{
    try_vec, try_with_capacity, try_zeros_untouched, try_zeros_untouched_huge, Result,
};
use crate::io::{from_time_major_into, to_time_major_into, Gradients, OutputGrads};
use crate::kernels::fused::{BackParams, BackRow, BackStepRow, GateFns, MatRow};
use crate::kernels::Kernels;

/// Per-direction results the team members write, one row per (time, item).
struct DirGrads {
    /// Gate pre-activation gradients, gate-major `[TN, G·Hp]`, starting a
    /// cache line (whole lines for the transpose).
    dg: Aligned,
    /// GRU: gradient of `Rn v + Rbn` `[TN, Hp]`.
    d_rn: Vec<f32>,
    /// LSTM with projection: gradient of the projected h `[TN, state_stride]`.
    dh_proj: Vec<f32>,
    /// LSTM with projection: `m = o ⊙ h(c)`, packed as the right operand
    /// of the projection's gradient (`products::pack_rows`' layout, `k` =
    /// the rows), written by the element-wise backward.
    m_packed: Option<Aligned>,
}

/// A direction's carried gradients and step buffers, `[N, ·]` by item,
/// shared by the team members that step it (each writes its own rows and
/// units).
struct BackState {
    /// Gradient of the state carried to the previous step `[N, state_stride]`
    /// (GRU: built up within a step).
    dh: Vec<f32>,
    /// LSTM: gradient of c `[N, Hp]`.
    dc: Vec<f32>,
    /// The step's total output gradient `[N, state_stride]`.
    dh_tot: Vec<f32>,
    /// LSTM with projection: gradient of `o ⊙ tanh c` `[N, Hp]`.
    dm: Vec<f32>,
    /// GRU: gradient of r `[N, Hp]`, `d_rn × Rn` `[N, Hp]`, and
    /// `[dr, dz] × R_rz` `[N, state_stride]`.
    dr: Vec<f32>,
    dv: Vec<f32>,
    tmp: Vec<f32>,
}

impl BackState {
    fn new(
        config: &Config,
        pb: &PackedBlock,
        n: usize,
        fused_steps: bool,
        pool: &BufferPool,
    ) -> Result<Self> {
        let (ks, hp) = (pb.state_stride, pb.hp);
        let gru = config.cell() == CellKind::Gru;
        let buf = |on: bool, width: usize| pool.take_zeroed(if on { n * width } else { 0 });
        Ok(BackState {
            dh: buf(true, ks)?,
            dc: buf(config.cell() == CellKind::Lstm, hp)?,
            dh_tot: buf(true, ks)?,
            dm: buf(config.proj_size() > 0, hp)?,
            dr: buf(gru, hp)?,
            dv: buf(gru && !fused_steps, hp)?,
            tmp: buf(gru, ks)?,
        })
    }

    fn give_back(self, pool: &BufferPool) {
        pool.give_each([
            self.dh,
            self.dc,
            self.dh_tot,
            self.dm,
            self.dr,
            self.dv,
            self.tmp,
        ]);
    }
}

/// Everything the members stepping one direction back share.
struct DirBack<'a> {
    config: &'a Config,
    pb: &'a PackedBlock,
    packed: &'a Packed,
    trace: &'a DirTrace,
    batch: usize,
    seq_len: usize,
    lens: &'a [usize],
    reversed: bool,
    /// This direction's activation functions.
    fns: GateFns,
    /// Gradient of the layer output `[TN, width]`; this direction reads `slot`.
    d_out: &'a [f32],
    width: usize,
    slot: usize,
    /// `[N, H_out]` / `[N, H]`: dh_n / dc_n in, dh0 / dc0 out.
    dh_state: SharedMut,
    dc_state: SharedMut,
    /// [`DirGrads`]' buffers: dg, d_rn, dh_proj, m_packed (null where unused).
    out: [SharedMut; 4],
    /// [`BackState`]'s buffers, in field order (null where unused).
    state: [SharedMut; 7],
    /// Whether steps fuse products with element-wise parts where the cell
    /// allows ([`fuses_steps`]).
    fused_steps: bool,
}

/// Where [`backward_into`] writes each gradient: a caller's buffer of the
/// right length, or `None` for one the caller does not want.
pub(crate) struct GradDest<'a> {
    pub dx: Option<&'a mut [f32]>,
    pub dh0: Option<&'a mut [f32]>,
    pub dc0: Option<&'a mut [f32]>,
    pub dparams: Option<&'a mut [f32]>,
}

/// [`backward_into`] into new vectors.
pub(crate) fn backward(
    config: &Config,
    packed: &Packed,
    pool: &BufferPool,
    trace: &Trace,
    grads: &OutputGrads<'_>,
) -> Result<Gradients> {
    let shapes = trace.shapes;
    // Every element of each is written.
    let mut dx = try_zeros_untouched(shapes.x, "dx")?;
    let mut dh0 = try_zeros_untouched(shapes.h, "dh0")?;
    let mut dc0 = try_zeros_untouched(shapes.c, "dc0")?;
    let mut dparams = try_zeros_untouched_huge(config.num_params(), "dparams")?;
    let dest = GradDest {
        dx: Some(&mut dx),
        dh0: Some(&mut dh0),
        dc0: config.has_cell_state().then_some(&mut dc0[..]),
        dparams: Some(&mut dparams),
    };
    backward_into(config, packed, pool, trace, grads, dest)?;
    Ok(Gradients {
        dx,
        dh0,
        dc0: config.has_cell_state().then_some(dc0),
        dparams,
    })
}

/// Backpropagation through time over `trace`, writing each gradient the
/// caller asks for straight into its buffer (`dest`: lengths checked by the
/// caller); every element of a given buffer is overwritten, none is read.
pub(crate) fn backward_into(
    config: &Config,
    packed: &Packed,
    pool: &BufferPool,
    trace: &Trace,
    grads: &OutputGrads<'_>,
    dest: GradDest<'_>,
) -> Result<()> {
    let shapes = trace.shapes;
    grads.check(config, &shapes)?;
    let (t_len, n) = (shapes.seq_len, shapes.batch);
    let rows = t_len * n;
    let (hs, cs) = (config.state_size(), config.hidden_size());
    let width = config.output_size();
    // What the caller does not want still needs somewhere to go.
    let mut dparams_dest = Scratch::of(dest.dparams, config.num_params(), pool)?;
    let mut dh0_dest = Scratch::of(dest.dh0, shapes.h, pool)?;
    let mut dc0_dest = Scratch::of(dest.dc0, shapes.c, pool)?;
    let (dparams, dh0, dc0) = (dparams_dest.get(), dh0_dest.get(), dc0_dest.get());
    match grads.dh_n {
        Some(d) => dh0.copy_from_slice(d),
        None => dh0.fill(0.0),
    }
    match grads.dc_n {
        Some(d) => dc0.copy_from_slice(d),
        None => dc0.fill(0.0),
    }
    // An empty item's final state does not depend on h0 / c0 when it is
    // zeros, and no step changes these rows.
    super::zero_empty_items(config, &trace.lens, dh0, hs);
    super::zero_empty_items(config, &trace.lens, dc0, cs);
    let want_dx = dest.dx.is_some();
    let fused_steps = fuses_steps();
    let mut d_out = pool.take(rows * width)?;
    to_time_major_into(config.layout(), grads.dy, t_len, n, width, &mut d_out);

    // Per-row gradient buffers: the rows of steps past an item's length are
    // never written but the products over all steps read them, so they must
    // be zeros; without such rows every element is written.
    let ragged = trace.lens.iter().any(|&len| len < t_len);
    let rows_buf = |len: usize| {
        if ragged {
            pool.take_zeroed(len)
        } else {
            pool.take(len)
        }
    };
    for layer in (0..config.num_layers()).rev() {
        let x = &trace.layer_inputs[layer];
        let in_size = config.layer_input_size(layer);
        // The first layer's input gradient is dX: not computed when the
        // caller does not want it (a sixth of a one-layer training call).
        let d_in_len = if layer > 0 || want_dx {
            rows * in_size
        } else {
            0
        };
        let mut d_in = pool.take(d_in_len)?; // the first direction writes it all
        let dirs = config.num_directions();
        let gru = config.cell() == CellKind::Gru;
        let proj = config.proj_size() > 0;
        let mut grads = try_with_capacity(dirs, "the layer's gate gradients")?;
        let mut states = try_with_capacity(dirs, "the layer's carried gradients")?;
        for dir in 0..dirs {
            let pb = &packed.blocks[layer * dirs + dir];
            let (hp, ks) = (pb.hp, pb.state_stride);
            grads.push(DirGrads {
                dg: Aligned::within(
                    rows_buf(rows * pb.gates * hp + Aligned::SLACK)?,
                    rows * pb.gates * hp,
                ),
                d_rn: rows_buf(if gru { rows * hp } else { 0 })?,
                dh_proj: rows_buf(if proj { rows * ks } else { 0 })?,
                m_packed: match proj {
                    true => Some(Aligned::within(
                        rows_buf(rows * hp + Aligned::SLACK)?,
                        rows * hp,
                    )),
                    false => None,
                },
            });
            states.push(BackState::new(config, pb, n, fused_steps, pool)?);
        }
        let mut runs = try_with_capacity(dirs, "the layer's directions")?;
        for (dir, (dg, state)) in grads.iter_mut().zip(&mut states).enumerate() {
            let ld = layer * dirs + dir;
            let pb = &packed.blocks[ld];
            let (hp, ks) = (pb.hp, pb.state_stride);
            let dh_state = &mut dh0[ld * n * hs..(ld + 1) * n * hs];
            let dc_state: &mut [f32] = if config.has_cell_state() {
                &mut dc0[ld * n * cs..(ld + 1) * n * cs]
            } else {
                &mut []
            };
            // The gradients carried into the last step, in padded rows.
            pad_rows(dh_state, hs, &mut state.dh, ks);
            pad_rows(dc_state, cs, &mut state.dc, hp);
            runs.push(DirBack {
                config,
                pb,
                packed,
                trace: &trace.dirs[ld],
                batch: n,
                seq_len: t_len,
                lens: &trace.lens,
                reversed: config.direction().is_reversed(dir),
                fns: packed.kernels.gate_fns(config, dir),
                d_out: &d_out,
                width,
                slot: if config.direction() == Direction::BidirectionalConcat {
                    dir * hs
                } else {
                    0
                },
                dh_state: SharedMut::new(dh_state),
                dc_state: SharedMut::new(dc_state),
                out: [
                    &mut dg.dg[..],
                    &mut dg.d_rn,
                    &mut dg.dh_proj,
                    dg.m_packed.as_deref_mut().unwrap_or_default(),
                ]
                .map(SharedMut::new_or_null),
                state: [
                    &mut state.dh,
                    &mut state.dc,
                    &mut state.dh_tot,
                    &mut state.dm,
                    &mut state.dr,
                    &mut state.dv,
                    &mut state.tmp,
                ]
                .map(|v| SharedMut::new_or_null(v)),
                fused_steps,
            });
        }
        let pb = &packed.blocks[layer * dirs];
        let unit = packed.kernels.unit();
        let shape = layer_shape(config, pb, (n, t_len), unit, back_barriers(config));
        let wanted = team::useful_members(shape, team::capacity());
        team::run_shares(shape, wanted, &|share, member| {
            runs[share.dir].share(share, member)
        })?;
        drop(runs);
        for (dir, (dg, state)) in grads.into_iter().zip(states).enumerate() {
            let ld = layer * dirs + dir;
            let pb = &packed.blocks[ld];
            state.give_back(pool);
            weight_grads(
                config,
                pb,
                packed.kernels,
                pool,
                layer,
                dir,
                x,
                (&trace.dirs[ld], &trace.lens),
                &dg,
                dparams,
            )?;
            // dX (+)= dG × W (gate-major), written by the first direction.
            let gh = pb.gates * pb.hp;
            rows_times_panels(
                packed.kernels,
                (d_in_len / in_size.max(1), gh, in_size),
                &dg.dg,
                gh,
                &pb.w_back_panels,
                &mut d_in,
                in_size,
                dir > 0,
            )?;
            let m_packed = dg.m_packed.map(Aligned::into_buffer);
            for buf in [dg.dg.into_buffer(), dg.d_rn, dg.dh_proj] {
                pool.give(buf);
            }
            pool.give(m_packed.unwrap_or_default());
        }
        pool.give(std::mem::replace(&mut d_out, d_in));
    }
    if let Some(dx) = dest.dx {
        from_time_major_into(config.layout(), &d_out, t_len, n, config.input_size(), dx);
    }
    pool.give(d_out);
    for buf in [dparams_dest, dh0_dest, dc0_dest] {
        if let Scratch::Pool(v) = buf {
            pool.give(v);
        }
    }
    Ok(())
}

/// A gradient buffer: the caller's, or one from the pool for a gradient
/// the caller does not want.
enum Scratch<'a> {
    Caller(&'a mut [f32]),
    Pool(Vec<f32>),
}

impl<'a> Scratch<'a> {
    fn of(buf: Option<&'a mut [f32]>, len: usize, pool: &BufferPool) -> Result<Self> {
        Ok(match buf {
            Some(b) => Scratch::Caller(b),
            None => Scratch::Pool(pool.take(len)?),
        })
    }
    fn get(&mut self) -> &mut [f32] {
        match self {
            Scratch::Caller(b) => b,
            Scratch::Pool(v) => v,
        }
    }
}

/// dW, dR, the biases, peepholes and projection of one layer and direction,
/// each as one product over all steps written straight into `dparams`
/// (`products.rs`): the transposed gate gradients (their f64 column sums
/// are the bias gradients) times the step inputs, packed once.
#[allow(clippy::too_many_arguments)]
fn weight_grads(
    config: &Config,
    pb: &PackedBlock,
    kernels: Kernels,
    pool: &BufferPool,
    layer: usize,
    dir: usize,
    x: &[f32],
    (dt, lens): (&DirTrace, &[usize]),
    g: &DirGrads,
    dparams: &mut [f32],
) -> Result<()> {
    let (hp, h, st, ks, gates, input) = (
        pb.hp,
        pb.hidden,
        pb.state,
        pb.state_stride,
        pb.gates,
        pb.input,
    );
    let gh = gates * hp;
    let rows = g.dg.len() / gh; // gh > 0: every cell has gates and Hp >= U
    let gru = config.cell() == CellKind::Gru;
    let unit = kernels.unit();
    let range = |kind| config.param_range(layer, dir, kind).expect("tensor exists");
    // `src`'s rows (`cols` of them, `stride` apart) packed as a right
    // operand, starting a cache line (a vector load that straddles two
    // lines made these products 10-25 % slower on a Xeon).
    let packed = |src: &[f32], cols: usize, stride: usize| -> Result<Aligned> {
        let len = round_up(cols, unit) * rows;
        let mut buf = Aligned::within(pool.take(len + Aligned::SLACK)?, len); // fully written
        pack_rows(src, rows, cols, stride, unit, &mut buf);
        Ok(buf)
    };

    // dGᵀ without padding, `[G·H, rows]` (rows `ts` apart): row i is
    // dparams' row i of W and R.
    let ts = transposed_stride(rows);
    let len = gates * h * ts;
    // Written but for each row's padding, which nothing reads.
    let mut dgt = Aligned::within(pool.take(len + Aligned::SLACK)?, len);
    let mut sums = try_vec(gates * h, 0f64, "the bias gradients")?;
    let dg_shape = (gates, h, hp);
    transpose_gate_columns(kernels, &g.dg, rows, gh, dg_shape, &mut dgt, ts, &mut sums);
    let wb = &mut dparams[range(ParamKind::Wb)];
    for (d, &s) in wb.iter_mut().zip(&sums) {
        *d = s as f32;
    }

    let xp = packed(x, input, input)?;
    let dw = &mut dparams[range(ParamKind::W)];
    rows_times_panels(
        kernels,
        (gates * h, rows, input),
        &dgt,
        ts,
        &xp,
        dw,
        input,
        false,
    )?;
    pool.give(xp.into_buffer());

    let hpk = packed(&dt.h_prev, st, ks)?;
    let r_range = range(ParamKind::R);
    if gru {
        // r and z: their gate gradients times h_prev; n: d_rn times the
        // vector Rn multiplied (r ⊙ h, or h for linear-before-reset).
        let dr = &mut dparams[r_range.clone()];
        rows_times_panels(kernels, (2 * h, rows, st), &dgt, ts, &hpk, dr, st, false)?;
        let mut drnt = pool.take(h * ts)?; // written but for the padding
        let mut rn_sums = try_vec(h, 0f64, "the bias gradients")?;
        let rn_shape = (1, h, hp);
        transpose_gate_columns(
            kernels,
            &g.d_rn,
            rows,
            hp,
            rn_shape,
            &mut drnt,
            ts,
            &mut rn_sums,
        );
        let dr_n = &mut dparams[r_range.start + 2 * h * st..r_range.end];
        if config.gru_variant() == GruVariant::LinearBeforeReset {
            rows_times_panels(kernels, (h, rows, st), &drnt, ts, &hpk, dr_n, st, false)?;
        } else {
            // r ⊙ h_prev, formed again from the trace's r and h_prev.
            let len = round_up(st, unit) * rows;
            let mut vp = Aligned::within(pool.take(len + Aligned::SLACK)?, len); // fully written
            pack_reset_states((&dt.gates, gh), (&dt.h_prev, ks), (rows, st), unit, &mut vp);
            rows_times_panels(kernels, (h, rows, st), &drnt, ts, &vp, dr_n, st, false)?;
            pool.give(vp.into_buffer());
        }
        pool.give(drnt);
        let rb = &mut dparams[range(ParamKind::Rb)];
        for (d, &s) in rb.iter_mut().zip(sums[..2 * h].iter().chain(&rn_sums)) {
            *d = s as f32;
        }
    } else {
        let dr = &mut dparams[r_range];
        rows_times_panels(
            kernels,
            (gates * h, rows, st),
            &dgt,
            ts,
            &hpk,
            dr,
            st,
            false,
        )?;
        let rb = &mut dparams[range(ParamKind::Rb)];
        for (d, &s) in rb.iter_mut().zip(&sums) {
            *d = s as f32;
        }
    }
    pool.give(hpk.into_buffer());
    pool.give(dgt.into_buffer());

    if config.peepholes() {
        let reversed = config.direction().is_reversed(dir);
        peephole_grads(
            config,
            pb,
            (dt, lens, reversed),
            g,
            &mut dparams[range(ParamKind::Peephole)],
        )?;
    }
    if config.proj_size() > 0 {
        // dP [P, H] = dh_projᵀ × m.
        let mut dpt = pool.take(st * ts)?; // written but for the padding
        let mut unused = try_vec(st, 0f64, "the projection gradient")?;
        let shape = (1, st, ks);
        transpose_gate_columns(
            kernels,
            &g.dh_proj,
            rows,
            ks,
            shape,
            &mut dpt,
            ts,
            &mut unused,
        );
        let mp = g.m_packed.as_deref().expect("packed by the backward steps");
        let dp = &mut dparams[range(ParamKind::Projection)];
        rows_times_panels(kernels, (st, rows, h), &dpt, ts, mp, dp, h, false)?;
        pool.give(dpt);
    }
    Ok(())
}

/// Whether a backward call over `steps` steps of `batch` items, given a
/// pool of `threads` threads, would use only one of them (as
/// [`super::forward_runs_alone`] for the forward): every layer's team has
/// one member, and none of its products or transposes over all steps
/// forks, judged by a bound on each (the widest of their rows, columns and
/// depths), so that the answer errs only towards the pool.
pub(crate) fn backward_runs_alone(
    config: &Config,
    packed: &Packed,
    (batch, steps): (usize, usize),
    threads: usize,
) -> bool {
    let rows = batch.saturating_mul(steps);
    let barriers = back_barriers(config);
    super::every_layer_alone(config, packed, (batch, steps), threads, barriers, |pb| {
        let cols = (pb.gates * pb.hp).max(pb.state_stride);
        let depth = pb.input.max(pb.state_stride).max(pb.hp);
        !product_forks(
            rows.saturating_mul(cols).saturating_mul(depth),
            threads,
            packed.kernels.lanes(),
        ) && !transpose_forks(cols, rows, threads)
    })
}

/// Barriers a split backward step takes: before the `dG × R` product, and
/// before the projection's product (LSTM) or GRU's `d_rn × Rn`.
fn back_barriers(config: &Config) -> usize {
    1 + usize::from(config.proj_size() > 0 || config.cell() == CellKind::Gru)
}

/// The peephole gradients `[p_i, p_f, p_o]`: `Σ di ⊙ c_prev`, `Σ df ⊙
/// c_prev` and `Σ do ⊙ c` over every step and item, in f64 and in row order,
/// so they do not depend on how the steps were split over threads. Rows past
/// an item's length have zero gradients and add nothing.
fn peephole_grads(
    config: &Config,
    pb: &PackedBlock,
    (dt, lens, reversed): (&DirTrace, &[usize], bool),
    g: &DirGrads,
    dst: &mut [f32],
) -> Result<()> {
    let (hp, h, gh) = (pb.hp, pb.hidden, pb.gates * pb.hp);
    let (rows, batch) = (g.dg.len() / gh, lens.len());
    let mut acc = try_vec(3 * h, 0f64, "the peephole gradients")?;
    for r in 0..rows {
        let (t, b) = (r / batch, r % batch);
        if t >= lens[b] {
            continue;
        }
        let dg = &g.dg[r * gh..(r + 1) * gh];
        let c_prev = &dt.c_prev((hp, batch), (t, b), lens[b], reversed)[..h];
        let c_raw = &dt.c_raw[r * hp..r * hp + h];
        for j in 0..h {
            let c = match config.cell_clip() {
                Some(clip) => c_raw[j].clamp(-clip, clip),
                None => c_raw[j],
            };
            acc[j] += f64::from(dg[j]) * f64::from(c_prev[j]);
            acc[h + j] += f64::from(dg[hp + j]) * f64::from(c_prev[j]);
            acc[2 * h + j] += f64::from(dg[3 * hp + j]) * f64::from(c);
        }
    }
    for (d, a) in dst.iter_mut().zip(acc) {
        *d = a as f32;
    }
    Ok(())
}

/// Tests run the backward unfused too, to compare the bits.
#[cfg(test)]
static UNFUSED_STEPS_FOR_TEST: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether backward steps fuse their product with the element-wise
/// backward where the cell allows (always, outside tests).
fn fuses_steps() -> bool {
    #[cfg(test)]
    if UNFUSED_STEPS_FOR_TEST.load(std::sync::atomic::Ordering::SeqCst) {
        return false;
    }
    true
}

impl DirBack<'_> {
    /// Backpropagates one member's share of this direction through every
    /// step, in reverse: items `rows`, the units of its panels, meeting the
    /// other parts of its block at their barrier where a product reads every
    /// unit of the step's gradients.
    fn share(&self, share: &team::Share, member: &team::Member) -> Result<()> {
        let (pb, cfg, table) = (self.pb, self.config, &self.packed.kernels.table);
        let (ks, hp, st, h) = (pb.state_stride, pb.hp, pb.state, pb.hidden);
        let gh = pb.gates * hp;
        let cell = cfg.cell();
        let proj = cfg.proj_size() > 0;
        let (b0, nb) = share.rows;
        let unit = self.packed.kernels.unit();
        let Span {
            panels,
            state_panels,
            cols,
            out_cols,
            units,
        } = Span::of(share, pb, unit);
        let sync = || member.barrier(share.group, share.parts);
        let params = BackParams {
            // The packed m: panels of every row's `unit` values.
            m_panel_stride: self.seq_len * self.batch * unit,
            hp,
            peephole: pb.peephole.as_deref(),
            clip: cfg.cell_clip(),
            input_forget: cfg.input_forget(),
            fns: self.fns,
            linear_before_reset: cfg.gru_variant() == GruVariant::LinearBeforeReset,
            panels,
        };
        let [dh, dc, dh_tot, dm, dr, dv, tmp] = self.state;
        // A product over this share's output columns `first..end` panels of
        // `packed` (k floats per unit column): `out[row] = a[row] × B`.
        let product = |k: usize, packed: &[f32], (first, end): (usize, usize), rows: &[MatRow]| {
            // SAFETY: `Kernels` exists only for a supported ISA; `rows` hold
            // whole padded rows (offset to this share's first column), and
            // the panel slice is bounds-checked.
            unsafe {
                (table.f32.panel_matmul)(
                    k,
                    (end - first) * unit,
                    &packed[first * k * unit..end * k * unit],
                    None,
                    rows,
                )
            }
        };
        // Steps fuse the product `dG × Rᵀ` that ends them with the
        // element-wise backward of the step before (`lstm_backward_step`;
        // not an LSTM with a projection, whose `dm` product comes between):
        // a row active at step s + 1 then comes to step s with that part
        // done, and only rows whose last step is s (ragged lengths) start
        // there on their own. A GRU's phase B also runs in the epilogue of
        // the product before it.
        let fused_step = match cell {
            CellKind::Lstm if !proj => Some(table.lstm_backward_step),
            CellKind::Rnn => Some(table.rnn_backward_step),
            CellKind::Gru => Some(table.gru_backward_a_step),
            CellKind::Lstm => None,
        }
        .filter(|_| self.fused_steps);
        debug_assert!(fused_step.is_none() || panels == state_panels);
        let mut active: Vec<(usize, usize)> = try_with_capacity(nb, "a block's row list")?;
        let mut starting: Vec<(usize, usize)> = try_with_capacity(nb, "a block's row list")?;
        let mut back_rows: Vec<BackRow> = try_with_capacity(nb, "a block's row list")?;
        let mut mat_rows: Vec<MatRow> = try_with_capacity(nb, "a block's row list")?;
        let mut step_rows: Vec<BackStepRow> = match fused_step {
            Some(_) => try_with_capacity(nb, "a block's row list")?,
            None => Vec::new(),
        };
        let max_len = self.lens[b0..b0 + nb].iter().copied().max().unwrap_or(0);
        // Item b's row of the trace and outputs at backward step s (< its length).
        let row_at = |b: usize, s: usize| {
            let len = self.lens[b];
            let t = if self.reversed { len - 1 - s } else { s };
            t * self.batch + b
        };
        let tr = self.trace;
        // The element-wise backward's pointers for item b at its row row_t.
        let back_row = |b: usize, row_t: usize| {
            let c_prev = match cell {
                CellKind::Lstm => {
                    let at = (row_t / self.batch, b);
                    tr.c_prev((hp, self.batch), at, self.lens[b], self.reversed)
                        .as_ptr()
                }
                _ => std::ptr::null(),
            };
            // SAFETY: every pointer addresses a whole padded row: rows b
            // of the shared state, rows row_t of the trace and outputs.
            unsafe {
                BackRow {
                    gates: row(&tr.gates, gh, row_t),
                    h_prev: row(&tr.h_prev, ks, row_t),
                    c_prev,
                    aux: row(
                        if cell == CellKind::Lstm {
                            &tr.c_raw
                        } else {
                            &tr.aux
                        },
                        hp,
                        row_t,
                    ),
                    dh: if proj {
                        dm.at(b * hp)
                    } else {
                        dh_tot.at(b * ks)
                    },
                    dc: if dc.is_null() {
                        std::ptr::null_mut()
                    } else {
                        dc.at(b * hp)
                    },
                    dg: self.out[0].at(row_t * gh),
                    d_rn: if self.out[1].is_null() {
                        std::ptr::null_mut()
                    } else {
                        self.out[1].at(row_t * hp)
                    },
                    dh_prev: dh.at(b * ks),
                    dr: if dr.is_null() {
                        std::ptr::null_mut()
                    } else {
                        dr.at(b * hp)
                    },
                    dv: if dv.is_null() {
                        std::ptr::null()
                    } else {
                        dv.at(b * hp)
                    },
                    clip_mask: row(&tr.clip_mask, gh, row_t),
                    m_packed: if self.out[3].is_null() {
                        std::ptr::null_mut()
                    } else {
                        self.out[3].at(row_t * unit)
                    },
                }
            }
        };
        // The fused rows of step s's last product: each active row's dG
        // of step s, with the output gradient and element-wise pointers of
        // step s − 1.
        let rows_before = |active: &[(usize, usize)], s: usize, rows: &mut Vec<BackStepRow>| {
            rows.clear();
            rows.extend(active.iter().map(|&(b, row_t)| {
                let before = row_at(b, s - 1);
                BackStepRow {
                    // SAFETY: row row_t of dG is inside it; the product
                    // reads it after the barrier that ends its writes.
                    a: unsafe { self.out[0].at(row_t * gh) },
                    dy: self.d_out[before * self.width + self.slot..][..pb.state].as_ptr(),
                    back: back_row(b, before),
                }
            }));
        };

        for s in (0..max_len).rev() {
            active.clear();
            starting.clear();
            for b in b0..b0 + nb {
                if s < self.lens[b] {
                    let at = (b, row_at(b, s));
                    active.push(at);
                    // Step s + 1's fused product did this step's element-wise part.
                    if fused_step.is_none() || s + 1 == self.lens[b] {
                        starting.push(at);
                    }
                }
            }
            // SAFETY (this block): rows b of the shared state and rows row_t
            // of the outputs belong to this block; this share touches only
            // its own columns of them here.
            unsafe {
                for &(b, row_t) in &starting {
                    // dh_tot = carried dh + this step's output gradient.
                    let dst = dh_tot.at(b * ks);
                    let width = cols.1 - cols.0;
                    let total = std::slice::from_raw_parts_mut(dst.add(cols.0), width);
                    let carried = std::slice::from_raw_parts(dh.at(b * ks + cols.0), width);
                    let dy = &self.d_out[row_t * self.width + self.slot..][out_cols.0..out_cols.1];
                    let (with_dy, padding) = total.split_at_mut(dy.len());
                    for ((t, &c), &d) in with_dy.iter_mut().zip(carried).zip(dy) {
                        *t = c + d;
                    }
                    padding.copy_from_slice(&carried[dy.len()..]);
                    if proj {
                        std::ptr::copy_nonoverlapping(
                            dst.add(cols.0),
                            self.out[2].at(row_t * ks + cols.0),
                            cols.1 - cols.0,
                        );
                    }
                }
            }
            if proj {
                // dm = dh_tot × P reads every column of dh_tot (no fused
                // steps here: every active row is starting).
                sync()?;
                mat_rows.clear();
                // SAFETY: rows b of dh_tot and dm are whole padded rows.
                mat_rows.extend(starting.iter().map(|&(b, _)| unsafe {
                    MatRow {
                        a: dh_tot.at(b * ks),
                        out: dm.at(b * hp + panels.0 * unit),
                    }
                }));
                product(st, &pb.proj_back_panels, panels, &mat_rows);
            }
            back_rows.clear();
            back_rows.extend(starting.iter().map(|&(b, row_t)| back_row(b, row_t)));
            // SAFETY (kernel calls below): `Kernels` exists only for a
            // supported ISA; the rows are as above, and each call writes only
            // this share's units or columns.
            unsafe {
                match cell {
                    CellKind::Lstm | CellKind::Rnn => {
                        let elementwise = if cell == CellKind::Lstm {
                            table.lstm_backward
                        } else {
                            table.rnn_backward
                        };
                        elementwise(&params, &back_rows);
                        // dh_prev = dG × R reads every unit of dG.
                        sync()?;
                        match fused_step {
                            Some(fused_step) if s > 0 => {
                                // With step s − 1's element-wise part: it
                                // writes that step's rows of dG, which no
                                // member reads before the next barrier.
                                rows_before(&active, s, &mut step_rows);
                                fused_step(gh, &pb.r_back_panels, pb.state, &params, &step_rows);
                            }
                            _ => {
                                mat_rows.clear();
                                mat_rows.extend(active.iter().map(|&(b, row_t)| MatRow {
                                    a: self.out[0].at(row_t * gh),
                                    out: dh.at(b * ks + cols.0),
                                }));
                                product(gh, &pb.r_back_panels, state_panels, &mat_rows);
                            }
                        }
                    }
                    CellKind::Gru => {
                        (table.gru_backward_a)(&params, &back_rows);
                        // dv = d_rn × Rn reads every unit of d_rn.
                        sync()?;
                        if fused_step.is_some() {
                            // With phase B of this step.
                            step_rows.clear();
                            step_rows.extend(active.iter().map(|&(b, row_t)| BackStepRow {
                                a: self.out[1].at(row_t * hp),
                                dy: std::ptr::null(),
                                back: back_row(b, row_t),
                            }));
                            (table.gru_backward_b_step)(
                                hp,
                                &pb.r_back_panels_n,
                                0,
                                &params,
                                &step_rows,
                            );
                        } else {
                            mat_rows.clear();
                            mat_rows.extend(active.iter().map(|&(b, row_t)| MatRow {
                                a: self.out[1].at(row_t * hp),
                                out: dv.at(b * hp + cols.0),
                            }));
                            product(hp, &pb.r_back_panels_n, state_panels, &mat_rows);
                            (table.gru_backward_b)(&params, &back_rows);
                        }
                        // dh_prev += [dr, dz] × R_rz reads every unit of dr, dz.
                        sync()?;
                        match fused_step {
                            Some(fused_step) if s > 0 => {
                                // With phase A of step s − 1, as above.
                                rows_before(&active, s, &mut step_rows);
                                fused_step(
                                    2 * hp,
                                    &pb.r_back_panels,
                                    pb.state,
                                    &params,
                                    &step_rows,
                                );
                            }
                            _ => {
                                mat_rows.clear();
                                mat_rows.extend(active.iter().map(|&(b, row_t)| MatRow {
                                    a: self.out[0].at(row_t * gh),
                                    out: tmp.at(b * ks + cols.0),
                                }));
                                product(2 * hp, &pb.r_back_panels, state_panels, &mat_rows);
                                for &(b, _) in &active {
                                    for c in cols.0..cols.1 {
                                        *dh.at(b * ks + c) += *tmp.at(b * ks + c);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // No barrier ends a step: what the next step writes before its
            // first barrier (its starting rows of dG and d_rn, this share's
            // columns of dh_tot and dh), like what a fused product's
            // epilogue writes (the step before's rows of dG and d_rn, this
            // share's units of dc, dr and dh), is nothing another part
            // still reads.
        }
        let rows = b0..b0 + nb;
        // SAFETY: rows b0.. of the state gradients belong to this block,
        // these columns and units to this share.
        unsafe {
            copy_columns(dh, ks, self.dh_state, st, rows.clone(), out_cols);
            if cell == CellKind::Lstm {
                copy_columns(dc, hp, self.dc_state, h, rows, units);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, ActivationFunction, ActivationKind};
    use crate::{Input, Isa, Model};

    /// Every gradient of a training call, as bits.
    fn gradient_bits(model: &Model, x: &[f32], (t, n): (usize, usize), lens: &[usize]) -> Vec<u32> {
        let input = Input::new(x, t, n).with_seq_lens(lens);
        let (out, trace) = model.forward_training(&input).unwrap();
        let dy: Vec<f32> = out.y.iter().map(|v| 0.5 - v).collect();
        let dh_n = vec![0.25; out.h_n.len()];
        let grads = OutputGrads::new(&dy).with_dh_n(&dh_n);
        let g = model.backward(&trace, &grads).unwrap();
        let dc0 = g.dc0.unwrap_or_default();
        [&g.dx, &g.dh0, &dc0, &g.dparams]
            .iter()
            .flat_map(|v| v.iter().map(|f| f.to_bits()))
            .collect()
    }

    /// The fused backward steps (every cell) give the bits of the
    /// product and the element-wise backward apart, on every ISA this CPU
    /// has: with the cell's options, both directions and two layers, ragged
    /// lengths (items whose backward starts at different steps, and an
    /// empty one), and a hidden size whose last vector is part padding.
    /// Under Miri (the scalar kernels), a smaller case of each cell.
    #[test]
    fn fused_backward_steps_give_the_unfused_bits() {
        let (t, n, input, hidden) = match cfg!(miri) {
            false => (5, 5, 7, 27),
            true => (3, 3, 2, 3),
        };
        let lens = match cfg!(miri) {
            false => &[5, 3, 1, 0, 5][..],
            true => &[3, 1, 0][..],
        };
        let x = crate::rng::SplitMix64::new(11).uniform_vec(t * n * input, -1.0, 1.0);
        let configs = [
            Config::builder(CellKind::Lstm, input, hidden),
            Config::builder(CellKind::Lstm, input, hidden)
                .peepholes(true)
                .cell_clip(Some(0.3))
                .gate_clip(Some(1.0))
                .num_layers(2)
                .direction(Direction::BidirectionalConcat),
            Config::builder(CellKind::Lstm, input, hidden)
                .input_forget(true)
                .direction(Direction::Reverse),
            Config::builder(CellKind::Lstm, input, hidden).activations(&[
                ActivationFunction::new(ActivationKind::HardSigmoid),
                ActivationFunction::new(ActivationKind::Softsign),
                ActivationFunction::new(ActivationKind::Tanh),
            ]),
            Config::builder(CellKind::Rnn, input, hidden)
                .num_layers(2)
                .direction(Direction::BidirectionalSum),
            Config::builder(CellKind::Rnn, input, hidden)
                .activation(Activation::Relu)
                .gate_clip(Some(0.5)),
            Config::builder(CellKind::Gru, input, hidden)
                .num_layers(2)
                .direction(Direction::BidirectionalConcat),
            Config::builder(CellKind::Gru, input, hidden)
                .gru_variant(GruVariant::LinearBeforeReset)
                .gate_clip(Some(0.8))
                .direction(Direction::Reverse),
        ];
        // Under Miri: an LSTM with every option on two bidirectional
        // layers, a vanilla RNN, and a linear-before-reset GRU.
        let chosen = match cfg!(miri) {
            false => &[0, 1, 2, 3, 4, 5, 6, 7][..],
            true => &[1, 5, 7][..],
        };
        for isa in Isa::supported() {
            for &c in chosen {
                let builder = &configs[c];
                let model = Model::random(builder.clone().build().unwrap(), 3)
                    .with_isa(isa)
                    .unwrap();
                UNFUSED_STEPS_FOR_TEST.store(true, std::sync::atomic::Ordering::SeqCst);
                let apart = gradient_bits(&model, &x, (t, n), lens);
                UNFUSED_STEPS_FOR_TEST.store(false, std::sync::atomic::Ordering::SeqCst);
                let fused = gradient_bits(&model, &x, (t, n), lens);
                assert!(fused == apart, "{isa:?}, config {c}");
            }
        }
    }
}
