//! Error handling at the C boundary: status codes, the thread-local last
//! error message, and a guard that turns every failure (including a panic,
//! which must never unwind into C) into a status.

use std::cell::{Cell, RefCell};
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use crate::error::Error;

/// Result of every fallible librnn call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum rnn_status {
    /// Success.
    RNN_OK = 0,
    /// A required pointer argument was NULL.
    RNN_NULL_POINTER = 1,
    /// An argument or configuration field is invalid (see the message).
    RNN_INVALID_ARGUMENT = 2,
    /// A buffer length does not match the size the shapes require.
    RNN_SHAPE_MISMATCH = 3,
    /// Memory could not be allocated: a model's parameters, a call's
    /// workspace or trace, packed weights. Nothing was changed; the model
    /// stays usable. The message says how many bytes were asked for.
    RNN_OUT_OF_MEMORY = 4,
    /// The request is valid but not supported here (e.g. an ISA this CPU lacks).
    RNN_UNSUPPORTED = 5,
    /// A bug in librnn (a caught panic); the message has the details.
    RNN_INTERNAL = 6,
    /// The call is a misuse of the API that librnn detected: a destroyed
    /// (or never created) handle, a double destroy, a trace passed with a
    /// model other than the one that made it, or output buffers that
    /// overlap the inputs or each other. Added in ABI version 3.
    RNN_MISUSE = 7,
}

/// A failed call: its status and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: rnn_status,
    pub message: String,
}

impl Failure {
    pub fn new(status: rnn_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
    pub fn null(what: &str) -> Self {
        Failure::new(rnn_status::RNN_NULL_POINTER, format!("`{what}` is NULL"))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(rnn_status::RNN_INVALID_ARGUMENT, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::ShapeMismatch { .. } => rnn_status::RNN_SHAPE_MISMATCH,
            Error::InvalidConfig(_) | Error::InvalidArgument(_) | Error::Checkpoint(_) => {
                rnn_status::RNN_INVALID_ARGUMENT
            }
            Error::OutOfMemory { .. } => rnn_status::RNN_OUT_OF_MEMORY,
            Error::Internal(_) => rnn_status::RNN_INTERNAL,
        };
        Failure::new(status, e.to_string())
    }
}

/// Bytes kept of a message, with its terminating NUL; longer ones are cut
/// at a character boundary.
const MESSAGE_CAPACITY: usize = 1024;

thread_local! {
    // Inline, const-initialised and without a destructor: usable at any
    // point of a thread's life, also from a TLS destructor after Rust's own
    // thread-locals are gone, and nothing to leak or free at thread exit.
    static LAST_ERROR: RefCell<[u8; MESSAGE_CAPACITY]> =
        const { RefCell::new([0; MESSAGE_CAPACITY]) };
    /// Set while this thread runs a librnn call, so that the panic hook
    /// keeps a caught panic's message off the host's stderr.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Records the message for `rnn_last_error_message`.
fn set_last_error(message: &str) {
    let mut end = message.len().min(MESSAGE_CAPACITY - 1);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut slot) = e.try_borrow_mut() {
            for (dst, &b) in slot.iter_mut().zip(&message.as_bytes()[..end]) {
                // Interior NULs would truncate the C string.
                *dst = if b == 0 { b' ' } else { b };
            }
            slot[end] = 0;
        }
    });
}

/// Whether a panic on this thread happens inside a librnn call: on the
/// calling thread, or on one of librnn's worker threads.
fn panic_is_ours() -> bool {
    IN_CALL.try_with(Cell::get).unwrap_or(false) || crate::threads::is_worker()
}

/// Installs, once per process, a panic hook that stays silent for panics
/// inside librnn calls (they become RNN_INTERNAL with the message) and
/// passes every other panic on to the hook that was there before.
fn quiet_panics_in_calls() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_is_ours() {
                previous(info);
            }
        }));
    });
}

/// Runs `body`, catching panics, and records the outcome for
/// `rnn_last_error_message`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> rnn_status {
    quiet_panics_in_calls();
    let was_in_call = IN_CALL.try_with(|c| c.replace(true)).unwrap_or(false);
    set_last_error("");
    let status = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => rnn_status::RNN_OK,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(payload) => {
            let what = crate::error::panic_message(&*payload, "unknown panic");
            set_last_error(&format!("internal error (please report): {what}"));
            rnn_status::RNN_INTERNAL
        }
    };
    let _ = IN_CALL.try_with(|c| c.set(was_in_call));
    status
}

/// Pointer to this thread's last error message ("" after a successful call).
pub(crate) fn last_error_ptr() -> *const c_char {
    static EMPTY: [u8; 1] = [0];
    LAST_ERROR
        .try_with(|e| e.as_ptr().cast::<c_char>().cast_const())
        .unwrap_or(EMPTY.as_ptr().cast())
}

/// A shared slice from a C pointer and length: NULL is allowed only for an
/// empty slice; the pointer must be aligned.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` readable values that stay valid and
/// unmodified for `'a`.
pub(crate) unsafe fn slice<'a, T>(
    ptr: *const T,
    len: usize,
    what: &str,
) -> Result<&'a [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    check_pointer(ptr, len, what)?;
    // SAFETY: non-NULL, aligned, and the caller guarantees `len` values.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Like [`slice`], for a buffer librnn writes.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` writable values not aliased by any
/// other argument of the call.
pub(crate) unsafe fn slice_mut<'a, T>(
    ptr: *mut T,
    len: usize,
    what: &str,
) -> Result<&'a mut [T], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    check_pointer(ptr.cast_const(), len, what)?;
    // SAFETY: non-NULL, aligned, and the caller guarantees `len` values.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

fn check_pointer<T>(ptr: *const T, len: usize, what: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(format!(
            "`{what}` is not aligned for its element type"
        )));
    }
    if len
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(Failure::invalid(format!(
            "`{what}` length {len} is too large"
        )));
    }
    Ok(())
}

/// An optional buffer: NULL means absent (its length must then be 0).
///
/// # Safety
/// As for [`slice`].
pub(crate) unsafe fn optional<'a, T>(
    ptr: *const T,
    len: usize,
    what: &str,
) -> Result<Option<&'a [T]>, Failure> {
    if ptr.is_null() {
        if len != 0 {
            return Err(Failure::null(what));
        }
        return Ok(None);
    }
    // SAFETY: forwarded to the caller.
    unsafe { slice(ptr, len, what) }.map(Some)
}

/// The bytes a buffer argument covers, for overlap checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    start: usize,
    end: usize,
    what: &'static str,
}

/// The span of `len` values at `ptr`; `None` for an absent or empty buffer.
pub(crate) fn span<T>(ptr: *const T, len: usize, what: &'static str) -> Option<Span> {
    if ptr.is_null() || len == 0 {
        return None;
    }
    let start = ptr as usize;
    let bytes = len.saturating_mul(std::mem::size_of::<T>());
    Some(Span {
        start,
        end: start.saturating_add(bytes),
        what,
    })
}

/// RNN_MISUSE unless every buffer in `writes` is disjoint from every buffer
/// in `reads` and from the other writes: the ABI knows every pointer and
/// length, so an overlap is reported rather than computed into garbage.
pub(crate) fn check_disjoint(
    writes: &[Option<Span>],
    reads: &[Option<Span>],
) -> Result<(), Failure> {
    // No vector of the present spans: a stream's step calls this, and
    // allocates nothing.
    for (i, w) in writes.iter().enumerate() {
        let Some(w) = w else { continue };
        let others = (writes[i + 1..].iter().flatten()).chain(reads.iter().flatten());
        for o in others {
            if w.start < o.end && o.start < w.end {
                return Err(Failure::new(
                    rnn_status::RNN_MISUSE,
                    format!(
                        "`{}` overlaps `{}`: a buffer librnn writes must not share memory with any other buffer of the call",
                        w.what, o.what
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_message() -> String {
        // SAFETY: last_error_ptr returns a NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_internal_with_its_message() {
        let status = guard(|| panic!("boom at step 3"));
        assert_eq!(status, rnn_status::RNN_INTERNAL);
        assert!(last_message().contains("boom at step 3"));
        assert_eq!(guard(|| Ok(())), rnn_status::RNN_OK);
        assert_eq!(last_message(), "");
    }

    /// Runs in a child process (see the next test): a panic inside a call
    /// and one outside any call, with the test harness's capture off.
    #[test]
    fn panic_printing_child() {
        if std::env::var_os("LIBRNN_PANIC_CHILD").is_none() {
            return;
        }
        assert_eq!(
            guard(|| panic!("panic inside a librnn call")),
            rnn_status::RNN_INTERNAL
        );
        let outside = std::panic::catch_unwind(|| panic!("panic outside librnn"));
        assert!(outside.is_err());
    }

    /// librnn never prints a caught panic, and leaves other panics to the
    /// hook that was there before.
    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot spawn the child process")]
    fn a_panic_in_a_call_is_not_printed_but_others_are() {
        let exe = std::env::current_exe().unwrap();
        // A cross-built test binary run under qemu-user may not be able to
        // run itself (no binfmt, or no sysroot for its loader): check that
        // it can, with libtest's `--list`; the native run covers the rest.
        let runs = std::process::Command::new(&exe)
            .arg("--list")
            .output()
            .is_ok_and(|o| o.status.success());
        if !runs {
            println!("skipped: this test binary cannot re-run itself here");
            return;
        }
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "ffi::guard::tests::panic_printing_child",
                "--nocapture",
            ])
            .env("LIBRNN_PANIC_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("panic inside a librnn call"), "{stderr}");
        assert!(stderr.contains("panic outside librnn"), "{stderr}");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MESSAGE_CAPACITY);
        let status = guard(|| Err(Failure::invalid(long.clone())));
        assert_eq!(status, rnn_status::RNN_INVALID_ARGUMENT);
        let kept = last_message();
        assert!(kept.len() < MESSAGE_CAPACITY && long.starts_with(&kept));
        guard(|| Err(Failure::invalid("a\0b")));
        assert_eq!(last_message(), "a b");
    }

    #[test]
    fn overlapping_buffers_are_misuse() {
        let buf = [0f32; 8];
        let (a, b) = (buf.as_ptr(), buf.as_ptr().wrapping_add(4));
        assert!(check_disjoint(&[span(a, 4, "a")], &[span(b, 4, "b")]).is_ok());
        let e = check_disjoint(&[span(a, 5, "a")], &[span(b, 4, "b")]).unwrap_err();
        assert_eq!(e.status, rnn_status::RNN_MISUSE);
        assert!(e.message.contains("`a` overlaps `b`"));
        let e = check_disjoint(&[span(a, 8, "a"), span(b, 1, "b")], &[]).unwrap_err();
        assert!(e.message.contains("`a` overlaps `b`"));
        assert!(check_disjoint(&[span(a, 0, "a"), span(a, 8, "b")], &[None]).is_ok());
    }
}
