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
//! team with the element-wise backward kernels and the per-step `dG × R`
//! products split the same way, then forms dW, dR and dX as GEMMs over all
//! steps at once (`gemm`).

mod backward;
mod forward;
mod memory;
pub(crate) mod pack;
pub(crate) mod team;
mod workspace;

pub(crate) use backward::backward;
pub(crate) use forward::{forward, forward_into, Dest, Trace};
pub(crate) use memory::call_memory;
pub(crate) use workspace::{BufferPool, MAX_IDLE_BYTES};

use crate::config::Config;
use crate::error::Result;
use crate::kernels::{Isa, Kernels};
use pack::PackedBlock;

/// A model's weights packed for one ISA.
#[derive(Debug)]
pub(crate) struct Packed {
    pub kernels: Kernels,
    /// Indexed by `layer * D + dir`.
    pub blocks: Vec<PackedBlock>,
}

impl Packed {
    pub fn new(config: &Config, params: &[f32], isa: Isa) -> Result<Packed> {
        let kernels = Kernels::for_isa(isa)?;
        let mut blocks = Vec::new();
        for layer in 0..config.num_layers() {
            for dir in 0..config.num_directions() {
                blocks.push(PackedBlock::new(
                    config,
                    params,
                    layer,
                    dir,
                    kernels.unit(),
                )?);
            }
        }
        Ok(Packed { kernels, blocks })
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
