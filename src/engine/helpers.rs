//! Helper threads that a caller keeps from call to call, for teams formed
//! many times a second (a stream's steps).
//!
//! A team is formed per call from the pool's idle workers ([`super::team`]):
//! a hand-off that costs a few µs, and a wake-up of tens of µs where the
//! workers went to sleep since the last call. A long call pays that once; a
//! stream of one-step calls pays it at every step, more than the team saves
//! on a step of 5-20 µs (BENCHMARKS.md: a streamed LSTM H = 256 step took
//! 30-40 µs on two threads through the pool, against 16 on one). [`Helpers`]
//! are threads of the caller's own, each waiting for the next job as a team
//! member waits at a barrier (spinning, then yielding, for [`patience`],
//! then asleep): while [`Helpers::install`]ed on a thread, a team formed
//! there offers its places to them instead of to the pool.
//!
//! Where every helper waits awake ([`Installed::awake`]), the team's roster
//! is fixed before the post: each helper is a member, the caller starts
//! its share at once, and a helper comes a cache-line hand-off later (one
//! that fell asleep in between is woken by the post, and its peers wait
//! for it at their barrier as for a member the OS descheduled). Otherwise
//! the team is formed as any other: its roster is sealed after the same
//! check-in wait, so a helper still asleep (steps far apart) is simply
//! left out of that step. The results are the same bits either way.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::team::{spin_then_yield, wait_until, Padded, Sleepers};
use crate::error::{Error, Result};

/// A job as the helpers see it: a borrowed closure, called with the
/// helper's index among the job's takers, whose lifetime the caller of
/// [`Helpers::run`] guarantees (it returns only after every helper it gave
/// the job to is done with it).
type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// Bits of [`Post::word`] below the generation: how many helpers take the
/// job.
const TAKER_BITS: u32 = 16;

/// The latest job, on a cache line of its own: the helpers spin reading
/// it, and any other write to its line (a reference count, the `done`
/// counter) would take the line from them and back at every step.
#[derive(Default)]
struct Post {
    /// The job's generation (above [`TAKER_BITS`]) and how many helpers
    /// take it (helpers `0..takers`; the others sit it out), stored last
    /// (SeqCst: see [`Sleepers`]). One word, so a helper never sees the
    /// takers of one generation with another's number.
    word: AtomicU64,
    /// Where the caller of [`Installed::run`] holds the job's reference:
    /// valid while that call waits for its takers. Only a taker reads it,
    /// and only for the generation it takes (which cannot end, nor the
    /// next be posted, before that taker is done).
    job: AtomicPtr<&'static Job<'static>>,
}

/// What the caller and its helpers share.
struct Shared {
    /// The helper threads.
    count: usize,
    post: Padded<Post>,
    /// Jobs finished by helpers, over all generations.
    done: Padded<AtomicUsize>,
    /// Set once, when the owner drops the helpers.
    quit: AtomicBool,
    /// Helpers asleep (or about to be).
    sleepers: Sleepers,
    /// Spin phases the helpers started (tests).
    #[cfg(test)]
    spins: AtomicUsize,
}

impl Shared {
    /// The generation posted last.
    fn generation(&self) -> u64 {
        self.post.0.word.load(Ordering::SeqCst) >> TAKER_BITS
    }

    /// Waits until a generation after `seen` is posted: `Some(slept)`,
    /// whether it slept on the way, or `None` once the owner quits. Spins,
    /// yields, then sleeps; with `spin` false it goes straight to sleep (a
    /// helper woken from sleep for a job it does not take). Woken without a
    /// job ([`Helpers::wake`]), it spins again.
    fn wait_for_job(&self, seen: u64, mut spin: bool) -> Option<bool> {
        let quit = &self.quit;
        let posted = || self.generation() != seen;
        let mut slept = false;
        loop {
            if spin {
                #[cfg(test)]
                self.spins.fetch_add(1, Ordering::SeqCst);
                match spin_then_yield(&posted, quit) {
                    Ok(true) => return Some(slept),
                    Ok(false) => {}
                    Err(_) => return None,
                }
            }
            spin = true;
            slept = true;
            self.sleepers.sleep(posted, quit, None);
            if quit.load(Ordering::SeqCst) {
                return None;
            }
            if posted() {
                return Some(slept);
            }
        }
    }

    fn wake_all(&self) {
        if self.sleepers.count() > 0 {
            self.sleepers.wake_all();
        }
    }
}

/// Helper threads kept by one owner (a stream); dropping them ends the
/// threads.
pub(crate) struct Helpers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The process that started the threads: a forked child has none of
    /// them (see [`Helpers::here`]).
    pid: u32,
}

impl std::fmt::Debug for Helpers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Helpers({})", self.threads.len())
    }
}

thread_local! {
    /// The helpers installed on this thread (see [`Helpers::install`]), or
    /// NULL: a pointer, not an `Arc`, so that the thread-local has no
    /// destructor. A call on a thread that is running its TLS destructors
    /// (a C host's, from a `pthread_key_create` destructor) reads it too,
    /// and a thread-local with a destructor first touched there is never
    /// freed (its destructor is registered after they ran).
    static INSTALLED: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
}

/// The helpers installed on this thread, if any: how many there are and a
/// handle to run jobs on them.
pub(crate) struct Installed {
    shared: Arc<Shared>,
    count: usize,
}

/// The helpers a team formed on this thread now may use.
pub(crate) fn installed() -> Option<Installed> {
    let shared = INSTALLED.get();
    if shared.is_null() {
        return None;
    }
    // SAFETY: a non-NULL INSTALLED comes from `Arc::as_ptr` of the helpers
    // that `Helpers::install` borrows, on this thread, until it puts the
    // previous pointer back: their Arc keeps `Shared` alive meanwhile, and
    // this new count keeps it alive for the returned handle after.
    let shared = unsafe {
        Arc::increment_strong_count(shared);
        Arc::from_raw(shared)
    };
    Some(Installed {
        count: shared.count,
        shared,
    })
}

/// How many helpers are installed on this thread (0 if none).
pub(crate) fn installed_count() -> usize {
    let shared = INSTALLED.get();
    // SAFETY: as in `installed`: alive while it is installed here.
    unsafe { shared.as_ref() }.map_or(0, |shared| shared.count)
}

impl Helpers {
    /// `count` helper threads, waiting for jobs.
    pub fn new(count: usize) -> Result<Helpers> {
        // Takers are counted below TAKER_BITS.
        let count = count.min((1 << TAKER_BITS) - 1);
        let shared = Arc::new(Shared {
            count,
            post: Padded::default(),
            done: Padded::default(),
            quit: AtomicBool::new(false),
            sleepers: Sleepers::default(),
            #[cfg(test)]
            spins: AtomicUsize::new(0),
        });
        let mut helpers = Helpers {
            shared,
            threads: Vec::new(),
            pid: crate::threads::process_id(),
        };
        for index in 0..count {
            let shared = Arc::clone(&helpers.shared);
            let thread = std::thread::Builder::new()
                .name(format!("librnn-helper-{index}"))
                .spawn(move || serve(&shared, index))
                .map_err(|e| Error::Internal(format!("could not start a helper thread: {e}")))?;
            // Dropping `helpers` on a later error ends the ones started.
            helpers.threads.push(thread);
        }
        Ok(helpers)
    }

    /// Whether the helper threads exist in this process: after a fork the
    /// child has only the thread that forked, and a step there runs alone
    /// (as a call there builds a fresh pool, see `crate::threads`).
    fn here(&self) -> bool {
        self.pid == crate::threads::process_id()
    }

    /// Whether every helper is asleep (a job would wait for a wake-up).
    pub fn asleep(&self) -> bool {
        self.shared.sleepers.count() >= self.threads.len()
    }

    /// Wakes sleeping helpers without a job: they wait for one again,
    /// spinning first.
    pub fn wake(&self) {
        if self.here() {
            self.shared.wake_all();
        }
    }

    /// Runs `work` with these helpers installed on the calling thread: a
    /// team formed inside offers its places to them.
    pub fn install<R>(&self, work: impl FnOnce() -> R) -> R {
        if !self.here() {
            return work();
        }
        struct Restore(*const Shared);
        impl Drop for Restore {
            fn drop(&mut self) {
                INSTALLED.set(self.0);
            }
        }
        // `self` outlives this call, and with it the Arc behind the pointer.
        let _restore = Restore(INSTALLED.replace(Arc::as_ptr(&self.shared)));
        work()
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        if !self.here() {
            // A forked child: the threads do not exist here (joining or
            // detaching them is undefined) and the lock may have been held
            // at the fork; the memory stays, once per fork.
            std::mem::forget(std::mem::take(&mut self.threads));
            return;
        }
        self.shared.quit.store(true, Ordering::SeqCst);
        self.shared.wake_all();
        for thread in self.threads.drain(..) {
            // A helper's job runs under catch_unwind: it ends normally.
            let _ = thread.join();
        }
    }
}

impl Installed {
    /// Helpers available.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether no helper is asleep or on its way to sleep: each will see
    /// the next post within a cache-line hand-off, unless the OS has taken
    /// its CPU (then it comes as late as a member descheduled at a barrier).
    pub fn awake(&self) -> bool {
        self.shared.sleepers.count() == 0
    }

    /// Runs `job` on `takers` helpers (at most [`count`](Self::count)),
    /// helper `i` calling `job(i)`, while the caller runs `own`, and
    /// returns once all of them are done.
    pub fn run<'a>(&self, takers: usize, job: &'a Job<'a>, own: impl FnOnce()) {
        let takers = takers.min(self.count);
        // SAFETY: the reference is erased to 'static only for the helpers,
        // and this function does not return (nor unwind: `own` runs under
        // catch_unwind below) before every taker has finished with it,
        // after which no helper reads it again (a helper runs the job of a
        // generation once, and the next post replaces it).
        let job = unsafe { std::mem::transmute::<&'a Job<'a>, &'static Job<'static>>(job) };
        let shared = &*self.shared;
        let post = &shared.post.0;
        // Every earlier job is done (its `run` waited), so this count is
        // still: the takers of this one add to it.
        let finished = shared.done.0.load(Ordering::Acquire) + takers;
        post.job
            .store(std::ptr::from_ref(&job).cast_mut(), Ordering::Release);
        let generation = (post.word.load(Ordering::Relaxed) >> TAKER_BITS) + 1;
        post.word
            .store(generation << TAKER_BITS | takers as u64, Ordering::SeqCst);
        shared.wake_all();
        let outcome = catch_unwind(AssertUnwindSafe(own));
        let never = AtomicBool::new(false);
        let all_done = || shared.done.0.load(Ordering::Acquire) >= finished;
        // The takers run the same team as the caller: they finish with it.
        let _ = wait_until(all_done, &never);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// A helper's life: wait for a job, run it if it is one of the takers,
/// report it done; until the owner quits.
fn serve(shared: &Shared, index: usize) {
    let (mut seen, mut spin) = (0, true);
    while let Some(slept) = shared.wait_for_job(seen, spin) {
        let word = shared.post.0.word.load(Ordering::SeqCst);
        let takers = (word & ((1 << TAKER_BITS) - 1)) as usize;
        seen = word >> TAKER_BITS;
        // Not needed this time (the team had fewer places, as when other
        // calls run): a helper that was asleep goes back to sleep rather
        // than spin for nothing.
        spin = !slept || index < takers;
        if index >= takers {
            continue;
        }
        let job = shared.post.0.job.load(Ordering::Acquire);
        // SAFETY: a taker's generation is not over before this helper
        // reports it done below, so the caller is still in `run`, holding
        // the reference `job` points to (see `Post::job`).
        let job = unsafe { *job };
        // A team member reports its own panics; this only keeps a helper
        // alive, and the caller from waiting, whatever happens.
        let _ = catch_unwind(AssertUnwindSafe(|| job(index)));
        shared.done.0.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_taker_runs_each_job_once_and_the_caller_waits_for_them() {
        let helpers = Helpers::new(3).unwrap();
        helpers.install(|| {
            let on = installed().unwrap();
            assert_eq!(on.count(), 3);
            for takers in [0, 1, 2, 3, 3, 1] {
                let runs = AtomicUsize::new(0);
                let own = AtomicBool::new(false);
                on.run(
                    takers,
                    &|_| {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        runs.fetch_add(1, Ordering::SeqCst);
                    },
                    || own.store(true, Ordering::SeqCst),
                );
                assert_eq!(runs.load(Ordering::SeqCst), takers);
                assert!(own.load(Ordering::SeqCst));
            }
        });
        assert!(installed().is_none(), "uninstalled after install returns");
    }

    #[test]
    fn helpers_asleep_wake_for_a_job_and_a_panicking_job_is_contained() {
        let helpers = Helpers::new(1).unwrap();
        // Past any patience: the helper sleeps.
        std::thread::sleep(std::time::Duration::from_millis(5));
        helpers.install(|| {
            let on = installed().unwrap();
            let ran = AtomicUsize::new(0);
            on.run(
                1,
                &|_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                },
                || {},
            );
            assert_eq!(ran.load(Ordering::SeqCst), 1);
            on.run(1, &|_| panic!("a job that panics"), || {});
            on.run(
                1,
                &|_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                },
                || {},
            );
            assert_eq!(ran.load(Ordering::SeqCst), 2, "the helper lives on");
        });
        drop(helpers); // joins the thread, asleep or not
    }

    #[test]
    fn helpers_asleep_that_a_job_does_not_take_sleep_on() {
        let helpers = Helpers::new(3).unwrap();
        let all_asleep = || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !helpers.asleep() {
                assert!(std::time::Instant::now() < deadline, "helpers never slept");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        all_asleep();
        let spins = helpers.shared.spins.load(Ordering::SeqCst);
        helpers.install(|| installed().unwrap().run(1, &|_| {}, || {}));
        all_asleep();
        // The taker spun after its job; the two others (short of a rare
        // spurious wake-up) went back to sleep without spinning.
        let spun = helpers.shared.spins.load(Ordering::SeqCst) - spins;
        assert!((1..3).contains(&spun), "{spun} spin phases");
    }
}
