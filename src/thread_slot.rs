//! A value each thread keeps from one call to its next (a team's places, a
//! kernel's staging buffer), freed when the thread ends, whenever it was
//! first kept.
//!
//! Rust's `thread_local!` cannot promise the last part: a thread-local
//! with a destructor that is first touched while the thread runs its
//! `pthread_key_create` destructors (a C host calling librnn from one, as
//! `tests/c/host.c` does) registers its destructor after glibc ran them,
//! and the value and the registration leak. A POSIX thread-specific key
//! has no such gap: a value set during the destructor rounds makes the
//! thread run another round (up to `PTHREAD_DESTRUCTOR_ITERATIONS`), which
//! frees it. So on Unix a slot is a key of its own, created on first use;
//! elsewhere it is a `thread_local!`, and where no key can be had (the
//! process used up `PTHREAD_KEYS_MAX`) nothing is kept.

/// One value of type `T` per thread: [`take`](ThreadSlot::take) it out,
/// use it, [`keep`](ThreadSlot::keep) it for the thread's next call.
pub(crate) struct ThreadSlot<T: Default + 'static> {
    #[cfg(unix)]
    key: std::sync::OnceLock<Option<libc::pthread_key_t>>,
    #[cfg(not(unix))]
    local: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    #[cfg(unix)]
    _value: std::marker::PhantomData<fn(T) -> T>,
}

#[cfg(unix)]
impl<T: Default + 'static> ThreadSlot<T> {
    /// A slot, its key created when a thread first keeps a value in it.
    pub(crate) const fn new() -> Self {
        ThreadSlot {
            key: std::sync::OnceLock::new(),
            _value: std::marker::PhantomData,
        }
    }

    fn key(&self) -> Option<libc::pthread_key_t> {
        *self.key.get_or_init(|| {
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: `key` is writable; `drop_kept::<T>` frees only what
            // `keep` stored under this key, a `Box<T>` from `into_raw`.
            (unsafe { libc::pthread_key_create(&mut key, Some(drop_kept::<T>)) } == 0)
                .then_some(key)
        })
    }

    /// The box this thread keeps under the key, or null.
    fn kept(&self) -> *mut T {
        match self.key.get().copied().flatten() {
            // SAFETY: a key this slot created; reading a thread's own value
            // has no other precondition.
            Some(key) => unsafe { libc::pthread_getspecific(key) }.cast(),
            None => std::ptr::null_mut(),
        }
    }

    /// The value this thread kept, or `T::default()` where it kept none.
    pub(crate) fn take(&self) -> T {
        let kept = self.kept();
        if kept.is_null() {
            return T::default();
        }
        // SAFETY: non-null values under this key are boxes from `keep`,
        // owned by this thread's slot and used by nothing else meanwhile
        // (no reference to one outlives a `take` or `keep`).
        std::mem::take(unsafe { &mut *kept })
    }

    /// Keeps `value` for this thread's next [`take`](Self::take) (dropping
    /// whatever it kept), to be freed when the thread ends. The box it
    /// lives in is made once per thread.
    pub(crate) fn keep(&self, value: T) {
        let kept = self.kept();
        if !kept.is_null() {
            // SAFETY: as in `take`.
            unsafe { *kept = value };
            return;
        }
        let Some(key) = self.key() else {
            return;
        };
        let boxed = Box::into_raw(Box::new(value));
        // SAFETY: a key this slot created; the box is this thread's until
        // `drop_kept` frees it or the thread stores another (never: a
        // non-null value is reused above).
        if unsafe { libc::pthread_setspecific(key, boxed.cast()) } != 0 {
            // SAFETY: not stored (ENOMEM): still only ours.
            drop(unsafe { Box::from_raw(boxed) });
        }
    }
}

/// A key's destructor: the thread ends (glibc has set its value to null).
#[cfg(unix)]
extern "C" fn drop_kept<T>(value: *mut libc::c_void) {
    // SAFETY: every non-null value under a slot's key is a `Box<T>` from
    // `ThreadSlot::keep`, and the thread calls this once for it.
    drop(unsafe { Box::from_raw(value.cast::<T>()) });
}

#[cfg(not(unix))]
impl<T: Default + 'static> ThreadSlot<T> {
    /// A slot over `local`, a `thread_local!` of its own.
    pub(crate) const fn new_local(
        local: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    ) -> Self {
        ThreadSlot { local }
    }

    pub(crate) fn take(&self) -> T {
        self.local
            .try_with(std::cell::Cell::take)
            .unwrap_or_default()
    }

    pub(crate) fn keep(&self, value: T) {
        let _ = self.local.try_with(|kept| kept.set(value));
    }
}

/// A `static` [`ThreadSlot`] named `$name` of `$ty`.
macro_rules! thread_slot {
    ($(#[$doc:meta])* static $name:ident: $ty:ty) => {
        #[cfg(unix)]
        $(#[$doc])*
        static $name: $crate::thread_slot::ThreadSlot<$ty> = $crate::thread_slot::ThreadSlot::new();
        #[cfg(not(unix))]
        $(#[$doc])*
        static $name: $crate::thread_slot::ThreadSlot<$ty> = {
            thread_local! {
                static LOCAL: std::cell::Cell<$ty> = std::cell::Cell::new(<$ty>::default());
            }
            $crate::thread_slot::ThreadSlot::new_local(&LOCAL)
        };
    };
}
pub(crate) use thread_slot;

#[cfg(test)]
mod tests {

    thread_slot!(static SLOT: Vec<u32>);

    #[test]
    fn a_thread_takes_what_it_kept_and_no_other_thread_does() {
        assert!(SLOT.take().is_empty(), "nothing kept yet");
        SLOT.keep(vec![1, 2, 3]);
        std::thread::spawn(|| {
            assert!(SLOT.take().is_empty(), "another thread's value");
            SLOT.keep(vec![9]);
        })
        .join()
        .unwrap();
        assert_eq!(SLOT.take(), [1, 2, 3]);
        assert!(SLOT.take().is_empty(), "taken");
        SLOT.keep(vec![4]);
        SLOT.keep(vec![5]);
        assert_eq!(
            SLOT.take(),
            [5],
            "the later value kept, the earlier dropped"
        );
    }

    /// Holds a count on an `Arc`, to see a kept value freed when its
    /// thread ends.
    #[derive(Default)]
    struct Counted {
        _alive: Option<std::sync::Arc<()>>,
    }

    thread_slot!(static COUNTED: Counted);

    #[test]
    fn a_kept_value_is_dropped_when_its_thread_ends() {
        let alive = std::sync::Arc::new(());
        let kept = std::sync::Arc::clone(&alive);
        std::thread::spawn(move || COUNTED.keep(Counted { _alive: Some(kept) }))
            .join()
            .unwrap();
        assert_eq!(
            std::sync::Arc::strong_count(&alive),
            1,
            "freed with its thread"
        );
    }
}
