//! Forward pass of the fast engine (inference and training).

use rayon::prelude::*;

use super::pack::PackedBlock;
use super::workspace::BufferPool;
use super::{copy_columns, layer_shape, pad_rows, team, Packed, SharedMut, Span};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{CellKind, Config, Direction, GruVariant, Layout};
use crate::error::{try_grow, try_with_capacity, try_zeros_untouched, Result};
use crate::io::{swap_outer_axes_into, to_time_major, Input, Output, Shapes};
use crate::kernels::dispatch::{RowConversion, StepKernels};
use crate::kernels::fused::{GateFns, MatRow, StepParams, StepRow};
use crate::kernels::Kernels;

/// What backward needs from one layer and direction; every buffer has one
/// row per (time, item), row index `t·N + b`, padded like the kernels' rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirTrace {
    /// Gate activations `[TN, G·Hp]` interleaved (RNN: h).
    pub gates: Vec<f32>,
    /// State each step started from `[TN, state_stride]`.
    pub h_prev: Vec<f32>,
    /// LSTM with a cell clip: the cell state before the step `[TN, Hp]`.
    /// Without a clip that is the previous step's `c_raw` (or `c_init`),
    /// so it is not stored: see [`DirTrace::c_prev`].
    pub c_prev: Vec<f32>,
    /// LSTM: the unclipped new cell state `[TN, Hp]`.
    pub c_raw: Vec<f32>,
    /// LSTM without a cell clip: the state each item started from `[N, Hp]`.
    /// (With projection, `m = o ⊙ h(c)` is formed again by the backward.)
    pub c_init: Vec<f32>,
    /// Linear-before-reset GRU: `Rn h + Rbn`. (Reset-before-matmul's
    /// `r ⊙ h` is formed again from `gates` and `h_prev`.)
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
                d.c_init,
                d.aux,
                d.clip_mask,
            ]
        });
        self.pool.give_each(
            std::mem::take(&mut self.layer_inputs)
                .into_iter()
                .chain(buffers),
        );
    }
}

impl DirTrace {
    /// The trace of a layer and direction over `t_len · batch` (time, item)
    /// rows; `ragged`: some item is shorter than the sequence.
    fn new(
        config: &Config,
        pb: &PackedBlock,
        (t_len, batch): (usize, usize),
        ragged: bool,
        pool: &BufferPool,
    ) -> Result<Self> {
        let rows = t_len * batch;
        let lstm = config.cell() == CellKind::Lstm;
        let clipped = config.cell_clip().is_some();
        let gru = config.cell() == CellKind::Gru;
        // The rows of steps past an item's length are never written, but
        // backward's products over all steps read them (times zero
        // gradients): they must hold zeros, not what an earlier call left
        // (NaN × 0 is NaN). Without such rows, every element is written.
        let buf = |on: bool, width: usize| match (on, ragged) {
            (false, _) => Ok(Vec::new()),
            (true, true) => pool.take_zeroed(rows * width),
            (true, false) => pool.take(rows * width),
        };
        Ok(DirTrace {
            gates: buf(true, pb.gates * pb.hp)?,
            h_prev: buf(true, pb.state_stride)?,
            c_prev: buf(lstm && clipped, pb.hp)?,
            c_raw: buf(lstm, pb.hp)?,
            // Fully written (from the padded initial state).
            c_init: pool.take(if lstm && !clipped { batch * pb.hp } else { 0 })?,
            aux: buf(
                gru && config.gru_variant() == GruVariant::LinearBeforeReset,
                pb.hp,
            )?,
            clip_mask: buf(config.gate_clip().is_some(), pb.gates * pb.hp)?,
        })
    }

    /// LSTM: the cell state (`[Hp]`) that item `b` of `batch` started step
    /// `t` from, where its sequence has `len` steps, run `reversed` or not.
    /// Without a cell clip the state after a step is its `c_raw`, so the
    /// previous step's row serves and only the initial states are kept.
    pub fn c_prev(
        &self,
        (hp, batch): (usize, usize),
        (t, b): (usize, usize),
        len: usize,
        reversed: bool,
    ) -> &[f32] {
        let (buf, r) = match (reversed, t) {
            _ if !self.c_prev.is_empty() => (&self.c_prev, t * batch + b),
            (false, 0) => (&self.c_init, b),
            (false, t) => (&self.c_raw, (t - 1) * batch + b),
            (true, t) if t + 1 == len => (&self.c_init, b),
            (true, t) => (&self.c_raw, (t + 1) * batch + b),
        };
        &buf[r * hp..(r + 1) * hp]
    }
}

/// The fewest and the most rows of an input projection block (see
/// [`projection_rows`]).
const FEWEST_PROJECTION_ROWS: usize = 48;
pub(crate) const MOST_PROJECTION_ROWS: usize = 96;

/// Rows of the input projection per block, for inputs of `input` floats:
/// each block streams the packed W through the cache once, so as many as
/// fit 3/4 of the L2 with their inputs (beside the W panel streaming
/// past), between [`FEWEST_PROJECTION_ROWS`] and [`MOST_PROJECTION_ROWS`]
/// (so that blocks still spread over the threads). Measured on a 512 KiB
/// L2 with an LSTM H = I = 1024 (W 16 MiB, with R filling a 32 MiB L3):
/// blocks of 96 rows instead of 48 made two-thread calls 1.18-1.38x
/// faster in three spells of a noisy VM and left them level in three;
/// other shapes level (BENCHMARKS.md). The bits do not depend on it: each
/// row's products are its own.
fn projection_rows(input: usize) -> usize {
    let row_bytes = (input * std::mem::size_of::<f32>()).max(1);
    (crate::kernels::cache::l2_bytes() * 3 / 4 / row_bytes)
        .clamp(FEWEST_PROJECTION_ROWS, MOST_PROJECTION_ROWS)
}

/// `x W^T + bias` for the given rows of `x` and the hidden-unit panels
/// `first..end` into the same rows of `xw` (`[TN, G·Hp]` interleaved, so a
/// panel's gates are contiguous), with the same register-tiled kernel as the
/// recurrence, [`projection_rows`] rows at a time.
///
/// # Safety
/// `xw` points to a buffer of `TN · G·Hp` floats that outlives the call,
/// of which no other thread touches these rows' columns of these panels.
unsafe fn project(
    kernels: Kernels,
    batch: usize,
    pb: &PackedBlock,
    x: &[f32],
    xw: SharedMut,
    rows: impl Iterator<Item = usize>,
    (first, end): (usize, usize),
) -> Result<()> {
    let (g, u, input) = (pb.gates, kernels.unit(), pb.input);
    let gh = g * pb.hp;
    let mut mat_rows = [MatRow {
        a: std::ptr::null(),
        out: std::ptr::null_mut(),
    }; MOST_PROJECTION_ROWS];
    // No larger than the rows given (a stream's step projects one), so
    // that converted rows are not allocated for rows that never come.
    let given = rows.size_hint().1.unwrap_or(usize::MAX);
    let block = projection_rows(input).min(given).max(1);
    // A format with converted rows converts each x row once per block.
    let steps = kernels.layer_steps(pb.precision, batch, pb.cell);
    // A format that reads f32 rows converts none: no slot to look in.
    let buf = steps
        .rows
        .map(|_| PROJECTED_ROWS.take())
        .unwrap_or_default();
    let mut converted = ConvertedRows::new_in(buf, steps, block, input)?;
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let mut count = 0;
        for (i, r) in rows.by_ref().take(block).enumerate() {
            let x_row = &x[r * input..(r + 1) * input];
            mat_rows[i] = MatRow {
                a: converted.row(i, x_row).unwrap_or(x_row.as_ptr()),
                // SAFETY: row r of xw is inside it (the caller's contract).
                out: unsafe { xw.at(r * gh + first * g * u) },
            };
            count = i + 1;
        }
        // SAFETY: `Kernels` exists only for a supported ISA; each row reads
        // `input` floats of x (sliced above) and writes these panels'
        // columns of its xw row; the weight and bias slices are
        // bounds-checked.
        let panel = g * pb.words(input) * u;
        unsafe {
            (steps.panel_matmul)(
                input,
                (end - first) * g * u,
                &pb.w_panels[first * panel..end * panel],
                Some(&pb.bias_interleaved[first * g * u..]),
                &mat_rows[..count],
            )
        };
    }
    keep_small(&PROJECTED_ROWS, converted.into_buf());
    Ok(())
}

/// Converted copies of a block's rows, for a format that multiplies rows
/// in its own words (`StepKernels::rows`: int8's quantised rows, see
/// `engine::quantize`; bf16 rows rounded for `vdpbf16ps`); empty for
/// formats that read f32 rows. Every pointer it hands out derives from one
/// base pointer, so writing one row never invalidates another's pointer.
struct ConvertedRows {
    conversion: Option<RowConversion>,
    /// Owns what `base` points to.
    _buf: Vec<f32>,
    base: *mut f32,
    rows: usize,
    /// Words per row.
    words: usize,
}

impl ConvertedRows {
    /// Room for `rows` rows of `k` values where `steps` converts rows, in
    /// `buf` (a buffer an earlier call gave back, or a new one).
    fn new_in(mut buf: Vec<f32>, steps: &StepKernels, rows: usize, k: usize) -> Result<Self> {
        let (rows, words) = match steps.rows {
            Some(conversion) => (rows, (conversion.words)(k)),
            None => (0, 0),
        };
        buf.clear();
        try_grow(&mut buf, rows * words, "converted rows")?;
        buf.resize(rows * words, 0.0);
        Ok(ConvertedRows {
            conversion: steps.rows,
            base: buf.as_mut_ptr(),
            _buf: buf,
            rows,
            words,
        })
    }

    /// The buffer, for a later call (no pointer into it is used after).
    fn into_buf(self) -> Vec<f32> {
        self._buf
    }

    /// Where row `i` is (null when rows are not converted).
    fn slot(&self, i: usize) -> *const f32 {
        match self.rows {
            0 => std::ptr::null(),
            _ => {
                assert!(i < self.rows, "converted row {i} of {}", self.rows);
                // SAFETY: row i is inside the buffer.
                unsafe { self.base.add(i * self.words) }
            }
        }
    }

    /// Converts `values` as row `i` and returns where it is; `None` when
    /// rows are not converted.
    fn row(&mut self, i: usize, values: &[f32]) -> Option<*const f32> {
        let slot = self.slot(i);
        if slot.is_null() {
            return None;
        }
        // SAFETY: row i is inside the buffer (`slot` checked), and `&mut
        // self` means no pointer to it is being read now.
        let row = unsafe { std::slice::from_raw_parts_mut(slot.cast_mut(), self.words) };
        self.conversion
            .expect("a buffer of converted rows has a conversion")
            .convert_row(values, row);
        Some(slot)
    }

    /// [`row`](Self::row) from `k` floats at `values`; null when rows are
    /// not converted.
    ///
    /// # Safety
    /// `values` points to `k` readable floats that no thread writes meanwhile.
    unsafe fn row_at(&mut self, i: usize, values: *const f32, k: usize) -> *const f32 {
        if self.rows == 0 {
            return std::ptr::null();
        }
        // SAFETY: the caller's contract.
        let values = unsafe { std::slice::from_raw_parts(values, k) };
        self.row(i, values).unwrap_or(std::ptr::null())
    }
}

/// What a member's share of a layer allocates for its rows: the lists of
/// row pointers and the buffers of converted rows. Each thread keeps them
/// from one share to its next (see [`keep_small`]), so that a stream's
/// step allocates nothing; the lists hold no pointer once kept.
#[derive(Default)]
struct RowLists {
    rows: Vec<StepRow>,
    proj_rows: Vec<MatRow>,
    active: Vec<usize>,
    chunk_rows: Vec<MatRow>,
    /// h₋₁, GRU's r ⊙ h and the projection's m, converted.
    converted: [Vec<f32>; 3],
}

impl RowLists {
    fn keep(mut self) {
        self.rows.clear();
        self.proj_rows.clear();
        self.active.clear();
        self.chunk_rows.clear();
        let bytes = self.rows.capacity() * std::mem::size_of::<StepRow>()
            + (self.proj_rows.capacity() + self.chunk_rows.capacity())
                * std::mem::size_of::<MatRow>()
            + self.active.capacity() * std::mem::size_of::<usize>()
            + (self.converted.iter())
                .map(|c| c.capacity() * std::mem::size_of::<f32>())
                .sum::<usize>();
        if small_enough_to_keep(bytes) {
            ROW_LISTS.keep(self);
        }
    }
}

/// The most bytes of scratch a thread keeps from one call to its next (per
/// kind): a step of a few rows needs a few KiB; a call that needs more
/// runs long enough to allocate it.
const MOST_KEPT_SCRATCH_BYTES: usize = 256 << 10;

crate::thread_slot::thread_slot!(
    /// The row lists of this thread's latest share ([`RowLists`]).
    static ROW_LISTS: RowLists
);

crate::thread_slot::thread_slot!(
    /// The converted x rows of this thread's latest [`project`].
    static PROJECTED_ROWS: Vec<f32>
);

/// Keeps `buf` in `slot` for the thread's next call where it is small
/// ([`MOST_KEPT_SCRATCH_BYTES`]).
fn keep_small(slot: &crate::thread_slot::ThreadSlot<Vec<f32>>, buf: Vec<f32>) {
    if buf.capacity() > 0 && small_enough_to_keep(buf.capacity() * std::mem::size_of::<f32>()) {
        slot.keep(buf);
    }
}

/// Whether a thread keeps `bytes` of scratch for its next call.
fn small_enough_to_keep(bytes: usize) -> bool {
    bytes <= MOST_KEPT_SCRATCH_BYTES
}

/// [`project`] for every row and panel, in row blocks over the pool's
/// threads: for a layer whose recurrence runs on one thread of several.
fn project_in_parallel(
    kernels: Kernels,
    batch: usize,
    pb: &PackedBlock,
    x: &[f32],
    xw: &mut [f32],
) -> Result<()> {
    let gh = pb.gates * pb.hp;
    let rows = xw.len() / gh;
    assert!(x.len() >= rows * pb.input, "x holds every row");
    // Blocks of at most projection_rows rows, as many as a multiple of the
    // threads, so that none idles at the end.
    let threads = crate::threads::num_threads().max(1);
    let blocks = rows.div_ceil(projection_rows(pb.input)).div_ceil(threads) * threads;
    let per = rows.div_ceil(blocks.max(1)).max(1);
    let out = SharedMut::new(xw);
    crate::threads::on_pool(|| {
        (0..rows.div_ceil(per))
            .into_par_iter()
            .try_for_each(|block| {
                let first = block * per;
                let panels = (0, pb.hp / kernels.unit());
                // SAFETY: blocks write disjoint rows of xw, which outlives the loop.
                unsafe {
                    project(
                        kernels,
                        batch,
                        pb,
                        x,
                        out,
                        first..rows.min(first + per),
                        panels,
                    )
                }
            })
    })?
}

/// Multiply-adds of the input projection of a layer's direction over
/// `steps` steps of `batch` items.
fn projection_macs(pb: &PackedBlock, (batch, steps): (usize, usize)) -> usize {
    steps
        .saturating_mul(batch)
        .saturating_mul(pb.input * pb.gates * pb.hp)
}

/// Whether a projection of `macs` multiply-adds, on vectors of `lanes`
/// f32 lanes, is large enough to pay for handing it to other threads
/// ([`super::fork_pays`]).
fn projection_pays(macs: usize, lanes: usize) -> bool {
    #[cfg(test)]
    if tests::ANY_SIZE_PROJECTION.load(Ordering::Relaxed) {
        return true;
    }
    super::fork_pays(macs, lanes)
}

/// Whether a layer whose team has `members` members hands its input
/// projection to the pool's other threads (`threads` in the call): a team
/// of one leaves them idle, so they take the projection where it is large
/// enough to pay for the hand-off ([`projection_pays`]), forked before the
/// steps or projected ahead of them ([`layer_projection`]). A larger team
/// projects inside itself, each member its own rows and panels.
fn forks_projection(members: usize, threads: usize, pays: bool) -> bool {
    members == 1 && threads > 1 && pays
}

/// Who computes a direction's input projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Projection {
    /// The pool, every step at once, before the team starts
    /// ([`project_in_parallel`]).
    Before,
    /// The team's members, each its own rows and panels (in a wavefront,
    /// a chunk of steps at a time).
    InTeam,
    /// A second member ([`PROJECTOR`]), a chunk of steps at a time ahead of
    /// the first, which steps the direction alone ([`DirRun::project_ahead`],
    /// [`AheadChunks`]). A team that got no second member projects every
    /// step first, on its one member.
    Ahead,
}

/// The chunks of steps of a projection ahead ([`Projection::Ahead`]) and
/// which of them are taken. The projector takes them in order; the
/// stepping member takes the chunk it needs next itself where the
/// projector has not taken it yet (the projector starts a wake-up late, or
/// was descheduled), so it never waits for a projector that is not there,
/// and waits for one that is only until its chunk is done. Whoever
/// projects a row, its bits are the same.
struct AheadChunks {
    /// The first chunk's steps: small, so that the steps start soon. Each
    /// next chunk is twice as long, up to `most` steps (a projection block,
    /// [`projection_rows`]), so that W is read a few times only.
    first: usize,
    most: usize,
    /// Steps to project (the longest item's).
    steps: usize,
    /// Chunks taken so far (by either member, in order).
    taken: AtomicUsize,
}

impl AheadChunks {
    /// For `steps` steps of `batch` items of `input` floats.
    fn new(input: usize, batch: usize, steps: usize) -> AheadChunks {
        let most = (projection_rows(input) / batch.max(1)).max(1);
        AheadChunks {
            first: wavefront_chunk(batch).min(most),
            most,
            steps,
            taken: AtomicUsize::new(0),
        }
    }

    /// Chunk `k`'s steps, `start..end` (empty past the last).
    fn bounds(&self, k: usize) -> (usize, usize) {
        let (mut start, mut len) = (0, self.first);
        for _ in 0..k {
            start += len;
            len = (len * 2).min(self.most);
        }
        (start.min(self.steps), (start + len).min(self.steps))
    }

    /// Takes chunk `k` if no one has (so all before it are taken).
    fn take(&self, k: usize) -> bool {
        self.taken
            .compare_exchange(k, k + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Takes the next chunk not yet taken; `None` once all are.
    fn take_next(&self) -> Option<usize> {
        let k = self.taken.fetch_add(1, Ordering::AcqRel);
        let (start, end) = self.bounds(k);
        (start < end).then_some(k)
    }
}

/// The member that projects ahead ([`Projection::Ahead`]).
const PROJECTOR: usize = 1;

/// Who projects the input of a layer of `shape` (its first direction's
/// `pb`) whose team has `wanted` members, in a call given `threads`
/// threads: the team itself, unless it leaves threads idle and the
/// projection is worth them ([`forks_projection`]); then a member ahead
/// of the steps where [`projects_ahead`], else the pool before the steps.
fn layer_projection(
    config: &Config,
    pb: &PackedBlock,
    shape: team::Shape,
    (wanted, threads): (usize, usize),
    lanes: usize,
) -> Projection {
    let pays = projection_pays(projection_macs(pb, (shape.batch, shape.steps)), lanes);
    match forks_projection(wanted, threads, pays) {
        false => Projection::InTeam,
        true if projects_ahead(config, pb, shape, threads) => Projection::Ahead,
        true => Projection::Before,
    }
}

/// Whether a layer whose steps run on one member, but whose projection is
/// worth the pool's other threads ([`forks_projection`]), has it projected
/// ahead of the steps by a second member ([`Projection::Ahead`]) rather
/// than forked over the pool before them. With `p` and `r` a row's
/// multiply-adds of a step's projection and of its recurrence
/// (`shape.macs_per_row`), the layer then takes about `max(p, r)` a step,
/// and forked over `threads` threads `p / threads + r`: ahead wins unless
/// the projection outweighs the recurrence by more than that (an input
/// much wider than the state, or many threads). For one direction read
/// forwards (a reversed direction needs its last steps first) over more
/// steps than a chunk. The recurrence of a small step at batch 1-4 runs
/// slower per multiply-add than the projection's many rows at once, so
/// the rule errs towards forking.
fn projects_ahead(config: &Config, pb: &PackedBlock, shape: team::Shape, threads: usize) -> bool {
    let p = pb.input * pb.gates * pb.hp;
    let r = shape.macs_per_row;
    config.num_directions() == 1
        && !config.direction().is_reversed(0)
        && shape.steps > wavefront_chunk(shape.batch)
        && p.max(r).saturating_mul(threads) < p.saturating_add(r.saturating_mul(threads))
}

/// Whether a forward call of `steps` steps over `batch` items, given a pool
/// of `threads` threads, would use only one of them: every layer's team has
/// one member and no layer forks its input projection. Such a call may as
/// well run on the caller's thread ([`crate::threads::run_inline`]), the
/// way a pool of one runs every call: handing it to a worker and waiting
/// costs two thread switches. Fewer threads than `threads` (other calls,
/// a contended machine) never make a team larger, so the answer holds for
/// whatever share of the pool the call would get.
pub(crate) fn forward_runs_alone(
    config: &Config,
    packed: &Packed,
    (batch, steps): (usize, usize),
    threads: usize,
) -> bool {
    let barriers = team_barriers(config);
    super::every_layer_alone(config, packed, (batch, steps), threads, barriers, |pb| {
        let pays = projection_pays(projection_macs(pb, (batch, steps)), packed.kernels.lanes());
        !forks_projection(1, threads, pays)
    }) && !matches!(
        wavefront_layers(config, packed, (batch, steps), threads),
        Ok(Some(_))
    )
}

/// Barriers a split forward step takes: one after the step, one more
/// before reset-before-matmul GRU's n gate (it reads `r ⊙ h` of every unit)
/// and before the LSTM projection (it reads every unit of `o ⊙ tanh c`).
pub(super) fn team_barriers(config: &Config) -> usize {
    let gru_reset_before =
        config.cell() == CellKind::Gru && config.gru_variant() == GruVariant::ResetBeforeMatmul;
    1 + usize::from(gru_reset_before) + usize::from(config.proj_size() > 0)
}

/// Steps a wavefront's layer projects at a time, for `rows` items: at
/// least [`WAVEFRONT_CHUNK_STEPS`], and [`WAVEFRONT_CHUNK_ROWS`] rows. Each
/// chunk reads the layer's W panels again, and the layer above waits for
/// a whole chunk before it starts and after the layer below ends.
fn wavefront_chunk(rows: usize) -> usize {
    WAVEFRONT_CHUNK_ROWS
        .div_ceil(rows.max(1))
        .max(WAVEFRONT_CHUNK_STEPS)
}

/// Measured on the 2-core Zen 3 VM (two-layer stacks at batch 1, H = 64
/// and 128, medians of 7 runs): chunks of 4 and 8 steps within 5 % of each
/// other, 16 slower (the wait at both ends), and a chunk growing then
/// shrinking with the steps left (4 to 32) 5-15 % slower than 4 (fewer W
/// reads did not make up for the longer waits between the layers).
const WAVEFRONT_CHUNK_STEPS: usize = 4;
const WAVEFRONT_CHUNK_ROWS: usize = 8;

/// Chunks each part of a split step owns: enough that a member can take
/// over a quarter of a slowed member's share, few enough that claiming them
/// costs nothing measurable.
const CHUNKS_PER_PART: usize = 4;

/// What one direction of a layer takes from the pool for a call: the
/// input projection `[TN, G·Hp]`, the trace (training), the state.
struct DirBuffers {
    xw: Vec<f32>,
    trace: Option<DirTrace>,
    state: DirState,
}

impl DirBuffers {
    fn as_mut(&mut self) -> DirBuffersMut<'_> {
        DirBuffersMut {
            xw: &mut self.xw,
            trace: self.trace.as_mut(),
            state: &mut self.state,
        }
    }
}

/// A direction's buffers as a layer's run uses them: the call's own
/// ([`DirBuffers`]), or a stream's, used where they lie in its
/// [`KeptState`] (moving them out and back cost a step some 200 bytes of
/// copies a direction).
struct DirBuffersMut<'b> {
    xw: &'b mut Vec<f32>,
    trace: Option<&'b mut DirTrace>,
    state: &'b mut DirState,
}

/// A layer's `T` for each of its one or two directions, held in place
/// rather than in a vector: a stream builds them at every step. On lines
/// of its own: the runs live in the caller's frame, and the other members
/// read them while the caller's deeper frames are written.
#[repr(align(64))]
struct PerDir<T>([Option<T>; 2]);

impl<T> PerDir<T> {
    fn new() -> Self {
        PerDir([None, None])
    }

    /// The next direction's.
    fn push(&mut self, value: T) {
        let slot =
            (self.0.iter_mut().find(|v| v.is_none())).expect("a layer has at most two directions");
        *slot = Some(value);
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.iter_mut().flatten()
    }
}

impl<T> std::ops::Index<usize> for PerDir<T> {
    type Output = T;

    fn index(&self, dir: usize) -> &T {
        self.0[dir].as_ref().expect("a direction of the layer")
    }
}

impl<T> IntoIterator for PerDir<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<T>, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().flatten()
    }
}

/// A direction's recurrent state through one layer, `[N, ·]` by item,
/// shared by the team members that step it (each writes its own rows and
/// units of it).
#[derive(Debug, Default)]
pub(crate) struct DirState {
    /// The state before and after a step, by turns `[N, state_stride]`.
    h: [Vec<f32>; 2],
    /// LSTM cell state `[N, Hp]`.
    c: Vec<f32>,
    /// Inference scratch: GRU gates `[N, G·Hp]`; and for training too,
    /// reset-before-matmul GRU `r ⊙ h` `[N, Hp]` and the LSTM projection's
    /// input `[N, Hp]` (the trace keeps neither).
    gates: Vec<f32>,
    aux: Vec<f32>,
    m: Vec<f32>,
}

impl DirState {
    fn new(
        config: &Config,
        pb: &PackedBlock,
        n: usize,
        training: bool,
        pool: &BufferPool,
    ) -> Result<Self> {
        let gru = config.cell() == CellKind::Gru;
        let lbr = config.gru_variant() == GruVariant::LinearBeforeReset;
        let scratch =
            |on: bool, width: usize| pool.take_zeroed(if on && !training { n * width } else { 0 });
        Ok(DirState {
            h: [
                pool.take_zeroed(n * pb.state_stride)?,
                pool.take_zeroed(n * pb.state_stride)?,
            ],
            c: pool.take_zeroed(if config.cell() == CellKind::Lstm {
                n * pb.hp
            } else {
                0
            })?,
            gates: scratch(gru, pb.gates * pb.hp)?,
            aux: pool.take_zeroed(if gru && !lbr { n * pb.hp } else { 0 })?,
            m: pool.take_zeroed(if config.proj_size() > 0 { n * pb.hp } else { 0 })?,
        })
    }

    fn give_back(self, pool: &BufferPool) {
        let [h0, h1] = self.h;
        pool.give_each([h0, h1, self.c, self.gates, self.aux, self.m]);
    }

    /// Whether it has the sizes a call of batch `n` needs (see [`Self::new`]).
    fn fits(&self, config: &Config, pb: &PackedBlock, n: usize) -> bool {
        let lstm = config.cell() == CellKind::Lstm;
        self.h.iter().all(|h| h.len() == n * pb.state_stride)
            && self.c.len() == if lstm { n * pb.hp } else { 0 }
    }
}

/// A stream's recurrent state and step buffers, kept in the engine's padded
/// rows from one of its steps to the next (one entry per layer): a step
/// then neither pads the state in nor zero-fills buffers, and each team
/// member's units of the state stay where that member last wrote them (on
/// two cores, copying them in on the calling thread cost it a cache miss a
/// line). The stream's unpadded h and c are still written by each step.
#[derive(Debug, Default)]
pub(crate) struct KeptState {
    /// Per layer: the input projection of one step and the state, with the
    /// current h in `h[0]`.
    layers: Vec<(Vec<f32>, DirState)>,
    /// Whether `layers` holds the state the next step starts from (else it
    /// is padded in again from the call's h0 and c0).
    valid: bool,
    /// The step's per-item lengths, kept for the next step's (a step then
    /// allocates none).
    lens: Vec<usize>,
}

impl KeptState {
    /// Makes the next step start from the call's h0 and c0 (after the
    /// stream's state was set or reset).
    pub fn invalidate(&mut self) {
        self.valid = false;
    }

    /// Whether its buffers have the sizes a call of `(steps, batch)` needs
    /// (the call then uses them where they lie, its state padded in again
    /// unless it is `valid`).
    fn fits(&self, config: &Config, packed: &Packed, (steps, n): (usize, usize)) -> bool {
        self.layers.len() == config.num_layers()
            && (self.layers.iter().zip(&packed.blocks)).all(|((xw, state), pb)| {
                xw.len() == steps * n * pb.gates * pb.hp && state.fits(config, pb, n)
            })
    }
}

/// Everything the members stepping one direction share.
struct DirRun<'a> {
    config: &'a Config,
    pb: &'a PackedBlock,
    kernels: Kernels,
    batch: usize,
    lens: &'a [usize],
    reversed: bool,
    /// This direction's activation functions.
    fns: GateFns,
    /// The layer's input `[TN, I]` and its projection `[TN, G·Hp]`, which
    /// `projection` says who computes.
    x: LayerInput<'a>,
    xw: SharedMut,
    /// In a wavefront, the stack's layer shapes and this layer's index:
    /// its members project a chunk of steps at a time, once the layer
    /// below has published them, and publish their own steps.
    wavefront: Option<(&'a [team::Shape], usize)>,
    projection: Projection,
    /// With [`Projection::Ahead`] (and only then: `dir_run` sets both), its
    /// chunks; `share` reads only this for the projection ahead.
    ahead: Option<AheadChunks>,
    seq_len: usize,
    /// Whether every row takes every step (an empty one copying its state
    /// along): a kept state then has its new value in one buffer for all.
    every_step: bool,
    /// Output `[TN, width]`, this direction's slice at `slot`: the layer
    /// output, or (the second of two summed directions, which runs at the
    /// same time as the first) a buffer of its own, added afterwards.
    y: SharedMut,
    width: usize,
    slot: usize,
    /// This direction's `[N, H_out]` / `[N, H]` state: initial in, final out.
    h_state: SharedMut,
    c_state: SharedMut,
    /// [`DirState`]'s buffers.
    h: [SharedMut; 2],
    c: SharedMut,
    gates_scratch: SharedMut,
    aux_scratch: SharedMut,
    m_scratch: SharedMut,
    /// The [`DirTrace`] buffers, in field order (null where unused).
    trace: Option<[SharedMut; 6]>,
}

/// A layer's input rows `[TN, I]`, as its members read them.
#[derive(Clone, Copy)]
enum LayerInput<'a> {
    /// Written before the layer starts.
    Ready(&'a [f32]),
    /// In a wavefront, the output of the layer below (`len` floats), written
    /// while this layer runs: a step's rows are read only once every member
    /// of the layer below has published that step.
    Below { rows: SharedMut, len: usize },
}

impl LayerInput<'_> {
    /// The first `len` floats: the rows of the steps before `len / (N·I)`.
    ///
    /// # Safety
    /// For [`LayerInput::Below`], no thread writes those rows any more while
    /// the slice lives: the layer below has published their steps.
    unsafe fn first(&self, len: usize) -> &[f32] {
        match *self {
            LayerInput::Ready(x) => &x[..len],
            LayerInput::Below { rows, len: all } => {
                assert!(len <= all, "rows inside the layer's input");
                // SAFETY: `rows` points at `all` floats that outlive the
                // team (the caller's contract covers the writes).
                unsafe { std::slice::from_raw_parts(rows.at(0), len) }
            }
        }
    }
}

/// Where a forward pass leaves `y`, `h_n` and `c_n`: the caller's buffers,
/// of the call's sizes (`c_n` empty without a cell state).
pub(crate) struct Dest<'a> {
    pub y: &'a mut [f32],
    pub h_n: &'a mut [f32],
    pub c_n: &'a mut [f32],
}

/// Zeroes the rows of time-major `out` (`[T, N, width]`, N = `lens.len()`)
/// at steps past each item's length: the rows no step writes.
fn zero_rows_past_lengths(out: &mut [f32], lens: &[usize], width: usize) {
    let n = lens.len();
    for (i, row) in out.chunks_exact_mut(width).enumerate() {
        if i / n >= lens[i % n] {
            row.fill(0.0);
        }
    }
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
    let trace = forward_into(config, packed, pool, input, training, dest, None)?;
    let c_n = config.has_cell_state().then_some(c_n);
    Ok((Output { y, h_n, c_n }, trace))
}

/// Forward pass into the caller's buffers (`dest`, checked against the
/// call's shapes by the caller): the last layer writes `y` in place when it
/// is time-major, so nothing is copied out.
///
/// With `kept` (a stream's step, inference in forward directions), the
/// state comes from `kept` where it is valid (else from h0 and c0) and
/// stays there for the next call, and an empty item keeps its state (a
/// stream's item sitting a step out) whatever the model's
/// `EmptySequenceState`.
pub(crate) fn forward_into(
    config: &Config,
    packed: &Packed,
    pool: &Arc<BufferPool>,
    input: &Input<'_>,
    training: bool,
    dest: Dest<'_>,
    mut kept: Option<&mut KeptState>,
) -> Result<Option<Trace>> {
    let shapes = Shapes::of_input(config, input)?;
    assert!(
        dest.y.len() == shapes.y && dest.h_n.len() == shapes.h && dest.c_n.len() == shapes.c,
        "forward_into: destination sizes were checked by the caller"
    );
    let (t_len, n) = (shapes.seq_len, shapes.batch);
    let mut lens = match kept.as_mut() {
        Some(k) => std::mem::take(&mut k.lens),
        None => Vec::new(),
    };
    lens.clear();
    try_grow(&mut lens, n, "the sequence lengths")?;
    lens.extend((0..n).map(|b| shapes.item_len(input.seq_lens, b)));
    let ragged = lens.iter().any(|&len| len < t_len);
    let (hs, cs) = (config.state_size(), config.hidden_size());
    let Dest { y: y_out, h_n, c_n } = dest;
    debug_assert!(
        kept.is_none()
            || (!training && config.num_directions() == 1 && !config.direction().is_reversed(0))
    );
    let streaming = kept.is_some();
    // A stream's buffers of the right sizes are used where they lie, even
    // after a reset (their state is then padded in again); valid, they
    // hold the state this step starts from.
    let kept_fits = kept
        .as_ref()
        .is_some_and(|k| k.fits(config, packed, (t_len, n)));
    let kept_valid = kept_fits && kept.as_ref().is_some_and(|k| k.valid);
    if let Some(k) = kept.as_mut() {
        // Valid again only once the whole step succeeded.
        k.valid = false;
    }
    // Every element of the destination is written by this thread first
    // (with a valid kept state, by the members: each its own columns).
    if !kept_valid {
        match input.h0 {
            Some(h0) => h_n.copy_from_slice(h0),
            None => h_n.fill(0.0),
        }
        match input.c0 {
            Some(c0) => c_n.copy_from_slice(c0),
            None => c_n.fill(0.0),
        }
    }
    if kept.is_none() {
        // No step touches an empty item's state, so this is its final state.
        super::zero_empty_items(config, &lens, h_n, hs);
        super::zero_empty_items(config, &lens, c_n, cs);
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

    // Layers run at once as a wavefront, or one after another.
    let wavefront = match kept {
        Some(_) => None,
        None => {
            let members = team::capacity();
            wavefront_layers(config, packed, (n, t_len), members)?.map(|s| (s, members))
        }
    };
    let mut layers_in_turn = 0..config.num_layers();
    if let Some((shapes, members)) = &wavefront {
        layers_in_turn = 0..0;
        let last_out = match config.layout() {
            Layout::TimeMajor => &mut *y_out,
            Layout::BatchFirst => &mut last_scratch,
        };
        let x = std::mem::take(&mut layer_in);
        let run = Wavefront {
            config,
            packed,
            pool,
            lens: &lens,
            training,
            ragged,
            shapes,
            members: *members,
        };
        let (outs, traces) = run.forward(&x, last_out, (h_n, c_n))?;
        dir_traces = traces;
        layer_inputs = try_with_capacity(outs.len() + 1, "the layers' inputs")?;
        for input in std::iter::once(x).chain(outs.into_iter().map(Cow::Owned)) {
            keep_layer_input(pool, training, input, &mut layer_inputs)?;
        }
    }
    for layer in layers_in_turn {
        let last = layer + 1 == config.num_layers();
        // Scratch whose pages are already mapped, zero-filled by this thread:
        // the team members write it from several threads, and page faults
        // there serialise on the page-table lock. (Steps past an item's
        // length are never written and must read zero.)
        let mut scratch = match (last, &kept) {
            (true, _) => Vec::new(),
            // A stream's step: its pages are mapped already (see below).
            (false, Some(_)) => pool.take(t_len * n * width)?,
            (false, None) => pool.take_zeroed(t_len * n * width)?,
        };
        let layer_out: &mut [f32] = match (last, config.layout()) {
            (false, _) => &mut scratch,
            (true, Layout::TimeMajor) => &mut *y_out,
            (true, Layout::BatchFirst) => &mut last_scratch,
        };
        if kept.is_some() {
            // A stream's buffers are written again at every step: only the
            // rows no member writes (items sitting the step out) are
            // cleared, rather than lines the other members wrote last.
            zero_rows_past_lengths(layer_out, &lens, width);
        } else if last {
            layer_out.fill(0.0);
        }
        let dirs = config.num_directions();
        let summed = config.direction() == Direction::BidirectionalSum;
        // This call's own buffers, unless a stream's fit.
        let mut owned = PerDir::new();
        if !kept_fits {
            for dir in 0..dirs {
                let pb = &packed.blocks[layer * dirs + dir];
                owned.push(DirBuffers {
                    xw: pool.take(t_len * n * pb.gates * pb.hp)?,
                    trace: match training {
                        true => Some(DirTrace::new(config, pb, (t_len, n), ragged, pool)?),
                        false => None,
                    },
                    state: DirState::new(config, pb, n, training, pool)?,
                });
            }
        }
        let mut buffers = PerDir::new();
        match kept.as_mut().filter(|_| kept_fits) {
            Some(k) => {
                let (xw, state) = &mut k.layers[layer];
                buffers.push(DirBuffersMut {
                    xw,
                    trace: None,
                    state,
                });
            }
            None => owned.iter_mut().for_each(|b| buffers.push(b.as_mut())),
        }
        // The second of two summed directions runs beside the first, into
        // a buffer of its own (zero where no step writes).
        let mut second = match summed {
            true => pool.take_zeroed(t_len * n * hs)?,
            false => Vec::new(),
        };
        let pb = &packed.blocks[layer * dirs];
        let unit = packed.kernels.unit();
        let shape = layer_shape(config, pb, (n, t_len), unit, team_barriers(config));
        let wanted = team::useful_members(shape, team::capacity());
        let threads = crate::threads::num_threads();
        let lanes = packed.kernels.lanes();
        let projection = layer_projection(config, pb, shape, (wanted, threads), lanes);
        if projection == Projection::Before {
            for (dir, b) in buffers.iter_mut().enumerate() {
                project_in_parallel(
                    packed.kernels,
                    n,
                    &packed.blocks[layer * dirs + dir],
                    &layer_in,
                    b.xw,
                )?;
            }
        }
        let mut runs = PerDir::new();
        for (dir, b) in buffers.into_iter().enumerate() {
            let ld = layer * dirs + dir;
            let out = match (summed && dir == 1, config.direction()) {
                (true, _) => (SharedMut::new(&mut second), hs, 0),
                (false, Direction::BidirectionalConcat) => {
                    (SharedMut::new(layer_out), width, dir * hs)
                }
                (false, _) => (SharedMut::new(layer_out), width, 0),
            };
            runs.push(dir_run(
                config,
                packed,
                ld,
                &lens,
                (t_len, streaming),
                (LayerInput::Ready(&layer_in), projection),
                out,
                state_rows(config, ld, n, (h_n, c_n)),
                b,
                kept_valid,
            ));
        }
        match projection {
            Projection::Ahead => {
                // One direction (projects_ahead), stepped by member 0 alone.
                let whole = team::Share::whole(0, n, 0);
                team::run_for(PROJECTOR + 1, shape.macs(), &|member| match member.index {
                    PROJECTOR => runs[0].project_ahead(member),
                    _ => runs[0].share(&whole, member),
                })?
            }
            _ => team::run_shares(shape, wanted, &|share, member| {
                runs[share.dir].share(share, member)
            })?,
        }
        if summed {
            for (y, s) in layer_out
                .chunks_exact_mut(width)
                .zip(second.chunks_exact(hs))
            {
                y.iter_mut().zip(s).for_each(|(y, s)| *y += s);
            }
            pool.give(second);
        }
        if let Some(k) = kept.as_mut().filter(|_| kept_fits) {
            // Every row stepped once (`every_step`): the new state is in h[1].
            k.layers[layer].1.h.swap(0, 1);
        }
        for DirBuffers {
            xw,
            trace,
            mut state,
        } in owned
        {
            match kept.as_mut() {
                Some(k) => {
                    state.h.swap(0, 1);
                    if k.layers.len() <= layer {
                        k.layers.resize_with(layer + 1, Default::default);
                    }
                    k.layers[layer] = (xw, state);
                }
                None => {
                    pool.give(xw);
                    state.give_back(pool);
                }
            }
            dir_traces.extend(trace);
        }
        let finished = std::mem::replace(&mut layer_in, Cow::Owned(scratch));
        keep_layer_input(pool, training, finished, &mut layer_inputs)?;
    }
    if config.layout() == Layout::BatchFirst {
        swap_outer_axes_into(&last_scratch, t_len, n, width, y_out);
        pool.give(last_scratch);
    }
    if let Some(k) = kept {
        k.valid = true;
        k.lens = lens;
        return Ok(None); // A stream's step does not train.
    }
    Ok(training.then(|| Trace {
        shapes,
        lens,
        layer_inputs,
        dirs: dir_traces,
        pool: Arc::clone(pool),
    }))
}

/// A layer's input once the layer has run: training keeps it in `kept`
/// (copying the caller's x), inference gives it back to the pool.
fn keep_layer_input(
    pool: &BufferPool,
    training: bool,
    input: Cow<'_, [f32]>,
    kept: &mut Vec<Vec<f32>>,
) -> Result<()> {
    match (training, input) {
        (true, Cow::Owned(input)) => kept.push(input),
        (true, Cow::Borrowed(x)) => {
            let mut copy = pool.take(x.len())?;
            copy.copy_from_slice(x);
            kept.push(copy);
        }
        (false, Cow::Owned(scratch)) => pool.give(scratch),
        (false, Cow::Borrowed(_)) => {}
    }
    Ok(())
}

/// The layers' shapes where a forward call of `steps` steps over `batch`
/// items on up to `members` members runs its layers as a wavefront: each
/// layer on members of its own, a chunk of steps ([`wavefront_chunk`])
/// behind the layer below ([`team::plan_layers`]), rather than each layer
/// on the whole team in turn. For stacks of forward directions only (a
/// reversed direction reads the end of its input first, which the layer
/// below writes last), where [`team::wavefront_pays`], and where each
/// member's share of its layer's weights (W, R, the projection) fits its
/// L2: a layer's members read their W again for every chunk, which costs
/// little from their own L2 and more than the barriers saved from the L3
/// (on the 2-core Zen 3 VM with 512 KiB L2s, a two-layer LSTM with H = 256,
/// 2 MiB a layer, at batch 1 on two threads: 2.24 ms in turn, 2.68 as a
/// wavefront; BENCHMARKS.md, "A layer wavefront").
pub(crate) fn wavefront_layers(
    config: &Config,
    packed: &Packed,
    (batch, steps): (usize, usize),
    members: usize,
) -> Result<Option<Vec<team::Shape>>> {
    let layers = config.num_layers();
    if layers < 2 || config.num_directions() != 1 || config.direction().is_reversed(0) {
        return Ok(None);
    }
    let (unit, barriers) = (packed.kernels.unit(), team_barriers(config));
    let mut shapes = try_with_capacity(layers, "the layers' shapes")?;
    shapes.extend(
        (0..layers).map(|l| layer_shape(config, &packed.blocks[l], (batch, steps), unit, barriers)),
    );
    // Members per layer (with fewer members than layers, each runs whole
    // layers in turn).
    let per_layer = (members / layers).max(1);
    let fits = packed.blocks[..layers]
        .iter()
        .all(|pb| pb.forward_bytes() / per_layer <= crate::kernels::cache::l2_bytes());
    Ok((fits && team::wavefront_pays(&shapes, members)).then_some(shapes))
}

/// A forward call's layers run as a wavefront ([`wavefront_layers`]).
struct Wavefront<'a> {
    config: &'a Config,
    packed: &'a Packed,
    pool: &'a BufferPool,
    lens: &'a [usize],
    training: bool,
    ragged: bool,
    shapes: &'a [team::Shape],
    /// The members [`wavefront_layers`] chose it for.
    members: usize,
}

impl Wavefront<'_> {
    /// Runs every layer over `x` (time-major), the last into `last_out`,
    /// from and into the states `h_n` and `c_n` (initial in, final out).
    /// Returns the other layers' outputs and (training) the traces.
    fn forward(
        &self,
        x: &[f32],
        last_out: &mut [f32],
        (h_n, c_n): (&mut [f32], &mut [f32]),
    ) -> Result<(Vec<Vec<f32>>, Vec<DirTrace>)> {
        let (config, packed, pool) = (self.config, self.packed, self.pool);
        let (layers, n) = (config.num_layers(), self.lens.len());
        let t_len = self.shapes[0].steps;
        let width = config.output_size();
        // Scratch whose pages are mapped, zero-filled by this thread (as in
        // `forward_into`): steps past an item's length are never written.
        let mut outs = try_with_capacity(layers - 1, "the layers' outputs")?;
        for _ in 1..layers {
            outs.push(pool.take_zeroed(t_len * n * width)?);
        }
        last_out.fill(0.0);
        let mut buffers: Vec<DirBuffers> = try_with_capacity(layers, "the layers' buffers")?;
        for pb in &packed.blocks[..layers] {
            buffers.push(DirBuffers {
                xw: pool.take(t_len * n * pb.gates * pb.hp)?,
                trace: match self.training {
                    true => Some(DirTrace::new(config, pb, (t_len, n), self.ragged, pool)?),
                    false => None,
                },
                state: DirState::new(config, pb, n, self.training, pool)?,
            });
        }
        let mut out_rows: Vec<SharedMut> = try_with_capacity(layers, "the layers' outputs")?;
        out_rows.extend(outs.iter_mut().map(|o| SharedMut::new(o)));
        out_rows.push(SharedMut::new(last_out));
        let mut runs = try_with_capacity(layers, "the layers' runs")?;
        for (layer, b) in buffers.iter_mut().enumerate() {
            let input = match layer {
                0 => LayerInput::Ready(x),
                _ => LayerInput::Below {
                    rows: out_rows[layer - 1],
                    len: t_len * n * width,
                },
            };
            let run = dir_run(
                config,
                packed,
                layer,
                self.lens,
                (t_len, false),
                (input, Projection::InTeam),
                (out_rows[layer], width, 0),
                state_rows(config, layer, n, (&mut *h_n, &mut *c_n)),
                b.as_mut(),
                false,
            );
            runs.push(DirRun {
                wavefront: Some((self.shapes, layer)),
                ..run
            });
        }
        let wanted = team::wavefront_members(self.shapes, self.members);
        team::run_layers(self.shapes, wanted, &|layer, share, member| {
            runs[layer].share(share, member)
        })?;
        drop(runs);
        let mut traces = try_with_capacity(layers, "the layers' traces")?;
        for DirBuffers { xw, trace, state } in buffers {
            pool.give(xw);
            state.give_back(pool);
            traces.extend(trace);
        }
        Ok((outs, traces))
    }
}

/// Direction `ld` (`layer · dirs + dir`)'s rows of the states `h_n` and
/// `c_n` (`[L·D, N, ·]`; `c_n` empty without a cell state).
fn state_rows<'s>(
    config: &Config,
    ld: usize,
    n: usize,
    (h_n, c_n): (&'s mut [f32], &'s mut [f32]),
) -> (&'s mut [f32], &'s mut [f32]) {
    let (hs, cs) = (config.state_size(), config.hidden_size());
    let c = match config.has_cell_state() {
        true => &mut c_n[ld * n * cs..(ld + 1) * n * cs],
        false => &mut [][..],
    };
    (&mut h_n[ld * n * hs..(ld + 1) * n * hs], c)
}

/// Direction `ld` (`layer · dirs + dir`)'s run over its layer, its buffers
/// `b` starting from the states `h_state` and `c_state` (padded into them
/// unless `kept_valid`), writing `y` (`[TN, width]`, from column `slot`).
#[allow(clippy::too_many_arguments)]
fn dir_run<'a>(
    config: &'a Config,
    packed: &'a Packed,
    ld: usize,
    lens: &'a [usize],
    (seq_len, every_step): (usize, bool),
    (x, projection): (LayerInput<'a>, Projection),
    (y, width, slot): (SharedMut, usize, usize),
    (h_state, c_state): (&mut [f32], &mut [f32]),
    b: DirBuffersMut<'_>,
    kept_valid: bool,
) -> DirRun<'a> {
    let dir = ld % config.num_directions();
    let pb = &packed.blocks[ld];
    let DirBuffersMut {
        xw,
        trace: mut dt,
        state,
    } = b;
    if !kept_valid {
        // The state each item starts from, in the padded rows the kernels read.
        pad_rows(
            h_state,
            config.state_size(),
            &mut state.h[0],
            pb.state_stride,
        );
        pad_rows(c_state, config.hidden_size(), &mut state.c, pb.hp);
    }
    if let Some(t) = dt.as_mut().filter(|t| !t.c_init.is_empty()) {
        t.c_init.copy_from_slice(&state.c);
    }
    let [h_a, h_b] = &mut state.h;
    DirRun {
        config,
        pb,
        kernels: packed.kernels,
        batch: lens.len(),
        lens,
        reversed: config.direction().is_reversed(dir),
        fns: packed.kernels.gate_fns(config, dir),
        x,
        xw: SharedMut::new(xw),
        wavefront: None,
        projection,
        ahead: (projection == Projection::Ahead).then(|| {
            let steps = lens.iter().copied().max().unwrap_or(0);
            AheadChunks::new(pb.input, lens.len(), steps)
        }),
        seq_len,
        every_step,
        y,
        width,
        slot,
        h_state: SharedMut::new(h_state),
        c_state: SharedMut::new(c_state),
        h: [SharedMut::new(h_a), SharedMut::new(h_b)],
        c: SharedMut::new_or_null(&mut state.c),
        gates_scratch: SharedMut::new_or_null(&mut state.gates),
        aux_scratch: SharedMut::new_or_null(&mut state.aux),
        m_scratch: SharedMut::new_or_null(&mut state.m),
        trace: dt.as_mut().map(|t| {
            [
                &mut t.gates,
                &mut t.h_prev,
                &mut t.c_prev,
                &mut t.c_raw,
                &mut t.aux,
                &mut t.clip_mask,
            ]
            .map(|v| SharedMut::new_or_null(v))
        }),
    }
}

impl DirRun<'_> {
    /// Runs one member's share of this direction through every step: items
    /// `rows`, the units of its panels, meeting the other parts of its block
    /// at their barrier after each step (and mid-step where the cell reads
    /// every unit of an intermediate).
    fn share(&self, share: &team::Share, member: &team::Member) -> Result<()> {
        let (pb, cfg) = (self.pb, self.config);
        let (ks, hp, st, h) = (pb.state_stride, pb.hp, pb.state, pb.hidden);
        let gh = pb.gates * hp;
        let (lstm, gru) = (cfg.cell() == CellKind::Lstm, cfg.cell() == CellKind::Gru);
        let lbr = cfg.gru_variant() == GruVariant::LinearBeforeReset;
        let proj = cfg.proj_size() > 0;
        let training = self.trace.is_some();
        let (b0, nb) = share.rows;
        let unit = self.kernels.unit();
        let Span {
            panels,
            cols,
            out_cols,
            units,
            ..
        } = Span::of(share, pb, unit);
        let sync = || member.barrier(share.group, share.parts);
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
            fns: self.fns,
            linear_before_reset: lbr,
            panels,
            gru_phases: (true, true),
        };
        // A format with converted rows (int8, bf16 rounded): each member
        // converts the rows its products read, once per step: h₋₁, r ⊙ h
        // between GRU's phases, and m before the projection.
        let steps = self.kernels.layer_steps(pb.precision, self.batch, pb.cell);
        let converted = steps.rows.is_some();
        let RowLists {
            mut rows,
            mut proj_rows,
            mut active,
            mut chunk_rows,
            converted: [h_buf, aux_buf, m_buf],
        } = ROW_LISTS.take();
        let mut h_q = ConvertedRows::new_in(h_buf, steps, nb, st)?;
        let aux_rows = if gru && !lbr { nb } else { 0 };
        let mut aux_q = ConvertedRows::new_in(aux_buf, steps, aux_rows, st)?;
        let mut m_q = ConvertedRows::new_in(m_buf, steps, if proj { nb } else { 0 }, h)?;
        // Reset-before-matmul GRU's n gate reads r ⊙ h of every unit (and
        // its converted copy, made between the phases).
        let phases: &[(bool, bool)] = if gru && !lbr && (share.parts > 1 || converted) {
            &[(true, false), (false, true)]
        } else {
            &[(true, true)]
        };
        let step = match cfg.cell() {
            CellKind::Lstm => steps.lstm_step,
            CellKind::Gru => steps.gru_step,
            CellKind::Rnn => steps.rnn_step,
        };
        let max_len = match self.every_step {
            true => self.seq_len,
            false => self.lens[b0..b0 + nb].iter().copied().max().unwrap_or(0),
        };
        let proj_rows_len = if proj { nb } else { 0 };
        try_grow(&mut rows, nb, "a block's row list")?;
        try_grow(&mut proj_rows, proj_rows_len, "a block's row list")?;
        try_grow(&mut active, nb, "a block's row list")?;
        try_grow(&mut chunk_rows, proj_rows_len, "a block's row list")?;
        // Chunks of a step's panels that the parts share out: a few per
        // part, each a multiple of a whole register tile.
        let chunk_panels = |gates: usize, panels: usize| {
            let tile = self.kernels.tile_panels(gates);
            let tile = if nb == 1 { tile } else { tile.div_ceil(2) };
            panels
                .div_ceil(share.parts * CHUNKS_PER_PART)
                .max(tile)
                .div_ceil(tile)
                * tile
        };
        let mut epoch = 0;
        // A call of one step (a stream's) projects each chunk of panels
        // just before it steps them, in the same hands: no barrier between
        // the projection and the step, and each chunk's W panels are read
        // right before its R panels. Not for formats that convert x first
        // (each chunk would convert it again).
        let in_team = self.projection == Projection::InTeam;
        let project_per_chunk = in_team && self.seq_len == 1 && !converted;
        // Projected ahead, with another member: the chunk of steps
        // projected next, and the steps before it, projected by now.
        let ahead = self.ahead.as_ref().filter(|_| member.size > PROJECTOR);
        let (mut next_chunk, mut ready) = (0, 0);
        // Steps s..end of this share's rows, these panels of xw: in a
        // wavefront once the layer below has published them.
        let project_steps = |s: usize, end: usize| -> Result<()> {
            if let Some((shapes, layer @ 1..)) = self.wavefront {
                member.wait_for_layer(shapes, layer - 1, end)?;
            }
            let rows = (s..end).flat_map(|t| (b0..b0 + nb).map(move |b| t * self.batch + b));
            // SAFETY: these rows (items b0..b0 + nb at these steps) and
            // panels of xw are this share's alone; x's rows before step
            // `end` are written already (in a wavefront: published, above).
            unsafe {
                let x = self.x.first(end * self.batch * pb.input);
                project(self.kernels, self.batch, pb, x, self.xw, rows, panels)?
            };
            // A step's chunks may be taken by another part (share_out).
            sync()
        };
        let alone = self.ahead.is_some() && ahead.is_none();
        if (in_team && !project_per_chunk && self.wavefront.is_none()) || alone {
            project_steps(0, self.seq_len)?;
        }
        // A wavefront's chunks: steps projected so far.
        let mut projected = 0;
        // The last step's new state leaves chunk by chunk, copied out by
        // whichever member stepped the chunk: no barrier before the copy,
        // the team's end orders it (a stream's one-step call saves a whole
        // barrier). With a projection the state comes from a second pass;
        // that keeps the barrier.
        let out_in_chunks = !proj && max_len > 0;
        let mut cur = 0;
        for s in 0..max_len {
            if self.wavefront.is_some() && s == projected {
                projected = (s + wavefront_chunk(nb)).min(max_len);
                project_steps(s, projected)?;
            }
            if let Some(chunks) = ahead.filter(|_| s >= ready) {
                let (start, end) = chunks.bounds(next_chunk);
                match chunks.take(next_chunk) {
                    true => project_steps(start, end)?,
                    false => member.wait_for_member(PROJECTOR, 0, end)?,
                }
                (next_chunk, ready) = (next_chunk + 1, end);
            }
            let last_step = s + 1 == max_len;
            let (h_cur, h_nxt) = (self.h[cur], self.h[1 - cur]);
            rows.clear();
            proj_rows.clear();
            active.clear();
            for b in b0..b0 + nb {
                let len = self.lens[b];
                // SAFETY (all pointers below): row b of the direction's state
                // and rows row_t of the shared buffers (item b's) are touched
                // by this block's members only, each in its own units and
                // columns, with the barriers ordering the steps; every row
                // holds the padded widths the kernels read and write.
                unsafe {
                    if s >= len {
                        std::ptr::copy_nonoverlapping(
                            h_cur.at(b * ks + cols.0),
                            h_nxt.at(b * ks + cols.0),
                            cols.1 - cols.0,
                        );
                        continue;
                    }
                    let t = if self.reversed { len - 1 - s } else { s };
                    let row_t = t * self.batch + b;
                    active.push(row_t);
                    let h_prev = h_cur.at(b * ks);
                    let h_prev_q = h_q.row_at(b - b0, h_prev, st);
                    let trace_row = |i: usize, width: usize| match &self.trace {
                        Some(bufs) if !bufs[i].is_null() => bufs[i].at(row_t * width),
                        _ => std::ptr::null_mut(),
                    };
                    if training {
                        std::ptr::copy_nonoverlapping(
                            h_prev.add(cols.0),
                            trace_row(1, ks).add(cols.0),
                            cols.1 - cols.0,
                        );
                    }
                    let gates = if training {
                        trace_row(0, gh)
                    } else if gru {
                        self.gates_scratch.at(b * gh)
                    } else {
                        std::ptr::null_mut()
                    };
                    let aux = if lstm {
                        trace_row(3, hp)
                    } else if gru && !lbr {
                        // r ⊙ h: the backward forms it again from r and h.
                        self.aux_scratch.at(b * hp)
                    } else if training {
                        trace_row(4, hp)
                    } else {
                        std::ptr::null_mut()
                    };
                    let out = h_nxt.at(b * ks);
                    // With projection, m = o ⊙ h(c) is projected into the
                    // state; the backward forms it again.
                    let h_next = if proj { self.m_scratch.at(b * hp) } else { out };
                    if proj {
                        proj_rows.push(MatRow { a: h_next, out });
                    }
                    rows.push(StepRow {
                        h_prev,
                        h_prev_q,
                        xw: self.xw.at(row_t * gh),
                        h_next,
                        c: if lstm {
                            self.c.at(b * hp)
                        } else {
                            std::ptr::null_mut()
                        },
                        gates,
                        c_prev: trace_row(2, hp),
                        aux,
                        clip_mask: trace_row(5, gh),
                        aux_q: aux_q.slot(b - b0),
                    });
                }
            }
            for (i, &gru_phases) in phases.iter().enumerate() {
                if i > 0 {
                    if share.parts > 1 {
                        sync()?;
                    }
                    for (row, &row_t) in rows.iter().zip(&active) {
                        // SAFETY: the phase (and its barrier) wrote every
                        // unit of this row's r ⊙ h, which nothing writes
                        // until the next step.
                        unsafe { aux_q.row_at(row_t % self.batch - b0, row.aux, st) };
                    }
                }
                let gates = match (cfg.cell(), gru_phases) {
                    (CellKind::Gru, (true, false)) => 2,
                    (CellKind::Gru, _) => 1,
                    _ => pb.gates,
                };
                epoch += 1;
                let chunk = chunk_panels(gates, hp / unit);
                let mut projection_failed = None;
                member.share_out(share, epoch, hp / unit, chunk, |panels| {
                    if rows.is_empty() {
                        return; // Every item of the block sits this step out.
                    }
                    if project_per_chunk && i == 0 {
                        // SAFETY: rows b0..b0 + nb of the one step are this
                        // block's, and these panels this member's alone
                        // (share_out hands each chunk out once).
                        let projected = unsafe {
                            project(
                                self.kernels,
                                self.batch,
                                pb,
                                self.x.first(self.batch * pb.input),
                                self.xw,
                                b0..b0 + nb,
                                panels,
                            )
                        };
                        if let Err(e) = projected {
                            projection_failed.get_or_insert(e);
                            return;
                        }
                    }
                    let part = StepParams {
                        gru_phases,
                        panels,
                        ..params
                    };
                    // SAFETY: `Kernels` exists only for a supported ISA;
                    // every row's pointers are valid as set up above, and
                    // this chunk's units are computed by this member alone.
                    unsafe { step(&part, &rows) };
                    if out_in_chunks && last_step && i + 1 == phases.len() {
                        // SAFETY: this member just wrote these units of the
                        // active rows' state (and nothing writes them again
                        // in this call); each chunk is copied once.
                        unsafe { self.copy_out(&active, h_nxt, part.panels, unit) };
                    }
                });
                if let Some(e) = projection_failed {
                    return Err(e);
                }
            }
            if proj {
                // Every output reads all of m: wait for the other parts.
                sync()?;
                for (i, r) in proj_rows.iter().enumerate() {
                    // SAFETY: every part wrote its units of this row's m
                    // before the barrier; nothing writes it until the next step.
                    unsafe { m_q.row_at(i, r.a, h) };
                }
                let k_unit = pb.words(h) * unit;
                epoch += 1;
                let chunk = chunk_panels(1, ks / unit);
                member.share_out(share, epoch, ks / unit, chunk, |(first, end)| {
                    if proj_rows.is_empty() {
                        return;
                    }
                    chunk_rows.clear();
                    chunk_rows.extend(proj_rows.iter().enumerate().map(|(i, r): (_, &MatRow)| {
                        MatRow {
                            a: if converted { m_q.slot(i) } else { r.a },
                            out: r.out.wrapping_add(first * unit),
                        }
                    }));
                    // SAFETY: as above; the projection's panels first..end
                    // are k_unit words each, and each row writes those
                    // columns of its own padded state row.
                    unsafe {
                        (steps.panel_matmul)(
                            h,
                            (end - first) * unit,
                            &pb.proj_panels[first * k_unit..end * k_unit],
                            None,
                            &chunk_rows,
                        )
                    };
                });
            }
            if out_in_chunks && last_step {
                cur = 1 - cur;
                break;
            }
            // Every part's chunks of h_nxt are done; this share copies its
            // columns out.
            sync()?;
            for &row_t in &active {
                // SAFETY: row row_t of y belongs to this block's item, these
                // columns to this share; h_nxt is not written again before
                // the next step's barrier.
                unsafe { self.copy_y(h_nxt, row_t, out_cols) };
            }
            if let Some((_, layer)) = self.wavefront {
                member.publish(layer, s + 1);
            }
            cur = 1 - cur;
        }
        // Rows the last step left out (all of them, with no step) leave here
        // by share; the active ones left chunk by chunk.
        let stepped_last = |b: usize| out_in_chunks && max_len <= self.lens[b];
        for b in (b0..b0 + nb).filter(|&b| !stepped_last(b)) {
            // SAFETY: row b of the state belongs to this block, these
            // columns and units to this share; the last barrier ended every
            // step, or (rows out of the last step) this member copied these
            // columns into h_nxt itself and nothing touched c.
            unsafe { self.copy_state(self.h[cur], b, out_cols, units) };
        }
        if let Some((_, layer)) = self.wavefront {
            member.publish(layer, usize::MAX);
        }
        RowLists {
            rows,
            proj_rows,
            active,
            chunk_rows,
            converted: [h_q.into_buf(), aux_q.into_buf(), m_q.into_buf()],
        }
        .keep();
        Ok(())
    }

    /// [`Projection::Ahead`]'s projecting member: projects every row and
    /// panel of the chunks of steps it takes, in order ([`AheadChunks`]),
    /// publishing the end of each as layer 0's progress for the member that
    /// steps them.
    fn project_ahead(&self, member: &team::Member) -> Result<()> {
        let (batch, pb) = (self.batch, self.pb);
        let Some(chunks) = &self.ahead else {
            return Ok(());
        };
        let panels = (0, pb.hp / self.kernels.unit());
        while let Some(k) = chunks.take_next() {
            let (start, end) = chunks.bounds(k);
            // SAFETY: this member took these steps (no one else writes
            // them), and the stepping member reads them only once they are
            // published (below); x is the layer's whole input, written
            // before the team started.
            unsafe {
                let x = self.x.first(end * batch * pb.input);
                project(
                    self.kernels,
                    batch,
                    pb,
                    x,
                    self.xw,
                    start * batch..end * batch,
                    panels,
                )?;
            }
            member.publish(0, end);
        }
        Ok(())
    }

    /// Copies columns `first..end` of item `row_t % batch`'s new state
    /// `h_new` into row `row_t` of y.
    ///
    /// # Safety
    /// No other thread writes those elements of either meanwhile.
    unsafe fn copy_y(&self, h_new: SharedMut, row_t: usize, (first, end): (usize, usize)) {
        let b = row_t % self.batch;
        let ks = self.pb.state_stride;
        // SAFETY: forwarded to the caller; both rows hold these columns.
        unsafe {
            std::ptr::copy_nonoverlapping(
                h_new.at(b * ks + first),
                self.y.at(row_t * self.width + self.slot + first),
                end - first,
            )
        };
    }

    /// Copies item `b`'s columns `cols` of `h_new` into the final h, and
    /// (LSTM) its units `units` of c into the final c.
    ///
    /// # Safety
    /// No other thread writes those elements of any of them meanwhile.
    unsafe fn copy_state(
        &self,
        h_new: SharedMut,
        b: usize,
        cols: (usize, usize),
        units: (usize, usize),
    ) {
        let pb = self.pb;
        // SAFETY: forwarded to the caller; the rows hold these columns.
        unsafe {
            copy_columns(
                h_new,
                pb.state_stride,
                self.h_state,
                pb.state,
                b..b + 1,
                cols,
            );
            if self.config.cell() == CellKind::Lstm {
                copy_columns(self.c, pb.hp, self.c_state, pb.hidden, b..b + 1, units);
            }
        }
    }

    /// Copies panels `first..end` of the new state of the rows stepped as
    /// `active` (their rows of y) out: into y, the final h and (LSTM) the
    /// final c.
    ///
    /// # Safety
    /// The caller computed those panels of those rows in this (last) step
    /// and no other thread writes or copies them in this call.
    unsafe fn copy_out(
        &self,
        active: &[usize],
        h_nxt: SharedMut,
        (first, end): (usize, usize),
        unit: usize,
    ) {
        let (st, h) = (self.pb.state, self.pb.hidden);
        let cols = ((first * unit).min(st), (end * unit).min(st));
        let units = ((first * unit).min(h), (end * unit).min(h));
        for &row_t in active {
            // SAFETY: forwarded to the caller.
            unsafe {
                self.copy_y(h_nxt, row_t, cols);
                self.copy_state(h_nxt, row_t % self.batch, cols, units);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CellKind, Input, Model, OutputGrads};
    use std::sync::atomic::AtomicBool;

    /// Makes [`forks_projection`] hand any projection to other threads,
    /// so that a layer small enough for Miri is projected ahead. Set only
    /// under [`team::tests::hold_globals`].
    pub(super) static ANY_SIZE_PROJECTION: AtomicBool = AtomicBool::new(false);

    /// A layer whose steps do not split (at the tests' reference bound)
    /// and whose projection, 1.5 times as wide as its state, is worth a
    /// second thread over 500 steps at batch 2 on every ISA: projected
    /// ahead on two threads, forked on more (the projection outweighs the
    /// recurrence by more than the fork loses), in the team on one; a
    /// reversed direction never ahead.
    fn ahead_case(cell: CellKind) -> Config {
        Config::builder(cell, 60, 40).build().unwrap()
    }

    /// Who projects a layer of `config` over `steps` steps of `batch`
    /// items on `threads` threads, for each `(batch, steps, threads)`.
    fn projections_of(config: &Config, calls: &[(usize, usize, usize)]) -> Vec<Projection> {
        let model = Model::random(config.clone(), 3);
        let packed = model.packed().unwrap();
        let pb = &packed.blocks[0];
        let unit = packed.kernels.unit();
        let barriers = team_barriers(config);
        calls
            .iter()
            .map(|&(batch, steps, threads)| {
                let shape = layer_shape(config, pb, (batch, steps), unit, barriers);
                let wanted = team::useful_members(shape, threads);
                layer_projection(config, pb, shape, (wanted, threads), packed.kernels.lanes())
            })
            .collect()
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "packs nine models (minutes under Miri); no unsafe code"
    )]
    fn a_projection_goes_ahead_where_it_beats_the_fork() {
        let _globals = team::tests::hold_globals();
        use Projection::*;
        for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
            // Two threads, one, eight; too little projection for another
            // thread (too few steps). 2000 steps: above the bound with
            // every ISA's lanes (3.8M at 500 steps is below AVX-512's 4M).
            let calls = [(2, 2000, 2), (2, 2000, 1), (2, 2000, 8), (2, 8, 2)];
            let got = projections_of(&ahead_case(cell), &calls);
            assert_eq!(got, [Ahead, InTeam, Before, InTeam], "{cell:?}");
            // An input much wider than the state; a reversed direction.
            let wide = Config::builder(cell, 400, 40).build().unwrap();
            let reversed = Config::builder(cell, 60, 40)
                .direction(Direction::Reverse)
                .build()
                .unwrap();
            for config in [wide, reversed] {
                let got = projections_of(&config, &[(2, 2000, 2)]);
                assert_eq!(got, [Before], "{config:?}");
            }
        }
    }

    /// The bound is a count of vector FMAs: 2M multiply-adds with AVX2's
    /// 8 lanes, 4M with AVX-512's 16, 1M with NEON's 4.
    #[test]
    fn a_projection_pays_from_the_same_fmas_on_every_isa() {
        let _globals = team::tests::hold_globals();
        for (lanes, least) in [(8, 1 << 21), (16, 1 << 22), (4, 1 << 20), (1, 1 << 18)] {
            assert!(!projection_pays(least - 1, lanes), "{lanes} lanes");
            assert!(projection_pays(least, lanes), "{lanes} lanes");
        }
    }

    /// A projection ahead's chunks cover every step once, in order, from a
    /// short first chunk doubling up to a block; each is taken once, by
    /// whichever member asks first.
    #[test]
    fn chunks_ahead_cover_every_step_once_and_are_taken_once() {
        for (batch, steps) in [(1, 1000), (2, 400), (3, 7), (1, 4), (40, 100)] {
            let chunks = AheadChunks::new(60, batch, steps);
            let (mut k, mut next, mut len) = (0, 0, 0);
            loop {
                let (start, end) = chunks.bounds(k);
                if start == end {
                    break;
                }
                assert_eq!(start, next, "chunk {k} starts where {} ended", k.max(1) - 1);
                assert!(
                    end - start >= len.min(steps - start),
                    "chunks do not shrink"
                );
                assert!(end - start <= chunks.most.max(chunks.first));
                (next, len, k) = (end, end - start, k + 1);
            }
            assert_eq!(next, steps, "batch {batch}, {steps} steps");
            assert_eq!(chunks.first, wavefront_chunk(batch).min(chunks.most));
            // The stepping member takes chunk 0, the projector the next
            // ones; a chunk taken is not taken again.
            assert!(chunks.take(0));
            assert!(!chunks.take(0));
            assert_eq!(chunks.take_next(), (k > 1).then_some(1));
            assert!(!chunks.take(1));
            while chunks.take_next().is_some() {}
            assert_eq!(chunks.take_next(), None);
        }
    }

    /// Inference, training and backward of a layer projected ahead give the
    /// bits of one thread, with a second member projecting and with a team
    /// that got only one (which projects every step first); items of
    /// several lengths, initial states. Under Miri, which reports a data
    /// race where the stepping member reads steps the projector has not
    /// published (checked by taking the wait out), a small LSTM over 12
    /// steps (two chunks), projected ahead at any size, forward only.
    #[test]
    fn a_projection_ahead_gives_the_bits_of_one_thread() {
        let _globals = team::tests::hold_globals();
        use CellKind::*;
        let ((input, hidden, t), cells) = match cfg!(miri) {
            true => ((6, 4, 12), &[Lstm][..]),
            false => ((60, 40, 500), &[Rnn, Lstm, Gru][..]),
        };
        ANY_SIZE_PROJECTION.store(cfg!(miri), Ordering::Relaxed);
        let pool = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
        };
        let (one, two) = (pool(1), pool(2));
        let helper = super::super::helpers::Helpers::new(1).unwrap();
        for &cell in cells {
            let config = Config::builder(cell, input, hidden).build().unwrap();
            let model = Model::random(config.clone(), 7);
            let n = 2;
            let shapes = Shapes::new(&config, t, n).unwrap();
            let mut rng = crate::rng::SplitMix64::new(17);
            let x = rng.uniform_vec(shapes.x, -1.0, 1.0);
            let h0 = rng.uniform_vec(shapes.h, -1.0, 1.0);
            let c0 = rng.uniform_vec(shapes.c, -1.0, 1.0);
            let dy = rng.uniform_vec(shapes.y, -1.0, 1.0);
            let lens = [t, t / 2 - 3];
            let mut input = Input::new(&x, t, n).with_seq_lens(&lens).with_h0(&h0);
            if config.has_cell_state() {
                input = input.with_c0(&c0);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let run = || {
                let y = model.forward_inference(&input).unwrap();
                let (t, trace) = model.forward_training(&input).unwrap();
                let mut got = vec![bits(&y.y), bits(&y.h_n), bits(&t.y)];
                if !cfg!(miri) {
                    let g = model.backward(&trace, &OutputGrads::new(&dy)).unwrap();
                    got.extend([g.dx, g.dh0, g.dparams].map(|v| bits(&v)));
                }
                got
            };
            let alone = one.install(run);
            // A second member from the pool, from a helper (which takes
            // its place at once: under Miri a pool worker comes too late
            // to join), and none.
            for (members, helped) in [(2, false), (2, true), (1, false)] {
                team::tests::FORCED_CAPACITY.store(members, Ordering::Relaxed);
                let got = match helped {
                    true => two.install(|| helper.install(run)),
                    false => two.install(run),
                };
                team::tests::FORCED_CAPACITY.store(0, Ordering::Relaxed);
                assert!(alone == got, "{cell:?} on {members} members ({helped})");
            }
        }
        ANY_SIZE_PROJECTION.store(false, Ordering::Relaxed);
    }
}
