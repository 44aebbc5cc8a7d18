//! librnn's own worker threads.
//!
//! Every engine call runs inside [`run`], on a rayon pool that librnn owns
//! rather than rayon's global one, for two reasons:
//! - `fork()`: a child process has only the thread that forked, so a pool
//!   made before the fork has no threads there and any call waiting on it
//!   would hang. The pool is tied to the process id that made it; a call in
//!   a child finds a different id and builds a fresh pool. The parent's pool
//!   is left alone (its memory leaks in the child, once; it cannot be torn
//!   down there, as its threads and their locks do not exist).
//! - Panics: worker threads are named `librnn-N`, so a panic on one can be
//!   recognised as librnn's (see `ffi::guard`).
//!
//! An inference call that uses the pool runs on the caller's thread, the
//! first member of its teams, the workers joining
//! ([`run_in_place_unless_alone`]).
//!
//! A call made from inside a rayon pool (one the caller built and entered
//! with `ThreadPool::install`, or librnn's own) runs on that pool, so a
//! caller keeps control of the thread count. Otherwise the size is rayon's
//! default: `RAYON_NUM_THREADS` if set, else one thread per CPU.

#[cfg(all(unix, not(miri)))]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};

const WORKER_PREFIX: &str = "librnn-";

/// This process's id, read once per process: `getpid` is a system call
/// (glibc does not cache it), 0.2 µs on the development VM, and a stream
/// step asks for it once (whether its helper threads exist here). 0 until
/// read, and again in a forked child (see [`forget_pid_in_child`]).
#[cfg(all(unix, not(miri)))]
static PID: AtomicU32 = AtomicU32::new(0);

/// The calling process's id, as `std::process::id()`, without a system call
/// after the first (per process: a forked child reads its own).
#[cfg(all(unix, not(miri)))]
pub(crate) fn process_id() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    static FORK_HANDLER: std::sync::Once = std::sync::Once::new();
    FORK_HANDLER.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic
        // (async-signal-safe), run in the child after each fork.
        let registered = unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) };
        debug_assert_eq!(registered, 0);
    });
    // Cached only once the handler is registered: a fork after this point
    // resets it in the child.
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// The calling process's id (no fork handler to keep a cache right here).
#[cfg(any(miri, not(unix)))]
pub(crate) fn process_id() -> u32 {
    std::process::id()
}

/// Run in a forked child: the parent's id, copied with its memory, is not
/// the child's; nor do the parent's calls ([`ACTIVE_CALLS`]) run there, as
/// only the thread that forked, outside any call, goes on in the child
/// (counted, they would divide the child's threads between calls that do
/// not exist, for good).
#[cfg(all(unix, not(miri)))]
extern "C" fn forget_pid_in_child() {
    PID.store(0, Ordering::Relaxed);
    ACTIVE_CALLS.store(0, Ordering::Relaxed);
}

/// A pool and the process it belongs to.
struct ProcessPool {
    pid: u32,
    pool: rayon::ThreadPool,
    /// The pool this one replaced after a fork (NULL if none): kept
    /// reachable, as it can never be freed in this process.
    #[allow(dead_code)]
    replaced: *mut ProcessPool,
}

/// The current process's pool, or NULL before the first call. Never freed:
/// it lives as long as the process (or, in a forked child, is replaced).
static POOL: AtomicPtr<ProcessPool> = AtomicPtr::new(std::ptr::null_mut());

fn pool() -> Result<&'static rayon::ThreadPool> {
    let pid = process_id();
    let seen = POOL.load(Ordering::Acquire);
    // SAFETY: a non-NULL POOL always points to a leaked, never-freed Box.
    if let Some(current) = unsafe { seen.as_ref() } {
        if current.pid == pid {
            return Ok(&current.pool);
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(own_pool_size())
        .thread_name(|i| format!("{WORKER_PREFIX}{i}"))
        .build()
        .map_err(|e| Error::OutOfMemory {
            what: format!("librnn's worker threads ({e})"),
            bytes: 0,
        })?;
    let fresh = Box::into_raw(Box::new(ProcessPool {
        pid,
        pool,
        replaced: seen,
    }));
    match POOL.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just leaked above, and never freed.
        Ok(_) => Ok(&unsafe { &*fresh }.pool),
        Err(winner) => {
            // Another thread of this process made one first: use that.
            // SAFETY: `fresh` was never shared; `winner` is a leaked Box.
            unsafe {
                drop(Box::from_raw(fresh));
                Ok(&(*winner).pool)
            }
        }
    }
}

/// Engine calls in progress in this process, on any pool.
static ACTIVE_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Counts a call in [`ACTIVE_CALLS`] while it lives.
struct Active;

impl Active {
    fn enter() -> Active {
        ACTIVE_CALLS.fetch_add(1, Ordering::Relaxed);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE_CALLS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Threads of librnn's own pool: `RAYON_NUM_THREADS` if set (and valid),
/// else one per usable CPU, but never more than the usable CPUs. Every
/// thread of a call computes without blocking, so a thread beyond the CPUs
/// can only take time from another: with `RAYON_NUM_THREADS=8` on two CPUs,
/// the six idle workers woken at each call's start and team formation
/// slowed calls by up to 2× (150 context switches per call).
fn own_pool_size() -> usize {
    let asked = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(usize::MAX);
    asked.min(cores())
}

thread_local! {
    /// This thread is running a call inline (see [`run`]): the call has
    /// one thread, and no rayon pool of its own.
    static INLINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Clears [`INLINE`] when an inline call ends, panics included.
struct Inline;

impl Drop for Inline {
    fn drop(&mut self) {
        INLINE.with(|f| f.set(false));
    }
}

/// Runs `work` on librnn's pool (or on the rayon pool the caller is in).
/// A pool of one thread runs it on the caller's thread instead: handing a
/// call to the pool's one worker and waiting for it costs a wake-up per
/// call (measured 5–7 µs, more than a whole step at batch 1, which a
/// stream pays at every step) and gains nothing.
pub(crate) fn run<R: Send>(work: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    run_unless_alone(|_| false, work)
}

/// [`run`], except that where `alone(threads)` says a call given the
/// pool's `threads` threads would use only one of them anyway, `work` runs
/// on the caller's thread ([`run_inline`]), as on a pool of one: handing
/// it to a worker and waiting costs two thread switches (measured on two
/// cores: an LSTM with H = 16 over 200 steps at batch 1 took 100-120 µs
/// through the pool and 40-60 µs on one thread). `alone` is asked even of
/// a pool of one. Inside a rayon pool, or inside an inline call, `work`
/// runs on the current thread.
pub(crate) fn run_unless_alone<R: Send>(
    alone: impl FnOnce(usize) -> bool,
    work: impl FnOnce() -> Result<R> + Send,
) -> Result<R> {
    enter(alone, false, work)
}

/// [`run_unless_alone`] for work whose threads are its teams' members
/// (`team::run_for`) and that forks little else (a forward call): from a
/// thread in no pool, `work` runs on the caller's thread, which becomes
/// its teams' first member while the pool's workers join them ([`scope`]).
/// The call is not handed to a worker and back: one wake-up on the way in
/// instead of two in turn, and none on the way out where the last member
/// is done first (measured on the 2-vCPU Xeon VM: 25-50 µs a call).
/// Every other fork from the caller's thread ([`on_pool`]) is a hand-off
/// of its own, which is why the backward, a dozen products a layer, runs on
/// the pool. Only a call that finds no other call running ([`Active`])
/// runs in place, so at most one at a time: calls that overlap others run
/// on the pool, as concurrent calls share the cores anyway (in place, two
/// to four callers looping over small calls each ran 5-17 % slower, a
/// caller's thread beside the pool's workers), and callers arriving during
/// a call in place queue on the pool, adding no thread of their own.
pub(crate) fn run_in_place_unless_alone<R: Send>(
    alone: impl FnOnce(usize) -> bool,
    work: impl FnOnce() -> Result<R> + Send,
) -> Result<R> {
    enter(alone, true, work)
}

/// [`run_unless_alone`], in place where `may_run_in_place` and no other
/// call runs now ([`run_in_place_unless_alone`]).
fn enter<R: Send>(
    alone: impl FnOnce(usize) -> bool,
    may_run_in_place: bool,
    work: impl FnOnce() -> Result<R> + Send,
) -> Result<R> {
    let here = INLINE.with(std::cell::Cell::get) || in_place();
    if rayon::current_thread_index().is_none() && !here {
        let pool = pool()?;
        let threads = pool.current_num_threads().min(cores());
        if alone(threads) || threads == 1 {
            return run_inline(work);
        }
        let _active = Active::enter();
        // Only a call that finds no other running (the count is this
        // call's from here on, so no two calls both find 1).
        if may_run_in_place && ACTIVE_CALLS.load(Ordering::Relaxed) == 1 {
            let _in_place = InPlace::enter();
            return work();
        }
        return pool.install(work);
    }
    let _active = Active::enter();
    work()
}

thread_local! {
    /// This thread runs a call in place ([`run_in_place_unless_alone`]): a
    /// call nested in it runs here too.
    static IN_PLACE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread runs a call in place now
/// ([`run_in_place_unless_alone`]).
fn in_place() -> bool {
    IN_PLACE.with(std::cell::Cell::get)
}

/// Sets [`IN_PLACE`] while it lives, panics included.
struct InPlace;

impl InPlace {
    fn enter() -> InPlace {
        IN_PLACE.with(|h| h.set(true));
        InPlace
    }
}

impl Drop for InPlace {
    fn drop(&mut self) {
        IN_PLACE.with(|h| h.set(false));
    }
}

/// Runs `op` with a rayon scope whose spawned work runs on the pool this
/// thread is in, else on librnn's own pool, while `op` itself runs on this
/// thread: a team's first member ([`crate::engine`]'s `team::run_for`).
pub(crate) fn scope<'s, R: Send>(op: impl FnOnce(&rayon::Scope<'s>) -> R + Send) -> Result<R> {
    if rayon::current_thread_index().is_some() {
        return Ok(rayon::scope(op));
    }
    Ok(pool()?.in_place_scope(op))
}

/// Runs `work`, which forks rayon work, where that work belongs: on the
/// rayon pool this thread is in, else on librnn's own pool; never on
/// rayon's global pool, which a caller's thread would otherwise fork onto
/// (a second set of threads beside librnn's, and in a program whose own
/// rayon work uses the global pool, librnn's work queued behind it). An
/// error only where librnn's pool cannot be started, before `work` runs.
pub(crate) fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> Result<R> {
    if rayon::current_thread_index().is_some() {
        return Ok(work());
    }
    let pool = pool()?;
    let _active = Active::enter();
    Ok(pool.install(work))
}

/// Runs `work` on the caller's thread as a call of one thread (no team, no
/// hand-off to the pool): for work the engine would give one team member
/// anyway, such as a stream's step at a small batch.
pub(crate) fn run_inline<R>(work: impl FnOnce() -> Result<R>) -> Result<R> {
    let _active = Active::enter();
    if INLINE.with(std::cell::Cell::get) {
        return work();
    }
    INLINE.with(|f| f.set(true));
    let _inline = Inline;
    work()
}

/// How many engine calls are running now, this one included (at least 1).
pub(crate) fn active_calls() -> usize {
    ACTIVE_CALLS.load(Ordering::Relaxed).max(1)
}

/// The CPUs this process may run on (its affinity mask and cgroup quota,
/// as `std::thread::available_parallelism` reads them), read once: a pool
/// with more threads than this cannot run them all at the same time.
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many threads a call made now would use.
pub(crate) fn num_threads() -> usize {
    if INLINE.with(std::cell::Cell::get) {
        return 1;
    }
    if rayon::current_thread_index().is_some() {
        return rayon::current_num_threads();
    }
    pool().map_or(1, rayon::ThreadPool::current_num_threads)
}

/// Whether the current thread is one of librnn's workers.
#[cfg(feature = "capi")]
pub(crate) fn is_worker() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with(WORKER_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that would run alone runs on the caller's thread as a call of
    /// one thread; `alone` is offered the threads the pool could give it.
    #[test]
    fn a_call_that_would_run_alone_runs_on_the_callers_thread() {
        let caller = std::thread::current().id();
        let mut offered = 0;
        let (ran_on, threads_inside) = run_unless_alone(
            |threads| {
                offered = threads;
                true
            },
            || Ok((std::thread::current().id(), num_threads())),
        )
        .unwrap();
        assert_eq!(ran_on, caller);
        assert_eq!(threads_inside, 1);
        assert!((1..=cores()).contains(&offered), "offered {offered}");
        // Otherwise as `run`: on the pool, with its threads.
        let threads = run_unless_alone(|_| false, || Ok(num_threads())).unwrap();
        assert_eq!(threads, pool().unwrap().current_num_threads());
    }

    /// Whether librnn's pool has threads for a team (else every call runs
    /// inline, and nothing runs in place).
    fn pool_has_a_team() -> bool {
        pool().unwrap().current_num_threads().min(cores()) > 1
    }

    /// A call that runs in place, where no other call does: on the caller's
    /// thread, with the pool's threads; its team's other members (spawned
    /// in [`scope`]) on librnn's workers; a call nested in it here.
    #[test]
    fn a_call_in_place_runs_on_the_callers_thread_and_its_members_on_the_pool() {
        if !pool_has_a_team() {
            return;
        }
        let caller = std::thread::current().id();
        let here = || std::thread::current().id();
        let call = || {
            run_in_place_unless_alone(
                |_| false,
                || {
                    let mut member = None;
                    scope(|s| {
                        s.spawn(|_| member = std::thread::current().name().map(str::to_owned))
                    })?;
                    let nested = run_unless_alone(|_| false, || Ok(here()))?;
                    Ok((here(), num_threads(), member, nested))
                },
            )
            .unwrap()
        };
        // Another test's call may hold the place a moment.
        let (ran_on, threads, member, nested) = (0..10_000)
            .map(|_| call())
            .find(|got| got.0 == caller)
            .expect("a call ran in place");
        assert_eq!(threads, pool().unwrap().current_num_threads());
        assert!(
            member
                .as_deref()
                .is_some_and(|n| n.starts_with(WORKER_PREFIX)),
            "{member:?}"
        );
        assert_eq!((ran_on, nested), (caller, caller));
    }

    /// The thread that runs a call made while another call runs on
    /// another thread, in place (`in_place`) or on the pool.
    fn thread_of_a_call_beside_another(in_place: bool) -> Option<String> {
        let (held, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                let other = || {
                    held.wait();
                    release.wait();
                    Ok(())
                };
                match in_place {
                    true => run_in_place_unless_alone(|_| false, other),
                    false => run_unless_alone(|_| false, other),
                }
                .unwrap()
            });
            held.wait();
            let name = run_in_place_unless_alone(
                |_| false,
                || Ok(std::thread::current().name().map(str::to_owned)),
            );
            release.wait();
            name.unwrap()
        })
    }

    /// A call made while another runs, in place or not, runs on the pool;
    /// a call that panics in place gives the place back.
    #[test]
    fn a_call_runs_in_place_only_alone() {
        if !pool_has_a_team() {
            return;
        }
        for in_place in [true, false] {
            let name = thread_of_a_call_beside_another(in_place);
            assert!(
                name.as_deref()
                    .is_some_and(|n| n.starts_with(WORKER_PREFIX)),
                "{name:?} beside a call in place: {in_place}"
            );
        }
        let panicked = std::panic::catch_unwind(|| {
            run_in_place_unless_alone(|_| false, || -> Result<()> { panic!("in place") })
        });
        assert!(panicked.is_err());
        assert!(!IN_PLACE.with(std::cell::Cell::get));
        let caller = std::thread::current().id();
        let in_place = (0..10_000).any(|_| {
            run_in_place_unless_alone(|_| false, || Ok(std::thread::current().id())).unwrap()
                == caller
        });
        assert!(in_place, "the place was given back");
    }

    /// Work that forks runs on librnn's pool from a thread in no pool, and
    /// stays on the caller's pool from one of its threads.
    #[test]
    fn forked_work_runs_on_librnns_pool_or_on_the_callers() {
        let name = || std::thread::current().name().map(str::to_owned);
        let ours = on_pool(name).unwrap();
        assert!(
            ours.as_deref()
                .is_some_and(|n| n.starts_with(WORKER_PREFIX)),
            "{ours:?}"
        );
        let theirs = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "theirs".into())
            .build()
            .unwrap();
        let inside = theirs.install(|| on_pool(name).unwrap());
        assert_eq!(inside.as_deref(), Some("theirs"));
    }
}
