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

use crate::error::{try_grow, try_vec, Result};

/// How many idle buffers a pool keeps at most: enough for every trace and
/// backward buffer of a few layers and directions.
const KEEP: usize = 32;

/// How many bytes of idle buffers a pool keeps at most (256 MiB): several
/// training calls' worth at the benchmark shapes (the largest, LSTM 1024 ×
/// 32 × 50, takes 26 MB a buffer). A buffer returned beyond that is freed,
/// so concurrent calls on one model leave no more than this behind.
pub(crate) const MAX_IDLE_BYTES: usize = 256 << 20;

#[derive(Debug, Default)]
struct Idle {
    buffers: Vec<Vec<f32>>,
    bytes: usize,
}

#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Idle>,
}

fn bytes_of(buf: &Vec<f32>) -> usize {
    buf.capacity() * std::mem::size_of::<f32>()
}

impl BufferPool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of `len` elements with unspecified (but initialised)
    /// contents: the caller overwrites what it reads.
    /// [`Error::OutOfMemory`] if it cannot be had.
    pub fn take(&self, len: usize) -> Result<Vec<f32>> {
        let reused = {
            let mut idle = self.idle();
            // The smallest buffer that is large enough, else the largest.
            let free = &idle.buffers;
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
                .map(|(i, _)| i);
            pick.map(|i| {
                let buf = idle.buffers.swap_remove(i);
                idle.bytes -= bytes_of(&buf);
                buf
            })
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
        let bytes = bytes_of(&buf);
        let mut idle = self.idle();
        if idle.buffers.len() < KEEP && idle.bytes + bytes <= MAX_IDLE_BYTES {
            idle.bytes += bytes;
            idle.buffers.push(buf);
        }
    }

    /// Bytes held by idle buffers.
    pub fn idle_bytes(&self) -> usize {
        self.idle().bytes
    }

    /// Frees every idle buffer; returns how many bytes that was.
    pub fn release(&self) -> usize {
        let freed = std::mem::take(&mut *self.idle());
        freed.bytes
    }
}

/// `len` zeros written by this thread, rather than `vec![0.0; len]`, which
/// gets untouched pages from the kernel: worker threads that then write them
/// fault each page in under a shared lock, and a worker that reads one first
/// maps the zero page and takes a copy-on-write fault plus a TLB flush of
/// every CPU on its first store.
/// Fallible: [`Error::OutOfMemory`] if the memory cannot be had.
pub(crate) fn zeroed(len: usize) -> Result<Vec<f32>> {
    try_vec(len, 0.0, "a call's working memory")
}
