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

/// [`try_zeros_untouched`] for a buffer that one product fills soon after,
/// asking for huge pages where the allocator maps it afresh
/// ([`advise_huge_pages`]): a training call's new parameter gradients. An
/// LSTM with H = 1024 has 32 MiB of them, mapped anew at every call, and a
/// page fault every 4 KiB made a batch-1 training step on one thread
/// 1.35-1.5× as long as one into kept buffers (two sets of rounds); with
/// the advice 1.0-1.07×. Not for every new result: with the advice on all
/// of them (`y` and `dx` too), a forward with a 52 MiB `y` and an LSTM
/// 512×64 training call came out 3-4 % slower in 4 comparisons of 4
/// (within this machine's noise; a huge page's zeroing may run ahead of
/// outputs written step by step).
pub(crate) fn try_zeros_untouched_huge(len: usize, what: &str) -> Result<Vec<f32>> {
    let v = try_zeros_untouched(len, what)?;
    let bytes = std::mem::size_of_val(&v[..]);
    if bytes > FRESHLY_MAPPED {
        advise_huge_pages(v.as_ptr().cast_mut().cast::<u8>(), bytes);
    }
    Ok(v)
}

/// Sizes above which glibc maps every allocation afresh (its largest mmap
/// threshold on 64-bit systems). Smaller buffers come from its heap, whose
/// pages are mapped already: advice there gains nothing (LSTM 512×64, 8
/// MiB of gradients: level) and would mark memory the heap hands out again.
const FRESHLY_MAPPED: usize = 32 << 20;

/// Bytes of a transparent huge page (x86-64 and aarch64 with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// Asks Linux to back the whole huge pages inside `bytes` bytes at `ptr`
/// with huge pages when they are first touched: one fault for 2 MiB
/// instead of one every 4 KiB. Only advice: where the kernel keeps huge
/// pages off, or the memory was touched already, nothing changes.
fn advise_huge_pages(ptr: *mut u8, bytes: usize) {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
        let end = (ptr as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // SAFETY: [start, end) lies inside the allocation at `ptr`, which
            // this process owns; MADV_HUGEPAGE changes how its pages are
            // backed, never their contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    let _ = (ptr, bytes, HUGE_PAGE);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping that holds `addr`, from /proc/self/smaps.
    #[cfg(target_os = "linux")]
    fn vm_flags_at(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut holds = false;
        for line in smaps.lines() {
            let range = line.split_once(' ').and_then(|(r, _)| r.split_once('-'));
            if let Some((a, b)) = range {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    holds = a <= addr && addr < b;
                    continue;
                }
            }
            if let Some(flags) = line.strip_prefix("VmFlags:").filter(|_| holds) {
                return Some(flags.to_string());
            }
        }
        None
    }

    #[cfg(target_os = "linux")]
    fn advised(addr: usize) -> bool {
        vm_flags_at(addr).is_some_and(|f| f.split_whitespace().any(|f| f == "hg"))
    }

    /// Whether this system records MADV_HUGEPAGE (qemu's user mode, for
    /// one, accepts it and does nothing), tried on a mapping of its own.
    #[cfg(target_os = "linux")]
    fn huge_page_advice_is_kept() -> bool {
        let len = 2 * HUGE_PAGE;
        // SAFETY: a new private anonymous mapping, advised and unmapped
        // here; nothing else refers to it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return false;
            }
            let kept = libc::madvise(p, len, libc::MADV_HUGEPAGE) == 0 && advised(p as usize);
            libc::munmap(p, len);
            kept
        }
    }

    /// A large zeroed buffer for a product is all zeros, and where the
    /// system keeps huge-page advice (Linux with transparent huge pages)
    /// its whole huge pages carry it (`hg` among its mapping's `VmFlags`);
    /// one of at most [`FRESHLY_MAPPED`] bytes does not.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri does not run madvise (the advice is compiled out there)"
    )]
    fn large_zeroed_buffers_ask_for_huge_pages() {
        // Floats: past FRESHLY_MAPPED bytes, whole huge pages inside it.
        let len = FRESHLY_MAPPED / 4 + 2 * HUGE_PAGE;
        let v = try_zeros_untouched_huge(len, "a test buffer").unwrap();
        assert_eq!(v.len(), len);
        assert!(v.iter().step_by(1021).all(|&x| x == 0.0));
        #[cfg(target_os = "linux")]
        if huge_page_advice_is_kept() {
            let inside = (v.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
            assert!(advised(inside), "VmFlags:{:?}", vm_flags_at(inside));
            // One the allocator may hand out of its heap is left alone.
            let small = try_zeros_untouched_huge(FRESHLY_MAPPED / 4, "a test buffer").unwrap();
            let inside = (small.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
            assert!(!advised(inside), "VmFlags:{:?}", vm_flags_at(inside));
        }
    }
}
