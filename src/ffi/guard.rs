//! Error handling at the C boundary: status codes, the thread-local last
//! error message, and a guard that turns every failure (including a panic,
//! which must never unwind into C) into a status.

use std::cell::RefCell;
use std::ffi::CString;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

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
    /// Memory could not be allocated (reported for a model's parameters;
    /// other allocation failures abort, as Rust's allocator does by default).
    RNN_OUT_OF_MEMORY = 4,
    /// The request is valid but not supported here (e.g. an ISA this CPU lacks).
    RNN_UNSUPPORTED = 5,
    /// A bug in librnn (a caught panic); the message has the details.
    RNN_INTERNAL = 6,
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
        };
        Failure::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs would truncate the C string; replace them.
    let clean = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = clean);
}

/// Runs `body`, catching panics, and records the outcome for
/// `rnn_last_error_message`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> rnn_status {
    set_last_error("");
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => rnn_status::RNN_OK,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (please report): {what}"));
            rnn_status::RNN_INTERNAL
        }
    }
}

/// Pointer to this thread's last error message ("" after a successful call).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
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
