//! The C ABI of streaming inference (`Model::stream`): an opaque stream
//! that keeps a batch's state between steps.

use std::sync::{Arc, Mutex};

use super::guard::{check_disjoint, guard, optional, slice, slice_mut, span, Failure};
use super::handles::{acquire, hand_out, release, Handle, Registry};
use super::{model_ref, rnn_model, rnn_status};
use crate::error::check_len;
use crate::model::Model;
use crate::stream::{Active, StreamCore};

/// An opaque stream: a batch's recurrent state and a step's buffers, over
/// the model as it was when the stream was made (later parameter updates
/// need a new stream). Calls on one stream run one at a time.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct rnn_stream {
    model: Arc<Model>,
    core: Mutex<StreamCore>,
}

static STREAMS: Registry = Registry::new("stream", "rnn_stream_create");

impl Handle for rnn_stream {
    fn registry() -> &'static Registry {
        &STREAMS
    }
}

impl rnn_stream {
    fn core(&self) -> std::sync::MutexGuard<'_, StreamCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes a stream of `batch` items over `model`, each from a zero state;
/// free it with `rnn_stream_destroy`. Only a forward-direction model can
/// stream (RNN_INVALID_ARGUMENT otherwise: a reversed direction reads the
/// sequence from its end). Added in ABI version 6.
///
/// Where librnn's pool has several threads and the engine would split
/// the model's layers between them at this batch, the stream starts up to
/// `threads - 1` helper threads of its own, which can run its steps with
/// the calling thread (cheaper than handing each step to the pool); it
/// uses them while steps run faster with them than without (timed on its
/// first steps, again 64 steps later, and after twice as many steps each
/// time the choice holds, up to every 4096 steps), and
/// `rnn_stream_destroy` ends them. Steps are the same bits either way.
///
/// # Safety
/// `model` from `rnn_model_create` (checked); `stream` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_stream_create(
    model: *const rnn_model,
    batch: usize,
    stream: *mut *mut rnn_stream,
) -> rnn_status {
    guard(|| {
        if stream.is_null() {
            return Err(Failure::null("stream"));
        }
        let model = model_ref(model)?;
        let core = StreamCore::new(&model, batch)?;
        let value = rnn_stream {
            model,
            core: Mutex::new(core),
        };
        // SAFETY: per the function's contract.
        unsafe { hand_out(stream, value, "stream") }
    })
}

/// Runs one time step: `x [N, I]` (`x_len` = N·I floats) in, the step's
/// output `y [N, H_out]` out; every item's state moves on. With `active`
/// (N bytes, NULL for all), an item whose byte is 0 keeps its state and
/// outputs zeros this step. The outputs and states are the same bits as
/// one `rnn_forward_inference` call over every step pushed. Added in ABI
/// version 6.
///
/// # Safety
/// `stream` from `rnn_stream_create` (checked); buffers hold their stated lengths.
#[no_mangle]
pub unsafe extern "C" fn rnn_stream_step(
    stream: *const rnn_stream,
    x: *const f32,
    x_len: usize,
    active: *const u8,
    active_len: usize,
    y: *mut f32,
    y_len: usize,
) -> rnn_status {
    guard(|| {
        let s = acquire(stream, "stream")?;
        check_disjoint(
            &[span(y, y_len, "y")],
            &[span(x, x_len, "x"), span(active, active_len, "active")],
        )?;
        // SAFETY: per the function's contract; `y` overlaps nothing.
        let (x, active, y) = unsafe {
            (
                slice(x, x_len, "x")?,
                optional(active, active_len, "active")?,
                slice_mut(y, y_len, "y")?,
            )
        };
        let active = active.map_or(Active::All, Active::Bytes);
        let mut core = s.core();
        let out = core.step(&s.model, x, active)?;
        check_len("y", out.len(), y.len())?;
        y.copy_from_slice(out);
        Ok(())
    })
}

/// Every item's state back to zero. Added in ABI version 6.
///
/// # Safety
/// `stream` from `rnn_stream_create` (checked).
#[no_mangle]
pub unsafe extern "C" fn rnn_stream_reset(stream: *const rnn_stream) -> rnn_status {
    guard(|| {
        acquire(stream, "stream")?.core().reset();
        Ok(())
    })
}

/// Item `item`'s state (every layer) back to zero: it starts a new sequence
/// at the next step. Added in ABI version 6.
///
/// # Safety
/// `stream` from `rnn_stream_create` (checked).
#[no_mangle]
pub unsafe extern "C" fn rnn_stream_reset_item(
    stream: *const rnn_stream,
    item: usize,
) -> rnn_status {
    guard(|| {
        let s = acquire(stream, "stream")?;
        let result = s.core().reset_item(item);
        Ok(result?)
    })
}

/// Copies the state out: `h [L, N, H_out]`, and `c [L, N, H]` for an LSTM
/// (NULL, 0 otherwise, or to skip it). Added in ABI version 6.
///
/// # Safety
/// `stream` from `rnn_stream_create` (checked); buffers hold their stated lengths.
#[no_mangle]
pub unsafe extern "C" fn rnn_stream_get_state(
    stream: *const rnn_stream,
    h: *mut f32,
    h_len: usize,
    c: *mut f32,
    c_len: usize,
) -> rnn_status {
    guard(|| {
        let s = acquire(stream, "stream")?;
        check_disjoint(&[span(h, h_len, "h"), span(c, c_len, "c")], &[])?;
        let core = s.core();
        let (h_now, c_now) = core.state();
        // SAFETY: per the function's contract; `h` and `c` do not overlap.
        let h = unsafe { slice_mut(h, h_len, "h")? };
        check_len("h", h_now.len(), h.len())?;
        h.copy_from_slice(h_now);
        if c.is_null() {
            if c_len != 0 {
                return Err(Failure::null("c"));
            }
        } else {
            // SAFETY: as above.
            let c = unsafe { slice_mut(c, c_len, "c")? };
            check_len("c", c_now.len(), c.len())?;
            c.copy_from_slice(c_now);
        }
        Ok(())
    })
}

/// Sets the state (`h [L, N, H_out]`; `c [L, N, H]` for an LSTM, NULL, 0
/// otherwise). Added in ABI version 6.
///
/// # Safety
/// `stream` from `rnn_stream_create` (checked); buffers hold their stated lengths.
#[no_mangle]
pub unsafe extern "C" fn rnn_stream_set_state(
    stream: *const rnn_stream,
    h: *const f32,
    h_len: usize,
    c: *const f32,
    c_len: usize,
) -> rnn_status {
    guard(|| {
        let s = acquire(stream, "stream")?;
        // SAFETY: per the function's contract.
        let (h, c) = unsafe { (slice(h, h_len, "h")?, optional(c, c_len, "c")?) };
        let result = s.core().set_state(h, c);
        Ok(result?)
    })
}

/// Frees a stream and ends its helper threads (NULL is accepted: RNN_OK).
/// A stream destroyed already, or not from librnn, gives RNN_MISUSE. Added
/// in ABI version 6.
///
/// # Safety
/// `stream` from `rnn_stream_create` or NULL.
#[no_mangle]
pub unsafe extern "C" fn rnn_stream_destroy(stream: *mut rnn_stream) -> rnn_status {
    guard(|| release(stream, "stream"))
}
