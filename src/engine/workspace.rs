//! Scratch buffers reused across calls.
//!
//! The input projection and the intermediate layer outputs are megabytes per
//! call. Allocating them afresh maps new pages every call and unmaps them
//! after, and with several threads each unmap interrupts the others to flush
//! their TLBs: measured, that made a 2-thread RNN call 2-3× slower than a
//! 1-thread one. A model keeps such buffers instead: the input projection,
//! layer outputs, a dropped trace's buffers and backward's scratch. Measured
//! on training (forward + backward) with 2 threads: LSTM H512 N32 T50 from
//! ~200 to ~335 GFLOP/s, and batch-1 training no longer slower on 2 threads
//! than on 1.

use std::sync::Mutex;

use crate::error::{try_grow, Result};

/// How many idle buffers a pool keeps at most: enough for every trace and
/// backward buffer of a few layers and directions.
const KEEP: usize = 32;

/// How many bytes of idle buffers a pool keeps at most (256 MiB): several
/// training calls' worth at the benchmark shapes (the largest, LSTM 1024 ×
/// 32 × 50, takes 26 MB a buffer). A buffer returned beyond that is freed,
/// so concurrent calls on one model leave no more than this behind.
pub(crate) const MAX_IDLE_BYTES: usize = 256 << 20;

#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<f32>>>,
}

/// Bytes held by `buffers` (at most `KEEP` of them: cheap to sum).
fn bytes_of(buffers: &[Vec<f32>]) -> usize {
    buffers
        .iter()
        .map(|b| b.capacity() * std::mem::size_of::<f32>())
        .sum()
}

impl BufferPool {
    /// An empty pool (for a `static`).
    pub const fn new() -> Self {
        BufferPool {
            free: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f32>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of `len` elements with unspecified (but initialised)
    /// contents: the caller overwrites what it reads. An out-of-memory
    /// error if it cannot be had.
    pub fn take(&self, len: usize) -> Result<Vec<f32>> {
        // At most twice the length: a trace keeps what it takes, and a
        // small tensor must not hold on to a large buffer.
        self.take_within(len, len.saturating_mul(2))
    }

    /// [`take`](Self::take) for storage a model keeps until its next
    /// update (packed weights): a buffer of at most an eighth more than
    /// `len`, so the weights do not hold much more memory than they use.
    pub fn take_fitted(&self, len: usize) -> Result<Vec<f32>> {
        self.take_within(len, len.saturating_add(len / 8))
    }

    /// A buffer of `len` elements: the smallest idle one that is large
    /// enough but holds at most `most`, else the largest smaller one,
    /// grown, else a new one.
    fn take_within(&self, len: usize, most: usize) -> Result<Vec<f32>> {
        if len == 0 {
            // What a cell or mode does not use: nothing to lock for.
            return Ok(Vec::new());
        }
        let reused = {
            let mut free = self.idle();
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len && b.capacity() <= most)
                .min_by_key(|(_, b)| b.capacity())
                .or_else(|| {
                    free.iter()
                        .enumerate()
                        .filter(|(_, b)| b.capacity() < len)
                        .max_by_key(|(_, b)| b.capacity())
                })
                .map(|(i, _)| i);
            pick.map(|i| free.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_default();
        if let Err(e) = try_grow(&mut buf, len, "a call's scratch buffer") {
            self.give(buf);
            return Err(e);
        }
        buf.resize(len, 0.0);
        Ok(buf)
    }

    /// A buffer of `len` zeros.
    pub fn take_zeroed(&self, len: usize) -> Result<Vec<f32>> {
        let mut buf = self.take(len)?;
        buf.fill(0.0);
        Ok(buf)
    }

    /// Returns a buffer for later calls (or frees it, past the pool's caps).
    pub fn give(&self, buf: Vec<f32>) {
        let mut free = self.idle();
        if free.len() < KEEP
            && bytes_of(&free) + bytes_of(std::slice::from_ref(&buf)) <= MAX_IDLE_BYTES
        {
            free.push(buf);
        }
    }

    /// [`give`](Self::give) for each buffer that holds memory (a buffer a
    /// cell or mode does not use is empty).
    pub fn give_each(&self, bufs: impl IntoIterator<Item = Vec<f32>>) {
        for buf in bufs {
            if buf.capacity() > 0 {
                self.give(buf);
            }
        }
    }

    /// Bytes held by idle buffers.
    pub fn idle_bytes(&self) -> usize {
        bytes_of(&self.idle())
    }

    /// Frees every idle buffer; returns how many bytes that was.
    pub fn release(&self) -> usize {
        let freed = std::mem::take(&mut *self.idle());
        bytes_of(&freed)
    }
}
