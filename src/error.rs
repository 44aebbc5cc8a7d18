//! The one error type of the Rust API. Every fallible call returns it; nothing in
//! the public API panics on bad input.

use std::fmt;

/// What went wrong, in a form a caller can match on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The configuration is not a valid network (zero sizes, an option the cell
    /// type does not have, a non-finite clip, ...).
    InvalidConfig(String),
    /// A buffer does not have the number of elements its shape requires.
    ShapeMismatch {
        /// Which buffer, e.g. `"x"` or `"h0"`.
        what: &'static str,
        /// Elements the configuration and shape require.
        expected: usize,
        /// Elements the caller passed.
        actual: usize,
    },
    /// An argument is out of range or inconsistent with the others (a sequence
    /// length longer than the sequence, a trace from another model, sizes whose
    /// product overflows `usize`, ...).
    InvalidArgument(String),
    /// A checkpoint could not be read or written, or is corrupt, truncated,
    /// of another version or for another configuration.
    Checkpoint(String),
    /// Memory for a call's buffers, a model's parameters or its packed
    /// weights could not be allocated. Nothing was changed: the model stays
    /// usable, e.g. for a call with a smaller batch.
    OutOfMemory {
        /// What the memory was for, e.g. `"the input projection"`.
        what: String,
        /// How many bytes were asked for.
        bytes: usize,
    },
    /// A bug inside librnn (a panic on one of the threads running the call)
    /// was caught and the call abandoned; the message says where. The model
    /// is unchanged and stays usable.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig(msg) => write!(f, "invalid configuration: {msg}"),
            Error::ShapeMismatch {
                what,
                expected,
                actual,
            } => write!(
                f,
                "shape mismatch: `{what}` must hold {expected} elements, got {actual}"
            ),
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::Checkpoint(msg) => write!(f, "checkpoint: {msg}"),
            Error::OutOfMemory { what, bytes } => {
                write!(f, "out of memory: cannot allocate {bytes} bytes for {what}")
            }
            Error::Internal(msg) => write!(f, "internal error: {msg}"),
        }
    }
}

impl std::error::Error for Error {}

/// The message of a caught panic's payload (a `&str` or a `String`, as
/// `panic!` makes), or `unknown` for any other payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send), unknown: &str) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| unknown.to_string())
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks that `actual == expected` for the buffer named `what`.
pub(crate) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected,
            actual,
        })
    }
}

/// Multiplies sizes, reporting overflow as an error instead of wrapping.
pub(crate) fn checked_product(what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| Error::InvalidArgument(format!("the size of `{what}` overflows usize")))
}

/// A vector of `len` copies of `value`, or [`Error::OutOfMemory`] naming
/// `what` if the memory cannot be had (instead of aborting the process).
pub(crate) fn try_vec<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = try_with_capacity(len, what)?;
    v.resize(len, value);
    Ok(v)
}

/// Makes room in `v` for `len` elements in all, fallibly.
pub(crate) fn try_grow<T>(v: &mut Vec<T>, len: usize, what: &str) -> Result<()> {
    let extra = len.saturating_sub(v.len());
    v.try_reserve_exact(extra).map_err(|_| Error::OutOfMemory {
        what: what.to_string(),
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    })
}

/// A copy of `values`, fallibly.
pub(crate) fn try_copy<T: Clone>(values: &[T], what: &str) -> Result<Vec<T>> {
    let mut v = try_with_capacity(values.len(), what)?;
    v.extend_from_slice(values);
    Ok(v)
}

/// An empty vector with room for `len` elements, fallibly.
pub(crate) fn try_with_capacity<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_grow(&mut v, len, what)?;
    Ok(v)
}

/// `len` zeros, fallibly, in memory this thread has not written: fresh
/// pages come zeroed from the kernel (`calloc`), so a buffer that is then
/// filled once is written once, and its pages are mapped by whoever writes
/// them first.
pub(crate) fn try_zeros_untouched(len: usize, what: &str) -> Result<Vec<f32>> {
    let oom = || Error::OutOfMemory {
        what: what.to_string(),
        bytes: len.saturating_mul(std::mem::size_of::<f32>()),
    };
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(len).map_err(|_| oom())?;
    // SAFETY: `layout` has a non-zero size (len > 0, f32 is 4 bytes).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
    if ptr.is_null() {
        return Err(oom());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of
    // `len` f32s, which is what a Vec of capacity `len` frees with; all
    // `len` elements are initialised, as zero bits are 0.0.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}
