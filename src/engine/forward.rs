//! Forward pass of the fast engine (inference and training).

use rayon::prelude::*;

use super::pack::PackedBlock;
use super::workspace::{zeroed, BufferPool};
use super::{batch_blocks, Packed, SharedMut};
use std::borrow::Cow;
use std::sync::Arc;

use crate::config::{CellKind, Config, Direction, GruVariant, Layout};
use crate::error::{try_with_capacity, try_zeros_untouched, Result};
use crate::io::{swap_outer_axes_into, to_time_major, Input, Output, Shapes};
use crate::kernels::fused::{MatRow, StepParams, StepRow};
use crate::kernels::Kernels;

/// What backward needs from one layer and direction; every buffer has one
/// row per (time, item), row index `t·N + b`, padded like the kernels' rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirTrace {
    /// Gate activations `[TN, G·Hp]` interleaved (RNN: h).
    pub gates: Vec<f32>,
    /// State each step started from `[TN, state_stride]`.
    pub h_prev: Vec<f32>,
    /// LSTM: cell state before the step and the unclipped new one `[TN, Hp]`.
    pub c_prev: Vec<f32>,
    pub c_raw: Vec<f32>,
    /// LSTM with projection: `o ⊙ tanh c` before projecting `[TN, Hp]`.
    pub m: Vec<f32>,
    /// GRU: `r ⊙ h` (reset before matmul) or `Rn h + Rbn` (linear before reset).
    pub aux: Vec<f32>,
    /// With a gate clip: which pre-activations passed it `[TN, G·Hp]`
    /// interleaved (see `StepRow::clip_mask`).
    pub clip_mask: Vec<f32>,
}

/// What [`super::backward`] needs from a training forward pass. Its
/// buffers come from the model's pool and go back to it when it is dropped,
/// so a training loop does not map fresh pages on every call.
#[derive(Clone, Debug)]
pub(crate) struct Trace {
    pub shapes: Shapes,
    pub lens: Vec<usize>,
    /// Per layer, its time-major input `[TN, I_l]`.
    pub layer_inputs: Vec<Vec<f32>>,
    /// Per layer and direction.
    pub dirs: Vec<DirTrace>,
    pool: Arc<BufferPool>,
}

impl Drop for Trace {
    fn drop(&mut self) {
        let dirs = std::mem::take(&mut self.dirs);
        let buffers = dirs.into_iter().flat_map(|d| {
            [
                d.gates,
                d.h_prev,
                d.c_prev,
                d.c_raw,
                d.m,
                d.aux,
                d.clip_mask,
            ]
        });
        for buf in std::mem::take(&mut self.layer_inputs)
            .into_iter()
            .chain(buffers)
        {
            if !buf.is_empty() {
                self.pool.give(buf);
            }
        }
    }
}

impl DirTrace {
    fn new(config: &Config, pb: &PackedBlock, rows: usize, pool: &BufferPool) -> Result<Self> {
        let lstm = config.cell() == CellKind::Lstm;
        let gru = config.cell() == CellKind::Gru;
        let buf = |on: bool, width: usize| {
            if on {
                pool.take_zeroed(rows * width)
            } else {
                Ok(Vec::new())
            }
        };
        Ok(DirTrace {
            gates: buf(true, pb.gates * pb.hp)?,
            h_prev: buf(true, pb.state_stride)?,
            c_prev: buf(lstm, pb.hp)?,
            c_raw: buf(lstm, pb.hp)?,
            m: buf(config.proj_size() > 0, pb.hp)?,
            aux: buf(gru, pb.hp)?,
            clip_mask: buf(config.gate_clip().is_some(), pb.gates * pb.hp)?,
        })
    }
}

/// Rows of the input projection per task: enough to amortise streaming the
/// packed weights through the cache once per block, few enough that a
/// block's inputs stay in L2 and that blocks spread over the threads.
pub(crate) const PROJECTION_ROWS: usize = 48;

/// `[TN, G·Hp]` interleaved: `x W^T + bias` for every step at once, with the
/// same register-tiled kernel as the recurrence, over row blocks in parallel.
pub(crate) fn input_projection(
    kernels: Kernels,
    pb: &PackedBlock,
    x: &[f32],
    rows: usize,
    pool: &BufferPool,
) -> Result<Vec<f32>> {
    let gh = pb.gates * pb.hp;
    assert!(x.len() >= rows * pb.input, "x holds every row");
    let mut xw = pool.take(rows * gh)?;
    xw.par_chunks_mut(PROJECTION_ROWS * gh)
        .enumerate()
        .for_each(|(block, out)| {
            let first = block * PROJECTION_ROWS;
            let mat_rows: Vec<MatRow> = out
                .chunks_exact_mut(gh)
                .enumerate()
                .map(|(r, out)| MatRow {
                    a: x[(first + r) * pb.input..].as_ptr(),
                    out: out.as_mut_ptr(),
                })
                .collect();
            // SAFETY: `Kernels` exists only for a supported ISA; each row
            // reads `input` floats of x (checked above) and writes one whole
            // gh-float row of this block's part of xw.
            unsafe {
                (kernels.table.panel_matmul)(
                    pb.input,
                    gh,
                    &pb.w_panels,
                    Some(&pb.bias_interleaved),
                    &mat_rows,
                )
            };
        });
    Ok(xw)
}

/// Multiply-adds per step below which splitting a step across threads costs
/// more in synchronisation than it saves.
const SPLIT_MIN_MACS: usize = 1 << 19;

/// Step rows shared by the parts of a split step.
struct SharedRows<'a>(&'a [StepRow]);

// SAFETY: the parts of a split step write disjoint units (panel ranges) of
// each row's outputs and only read the rows' inputs; GRU's second phase, which
// reads every unit of the first phase's output, starts after every part of
// the first phase has finished.
unsafe impl Sync for SharedRows<'_> {}

impl SharedRows<'_> {
    // A method, so closures capture the Sync wrapper rather than its field.
    fn rows(&self) -> &[StepRow] {
        self.0
    }
}

/// Into how many panel ranges each step of a batch block is split: the
/// threads a batch too small for one block per thread leaves over, so that
/// they share the block's weight stream instead of idling, but no more than
/// keeps each part at least half of `SPLIT_MIN_MACS` (1 = no split).
fn split_parts(threads: usize, blocks: usize, macs_per_block_step: usize, panels: usize) -> usize {
    let spare = threads / blocks.max(1);
    if spare < 2 || macs_per_block_step < SPLIT_MIN_MACS {
        return 1;
    }
    spare
        .min(panels)
        .min(macs_per_block_step / (SPLIT_MIN_MACS / 2))
        .max(1)
}

/// One step with its panels split into `parts` rayon tasks.
fn run_split(
    step: unsafe fn(&StepParams, &[StepRow]),
    params: &StepParams,
    rows: &[StepRow],
    gru: bool,
    parts: usize,
) {
    let (first, end) = params.panels;
    let bound = |p: usize| first + (end - first) * p / parts;
    let shared = SharedRows(rows);
    let phases: &[(bool, bool)] = if gru {
        &[(true, false), (false, true)]
    } else {
        &[(true, true)]
    };
    for &gru_phases in phases {
        let shared = &shared;
        (0..parts).into_par_iter().for_each(|p| {
            let part = StepParams {
                panels: (bound(p), bound(p + 1)),
                gru_phases,
                ..*params
            };
            // SAFETY: `Kernels` exists only for a supported ISA; the row
            // pointers are valid for the whole step and the parts are
            // disjoint (SharedRows).
            unsafe { step(&part, shared.rows()) };
        });
    }
}

/// Everything one direction's batch blocks share.
struct DirRun<'a> {
    config: &'a Config,
    pb: &'a PackedBlock,
    kernels: Kernels,
    batch: usize,
    lens: &'a [usize],
    reversed: bool,
    xw: &'a [f32],
    /// Layer output `[TN, width]`, this direction's slice at `slot`.
    y: SharedMut,
    width: usize,
    slot: usize,
    /// Split each step's panels into this many parts on as many threads (a
    /// batch too small for one block per thread); 1 = no split.
    split_parts: usize,
    /// Add into `y` (the second of two summed directions) instead of storing:
    /// storing first matters, as reading a fresh zeroed buffer maps the
    /// shared zero page and every later store then takes a copy-on-write
    /// fault and a TLB flush of every CPU.
    accumulate: bool,
    /// This direction's `[N, H_out]` / `[N, H]` state: initial in, final out.
    h_state: SharedMut,
    c_state: SharedMut,
    /// The [`DirTrace`] buffers, in field order (null where unused).
    trace: Option<[SharedMut; 7]>,
}

/// Where a forward pass leaves `y`, `h_n` and `c_n`: the caller's buffers,
/// of the call's sizes (`c_n` empty without a cell state).
pub(crate) struct Dest<'a> {
    pub y: &'a mut [f32],
    pub h_n: &'a mut [f32],
    pub c_n: &'a mut [f32],
}

/// Forward pass into new vectors.
pub(crate) fn forward(
    config: &Config,
    packed: &Packed,
    pool: &Arc<BufferPool>,
    input: &Input<'_>,
    training: bool,
) -> Result<(Output, Option<Trace>)> {
    let shapes = Shapes::of_input(config, input)?;
    // Not written here: forward_into fills every element from this thread
    // before any worker touches it, so the pages are mapped once, by it.
    let (mut y, mut h_n, mut c_n) = (
        try_zeros_untouched(shapes.y, "y")?,
        try_zeros_untouched(shapes.h, "h_n")?,
        try_zeros_untouched(shapes.c, "c_n")?,
    );
    let dest = Dest {
        y: &mut y,
        h_n: &mut h_n,
        c_n: &mut c_n,
    };
    let trace = forward_into(config, packed, pool, input, training, dest)?;
    let c_n = config.has_cell_state().then_some(c_n);
    Ok((Output { y, h_n, c_n }, trace))
}

/// Forward pass into the caller's buffers (`dest`, checked against the
/// call's shapes by the caller): the last layer writes `y` in place when it
/// is time-major, so nothing is copied out.
pub(crate) fn forward_into(
    config: &Config,
    packed: &Packed,
    pool: &Arc<BufferPool>,
    input: &Input<'_>,
    training: bool,
    dest: Dest<'_>,
) -> Result<Option<Trace>> {
    let shapes = Shapes::of_input(config, input)?;
    assert!(
        dest.y.len() == shapes.y && dest.h_n.len() == shapes.h && dest.c_n.len() == shapes.c,
        "forward_into: destination sizes were checked by the caller"
    );
    let (t_len, n) = (shapes.seq_len, shapes.batch);
    let mut lens: Vec<usize> = try_with_capacity(n, "the sequence lengths")?;
    lens.extend((0..n).map(|b| shapes.item_len(input.seq_lens, b)));
    let (hs, cs) = (config.state_size(), config.hidden_size());
    let Dest { y: y_out, h_n, c_n } = dest;
    // Every element of the destination is written by this thread first.
    match input.h0 {
        Some(h0) => h_n.copy_from_slice(h0),
        None => h_n.fill(0.0),
    }
    match input.c0 {
        Some(c0) => c_n.copy_from_slice(c0),
        None => c_n.fill(0.0),
    }
    let width = config.output_size();
    // Layer 0 reads x in place when it is already time-major.
    let mut layer_in: Cow<[f32]> = match config.layout() {
        Layout::TimeMajor => Cow::Borrowed(input.x),
        Layout::BatchFirst => Cow::Owned(to_time_major(
            config.layout(),
            input.x,
            t_len,
            n,
            config.input_size(),
        )?),
    };
    // The last layer's time-major output: the caller's y, or scratch to
    // transpose into it.
    let mut last_scratch = match config.layout() {
        Layout::TimeMajor => Vec::new(),
        Layout::BatchFirst => pool.take(t_len * n * width)?,
    };
    let mut layer_inputs = Vec::new();
    let mut dir_traces = Vec::new();
    let blocks = batch_blocks(n);

    for layer in 0..config.num_layers() {
        let last = layer + 1 == config.num_layers();
        // Scratch whose pages are already mapped, zero-filled by this thread:
        // the batch blocks write it from several threads, and page faults
        // there serialise on the page-table lock. (Steps past an item's
        // length are never written and must read zero.)
        let mut scratch = if last {
            Vec::new()
        } else {
            pool.take_zeroed(t_len * n * width)?
        };
        let layer_out: &mut [f32] = match (last, config.layout()) {
            (false, _) => &mut scratch,
            (true, Layout::TimeMajor) => &mut *y_out,
            (true, Layout::BatchFirst) => &mut last_scratch,
        };
        if last {
            layer_out.fill(0.0);
        }
        for dir in 0..config.num_directions() {
            let ld = layer * config.num_directions() + dir;
            let pb = &packed.blocks[ld];
            let xw = input_projection(packed.kernels, pb, &layer_in, t_len * n, pool)?;
            let mut dt = match training {
                true => Some(DirTrace::new(config, pb, t_len * n, pool)?),
                false => None,
            };
            let c_slice: &mut [f32] = if config.has_cell_state() {
                &mut c_n[ld * n * cs..(ld + 1) * n * cs]
            } else {
                &mut []
            };
            let run = DirRun {
                config,
                pb,
                kernels: packed.kernels,
                batch: n,
                lens: &lens,
                reversed: config.direction().is_reversed(dir),
                xw: &xw,
                y: SharedMut::new(layer_out),
                width,
                slot: if config.direction() == Direction::BidirectionalConcat {
                    dir * hs
                } else {
                    0
                },
                accumulate: config.direction() == Direction::BidirectionalSum && dir == 1,
                split_parts: split_parts(
                    rayon::current_num_threads(),
                    blocks.len(),
                    blocks.iter().map(|b| b.1).max().unwrap_or(0) * pb.gates * pb.hp * pb.state,
                    pb.hp / packed.kernels.unit(),
                ),
                h_state: SharedMut::new(&mut h_n[ld * n * hs..(ld + 1) * n * hs]),
                c_state: SharedMut::new(c_slice),
                trace: dt.as_mut().map(|t| {
                    [
                        &mut t.gates,
                        &mut t.h_prev,
                        &mut t.c_prev,
                        &mut t.c_raw,
                        &mut t.m,
                        &mut t.aux,
                        &mut t.clip_mask,
                    ]
                    .map(|v| {
                        if v.is_empty() {
                            SharedMut::null()
                        } else {
                            SharedMut::new(v)
                        }
                    })
                }),
            };
            batch_blocks(n)
                .par_iter()
                .try_for_each(|&(b0, nb)| run.block(b0, nb))?;
            pool.give(xw);
            dir_traces.extend(dt);
        }
        // Training keeps each layer's input; inference recycles it.
        let finished = std::mem::replace(&mut layer_in, Cow::Owned(scratch));
        match (training, finished) {
            (true, Cow::Owned(finished)) => layer_inputs.push(finished),
            (true, Cow::Borrowed(x)) => {
                let mut copy = pool.take(x.len())?;
                copy.copy_from_slice(x);
                layer_inputs.push(copy);
            }
            (false, Cow::Owned(scratch)) => pool.give(scratch),
            (false, Cow::Borrowed(_)) => {}
        }
    }
    if config.layout() == Layout::BatchFirst {
        swap_outer_axes_into(&last_scratch, t_len, n, width, y_out);
        pool.give(last_scratch);
    }
    Ok(training.then(|| Trace {
        shapes,
        lens,
        layer_inputs,
        dirs: dir_traces,
        pool: Arc::clone(pool),
    }))
}

impl DirRun<'_> {
    /// Runs items `b0 .. b0 + nb` through every step of this direction.
    fn block(&self, b0: usize, nb: usize) -> Result<()> {
        let (pb, cfg) = (self.pb, self.config);
        let (ks, hp, st, h) = (pb.state_stride, pb.hp, pb.state, pb.hidden);
        let gh = pb.gates * hp;
        let (lstm, gru) = (cfg.cell() == CellKind::Lstm, cfg.cell() == CellKind::Gru);
        let lbr = cfg.gru_variant() == GruVariant::LinearBeforeReset;
        let proj = cfg.proj_size() > 0;
        let training = self.trace.is_some();
        let scratch = |on: bool, width: usize| zeroed(if on && !training { nb * width } else { 0 });
        let mut gates_scratch = scratch(gru, gh)?;
        let mut aux_scratch = scratch(gru && !lbr, hp)?;
        let mut m_scratch = scratch(proj, hp)?;
        let mut h_cur = zeroed(nb * ks)?;
        let mut h_nxt = zeroed(nb * ks)?;
        let mut c = zeroed(if lstm { nb * hp } else { 0 })?;
        for r in 0..nb {
            let b = b0 + r;
            // SAFETY: row b of the state belongs to this block alone.
            unsafe {
                let src = std::slice::from_raw_parts(self.h_state.at(b * st), st);
                h_cur[r * ks..r * ks + st].copy_from_slice(src);
                if lstm {
                    c[r * hp..r * hp + h]
                        .copy_from_slice(std::slice::from_raw_parts(self.c_state.at(b * h), h));
                }
            }
        }
        let params = StepParams {
            k: st,
            hp,
            r_packed: &pb.r_panels,
            r_packed_n: &pb.r_panels_n,
            rb_n: &pb.rb_n,
            peephole: pb.peephole.as_deref(),
            clip: cfg.cell_clip(),
            gate_clip: cfg.gate_clip(),
            input_forget: cfg.input_forget(),
            relu: cfg.activation() == crate::config::Activation::Relu,
            linear_before_reset: lbr,
            panels: (0, hp / self.kernels.unit()),
            gru_phases: (true, true),
        };
        let step = match cfg.cell() {
            CellKind::Lstm => self.kernels.table.lstm_step,
            CellKind::Gru => self.kernels.table.gru_step,
            CellKind::Rnn => self.kernels.table.rnn_step,
        };
        let max_len = self.lens[b0..b0 + nb].iter().copied().max().unwrap_or(0);
        let mut rows = try_with_capacity(nb, "a block's row list")?;
        let mut proj_rows = try_with_capacity(nb, "a block's row list")?;
        let mut active = try_with_capacity(nb, "a block's row list")?;
        for s in 0..max_len {
            rows.clear();
            proj_rows.clear();
            active.clear();
            for r in 0..nb {
                let (b, len) = (b0 + r, self.lens[b0 + r]);
                if s >= len {
                    let (cur, nxt) = (&h_cur[r * ks..(r + 1) * ks], r * ks);
                    h_nxt[nxt..nxt + ks].copy_from_slice(cur);
                    continue;
                }
                let t = if self.reversed { len - 1 - s } else { s };
                let row_t = t * self.batch + b;
                active.push((r, row_t));
                // SAFETY (all pointers below): rows r of the block buffers and
                // rows row_t of the shared buffers (item b's rows) are touched by
                // this block only; every row holds the padded widths the kernels
                // read and write.
                unsafe {
                    let h_prev = h_cur.as_ptr().add(r * ks);
                    let trace_row = |i: usize, width: usize| match &self.trace {
                        Some(bufs) if !bufs[i].is_null() => bufs[i].at(row_t * width),
                        _ => std::ptr::null_mut(),
                    };
                    if training {
                        std::ptr::copy_nonoverlapping(h_prev, trace_row(1, ks), ks);
                    }
                    let gates = if training {
                        trace_row(0, gh)
                    } else if gru {
                        gates_scratch.as_mut_ptr().add(r * gh)
                    } else {
                        std::ptr::null_mut()
                    };
                    let aux = if lstm {
                        trace_row(3, hp)
                    } else if training {
                        trace_row(5, hp)
                    } else if gru && !lbr {
                        aux_scratch.as_mut_ptr().add(r * hp)
                    } else {
                        std::ptr::null_mut()
                    };
                    let out = h_nxt.as_mut_ptr().add(r * ks);
                    let h_next = if !proj {
                        out
                    } else if training {
                        trace_row(4, hp)
                    } else {
                        m_scratch.as_mut_ptr().add(r * hp)
                    };
                    if proj {
                        proj_rows.push(MatRow { a: h_next, out });
                    }
                    rows.push(StepRow {
                        h_prev,
                        xw: self.xw.as_ptr().add(row_t * gh),
                        h_next,
                        c: if lstm {
                            c.as_mut_ptr().add(r * hp)
                        } else {
                            std::ptr::null_mut()
                        },
                        gates,
                        c_prev: trace_row(2, hp),
                        aux,
                        clip_mask: trace_row(6, gh),
                    });
                }
            }
            if self.split_parts > 1 {
                run_split(step, &params, &rows, gru, self.split_parts);
            } else {
                // SAFETY: `Kernels` exists only for a supported ISA; every
                // row's pointers are valid as set up above.
                unsafe { step(&params, &rows) };
            }
            // SAFETY: as above.
            unsafe {
                if proj {
                    (self.kernels.table.panel_matmul)(h, ks, &pb.proj_panels, None, &proj_rows);
                }
            }
            for &(r, row_t) in &active {
                // SAFETY: row row_t of y belongs to item b of this block.
                let y = unsafe {
                    std::slice::from_raw_parts_mut(self.y.at(row_t * self.width + self.slot), st)
                };
                let h = &h_nxt[r * ks..r * ks + st];
                if self.accumulate {
                    y.iter_mut().zip(h).for_each(|(y, v)| *y += v);
                } else {
                    y.copy_from_slice(h);
                }
            }
            std::mem::swap(&mut h_cur, &mut h_nxt);
        }
        for r in 0..nb {
            let b = b0 + r;
            // SAFETY: row b of the state belongs to this block alone.
            unsafe {
                std::slice::from_raw_parts_mut(self.h_state.at(b * st), st)
                    .copy_from_slice(&h_cur[r * ks..r * ks + st]);
                if lstm {
                    std::slice::from_raw_parts_mut(self.c_state.at(b * h), h)
                        .copy_from_slice(&c[r * hp..r * hp + h]);
                }
            }
        }
        Ok(())
    }
}
