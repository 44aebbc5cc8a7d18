//! The fast engine: forward and backward over layers, directions and time,
//! on the packed weights and the SIMD kernels.
//!
//! Each layer runs as one thread team ([`team`]): every member owns a share
//! (a direction, a block of batch rows, a range of hidden-unit panels) and
//! keeps it through every time step, meeting the other parts of its block
//! at a barrier per step. Forward, a member first computes the input
//! projection of every step for its rows and panels (one product over
//! weights packed once per model, with the same register-tiled kernel as
//! the recurrence), then runs the recurrence, calling its cell's fused step
//! kernel on its panels. Backward walks the steps in reverse on the same
//! team, each step's `dG × R` product split the same way and running the
//! element-wise backward of the step before in its epilogue, then forms
//! dW, dR and dX as GEMMs over all steps at once (`gemm`).

mod backward;
mod forward;
pub(crate) mod helpers;
mod memory;
pub(crate) mod pack;
mod placement;
pub(crate) mod products;
mod quantize;
pub(crate) mod split_cost;
pub(crate) mod team;
mod workspace;

pub(crate) use backward::{backward, backward_into, backward_runs_alone, GradDest};
pub(crate) use forward::{forward, forward_into, forward_runs_alone, Dest, KeptState, Trace};
pub(crate) use memory::call_memory;
pub(crate) use workspace::{BufferPool, MAX_IDLE_BYTES};

use crate::config::Config;
use crate::error::Result;
use crate::kernels::{Isa, Kernels};
use crate::precision::Precision;
use pack::PackedBlock;
use std::sync::Arc;

/// A model's weights packed for one ISA, in one precision. Its panels'
/// storage comes from the model's buffer pool and goes back to it when it
/// is dropped (after an update), for the next packing to reuse.
#[derive(Debug)]
pub(crate) struct Packed {
    pub kernels: Kernels,
    /// Indexed by `layer * D + dir`.
    pub blocks: Vec<PackedBlock>,
    pool: Arc<BufferPool>,
}

impl Drop for Packed {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut self.blocks);
        self.pool
            .give_each(blocks.into_iter().flat_map(PackedBlock::into_buffers));
    }
}

impl Packed {
    pub fn new(
        config: &Config,
        params: &[f32],
        (isa, precision): (Isa, Precision),
        pool: &Arc<BufferPool>,
    ) -> Result<Packed> {
        let kernels = Kernels::for_isa(isa)?;
        let storage = pack::Storage(pool);
        let mut packed = Packed {
            kernels,
            blocks: Vec::new(),
            pool: Arc::clone(pool),
        };
        for layer in 0..config.num_layers() {
            for dir in 0..config.num_directions() {
                packed.blocks.push(PackedBlock::new(
                    config,
                    params,
                    (layer, dir),
                    (kernels.unit(), kernels.steps(precision).lstm_pairs_apart),
                    precision,
                    &storage,
                )?);
            }
        }
        Ok(packed)
    }

    /// Bytes of packed weights (every block's panels, biases, peepholes).
    pub fn bytes(&self) -> usize {
        self.blocks.iter().map(PackedBlock::bytes).sum()
    }
}

/// A raw pointer that team members running on different threads share to
/// write *disjoint* parts (rows, or columns of rows) of one buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SharedMut(*mut f32);

// SAFETY: the pointer is only dereferenced through `SharedMut::at`, whose
// callers guarantee that no two threads touch the same elements without a
// barrier between them.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub fn new(buf: &mut [f32]) -> Self {
        SharedMut(buf.as_mut_ptr())
    }
    pub fn null() -> Self {
        SharedMut(std::ptr::null_mut())
    }
    /// [`new`](Self::new), or null for an empty buffer (one the cell or
    /// mode does not use).
    pub fn new_or_null(buf: &mut [f32]) -> Self {
        if buf.is_empty() {
            Self::null()
        } else {
            Self::new(buf)
        }
    }
    pub fn is_null(&self) -> bool {
        self.0.is_null()
    }
    /// Pointer to element `offset`.
    ///
    /// # Safety
    /// `offset` is inside the buffer this was made from, which outlives the
    /// use, and no other thread accesses the same elements meanwhile.
    pub unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: forwarded to the caller.
        unsafe { self.0.add(offset) }
    }
}

/// The recurrence of one layer over `batch` items and `steps` steps as
/// the team's split rule sees it (the directions of a layer have the same
/// sizes), for a step that takes `barriers` barriers when split.
pub(crate) fn layer_shape(
    config: &Config,
    pb: &PackedBlock,
    (batch, steps): (usize, usize),
    unit: usize,
    barriers: usize,
) -> team::Shape {
    let projection = pb.hidden * pb.state_stride * usize::from(config.proj_size() > 0);
    team::Shape {
        directions: config.num_directions(),
        batch,
        panels: (pb.hp / unit).min(pb.state_stride / unit),
        macs_per_row: pb.gates * pb.hp * pb.state + projection,
        barriers,
        steps,
    }
}

/// What one team share covers of a direction's padded rows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    /// Its hidden-unit panels.
    pub panels: (usize, usize),
    /// Its panels of the (padded) state: the same units, or with a
    /// projection its share of the projected outputs.
    pub state_panels: (usize, usize),
    /// Those state panels as columns, padded, and within the state.
    pub cols: (usize, usize),
    pub out_cols: (usize, usize),
    /// Its hidden units within the hidden size.
    pub units: (usize, usize),
}

impl Span {
    pub fn of(share: &team::Share, pb: &PackedBlock, unit: usize) -> Span {
        let panels = share.panels(pb.hp / unit);
        // Without a projection the state is the hidden units (same panels).
        let state_panels = share.panels(pb.state_stride / unit);
        let cols = (state_panels.0 * unit, state_panels.1 * unit);
        Span {
            panels,
            state_panels,
            cols,
            out_cols: (cols.0.min(pb.state), cols.1.min(pb.state)),
            units: (
                (panels.0 * unit).min(pb.hidden),
                (panels.1 * unit).min(pb.hidden),
            ),
        }
    }
}

/// Copies columns `first..end` of rows `rows` from a buffer of `from_stride`
/// floats a row to one of `to_stride` (padded state rows to the caller's
/// unpadded ones).
///
/// # Safety
/// Both buffers hold those rows and columns, outlive the call, and no other
/// thread accesses these elements meanwhile.
pub(crate) unsafe fn copy_columns(
    from: SharedMut,
    from_stride: usize,
    to: SharedMut,
    to_stride: usize,
    rows: std::ops::Range<usize>,
    (first, end): (usize, usize),
) {
    for r in rows {
        // SAFETY: forwarded to the caller.
        unsafe {
            std::ptr::copy_nonoverlapping(
                from.at(r * from_stride + first),
                to.at(r * to_stride + first),
                end - first,
            )
        };
    }
}

/// Copies `rows` rows of `width` floats from `src` into the first `width`
/// floats of each `stride`-float row of `dst` (into the padded rows the
/// kernels read).
pub(crate) fn pad_rows(src: &[f32], width: usize, dst: &mut [f32], stride: usize) {
    if width == 0 {
        return;
    }
    for (s, d) in src.chunks_exact(width).zip(dst.chunks_mut(stride)) {
        d[..width].copy_from_slice(s);
    }
}

/// Pointer to row `index` of a buffer of `width`-wide rows, or NULL for an
/// empty buffer (one the cell or mode does not use). Bounds-checked, and
/// `Vec::as_ptr` keeps earlier row pointers into the same buffer valid.
// `&Vec`, not `&[f32]`: a slice reference would be a borrow of the contents
// that a later write through another row pointer invalidates.
#[allow(clippy::ptr_arg)]
pub(crate) fn row(buf: &Vec<f32>, width: usize, index: usize) -> *const f32 {
    if buf.is_empty() {
        return std::ptr::null();
    }
    assert!(
        (index + 1) * width <= buf.len(),
        "row {index} is outside its buffer"
    );
    buf.as_ptr().wrapping_add(index * width)
}

/// Under [`EmptySequenceState::Zeros`](crate::config::EmptySequenceState),
/// zeroes the rows of items of length 0 in a state `[L·D, N, width]` (an
/// empty slice, for a cell without that state, is left alone).
fn zero_empty_items(config: &Config, lens: &[usize], state: &mut [f32], width: usize) {
    if config.empty_sequence_state() != crate::config::EmptySequenceState::Zeros || state.is_empty()
    {
        return;
    }
    let n = lens.len();
    for (row, chunk) in state.chunks_exact_mut(width).enumerate() {
        if lens[row % n] == 0 {
            chunk.fill(0.0);
        }
    }
}

/// Vector FMAs of work over all steps (a layer's input projection, a
/// backward product) below which handing it to other threads costs more
/// than it saves: the hand-off is a wake-up of a fixed time (tens of µs)
/// more than the work, and a fixed time holds a fixed count of one core's
/// FMAs, so the bound in multiply-adds is this times the ISA's lanes
/// ([`fork_pays`]): 2M with AVX2, 4M with AVX-512, 1M with NEON. 2M is
/// what AVX2 measured on the 2-core Zen 3 VM (an LSTM H = 32 projection
/// over 200 steps, 0.8M, ran 1.25× slower forked on two threads; a 4M
/// product bound left LSTM 64×1×200 training 1.4× slower on two threads
/// than on one on the Xeon VM with AVX2), 4M what AVX-512 measured on the
/// Intel Xeon VM (with calls on the caller's thread two threads broke even
/// at 4-5M: 3.3M ran 0.80-0.92× as fast as one thread, 4.9-6.5M
/// 1.02-1.08×; BENCHMARKS.md, thirty-third and thirty-fourth sessions).
pub(crate) const FORK_FMAS: usize = 1 << 18;

/// Whether `macs` multiply-adds on vectors of `lanes` f32 lanes are
/// enough work to hand to other threads ([`FORK_FMAS`]).
pub(crate) fn fork_pays(macs: usize, lanes: usize) -> bool {
    macs >= FORK_FMAS.saturating_mul(lanes)
}

/// Whether, given `threads` threads, every layer of a call over `steps`
/// steps of `batch` items has a team of one member (its steps taking
/// `barriers` barriers when split) and `also` says its other work over all
/// steps (given the layer's first block) would not fork either.
pub(super) fn every_layer_alone(
    config: &Config,
    packed: &Packed,
    (batch, steps): (usize, usize),
    threads: usize,
    barriers: usize,
    also: impl Fn(&PackedBlock) -> bool,
) -> bool {
    let (dirs, unit) = (config.num_directions(), packed.kernels.unit());
    (0..config.num_layers()).all(|layer| {
        let pb = &packed.blocks[layer * dirs];
        let shape = layer_shape(config, pb, (batch, steps), unit, barriers);
        team::useful_members(shape, threads) == 1 && also(pb)
    })
}

/// The most members a forward call over `batch` items gives a layer of
/// `config` (call from inside `threads::run`, which sets the threads a
/// team can have).
pub(crate) fn team_size(config: &Config, packed: &Packed, batch: usize) -> usize {
    let unit = packed.kernels.unit();
    let dirs = config.num_directions();
    (0..config.num_layers())
        .map(|layer| {
            let pb = &packed.blocks[layer * dirs];
            let shape = layer_shape(config, pb, (batch, 1), unit, forward::team_barriers(config));
            team::useful_members(shape, team::capacity())
        })
        .max()
        .unwrap_or(1)
}
