//! The opaque handles C holds: `rnn_model` and `rnn_trace`.
//!
//! Every handle librnn hands out is registered, and every call looks its
//! argument up before touching it: a destroyed handle, one destroyed twice,
//! a trace passed as a model or a pointer librnn never made is answered with
//! `RNN_MISUSE` instead of reading freed memory. The check is exact except
//! when the allocator has since reused the address for a new handle of the
//! same kind, which it cannot tell from the old one (best effort, as the
//! header says).
//!
//! Handles are reference-counted: a call holds a reference for its whole
//! duration, so a destroy from another thread meanwhile frees the handle only
//! after the call. A model handle holds its model as an `Arc` snapshot: a
//! call runs on the snapshot current when it started, and an update builds a
//! changed copy and then swaps it in, so a concurrent call sees all-old or
//! all-new weights, never freed ones, and a failed update changes nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};

use super::guard::{rnn_status, Failure};
use crate::model::{Model, Trace};

/// An opaque model: configuration plus parameters.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct rnn_model {
    current: RwLock<Arc<Model>>,
    /// Serialises updates (each builds on the one before).
    updates: Mutex<()>,
}

/// An opaque record of a training forward pass, consumed by `rnn_backward`.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct rnn_trace(pub(crate) Trace);

/// The addresses of the live handles of one kind.
pub(crate) struct Registry {
    live: Mutex<BTreeSet<usize>>,
    kind: &'static str,
    created_by: &'static str,
}

static MODELS: Registry = Registry {
    live: Mutex::new(BTreeSet::new()),
    kind: "model",
    created_by: "rnn_model_create or rnn_model_load",
};
static TRACES: Registry = Registry {
    live: Mutex::new(BTreeSet::new()),
    kind: "trace",
    created_by: "rnn_forward_training",
};

/// A handle type and the registry of its live values.
pub(crate) trait Handle: Sized + Send + Sync + 'static {
    fn registry() -> &'static Registry;
}

impl Handle for rnn_model {
    fn registry() -> &'static Registry {
        &MODELS
    }
}

impl Handle for rnn_trace {
    fn registry() -> &'static Registry {
        &TRACES
    }
}

fn misuse(what: &str, registry: &Registry, how: &str) -> Failure {
    Failure::new(
        rnn_status::RNN_MISUSE,
        format!(
            "`{what}` {how}: it is not a live {} handle from {}",
            registry.kind, registry.created_by
        ),
    )
}

impl Registry {
    /// An empty registry of handles of `kind`, made by `created_by`.
    pub(crate) const fn new(kind: &'static str, created_by: &'static str) -> Registry {
        Registry {
            live: Mutex::new(BTreeSet::new()),
            kind,
            created_by,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Registers `value` and returns the pointer C holds.
pub(crate) fn register<T: Handle>(value: T) -> *mut T {
    let ptr = Arc::into_raw(Arc::new(value));
    T::registry().lock().insert(ptr as usize);
    ptr.cast_mut()
}

/// Registers `value` and writes its handle to `*out`, or reports a NULL
/// `out` without registering anything (so that no handle leaks).
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn hand_out<T: Handle>(
    out: *mut *mut T,
    value: T,
    what: &str,
) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL, and writable per the function's contract.
    unsafe { *out = register(value) };
    Ok(())
}

/// A counted reference to the live handle `ptr`, held for one call.
pub(crate) fn acquire<T: Handle>(ptr: *const T, what: &str) -> Result<Arc<T>, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    let registry = T::registry();
    let live = registry.lock();
    if !live.contains(&(ptr as usize)) {
        return Err(misuse(what, registry, "was destroyed or is not a handle"));
    }
    // SAFETY: registered addresses come from Arc::into_raw and keep their
    // reference until `release` removes them, which needs the lock held here.
    unsafe {
        Arc::increment_strong_count(ptr);
        Ok(Arc::from_raw(ptr))
    }
}

/// Unregisters `ptr` and drops the registry's reference (the value is freed
/// once no call holds it). NULL is accepted.
pub(crate) fn release<T: Handle>(ptr: *mut T, what: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Ok(());
    }
    let registry = T::registry();
    let removed = registry.lock().remove(&(ptr as usize));
    if !removed {
        return Err(misuse(
            what,
            registry,
            "was destroyed already or is not a handle",
        ));
    }
    // SAFETY: it was registered, so it holds the reference Arc::into_raw kept.
    drop(unsafe { Arc::from_raw(ptr.cast_const()) });
    Ok(())
}

impl rnn_model {
    pub(crate) fn new(model: Model) -> Self {
        rnn_model {
            current: RwLock::new(Arc::new(model)),
            updates: Mutex::new(()),
        }
    }

    /// The model as it is now; later updates do not change it.
    pub(crate) fn snapshot(&self) -> Arc<Model> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies `change` to a copy of the current model and makes the copy
    /// current if it succeeds; on failure nothing changes (parameters,
    /// packed weights, which traces are valid). Calls running meanwhile
    /// keep the model they started with.
    pub(crate) fn update(
        &self,
        change: impl FnOnce(&mut Model) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let _serial = self.updates.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.snapshot().successor()?;
        change(&mut next)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }
}
