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

/// How many idle buffers a pool keeps: enough for every trace and backward
/// buffer of a few layers and directions. The memory stays with the model
/// until it is dropped.
const KEEP: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<f32>>>,
}

impl BufferPool {
    /// A buffer of `len` elements with unspecified (but initialised)
    /// contents: the caller overwrites what it reads.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest buffer that is large enough, else the largest.
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
                .map(|(i, _)| i);
            pick.map(|i| free.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_default();
        buf.resize(len, 0.0);
        buf
    }

    /// A buffer of `len` zeros.
    pub fn take_zeroed(&self, len: usize) -> Vec<f32> {
        let mut buf = self.take(len);
        buf.fill(0.0);
        buf
    }

    /// Returns a buffer for later calls.
    pub fn give(&self, buf: Vec<f32>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < KEEP {
            free.push(buf);
        }
    }
}

/// `len` zeros written by this thread, rather than `vec![0.0; len]`, which
/// gets untouched pages from the kernel: worker threads that then write them
/// fault each page in under a shared lock, and a worker that reads one first
/// maps the zero page and takes a copy-on-write fault plus a TLB flush of
/// every CPU on its first store.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.resize(len, 0.0);
    v
}
