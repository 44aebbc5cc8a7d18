//! The thread team: one parallel region over every time step of a layer.
//!
//! A recurrence is a chain of small steps (5–50 µs each at batch 1–8), too
//! short for a fork and a join per step. Instead a *team* of threads is
//! formed once per layer: every member owns a fixed share of the work —
//! a direction, a block of batch rows and a contiguous range of hidden-unit
//! panels (all gates of those units, and the matching slice of the packed
//! weights, which then stays in that core's cache from step to step) — and
//! the members of one block exchange the new state through shared buffers,
//! meeting at a spin [`Barrier`] once per step (twice where a cell reads
//! every unit of an intermediate: reset-before-matmul GRU, LSTM projection).
//!
//! Forming a team never waits on a thread that is busy elsewhere: the
//! caller offers `wanted − 1` places as rayon jobs and waits a short while
//! ([`check_in`]) for idle workers to take them; then the roster is sealed,
//! late jobs do nothing, and the work is split over the members that came
//! (one, the caller, at worst). A member never blocks on anything but its
//! team's barriers, and every member of a barrier is running, so a team
//! cannot deadlock. (In a wavefront of layers, [`run_layers`], a member
//! also waits for the members of the layer below, which never wait for a
//! layer above them.) The team is sized by the cores the call can have:
//! [`capacity`] divides `min(pool threads, usable CPUs)` by the engine
//! calls running at once, so an oversubscribed pool (`RAYON_NUM_THREADS`
//! above the CPU count) or concurrent calls do not spin against each other.
//!
//! A team whose members stall on each other — a quarter of its barrier
//! waits slept and outlasted the waiter's own work, as when another process
//! takes turns on a member's core — runs at the pace of its descheduled
//! members, so for a spell the next calls run on a team without as many
//! members as held that one up ([`capacity`]: the members that arrived last
//! at barriers where others had gone to sleep; on two cores, one thread),
//! then try a whole team again. The spell starts at 10 ms and doubles while
//! teams keep stalling, up to 200 ms, and halves after each whole team that
//! did not stall: a core taken for a moment costs a few calls, one taken
//! for good costs one stalled call in 200 ms.
//!
//! Results do not depend on the split: every output element is computed by
//! the same single FMA chain whichever member computes it (see
//! `kernels::fused::tile`), so the bits are the same for any team size.
//!
//! A panic or an error in one member poisons the team: the others leave
//! their barriers, and the call returns the first error (a panic as
//! [`Error::Internal`]) on the calling thread.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::split_cost;
use super::{helpers, placement};
use crate::error::{panic_message, try_with_capacity, Error, Result};

/// The shortest the caller waits for idle workers to join its team; it
/// waits as long as a member would at a barrier where that is longer
/// ([`check_in`]).
const CHECK_IN: Duration = Duration::from_micros(100);

/// The longest the caller waits for idle workers to join its team.
const CHECK_IN_MAX: Duration = Duration::from_millis(4);

/// A bound above any one core's multiply-add rate today (f32 FMA lanes,
/// and the bf16 and int8 dot products' pairs and quads): `macs / this`
/// understates how long a call would run on one thread.
const CORE_MACS_PER_SECOND_BOUND: f64 = 3e11;

/// How long the caller waits for idle workers to join a team for `macs`
/// multiply-adds: as long as a member would at a barrier ([`patience`],
/// at least [`CHECK_IN`]: a worker asleep takes a wake-up to come), and up
/// to a 16th of what the call would take alone (at most [`CHECK_IN_MAX`]),
/// for a member that comes too late leaves the whole call to fewer: on the
/// 2-core VM 4 of 12 LSTM 1024×32×50 calls ran alone, twice as long, with
/// workers taking 20 to over 100 µs to join against a fixed 100 µs wait;
/// later, with the host busier, 14 of 270 GRU 1024×32×50 joins took
/// 0.3-5.7 ms, and a process whose calls kept missing a 262 µs wait ran
/// at one thread's speed. (`alone` understates the time about tenfold:
/// 16.7 ms for that call of 100-200 ms, which now waits up to 1 ms.)
fn check_in(macs: usize) -> Duration {
    let least = patience().max(CHECK_IN);
    let alone = Duration::from_secs_f64(macs as f64 / CORE_MACS_PER_SECOND_BOUND);
    (alone / 16).clamp(least, CHECK_IN_MAX.max(least))
}

/// How long a waiting member spins before it starts yielding: long enough
/// to cover the imbalance of a step between cores that are all running.
const SPIN: Duration = Duration::from_micros(20);

/// The bounds of a member's whole wait before it sleeps ([`patience`]):
/// at least [`SPIN`], and short enough that a member whose peer was
/// descheduled (another process on its core) gives its core up quickly.
const PATIENCE_MAX: Duration = Duration::from_micros(250);

/// The wake-up latency measured so far (an average over the latest
/// wake-ups, nanoseconds; see [`note_wake_up`]), at first 50 µs, what a
/// virtual machine's halted virtual CPU takes.
static WAKE_UP_NANOS: AtomicU64 = AtomicU64::new(50_000);

/// How long a member waits at a barrier, spinning then yielding, before it
/// sleeps: twice what a wake-up takes here ([`WAKE_UP_NANOS`]), within
/// [`SPIN`]..[`PATIENCE_MAX`]. Waiting less than a wake-up costs is a
/// loss twice over: the sleeper is late at the next barrier by its
/// wake-up, so the member that woke it spins out and sleeps in turn, and
/// every step pays a wake-up (measured on the 2-core VM: 60 µs steps
/// instead of 8 with a 20 µs spin and 40-50 µs wake-ups; BENCHMARKS.md,
/// "Team members on one CPU").
fn patience() -> Duration {
    patience_after(WAKE_UP_NANOS.load(Ordering::Relaxed))
}

/// [`patience`] where a wake-up takes `wake_up` nanoseconds.
fn patience_after(wake_up: u64) -> Duration {
    Duration::from_nanos(wake_up.saturating_mul(2)).clamp(SPIN, PATIENCE_MAX)
}

/// Folds one measured wake-up latency into [`WAKE_UP_NANOS`] (a lost race
/// between two updates loses a sample, which does not matter).
fn note_wake_up(nanos: u64) {
    let average = WAKE_UP_NANOS.load(Ordering::Relaxed);
    WAKE_UP_NANOS.store(wake_up_average(average, nanos), Ordering::Relaxed);
}

/// The wake-up average after one more sample: an exponential average with
/// weight 1/8, of samples cut at [`PATIENCE_MAX`] (a member descheduled for
/// milliseconds says nothing of wake-ups).
fn wake_up_average(average: u64, sample: u64) -> u64 {
    let sample = sample.min(u64::try_from(PATIENCE_MAX.as_nanos()).unwrap_or(u64::MAX));
    average - average / 8 + sample / 8
}

/// One cache line pair per counter, so members spinning on one line do not
/// slow the writes to another (adjacent-line prefetch pairs lines).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(super) struct Padded<T>(pub(super) T);

/// A reusable barrier: generation counting (the sense reversal of a
/// centralised barrier), bounded spinning, then blocking.
///
/// A waiter spins for [`SPIN`], spins and yields until its [`patience`]
/// runs out (a yield lets a member that the OS placed on the same CPU
/// run), then sleeps on a condition variable: a sleeping member leaves its
/// core idle, so the OS moves a member that was descheduled (another
/// process on its core) there at once, where a spinning or yielding one
/// would keep the core busy and the team stalled.
#[derive(Debug, Default)]
pub(crate) struct Barrier {
    arrived: Padded<AtomicUsize>,
    generation: Padded<AtomicUsize>,
    /// Waiters asleep (or about to be).
    sleepers: Sleepers,
    /// When (nanoseconds after [`epoch`]) the last arrival last woke
    /// sleepers: a woken sleeper measures its wake-up from it.
    woken_at: AtomicU64,
}

/// Threads asleep until a condition holds, and the means to wake them:
/// the waiters of a [`Barrier`], and idle helpers
/// ([`super::helpers`]). A sleeper counts itself before it looks at its
/// condition a last time, and a waker makes the condition true before it
/// looks at the count (both SeqCst): either the sleeper sees the condition
/// or the waker sees the sleeper and wakes it under the lock.
#[derive(Debug, Default)]
pub(super) struct Sleepers {
    count: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Sleepers {
    /// Sleeps once unless `done()` or `stop` holds: until woken, or for at
    /// most `nap`.
    pub(super) fn sleep(&self, done: impl Fn() -> bool, stop: &AtomicBool, nap: Option<Duration>) {
        self.count.fetch_add(1, Ordering::SeqCst);
        let held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !done() && !stop.load(Ordering::SeqCst) {
            // The guard, or a poisoned lock's, is dropped at once either way.
            match nap {
                Some(nap) => drop(self.wake.wait_timeout(held, nap)),
                None => drop(self.wake.wait(held)),
            }
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sleeps until `done`, in naps of [`NAP`] at most (to look at
    /// `poison` in between); an error if the team was poisoned first.
    fn sleep_until(
        &self,
        done: impl Fn() -> bool,
        poison: &AtomicBool,
    ) -> std::result::Result<(), Poisoned> {
        loop {
            self.sleep(&done, poison, Some(NAP));
            if done() {
                return Ok(());
            }
            if poison.load(Ordering::Relaxed) {
                return Err(Poisoned);
            }
        }
    }

    /// How many sleep (or are about to).
    pub(super) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Wakes every sleeper (call after making their condition true).
    pub(super) fn wake_all(&self) {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }
}

/// A member left a barrier because the team was poisoned.
#[derive(Debug)]
pub(super) struct Poisoned;

impl From<Poisoned> for Error {
    fn from(_: Poisoned) -> Error {
        Error::Internal("the call's thread team was abandoned".into())
    }
}

/// How a member's wait at a barrier went.
#[derive(Debug, Default, Clone, Copy)]
struct Arrival {
    /// It spun out and slept: the others kept it waiting.
    slept: bool,
    /// It arrived last and found others asleep: it kept them waiting.
    held_up: bool,
}

/// How long a sleeping waiter sleeps before it looks at the poison flag.
const NAP: Duration = Duration::from_millis(1);

impl Barrier {
    /// Waits until `parties` members (this one included) have arrived.
    fn wait(&self, parties: usize, poison: &AtomicBool) -> std::result::Result<Arrival, Poisoned> {
        if parties <= 1 {
            return Ok(Arrival::default());
        }
        // Read before arriving: the last arrival can only advance the
        // generation after this member's arrival, so after this load.
        let generation = self.generation.0.load(Ordering::Acquire);
        if self.arrived.0.fetch_add(1, Ordering::AcqRel) + 1 == parties {
            self.arrived.0.store(0, Ordering::Relaxed);
            // SeqCst with the sleepers load, against a waiter's SeqCst
            // increment and load (either it sees the new generation or this
            // sees it asleep and wakes it under the lock).
            self.generation
                .0
                .store(generation.wrapping_add(1), Ordering::SeqCst);
            let held_up = self.sleepers.count() > 0;
            if held_up {
                self.woken_at.store(nanos_now(), Ordering::Relaxed);
                self.sleepers.wake_all();
            }
            return Ok(Arrival {
                slept: false,
                held_up,
            });
        }
        let passed = || self.generation.0.load(Ordering::SeqCst) != generation;
        if spin_then_yield(&passed, poison)? {
            return Ok(Arrival::default());
        }
        let asleep = nanos_now();
        self.sleepers.sleep_until(passed, poison)?;
        // After a notify the lock orders the waker's store before this
        // load; a stale time is older than `asleep`, skipped.
        let woken_at = self.woken_at.load(Ordering::Relaxed);
        if woken_at >= asleep {
            note_wake_up(nanos_now().saturating_sub(woken_at));
        }
        Ok(Arrival {
            slept: true,
            held_up: false,
        })
    }
}

/// A waiter's wait before it sleeps: spins for [`SPIN`], then spins and
/// yields until its [`patience`] runs out. Whether `done` came first.
pub(super) fn spin_then_yield(
    done: &impl Fn() -> bool,
    poison: &AtomicBool,
) -> std::result::Result<bool, Poisoned> {
    Ok(spin_until(done, poison, SPIN, false)?
        || spin_until(done, poison, patience().saturating_sub(SPIN), true)?)
}

/// Spins for up to `time` until `done` (true) or the team is poisoned;
/// false if the time ran out first. `yielding`: yields the CPU between
/// checks of the clock, for a thread that the OS placed on this CPU.
fn spin_until(
    done: &impl Fn() -> bool,
    poison: &AtomicBool,
    time: Duration,
    yielding: bool,
) -> std::result::Result<bool, Poisoned> {
    let mut start = None;
    let mut spins = 0u32;
    loop {
        if done() {
            return Ok(true);
        }
        if poison.load(Ordering::Relaxed) {
            return Err(Poisoned);
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        if start.get_or_insert_with(Instant::now).elapsed() >= time {
            return Ok(false);
        }
        if yielding {
            std::thread::yield_now();
        }
    }
}

/// Spins, then yields, until `done` (for the short wait for a seal).
pub(super) fn wait_until(
    done: impl Fn() -> bool,
    poison: &AtomicBool,
) -> std::result::Result<(), Poisoned> {
    while !spin_until(&done, poison, SPIN, false)? {
        std::thread::yield_now();
    }
    Ok(())
}

/// The roster's "sealed" bit; the bits below count the members that joined
/// besides the caller.
const SEALED: usize = 1 << (usize::BITS - 1);

/// What the members of one team share.
struct TeamState {
    roster: AtomicUsize,
    poison: AtomicBool,
    /// One per member (indexed by member, or by the group a member leads).
    places: Places,
    /// The first error or panic of any member.
    error: Mutex<Option<Error>>,
    /// Barrier waits of all members, and those that were stalls (see
    /// [`Member::barrier`]).
    waits: AtomicUsize,
    stalls: AtomicUsize,
}

/// What a team keeps per member.
#[derive(Debug, Default)]
struct Place {
    /// The barrier of the group this member leads (see [`Share::group`]).
    barrier: Barrier,
    /// Its claims on its own chunks of the current phase (see
    /// [`Member::share_out`]), tagged with the phase's epoch.
    claim: Padded<AtomicUsize>,
    /// The barriers it arrived at last, with others asleep.
    held_up: AtomicUsize,
    /// The CPU it was on at its latest barrier (see [`Member::spread`]).
    cpu: AtomicUsize,
    /// In a wavefront, how far it got ([`progress_mark`]), and the members
    /// of the next layer asleep until it gets further.
    progress: Padded<AtomicU64>,
    progress_sleepers: Sleepers,
}

impl Place {
    /// As new, for another team. Nothing else uses it any more: the team
    /// that used it last has returned, all its members with it.
    fn reset(&mut self) {
        *self.barrier.arrived.0.get_mut() = 0;
        debug_assert_eq!(self.barrier.sleepers.count(), 0);
        *self.claim.0.get_mut() = 0;
        *self.held_up.get_mut() = 0;
        *self.cpu.get_mut() = placement::UNKNOWN;
        *self.progress.0.get_mut() = 0;
        debug_assert_eq!(self.progress_sleepers.count(), 0);
    }
}

crate::thread_slot::thread_slot!(
    /// The places of the latest team this thread led, kept for its next:
    /// a call of a few microseconds (a stream's step) would otherwise
    /// spend a tenth of its set-up allocating them. A thread slot, not a
    /// `thread_local!`: a call from a C thread's TLS destructor keeps them
    /// too, and they are freed with the thread all the same.
    static SPARE_PLACES: Vec<Place>
);

/// A team's `count` places: the thread's spare ones where there are
/// enough (a nested call finds none and allocates its own), reset; back to
/// the thread on drop.
struct Places {
    all: Vec<Place>,
    count: usize,
}

impl Places {
    fn new(count: usize) -> Result<Places> {
        let mut all = SPARE_PLACES.take();
        if all.len() < count {
            all = try_with_capacity(count, "the thread team")?;
            all.resize_with(count, Place::default);
        }
        all[..count].iter_mut().for_each(Place::reset);
        Ok(Places { all, count })
    }
}

impl std::ops::Deref for Places {
    type Target = [Place];
    /// This team's places only (a larger spare's others were not reset).
    fn deref(&self) -> &[Place] {
        &self.all[..self.count]
    }
}

impl Drop for Places {
    fn drop(&mut self) {
        SPARE_PLACES.keep(std::mem::take(&mut self.all));
    }
}

impl TeamState {
    fn new(places: usize) -> Result<TeamState> {
        Ok(TeamState {
            roster: AtomicUsize::new(0),
            poison: AtomicBool::new(false),
            places: Places::new(places)?,
            error: Mutex::new(None),
            waits: AtomicUsize::new(0),
            stalls: AtomicUsize::new(0),
        })
    }

    /// Members of the team once the roster is sealed: the caller and the
    /// workers that joined.
    fn size(&self) -> usize {
        1 + (self.roster.load(Ordering::Acquire) & !SEALED)
    }

    /// Records `e` unless an earlier error is there, then poisons the team.
    fn fail(&self, e: Error) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
        self.poison.store(true, Ordering::Release);
    }

    fn run_member(&self, index: usize, size: usize, work: &(dyn Fn(&Member) -> Result<()> + Sync)) {
        let member = Member::new(index, size, self);
        member.spread();
        let outcome = catch_unwind(AssertUnwindSafe(|| work(&member)));
        member.report_waits();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail(e),
            Err(panic) => {
                let what = panic_message(&*panic, "a panic without a message");
                self.fail(Error::Internal(format!(
                    "a thread of the call panicked: {what}"
                )));
            }
        }
    }
}

/// One member of a running team.
pub(crate) struct Member<'a> {
    /// 0 (the caller) .. size.
    pub index: usize,
    /// How many members the team has.
    pub size: usize,
    state: &'a TeamState,
    /// When this member last left a barrier (or started); none in a team
    /// of one, which meets no barrier (a stream's step on one thread would
    /// read the clock for nothing).
    since: Cell<Option<Instant>>,
    /// Its barrier waits, and the stalls among them: waits that outlasted
    /// the spin and this member's own work since its previous barrier, so a
    /// peer took more than twice as long for the same share.
    waits: Cell<usize>,
    stalls: Cell<usize>,
    /// The barriers it arrived at last while others slept.
    held_up: Cell<usize>,
    /// It shared a CPU with another member and could not move.
    stuck: Cell<bool>,
}

impl<'a> Member<'a> {
    fn new(index: usize, size: usize, state: &'a TeamState) -> Self {
        Member {
            index,
            size,
            state,
            since: Cell::new((size > 1).then(Instant::now)),
            waits: Cell::new(0),
            stalls: Cell::new(0),
            held_up: Cell::new(0),
            stuck: Cell::new(false),
        }
    }

    /// Adds this member's barrier waits, stalls and hold-ups to the
    /// team's counts, those above zero only: a member that met no barrier
    /// (a stream's one-step share) then writes no line that the others
    /// write too, each of which would cross between cores at the team's
    /// end (a line costs ~75 ns each way between the Xeon VM's cores).
    fn report_waits(&self) {
        let add = |counter: &AtomicUsize, count: usize| {
            if count > 0 {
                counter.fetch_add(count, Ordering::Relaxed);
            }
        };
        add(&self.state.waits, self.waits.get());
        add(&self.state.stalls, self.stalls.get());
        add(&self.state.places[self.index].held_up, self.held_up.get());
    }

    /// Waits for the `parties` members of `group` (an index below `size`,
    /// the same for all of them) to arrive; an error if the team was
    /// poisoned meanwhile (another member failed: the call is abandoned).
    pub fn barrier(&self, group: usize, parties: usize) -> Result<()> {
        if parties <= 1 {
            // No barrier, but a step: a member alone in its group (batch
            // blocks) would otherwise never look at where it runs again.
            self.spread();
            return Ok(());
        }
        let arrived = Instant::now();
        let arrival = self.state.places[group]
            .barrier
            .wait(parties, &self.state.poison)?;
        let left = Instant::now();
        self.waits.set(self.waits.get() + 1);
        if arrival.held_up {
            self.held_up.set(self.held_up.get() + 1);
        }
        let worked = self
            .since
            .get()
            .map_or(Duration::ZERO, |since| arrived - since);
        if arrival.slept && left - arrived > worked {
            self.stalls.set(self.stalls.get() + 1);
        }
        // A move is not this member's work: its peers do not wait for it.
        let moved = self.spread();
        self.since
            .set(Some(if moved { Instant::now() } else { left }));
        Ok(())
    }

    /// Notes the CPU this member runs on, and moves it to another if a
    /// member of lower index was there at its latest barrier: members on
    /// one CPU run one at a time, each waking the other at every barrier
    /// ([`placement`] says why the OS puts them there). Called as a member
    /// starts and after each of its barriers; a member that could not move
    /// (every CPU it may use has a member) stops trying for the call.
    /// Whether it moved.
    fn spread(&self) -> bool {
        if self.size <= 1 {
            return false; // Alone: no one to share a CPU with.
        }
        let cpus = &self.state.places[..self.size];
        let mut here = placement::current_cpu();
        let mut moved = false;
        let crowded = |cpu: usize| {
            cpus[..self.index]
                .iter()
                .any(|c| c.cpu.load(Ordering::Relaxed) == cpu)
        };
        #[cfg(test)]
        if tests::STAY_PUT.load(Ordering::Relaxed) {
            self.stuck.set(true);
        }
        if here != placement::UNKNOWN && !self.stuck.get() && crowded(here) {
            let others = (0..self.size)
                .filter(|&m| m != self.index)
                .map(|m| cpus[m].cpu.load(Ordering::Relaxed));
            match placement::move_off(others) {
                Some(there) => (here, moved) = (there, true),
                None => self.stuck.set(true),
            }
        }
        // Stored only when it changed: the others read it at every barrier,
        // and a store would take the line from them each time.
        if cpus[self.index].cpu.load(Ordering::Relaxed) != here {
            cpus[self.index].cpu.store(here, Ordering::Relaxed);
        }
        moved
    }
}

/// Bits of a claim counter below its epoch: the claims of one phase.
const CLAIM_BITS: u32 = usize::BITS / 2;

impl Member<'_> {
    /// Runs `work(first, end)` on chunks (of `chunk` items) of `count` items
    /// that the `parts` of `share`'s group divide between them for one
    /// phase of a step: each part owns a contiguous run of chunks and takes
    /// those first (so in the usual, balanced case every member keeps
    /// computing the same units, with their weights in its cache), then
    /// takes what the others have not yet claimed, so that a member
    /// descheduled by the OS (another process on its core) or slowed
    /// otherwise does not hold the whole team back.
    ///
    /// `epoch` numbers the calls: every part calls with the same epochs in
    /// the same order, starting at 1, with a barrier between two calls (so
    /// a chunk is never claimed twice: a stale counter carries an older
    /// epoch). Whichever member computes a chunk, its bits are the same.
    pub fn share_out(
        &self,
        share: &Share,
        epoch: usize,
        count: usize,
        chunk: usize,
        mut work: impl FnMut((usize, usize)),
    ) {
        let chunk = chunk.max(1);
        if share.parts == 1 {
            if count > 0 {
                work((0, count));
            }
            return;
        }
        let chunks = count.div_ceil(chunk);
        let parts = share.parts;
        let tag = epoch << CLAIM_BITS;
        let counter = |p: usize| &self.state.places[share.group + p].claim.0;
        counter(share.part).store(tag, Ordering::Release);
        for k in 0..parts {
            let p = (share.part + k) % parts;
            let (first, end) = (chunks * p / parts, chunks * (p + 1) / parts);
            loop {
                let claim = counter(p).fetch_add(1, Ordering::AcqRel);
                if claim >> CLAIM_BITS != epoch {
                    break; // Its owner has not started this phase yet.
                }
                let c = first + (claim & ((1 << CLAIM_BITS) - 1));
                if c >= end {
                    break;
                }
                work((c * chunk, ((c + 1) * chunk).min(count)));
            }
        }
    }
}

/// The shortest and the longest spell of smaller teams after a team
/// stalled (see [`next_spell`]).
const SPELL_MIN: Duration = Duration::from_millis(10);
const SPELL_MAX: Duration = Duration::from_millis(200);

/// The length of the latest spell, in nanoseconds (0: teams run).
static SPELL_NANOS: AtomicU64 = AtomicU64::new(0);

/// Until when (nanoseconds after [`epoch`]) teams have at most
/// [`SPELL_MEMBERS`] members: a team whose members stalled on each other
/// (another process on their cores) runs at the pace of the descheduled
/// ones, only less predictably.
static SPELL_UNTIL: AtomicU64 = AtomicU64::new(0);

/// The members a team may have during the spell: the stalled team's, less
/// those that held it up (at least one).
static SPELL_MEMBERS: AtomicUsize = AtomicUsize::new(1);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_now() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Whether a recent team stalled (see [`SPELL_UNTIL`]).
fn contended() -> bool {
    let until = SPELL_UNTIL.load(Ordering::Relaxed);
    until != 0 && nanos_now() < until
}

/// The next spell of smaller teams, in nanoseconds, after one of
/// `previous` and a team that `stalled`: the first is [`SPELL_MIN`], each
/// stalled team doubles it up to [`SPELL_MAX`], each team that ran freely
/// halves it (and below [`SPELL_MIN`], teams run with no spell).
///
/// Measured on 2 cores with another process on one of them (BENCHMARKS.md,
/// "Stalled teams"): a fixed 200 ms spell let a 5 % share of a core,
/// in 5 ms bursts, push a 2-thread call from 1.4 to 1.7-1.8 ms, while a
/// core taken for good needs the long spells.
fn next_spell(previous: u64, stalled: bool) -> u64 {
    let (min, max) = (
        u64::try_from(SPELL_MIN.as_nanos()).unwrap_or(u64::MAX),
        u64::try_from(SPELL_MAX.as_nanos()).unwrap_or(u64::MAX),
    );
    match (stalled, previous) {
        (true, 0) => min,
        (true, p) => p.saturating_mul(2).clamp(min, max),
        (false, p) if p / 2 >= min => p / 2,
        (false, _) => 0,
    }
}

/// The members of a team that held it up: those that arrived last at a
/// quarter or more of its barriers where others had gone to sleep (at
/// least one, even where the hold-ups were spread thin).
fn laggards(state: &TeamState, size: usize) -> usize {
    let held = || {
        state.places[..size]
            .iter()
            .map(|p| p.held_up.load(Ordering::Relaxed))
    };
    let total: usize = held().sum();
    held().filter(|&h| h > 0 && h * 4 >= total).count().max(1)
}

/// After a team of `size` members (formed during a spell: `in_spell`) and
/// at least 16 barrier waits: if a quarter or more were stalls, teams
/// have at most `size` less its laggards ([`laggards`]) members for the
/// next spell ([`next_spell`]); a whole team that did not stall shortens
/// the next spell.
fn note_stalls(state: &TeamState, size: usize, in_spell: bool) {
    let (waits, stalls) = (
        state.waits.load(Ordering::Relaxed),
        state.stalls.load(Ordering::Relaxed),
    );
    if waits < 16 {
        return;
    }
    let stalled = stalls * 4 >= waits;
    if !stalled && in_spell {
        // A smaller team running freely says nothing about a whole one.
        return;
    }
    let spell = next_spell(SPELL_NANOS.load(Ordering::Relaxed), stalled);
    SPELL_NANOS.store(spell, Ordering::Relaxed);
    let members = stalled.then(|| size.saturating_sub(laggards(state, size)).max(1));
    if let Some(members) = members {
        SPELL_MEMBERS.store(members, Ordering::Relaxed);
        SPELL_UNTIL.store(nanos_now().saturating_add(spell), Ordering::Relaxed);
    }
    #[cfg(test)]
    tests::VERDICT.with(|v| v.set(Some((spell, members))));
}

/// The team size a call can have now: the pool's threads, at most one per
/// usable CPU, shared between the engine calls running at the same time,
/// and during a spell after a stalled team at most [`SPELL_MEMBERS`].
pub(crate) fn capacity() -> usize {
    capacity_and_spell().0
}

/// [`capacity`], and whether a spell is on.
fn capacity_and_spell() -> (usize, bool) {
    // Helpers installed on this thread take the pool's place.
    let threads = match helpers::installed_count() {
        0 => crate::threads::num_threads(),
        helpers => 1 + helpers,
    };
    #[cfg(test)]
    if let n @ 1.. = tests::FORCED_CAPACITY.load(Ordering::Relaxed) {
        return (n.min(threads), false);
    }
    let threads = threads.min(crate::threads::cores());
    let share = (threads / crate::threads::active_calls()).max(1);
    if contended() {
        let spell = SPELL_MEMBERS.load(Ordering::Relaxed);
        (share.min(spell).max(1), true)
    } else {
        (share, false)
    }
}

/// Runs `work` once on each member of a team of at most `wanted` threads
/// (fewer if fewer can be had; `Member::size` says how many). Call from
/// inside the pool (`threads::run`); `work` must not call rayon itself.
#[cfg(test)]
pub(crate) fn run(wanted: usize, work: &(dyn Fn(&Member) -> Result<()> + Sync)) -> Result<()> {
    run_for(wanted, 0, work)
}

/// Runs `work` once on each member of a team of at most `wanted` threads
/// (fewer if fewer can be had; `Member::size` says how many) for `macs`
/// multiply-adds in all (how long it waits for members to join:
/// [`check_in`]). Call from inside the pool (`threads::run`) or from a
/// call in place (`threads::run_in_place_unless_alone`), whose thread is
/// then the first member; `work` must not call rayon itself.
pub(crate) fn run_for(
    wanted: usize,
    macs: usize,
    work: &(dyn Fn(&Member) -> Result<()> + Sync),
) -> Result<()> {
    let (most, in_spell) = capacity_and_spell();
    let wanted = wanted.min(most).max(1);
    let state = TeamState::new(wanted)?;
    if wanted == 1 {
        state.run_member(0, 1, work);
    } else if let Some(helpers) = helpers::installed() {
        let state = &state;
        let takers = (wanted - 1).min(helpers.count());
        // Helpers that wait awake take the job a cache-line hand-off after
        // the post: the roster is theirs before they come (sealed, so the
        // caller's `seal` returns at once), rather than a check-in later
        // (measured on a 2-core Zen 1: 0.4 µs of a 20 µs step).
        let fixed = helpers.awake();
        if fixed {
            state.roster.store(SEALED | takers, Ordering::Release);
        }
        let job = |helper: usize| match fixed {
            true => state.run_member(helper + 1, takers + 1, work),
            false => join(state, work),
        };
        helpers.run(takers, &job, || {
            seal(state, takers, check_in(macs));
            state.run_member(0, state.size(), work);
        });
    } else {
        crate::threads::scope(|scope| {
            let state = &state;
            for _ in 1..wanted {
                scope.spawn(move |_| join(state, work));
            }
            seal(state, wanted - 1, check_in(macs));
            state.run_member(0, state.size(), work);
        })?;
    }
    note_stalls(&state, state.size(), in_spell);
    match state.error.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(Error::Internal("the thread team's error slot".into())),
    }
}

/// Runs a layer of `shape` on a team of at most `wanted` members: each
/// member runs `work` on each of its shares of [`plan`], in order.
pub(crate) fn run_shares(
    shape: Shape,
    wanted: usize,
    work: &(dyn Fn(&Share, &Member) -> Result<()> + Sync),
) -> Result<()> {
    run_for(wanted, shape.macs(), &|member| {
        for share in shares_of(shape, member.size, member.index).iter().flatten() {
            work(share, member)?;
        }
        Ok(())
    })
}

/// Runs the layers of `shapes` (a stack's, in order) on a team of at most
/// `wanted` members as a wavefront ([`plan_layers`]): each member runs
/// `work(layer, share, member)` on each of its shares, in order; a share
/// of layer l + 1 waits for layer l's progress ([`Member::wait_for_layer`])
/// before it reads layer l's output.
pub(crate) fn run_layers(
    shapes: &[Shape],
    wanted: usize,
    work: &(dyn Fn(usize, &Share, &Member) -> Result<()> + Sync),
) -> Result<()> {
    let macs = shapes
        .iter()
        .map(Shape::macs)
        .fold(0, usize::saturating_add);
    run_for(wanted, macs, &|member| {
        let mut outcome = Ok(());
        plan_layers(shapes, member.size, |m, layer, share| {
            if m == member.index && outcome.is_ok() {
                outcome = work(layer, &share, member);
            }
        });
        outcome
    })
}

/// The wavefront's split of a stack's layers (`shapes`, in order) between
/// `members`: `emit(member, layer, share)`, layer by layer, so each
/// member's shares come in layer order.
///
/// - With a member per layer or more, each layer gets members of its own
///   (`members / layers`, the first layers one more), split by
///   [`plan_each`]: the layers step at the same time, each a chunk of
///   steps behind the one below.
/// - With fewer (a stack of more layers than the team has members, or a
///   team that could not have all its members), members take whole
///   layers in turn (member m: layers m, m + members, ...): member 0
///   starts layer `members` a chunk after the last member started layer
///   `members − 1`, so the stack still runs as one wavefront of `members`
///   layers at a time. Each member takes its layers in order, so the
///   first `L mod members` members take one layer more.
///
/// Either way a member waits only for layers below the one it runs, whose
/// members never wait for it: no deadlock.
fn plan_layers(shapes: &[Shape], members: usize, mut emit: impl FnMut(usize, usize, Share)) {
    let members = members.max(1);
    let layers = shapes.len();
    if members < layers {
        for (layer, shape) in shapes.iter().enumerate() {
            let member = layer % members;
            for dir in 0..shape.directions {
                emit(member, layer, Share::whole(dir, shape.batch, member));
            }
        }
        return;
    }
    let mut base = 0;
    for (layer, shape) in shapes.iter().enumerate() {
        let mine = members / layers + usize::from(layer < members % layers);
        plan_each(*shape, mine, |m, share| {
            let group = base + share.group;
            emit(base + m, layer, Share { group, ..share });
        });
        base += mine;
    }
}

/// Whether a stack of `shapes` gains from running as a wavefront on
/// `members` members rather than layer after layer on all of them: two
/// members or more, every layer has [`WAVEFRONT_LAYER_MACS`], and some
/// layer on all of them would leave members idle, or split its steps into
/// parts of under [`split_cost::SplitBounds::wavefront_part`] a barrier
/// (four times what a split needs to pay at all, from this machine's
/// core-to-core round trip: [`split_cost`]). A wavefront trades those
/// barriers for a wait every chunk of steps, and each layer's input
/// projection, which the whole team shares, for chunks that read W again;
/// a layer whose batch splits into a barrier-free block per member gains
/// nothing.
///
/// With fewer members than layers, members take whole layers in turn
/// ([`plan_layers`]), so the stack runs at the pace of the member with the
/// most layers, `ceil(L / members)` layer-times, against `L / s` layer
/// after layer (`s`, a split step's speed-up, is about 1 or below where
/// parts are this small: 0.5-1.3 measured). So any count pays, a count
/// that is not a multiple of the members a little less: on two threads of
/// an Intel Xeon, three layers ran 1.43-1.93× faster, four 1.69-2.33×,
/// five 1.32-2.20× (BENCHMARKS.md, twenty-ninth session).
pub(crate) fn wavefront_pays(shapes: &[Shape], members: usize) -> bool {
    #[allow(unused_mut)]
    let mut least = WAVEFRONT_LAYER_MACS;
    #[cfg(test)]
    if tests::ANY_SIZE_WAVEFRONT.load(Ordering::Relaxed) {
        least = 0;
    }
    members > 1
        && shapes.len() > 1
        && shapes.iter().all(|s| s.macs() >= least)
        && shapes.iter().any(|&shape| {
            let mut small_parts = false;
            let bound = split_cost::bounds().wavefront_part;
            plan_each(shape, members, |_, share| {
                let per_barrier = share.rows.1.saturating_mul(shape.macs_per_row)
                    / share.parts
                    / shape.barriers.max(1);
                small_parts |= share.parts > 1 && per_barrier < bound;
            });
            small_parts || useful_members(shape, members) < members
        })
}

/// Multiply-adds of a layer over the whole call below which its stack
/// runs layer after layer: such a layer takes about 0.1 ms or less, where
/// the wake-up of a member for each layer (30-50 µs on the 2-core VM) and
/// a chunk's wait at both ends cost more than running the layers at once
/// saves. Measured there, two layers on two threads, 7 runs: 0.2-0.8M a
/// layer 0.19-0.94× (LSTM H = 16 and 32, GRU H = 32, vanilla H = 16, batch
/// 1), 1.2-1.8M 1.12-1.38× (LSTM H = 48, GRU H = 64, vanilla H = 64, LSTM
/// H = 32 at batch 4).
const WAVEFRONT_LAYER_MACS: usize = 1 << 20;

/// How many of `members` [`plan_layers`] gives work to.
pub(crate) fn wavefront_members(shapes: &[Shape], members: usize) -> usize {
    let mut most = 0;
    plan_layers(shapes, members, |member, _, _| most = most.max(member + 1));
    most
}

/// A wavefront member's progress as one number that only grows as it goes
/// through its layers in order: `steps` done of `layer` (any number from
/// `u32::MAX` on: all of them).
fn progress_mark(layer: usize, steps: usize) -> u64 {
    ((layer as u64) << 32) | (steps as u64).min(u32::MAX.into())
}

impl Member<'_> {
    /// Tells the members of the next layer of a wavefront that this member
    /// has written its output of `steps` steps of `layer` (`usize::MAX`:
    /// all).
    pub fn publish(&self, layer: usize, steps: usize) {
        let place = &self.state.places[self.index];
        // SeqCst with the sleepers' count, as at a barrier.
        place
            .progress
            .0
            .store(progress_mark(layer, steps), Ordering::SeqCst);
        if place.progress_sleepers.count() > 0 {
            place.progress_sleepers.wake_all();
        }
    }

    /// Waits until every member with a share of `layer` (of the wavefront
    /// `shapes`) has published `steps` steps of it, spinning, yielding,
    /// then sleeping as at a barrier; an error if the team was poisoned.
    pub fn wait_for_layer(&self, shapes: &[Shape], layer: usize, steps: usize) -> Result<()> {
        let mark = progress_mark(layer, steps);
        let mut outcome = Ok(());
        plan_layers(shapes, self.size, |m, l, _| {
            if l == layer && outcome.is_ok() {
                outcome = self.wait_for_mark(m, mark);
            }
        });
        outcome
    }

    /// Waits until `member` has published `steps` steps of `layer` (as
    /// [`Member::wait_for_layer`] waits for a whole layer's members).
    pub fn wait_for_member(&self, member: usize, layer: usize, steps: usize) -> Result<()> {
        self.wait_for_mark(member, progress_mark(layer, steps))
    }

    fn wait_for_mark(&self, member: usize, mark: u64) -> Result<()> {
        let place = &self.state.places[member];
        let done = || place.progress.0.load(Ordering::SeqCst) >= mark;
        let poison = &self.state.poison;
        if !spin_then_yield(&done, poison)? {
            place.progress_sleepers.sleep_until(done, poison)?;
        }
        Ok(())
    }
}

/// The caller: waits up to `wait` for `places` members, then seals the
/// roster ([`TeamState::size`] then says how many joined).
fn seal(state: &TeamState, places: usize, wait: Duration) {
    if state.roster.load(Ordering::Acquire) & SEALED != 0 {
        return; // Fixed before the post (helpers awake): nothing to wait for.
    }
    let deadline = Instant::now() + wait;
    let mut spins = 0u32;
    while state.roster.load(Ordering::Acquire) < places && Instant::now() < deadline {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(16) {
            // Lets a worker that shares this core take its place.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    state.roster.fetch_or(SEALED, Ordering::AcqRel);
}

/// A worker offered a place: takes it unless the roster is sealed, waits
/// for the seal, then works.
fn join(state: &TeamState, work: &(dyn Fn(&Member) -> Result<()> + Sync)) {
    let mut seen = state.roster.load(Ordering::Acquire);
    let index = loop {
        if seen & SEALED != 0 {
            return;
        }
        match state.roster.compare_exchange_weak(
            seen,
            seen + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => break seen + 1,
            Err(now) => seen = now,
        }
    };
    // The caller seals within check_in; nothing can poison the team before.
    let never = AtomicBool::new(false);
    let sealed = || state.roster.load(Ordering::Acquire) & SEALED != 0;
    if wait_until(sealed, &never).is_ok() {
        state.run_member(index, state.size(), work);
    }
}

/// Rows of a batch block below which more blocks are not worth a member:
/// the register tiles take up to four rows at once.
const MIN_BLOCK_ROWS: usize = 4;

/// Rows per member from which a direction's batch is split into blocks
/// rather than panels: such a block shares each weight load between
/// enough rows already, and it steps without a barrier (measured in
/// BENCHMARKS.md: at N = 32–64 on two threads, blocks ran 2–10 % faster
/// in inference and up to 15 % in training).
const BLOCK_FIRST_ROWS: usize = 16;

/// What a layer's recurrence looks like to the split rule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub directions: usize,
    pub batch: usize,
    /// Panels a step can be split into (the smallest count over the
    /// dimensions the cell splits: hidden units, and the projection's
    /// outputs).
    pub panels: usize,
    /// Multiply-adds of one batch row's step.
    pub macs_per_row: usize,
    /// Barriers a split step takes (1, or 2 where a cell reads every unit
    /// of an intermediate).
    pub barriers: usize,
    /// Steps of the layer (the longest item's).
    pub steps: usize,
}

impl Shape {
    /// Multiply-adds of the layer's recurrence over every step.
    pub fn macs(&self) -> usize {
        [self.batch, self.macs_per_row, self.steps]
            .into_iter()
            .fold(self.directions, usize::saturating_mul)
    }
}

/// One member's share of a layer: direction `dir`, batch rows `rows.0 ..
/// rows.0 + rows.1`, panel part `part` of `parts`, stepping with the other
/// parts of its block at barrier `group`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Share {
    pub dir: usize,
    pub rows: (usize, usize),
    pub part: usize,
    pub parts: usize,
    pub group: usize,
}

impl Share {
    /// Direction `dir` whole: every row of a batch of `batch`, every panel,
    /// on one member, its barrier group `group` (no barrier: one party).
    pub fn whole(dir: usize, batch: usize, group: usize) -> Share {
        Share {
            dir,
            rows: (0, batch),
            part: 0,
            parts: 1,
            group,
        }
    }

    /// This share's part of `count` panels: `first..end`.
    pub fn panels(&self, count: usize) -> (usize, usize) {
        (
            count * self.part / self.parts,
            count * (self.part + 1) / self.parts,
        )
    }
}

/// The split rule: `emit(member, share)` for what each of `members` runs,
/// each member's shares in the order it runs them and one after another
/// (a member left without work gets none).
///
/// - Directions first: they are independent, so each gets its own members
///   (`members / directions`, the first ones one more); with fewer members
///   than directions, members take whole directions one after another.
/// - Within a direction, a batch of at least [`BLOCK_FIRST_ROWS`] rows
///   per member is split into blocks, one per member, without barriers.
/// - Smaller batches split hidden-unit panels: `parts` members share every
///   step of the whole batch, each streaming only its slice of the weights
///   (which then stays in its cache), as long as each part keeps
///   [`split_cost::SplitBounds::min_part`] multiply-adds per barrier
///   (below it the barriers and the state the members exchange cost more
///   than the split saves; it follows from this machine's core-to-core
///   round trip, [`split_cost`]) and a panel.
/// - Members still spare split the batch into blocks of at least
///   [`MIN_BLOCK_ROWS`] rows, which step without any barrier.
///
/// It allocates nothing: a stream's step of a few microseconds runs it.
fn plan_each(shape: Shape, members: usize, mut emit: impl FnMut(usize, Share)) {
    let members = members.max(1);
    let whole = |dir| Share::whole(dir, shape.batch, 0);
    if members <= shape.directions {
        // At most two directions: one member takes both, or each one.
        for dir in 0..shape.directions {
            emit(dir % members, whole(dir));
        }
        return;
    }
    let mut base = 0;
    for dir in 0..shape.directions {
        let mine = members / shape.directions + usize::from(dir < members % shape.directions);
        let work = shape.batch.saturating_mul(shape.macs_per_row);
        let min_part = split_cost::bounds()
            .min_part
            .saturating_mul(shape.barriers.max(1));
        let parts = if shape.batch >= mine * BLOCK_FIRST_ROWS {
            1
        } else {
            mine.min(shape.panels).min(work / min_part).max(1)
        };
        let blocks = (mine / parts)
            .min(shape.batch.div_ceil(MIN_BLOCK_ROWS))
            .max(1);
        let per = shape.batch.div_ceil(blocks).max(1);
        for (block, b0) in (0..shape.batch).step_by(per).enumerate() {
            let group = base + block * parts;
            for part in 0..parts {
                emit(
                    group + part,
                    Share {
                        dir,
                        rows: (b0, per.min(shape.batch - b0)),
                        part,
                        parts,
                        group,
                    },
                );
            }
        }
        if shape.batch == 0 {
            emit(base, whole(dir));
        }
        base += mine;
    }
}

/// The most shares a member runs in one layer: one per direction.
const MOST_SHARES: usize = 2;

/// Member `index`'s shares of [`plan_each`] for `members`, in order.
fn shares_of(shape: Shape, members: usize, index: usize) -> [Option<Share>; MOST_SHARES] {
    assert!(
        shape.directions <= MOST_SHARES,
        "a layer has at most {MOST_SHARES} directions"
    );
    let mut mine = [None; MOST_SHARES];
    let mut slots = mine.iter_mut();
    plan_each(shape, members, |member, share| {
        if member == index {
            *slots.next().expect("one share per direction") = Some(share);
        }
    });
    mine
}

/// How many members [`plan_each`] gives work to, for up to `members`.
pub(crate) fn useful_members(shape: Shape, members: usize) -> usize {
    // Each member's shares come one after another: counting changes of
    // member counts each member once.
    let (mut count, mut last) = (0, None);
    plan_each(shape, members, |member, _| {
        if last != Some(member) {
            count += 1;
            last = Some(member);
        }
    });
    count
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Each member's shares of [`plan_each`].
    pub(crate) fn plan(shape: Shape, members: usize) -> Vec<Vec<Share>> {
        let mut out = vec![Vec::new(); members.max(1)];
        plan_each(shape, members, |member, share| out[member].push(share));
        out
    }

    /// Team size to use instead of [`capacity`]'s (0: none), so that teams
    /// larger than this machine's core count can be tested. Global, but a
    /// test that sets it only changes how other tests' calls split, which
    /// must not change their results.
    pub(crate) static FORCED_CAPACITY: AtomicUsize = AtomicUsize::new(0);

    /// Stacks of any size may run as a wavefront while set (no
    /// [`WAVEFRONT_LAYER_MACS`]), so that the tests' small stacks (and
    /// Miri's) take the path. Global, like [`FORCED_CAPACITY`]: other
    /// tests' results must not change either way.
    pub(crate) static ANY_SIZE_WAVEFRONT: AtomicBool = AtomicBool::new(false);

    /// Members do not move ([`Member::spread`]) while set: in the stall
    /// tests, whose member 0 sleeps to stand for a descheduled one, the
    /// OS wakes member 1 on member 0's idle CPU, and a move to a CPU that
    /// other tests keep busy would make member 1 the one that holds the
    /// team up. Set only under [`hold_globals`].
    pub(crate) static STAY_PUT: AtomicBool = AtomicBool::new(false);

    thread_local! {
        /// What [`note_stalls`] last decided on this thread (a team's
        /// caller): the next spell, and the spell's members if the team
        /// stalled. The globals it sets may meanwhile change with other
        /// tests' teams (a team that ran freely halves the spell).
        pub(crate) static VERDICT: Cell<Option<(u64, Option<usize>)>> = const { Cell::new(None) };
    }

    /// Held by the tests that set [`FORCED_CAPACITY`] or read back what
    /// [`capacity`] decided, so one's forced size cannot answer the other's
    /// check (the stall test failed once in CI that way: capacity 2, forced).
    static GLOBALS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    pub(crate) fn hold_globals() -> std::sync::MutexGuard<'static, ()> {
        GLOBALS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shape(directions: usize, batch: usize, panels: usize, macs_per_row: usize) -> Shape {
        Shape {
            directions,
            batch,
            panels,
            macs_per_row,
            barriers: 1,
            steps: 1,
        }
    }

    /// Every (direction, row, panel) is covered exactly once, and a member
    /// with a split share has no other share.
    fn check_cover(s: Shape, members: usize) {
        let plan = plan(s, members);
        assert_eq!(plan.len(), members.max(1));
        let panels = s.panels.max(1);
        let mut seen = vec![0u32; s.directions * s.batch * panels];
        for shares in &plan {
            if shares.iter().any(|sh| sh.parts > 1) {
                assert_eq!(shares.len(), 1, "{s:?} on {members}: {plan:?}");
            }
            for sh in shares {
                let (p0, p1) = sh.panels(panels);
                for b in sh.rows.0..sh.rows.0 + sh.rows.1 {
                    for p in p0..p1 {
                        seen[(sh.dir * s.batch + b) * panels + p] += 1;
                    }
                }
                assert!(sh.group < members.max(1));
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{s:?} on {members}: {plan:?}");
        // The allocation-free forms the calls use say the same.
        for (index, shares) in plan.iter().enumerate() {
            let mine = shares_of(s, members, index);
            assert_eq!(&mine.iter().flatten().copied().collect::<Vec<_>>(), shares);
        }
        let useful = plan.iter().filter(|shares| !shares.is_empty()).count();
        assert_eq!(useful_members(s, members), useful, "{s:?} on {members}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "too slow under Miri (every plan of many shapes)")]
    fn every_plan_covers_the_work_once() {
        for directions in 1..=2 {
            for batch in [0, 1, 2, 3, 5, 8, 17, 64] {
                for panels in [1, 2, 3, 32, 128] {
                    for macs in [10, 1 << 14, 1 << 20] {
                        for members in 1..=17 {
                            check_cover(shape(directions, batch, panels, macs), members);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_rule_prefers_panels_then_directions_then_blocks() {
        // LSTM H = 256, batch 1, two threads: the panels of one step split.
        let lstm = shape(1, 1, 32, 4 * 256 * 256);
        assert_eq!(useful_members(lstm, 2), 2);
        assert_eq!(plan(lstm, 2)[1][0].parts, 2);
        // Bidirectional on two threads: one direction each, no split.
        let bi = shape(2, 1, 32, 4 * 256 * 256);
        assert_eq!(
            plan(bi, 2)[0],
            vec![Share {
                dir: 0,
                rows: (0, 1),
                part: 0,
                parts: 1,
                group: 0
            }]
        );
        assert_eq!(plan(bi, 2)[1][0].dir, 1);
        // A step too small to split: one member.
        assert_eq!(useful_members(shape(1, 1, 4, 1000), 8), 1);
        // Few panels, a large batch: blocks take the spare members.
        let wide = shape(1, 64, 1, 1 << 16);
        assert_eq!(useful_members(wide, 4), 4);
        assert!(plan(wide, 4).iter().all(|s| s[0].parts == 1));
        // 16 rows per member and more: blocks, even with panels to spare.
        let large = shape(1, 32, 64, 4 * 512 * 512);
        assert!(plan(large, 2)
            .iter()
            .all(|s| s[0].parts == 1 && s[0].rows.1 == 16));
        // Fewer: panels.
        let medium = shape(1, 16, 64, 4 * 512 * 512);
        assert!(plan(medium, 2)
            .iter()
            .all(|s| s[0].parts == 2 && s[0].rows.1 == 16));
    }

    /// `steps` steps of a member that counts each on `counter` and checks,
    /// after a barrier, that every member of its team counted it.
    fn count_steps_in_order(m: &Member, counter: &AtomicU64, steps: u64) -> Result<()> {
        for s in 0..steps {
            counter.fetch_add(1, Ordering::SeqCst);
            m.barrier(0, m.size)?;
            // Every member has counted step s before anyone reads.
            let seen = counter.load(Ordering::SeqCst);
            assert!(seen >= (s + 1) * m.size as u64, "step {s}: {seen}");
            m.barrier(0, m.size)?;
        }
        Ok(())
    }

    #[test]
    fn a_team_runs_every_member_and_its_barriers_order_the_steps() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        pool.install(|| {
            let steps = 200;
            let counter = AtomicU64::new(0);
            run(4, &|m: &Member| count_steps_in_order(m, &counter, steps)).unwrap();
            assert!(counter.load(Ordering::SeqCst) >= steps);
        });
    }

    /// Teams formed on installed helpers, awake (the roster fixed before
    /// the post) or asleep (formed by check-in), back to back and after
    /// pauses past the helpers' patience: each member index of a team runs
    /// once, the barriers order its steps, and awake helpers are members.
    #[test]
    fn teams_on_helpers_awake_or_asleep_run_each_member_once() {
        let _globals = hold_globals();
        FORCED_CAPACITY.store(2, Ordering::Relaxed);
        let helpers = helpers::Helpers::new(1).unwrap();
        let mut sizes = Vec::new();
        helpers.install(|| {
            // Miri runs a few teams (its threads spin slowly), the asleep
            // case included.
            let (teams, every) = if cfg!(miri) { (4, 2) } else { (60, 20) };
            for team in 0..teams {
                if team % every == every - 1 {
                    // Past any patience: the helper sleeps.
                    std::thread::sleep(Duration::from_millis(5));
                }
                let ran = [AtomicUsize::new(0), AtomicUsize::new(0)];
                let counter = AtomicU64::new(0);
                let size = AtomicUsize::new(0);
                run(2, &|m: &Member| {
                    ran[m.index].fetch_add(1, Ordering::SeqCst);
                    size.store(m.size, Ordering::SeqCst);
                    count_steps_in_order(m, &counter, if cfg!(miri) { 2 } else { 20 })
                })
                .unwrap();
                let size = size.load(Ordering::SeqCst);
                for (index, ran) in ran.iter().enumerate() {
                    let expected = usize::from(index < size);
                    assert_eq!(ran.load(Ordering::SeqCst), expected, "team {team}");
                }
                sizes.push(size);
            }
        });
        FORCED_CAPACITY.store(0, Ordering::Relaxed);
        // Back to back, the helper waits awake: it is a member of most teams.
        let whole = sizes.iter().filter(|&&s| s == 2).count();
        if !cfg!(miri) {
            assert!(whole >= 30, "teams of two: {whole} of 60 ({sizes:?})");
        }
    }

    /// Teams of up to 16 members (more than this machine's cores) give the
    /// same bits as one thread, for every cell variant, both directions at
    /// once and split steps.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "too slow under Miri (16-member teams over whole layers)"
    )]
    fn teams_larger_than_the_machine_give_the_same_bits() {
        let _globals = hold_globals();
        use crate::{CellKind, Config, Direction, GruVariant, Input, Model, OutputGrads};
        let configs = [
            Config::builder(CellKind::Lstm, 5, 70).peepholes(true),
            Config::builder(CellKind::Lstm, 5, 70)
                .proj_size(33)
                .cell_clip(Some(0.3)),
            Config::builder(CellKind::Gru, 5, 70),
            Config::builder(CellKind::Gru, 5, 70).gru_variant(GruVariant::LinearBeforeReset),
            Config::builder(CellKind::Rnn, 5, 150).gate_clip(Some(0.5)),
        ];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(16)
            .build()
            .unwrap();
        for builder in configs {
            for direction in [Direction::Forward, Direction::BidirectionalSum] {
                let config = builder
                    .clone()
                    .direction(direction)
                    .num_layers(2)
                    .build()
                    .unwrap();
                let model = Model::random(config.clone(), 3);
                let (t, n) = (4, 5);
                let shapes = crate::Shapes::new(&config, t, n).unwrap();
                let mut rng = crate::rng::SplitMix64::new(8);
                let x = rng.uniform_vec(shapes.x, -1.0, 1.0);
                let lens = [4, 1, 0, 3, 4];
                let input = Input::new(&x, t, n).with_seq_lens(&lens);
                let dy = rng.uniform_vec(shapes.y, -1.0, 1.0);
                let go = || {
                    let y = model.forward_inference(&input).unwrap();
                    let (_, trace) = model.forward_training(&input).unwrap();
                    let g = model.backward(&trace, &OutputGrads::new(&dy)).unwrap();
                    (y, g)
                };
                let mut first = None;
                for members in [1, 2, 3, 4, 5, 7, 16] {
                    FORCED_CAPACITY.store(members, Ordering::Relaxed);
                    let got = pool.install(go);
                    FORCED_CAPACITY.store(0, Ordering::Relaxed);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let all = |(y, g): &(crate::Output, crate::Gradients)| {
                        [
                            bits(&y.y),
                            bits(&y.h_n),
                            bits(&g.dx),
                            bits(&g.dh0),
                            bits(&g.dparams),
                        ]
                    };
                    let now = all(&got);
                    match &first {
                        None => first = Some(now),
                        Some(one) => {
                            for (field, (a, b)) in one.iter().zip(&now).enumerate() {
                                let at = a.iter().zip(b).position(|(p, q)| p != q);
                                assert!(
                                    at.is_none(),
                                    "{config:?}: {members} members differ from one in output {field} at {at:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Two members splitting each step's units (the split the larger test
    /// above covers natively) give the same bits as one, under Miri too:
    /// items of every length, so the last step leaves its state both chunk
    /// by chunk (the items it steps) and share by share (those it does not).
    /// Miri runs the smallest such case: an LSTM whose forward and backward
    /// steps are just large enough to split ([`split_cost::REFERENCE`]); its
    /// backward steps read the dG rows both members wrote at the step after
    /// (the fused `dG × Rᵀ`), which Miri checks for races (without the
    /// barrier before that product, it reports one). A GRU that splits
    /// (H = 64, three items) took Miri 5 minutes more and, in its schedule,
    /// did not report a barrier removed (the team's other atomics ordered
    /// those accesses in that run): GRU splits natively only.
    #[test]
    fn a_split_step_gives_the_same_bits_as_one_member() {
        let _globals = hold_globals();
        use crate::{CellKind, Config, Input, Model};
        // Helpers make the second member (as in a stream), under Miri too.
        let helpers = helpers::Helpers::new(1).unwrap();
        // (cell, input size, hidden size, lengths).
        let cases: &[(CellKind, usize, usize, &[usize])] = match cfg!(miri) {
            true => &[(CellKind::Lstm, 1, 48, &[2, 1])],
            false => &[
                (CellKind::Lstm, 3, 64, &[3, 1, 0]),
                (CellKind::Gru, 3, 64, &[3, 1, 0]),
            ],
        };
        for &(cell, input_size, hidden, lens) in cases {
            let config = Config::builder(cell, input_size, hidden).build().unwrap();
            let model = Model::random(config.clone(), 5);
            let (t, n) = (lens[0], lens.len());
            let shapes = crate::Shapes::new(&config, t, n).unwrap();
            let mut rng = crate::rng::SplitMix64::new(9);
            let x = rng.uniform_vec(shapes.x, -1.0, 1.0);
            let input = Input::new(&x, t, n).with_seq_lens(lens);
            let dy = rng.uniform_vec(shapes.y, -1.0, 1.0);
            let run = |members| every_result_bits(&model, &input, &dy, (&helpers, members), &[]);
            assert_eq!(run(1), run(2), "{cell:?}");
        }
    }

    /// The bits of `model`'s inference, training and backward (output
    /// gradient `dy`) on `input`, and of its inference in each `reduced`
    /// precision, on a team of at most `members` (the helpers' and the
    /// caller). The caller holds [`hold_globals`].
    fn every_result_bits(
        model: &crate::Model,
        input: &crate::Input<'_>,
        dy: &[f32],
        (helpers, members): (&helpers::Helpers, usize),
        reduced: &[crate::Precision],
    ) -> Vec<Vec<u32>> {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        FORCED_CAPACITY.store(members, Ordering::Relaxed);
        let got = helpers.install(|| {
            let y = model.forward_inference(input).unwrap();
            let c_n = y.c_n.as_deref().map(bits).unwrap_or_default();
            let mut got = vec![bits(&y.y), bits(&y.h_n), c_n];
            let (_, trace) = model.forward_training(input).unwrap();
            let g = model
                .backward(&trace, &crate::OutputGrads::new(dy))
                .unwrap();
            got.extend([bits(&g.dx), bits(&g.dh0), bits(&g.dparams)]);
            for &precision in reduced {
                let model = model.clone().with_precision(precision);
                got.push(bits(&model.forward_inference(input).unwrap().y));
            }
            got
        });
        FORCED_CAPACITY.store(0, Ordering::Relaxed);
        got
    }

    /// A stack whose layers run as a wavefront (layer l + 1 a chunk of
    /// steps behind layer l, each on members of its own) gives the bits of
    /// its layers run in turn on one member: inference, training and
    /// backward, with items of several lengths (one empty), for each cell
    /// and an LSTM with a projection, peepholes, clips, initial states and
    /// a batch-first layout; bf16 and int8 inference. Two layers on two
    /// members, and natively three layers on three and four on two (whole
    /// layers in turn); under Miri, which
    /// reports a data race where a layer reads steps the layer below has
    /// not published (checked by taking the wait out), two small layers.
    #[test]
    fn a_wavefront_gives_the_same_bits_as_layers_in_turn() {
        let _globals = hold_globals();
        use crate::config::{GruVariant, Layout};
        use crate::{CellKind, Config, Input, Model, Precision};
        let helpers = helpers::Helpers::new(2).unwrap();
        ANY_SIZE_WAVEFRONT.store(true, Ordering::Relaxed);
        let stack =
            |cell, layers, input, hidden| Config::builder(cell, input, hidden).num_layers(layers);
        // (config, lengths, members).
        let mut cases = vec![(stack(CellKind::Lstm, 2, 1, 8), &[3, 1][..], &[2][..])];
        if !cfg!(miri) {
            let ragged = &[9, 4, 0][..];
            cases = vec![
                (stack(CellKind::Lstm, 2, 3, 40), ragged, &[2]),
                (stack(CellKind::Gru, 2, 3, 40), ragged, &[2]),
                (
                    stack(CellKind::Gru, 2, 3, 40).gru_variant(GruVariant::LinearBeforeReset),
                    ragged,
                    &[2],
                ),
                (stack(CellKind::Rnn, 3, 5, 24), &[7, 7, 2], &[3, 2]),
                (stack(CellKind::Lstm, 4, 5, 24), &[8, 3, 5], &[2]),
                (
                    stack(CellKind::Lstm, 2, 4, 36)
                        .proj_size(20)
                        .peepholes(true)
                        .cell_clip(Some(0.5))
                        .layout(Layout::BatchFirst),
                    &[6, 6, 3],
                    &[2],
                ),
            ];
        }
        for (builder, lens, members) in cases {
            let config = builder.build().unwrap();
            let model = Model::random(config.clone(), 5);
            let (t, n) = (lens[0], lens.len());
            let packed = model.packed().unwrap();
            for &m in members {
                let wavefront = super::super::forward::wavefront_layers(&config, packed, (n, t), m);
                assert!(
                    wavefront.unwrap().is_some(),
                    "{config:?} runs as a wavefront on {m}"
                );
            }
            let shapes = crate::Shapes::new(&config, t, n).unwrap();
            let mut rng = crate::rng::SplitMix64::new(9);
            let x = rng.uniform_vec(shapes.x, -1.0, 1.0);
            let h0 = rng.uniform_vec(shapes.h, -1.0, 1.0);
            let c0 = rng.uniform_vec(shapes.c, -1.0, 1.0);
            let mut input = Input::new(&x, t, n).with_seq_lens(lens).with_h0(&h0);
            if config.has_cell_state() {
                input = input.with_c0(&c0);
            }
            let dy = rng.uniform_vec(shapes.y, -1.0, 1.0);
            let reduced: &[Precision] = match cfg!(miri) {
                true => &[],
                false => &[Precision::Bf16, Precision::Int8],
            };
            let run =
                |members| every_result_bits(&model, &input, &dy, (&helpers, members), reduced);
            let alone = run(1);
            for &m in members {
                assert!(alone == run(m), "{config:?} on {m} members");
            }
        }
        ANY_SIZE_WAVEFRONT.store(false, Ordering::Relaxed);
    }

    /// A wavefront needs two members or more, layers of enough work, and a
    /// layer that the team would split into small parts or not use fully.
    #[test]
    fn a_wavefront_runs_only_where_it_pays() {
        let _globals = hold_globals();
        // (layers, batch, panels, macs a row, steps, members).
        let cases = [
            // H = 64 LSTM at batch 1, 100 steps (3.3M a layer): one member
            // per layer, or whole layers in turn on fewer; not on one member.
            ((2, 1, 8, 4 * 64 * 128, 100, 2), true),
            ((4, 1, 8, 4 * 64 * 128, 100, 2), true),
            ((3, 1, 8, 4 * 64 * 128, 100, 2), true),
            ((5, 1, 8, 4 * 64 * 128, 100, 3), true),
            ((2, 1, 8, 4 * 64 * 128, 100, 1), false),
            // The same over 10 steps: too little work a layer.
            ((2, 1, 8, 4 * 64 * 128, 10, 2), false),
            // H = 512 at batch 1: large parts of a split step.
            ((2, 1, 64, 4 * 512 * 1024, 50, 2), false),
            // 32 rows a layer: a barrier-free block per member.
            ((2, 32, 16, 4 * 128 * 256, 50, 2), false),
        ];
        for ((layers, batch, panels, macs_per_row, steps, members), pays) in cases {
            let one = Shape {
                steps,
                ..shape(1, batch, panels, macs_per_row)
            };
            let shapes = vec![one; layers];
            assert_eq!(
                wavefront_pays(&shapes, members),
                pays,
                "{layers} layers, batch {batch}, {macs_per_row} a row, {steps} steps, {members} members"
            );
        }
    }

    /// A wavefront's layers, on as many members as layers or more (each
    /// layer its own) and on fewer (whole layers in turn), each step of
    /// layer l + 1 after layer l published it: every layer's steps all run,
    /// once, each after the step below.
    #[test]
    fn wavefront_layers_step_after_the_layer_below_on_any_team() {
        let _globals = hold_globals();
        let (layers, steps) = (3, 6);
        let shapes = vec![shape(1, 2, 4, 1 << 14); layers];
        for members in [1, 2, 3, 4] {
            let done: Vec<AtomicU64> = (0..layers * steps).map(|_| AtomicU64::new(0)).collect();
            let clock = AtomicU64::new(0);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(members)
                .build()
                .unwrap();
            FORCED_CAPACITY.store(members, Ordering::Relaxed);
            let ran = pool.install(|| {
                run_layers(&shapes, members, &|layer, share, member| {
                    for t in 0..steps {
                        if layer > 0 {
                            member.wait_for_layer(&shapes, layer - 1, t + 1)?;
                        }
                        if share.part == 0 {
                            let now = clock.fetch_add(1, Ordering::SeqCst) + 1;
                            assert_eq!(done[layer * steps + t].swap(now, Ordering::SeqCst), 0);
                        }
                        member.barrier(share.group, share.parts)?;
                        member.publish(layer, t + 1);
                    }
                    member.publish(layer, usize::MAX);
                    Ok(())
                })
            });
            FORCED_CAPACITY.store(0, Ordering::Relaxed);
            ran.unwrap();
            let at = |l: usize, t: usize| done[l * steps + t].load(Ordering::SeqCst);
            for t in 0..steps {
                assert!(at(0, t) > 0, "{members} members: layer 0 step {t} ran");
                for l in 1..layers {
                    assert!(
                        at(l, t) > at(l - 1, t),
                        "{members} members: layer {l} step {t}"
                    );
                }
            }
        }
    }

    /// How long the descheduled member is away before each barrier: well
    /// beyond what a loaded machine's scheduler holds the other members
    /// back between two barriers (time slices of a few ms). At 2 ms, with
    /// two busy processes on a 2-core machine, the others' own delays
    /// outweighed their waits and the team looked unstalled in 4 of 12
    /// runs of the unit tests.
    const DESCHEDULED: Duration = Duration::from_millis(20);

    /// Runs a team of up to `members` on a pool of as many threads, whose
    /// member 0 keeps being descheduled (it sleeps [`DESCHEDULED`] before
    /// each of 20 barriers, where the others wait), after clearing any
    /// spell; returns the team's size and [`VERDICT`]. The caller holds
    /// [`hold_globals`].
    fn team_with_a_descheduled_member(members: usize) -> (usize, Option<(u64, Option<usize>)>) {
        STAY_PUT.store(true, Ordering::Relaxed);
        SPELL_NANOS.store(0, Ordering::Relaxed);
        SPELL_UNTIL.store(0, Ordering::Relaxed);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(members)
            .build()
            .unwrap();
        let formed = AtomicUsize::new(0);
        let verdict = pool.install(|| {
            VERDICT.with(|v| v.set(None));
            run(members, &|m: &Member| {
                formed.store(m.size, Ordering::Relaxed);
                for _ in 0..20 {
                    if m.index == 0 && m.size > 1 {
                        std::thread::sleep(DESCHEDULED);
                    }
                    m.barrier(0, m.size)?;
                }
                Ok(())
            })
            .unwrap();
            VERDICT.with(Cell::get)
        });
        STAY_PUT.store(false, Ordering::Relaxed);
        (formed.load(Ordering::Relaxed), verdict)
    }

    #[test]
    fn a_team_whose_members_stall_makes_the_next_calls_solo() {
        let _globals = hold_globals();
        let (size, verdict) = team_with_a_descheduled_member(2);
        if size == 2 {
            // The first spell is 10 ms: a loaded machine may have let it
            // pass already, so the capacity is checked only within it.
            let cap = capacity();
            let until = SPELL_UNTIL.load(Ordering::Relaxed);
            let (spell, members) = verdict.expect("a verdict");
            // At least the first spell (another test's team may have
            // stalled too on a loaded machine).
            assert!(spell >= 10_000_000, "{spell}");
            assert_eq!(members, Some(1));
            assert!(until > 0);
            if nanos_now() < until && SPELL_MEMBERS.load(Ordering::Relaxed) == 1 {
                assert_eq!(cap, 1);
            }
        }
        SPELL_UNTIL.store(0, Ordering::Relaxed);
        SPELL_NANOS.store(0, Ordering::Relaxed);
    }

    #[test]
    fn members_wait_twice_a_wake_up_within_bounds() {
        let us = |n: u64| Duration::from_micros(n);
        assert_eq!(patience_after(0), SPIN);
        assert_eq!(patience_after(5_000), SPIN);
        assert_eq!(patience_after(50_000), us(100));
        assert_eq!(patience_after(10_000_000), PATIENCE_MAX);
        // The average follows the samples, and one long outlier moves it
        // by at most an eighth of PATIENCE_MAX.
        let mut average = 50_000;
        for _ in 0..64 {
            average = wake_up_average(average, 10_000);
        }
        assert!((10_000..10_100).contains(&average), "{average}");
        let after = wake_up_average(average, 5_000_000_000);
        assert!(after - average <= 250_000 / 8, "{after}");
    }

    #[test]
    fn the_caller_waits_for_members_by_the_work_within_bounds() {
        let small = check_in(1000);
        assert!((CHECK_IN..=PATIENCE_MAX).contains(&small), "{small:?}");
        // A call of 32 ms alone at the bound's rate waits 2 ms.
        let macs = (CORE_MACS_PER_SECOND_BOUND * 0.032) as usize;
        let wait = check_in(macs);
        assert!(
            wait.abs_diff(Duration::from_millis(2)) < Duration::from_micros(1),
            "{wait:?}"
        );
        assert_eq!(check_in(usize::MAX), CHECK_IN_MAX);
    }

    #[test]
    fn a_member_on_the_cpu_of_a_member_before_it_moves_and_member_0_never() {
        let _globals = hold_globals(); // Not while STAY_PUT is set.
        let here = placement::current_cpu();
        if here == placement::UNKNOWN || crate::threads::cores() < 2 {
            return; // No CPU numbers here, or nowhere to move.
        }
        let state = TeamState::new(2).unwrap();
        let member = |index| Member::new(index, 2, &state);
        // Member 1 seen on this thread's CPU: member 0 stays where it is.
        state.places[1].cpu.store(here, Ordering::Relaxed);
        member(0).spread();
        let first = state.places[0].cpu.load(Ordering::Relaxed);
        assert_ne!(first, placement::UNKNOWN);
        // This thread as member 1, on member 0's CPU: it moves off it.
        let second = member(1);
        second.spread();
        let moved = state.places[1].cpu.load(Ordering::Relaxed);
        if second.stuck.get() {
            // Its affinity allows member 0's CPU only (a pinned test run).
            assert_eq!(moved, first);
        } else {
            assert_ne!(moved, first, "member 1 left member 0's CPU");
        }
    }

    #[test]
    fn spells_double_while_teams_stall_and_halve_after() {
        let ms = |n: u64| n * 1_000_000;
        let mut spell = 0;
        let mut spells = Vec::new();
        for _ in 0..7 {
            spell = next_spell(spell, true);
            spells.push(spell);
        }
        assert_eq!(
            spells,
            [ms(10), ms(20), ms(40), ms(80), ms(160), ms(200), ms(200)]
        );
        let mut freed = Vec::new();
        for _ in 0..6 {
            spell = next_spell(spell, false);
            freed.push(spell);
        }
        assert_eq!(freed, [ms(100), ms(50), ms(25), ms(12) + 500_000, 0, 0]);
        assert_eq!(next_spell(0, false), 0);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "timing: under Miri's thread scheduler the waits of four members need not count as stalls (the two-member stall test runs the same code there)"
    )]
    fn a_stalled_team_leaves_out_only_the_members_that_held_it_up() {
        let _globals = hold_globals();
        // Four members on this machine's cores, whatever their count.
        FORCED_CAPACITY.store(4, Ordering::Relaxed);
        let (size, verdict) = team_with_a_descheduled_member(4);
        FORCED_CAPACITY.store(0, Ordering::Relaxed);
        if size > 1 {
            assert!(SPELL_UNTIL.load(Ordering::Relaxed) > 0);
            assert_eq!(verdict.map(|(_, members)| members), Some(Some(size - 1)));
        }
        SPELL_UNTIL.store(0, Ordering::Relaxed);
        SPELL_NANOS.store(0, Ordering::Relaxed);
    }

    #[test]
    fn a_panicking_member_fails_the_call_without_a_hang() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // Fewer rounds under Miri, where a round took about 20 s (the others
        // spin at a barrier the panicking member never reaches).
        let rounds = if cfg!(miri) { 2 } else { 20 };
        pool.install(|| {
            for _ in 0..rounds {
                let result = run(3, &|m: &Member| {
                    if m.index + 1 == m.size {
                        panic!("injected failure");
                    }
                    loop {
                        m.barrier(0, m.size + 1)?; // never completes
                    }
                });
                match result {
                    Err(Error::Internal(msg)) => assert!(msg.contains("injected failure"), "{msg}"),
                    other => panic!("expected an internal error, got {other:?}"),
                }
            }
        });
    }

    #[test]
    fn a_team_reusing_its_threads_places_finds_them_as_new() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // Fewer rounds under Miri, where each barrier spins slowly.
        let (rounds, steps) = if cfg!(miri) { (2, 4) } else { (10, 50) };
        pool.install(|| {
            for _ in 0..rounds {
                {
                    // Places as a poisoned team may leave them: a member
                    // counted at barrier 0, claims tagged with epoch 1.
                    let state = TeamState::new(2).unwrap();
                    state.places[0]
                        .barrier
                        .arrived
                        .0
                        .store(1, Ordering::Relaxed);
                    for place in state.places.iter() {
                        place.claim.0.store(1 << CLAIM_BITS, Ordering::Relaxed);
                    }
                } // Back to this thread's spare, for the next team.
                let arrivals = AtomicUsize::new(0);
                let claimed = AtomicUsize::new(0);
                let share = Share {
                    dir: 0,
                    rows: (0, 1),
                    part: 0,
                    parts: 1,
                    group: 0,
                };
                run(2, &|m: &Member| {
                    let share = Share {
                        part: m.index,
                        parts: m.size,
                        ..share
                    };
                    for step in 0..steps {
                        arrivals.fetch_add(1, Ordering::SeqCst);
                        m.barrier(0, m.size)?;
                        // A stale arrival would let a member through alone.
                        assert_eq!(arrivals.load(Ordering::SeqCst), m.size * (step + 1));
                        m.share_out(&share, step + 1, 8, 1, |(first, end)| {
                            claimed.fetch_add(end - first, Ordering::SeqCst);
                        });
                        m.barrier(0, m.size)?;
                    }
                    Ok(())
                })
                .unwrap();
                // A stale claim would have skipped or repeated chunks.
                assert_eq!(claimed.load(Ordering::SeqCst), steps * 8);
            }
        });
    }

    #[test]
    fn a_team_on_a_busy_pool_runs_with_the_members_it_can_have() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let release = AtomicBool::new(false);
        let release = &release;
        pool.install(|| {
            rayon::scope(|s| {
                // The other worker is busy until the team has run.
                s.spawn(move |_| {
                    while !release.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                });
                std::thread::sleep(Duration::from_millis(20));
                let sizes = Mutex::new(Vec::new());
                run(2, &|m: &Member| {
                    sizes.lock().unwrap().push(m.size);
                    m.barrier(0, m.size)
                })
                .unwrap();
                release.store(true, Ordering::Release);
                assert_eq!(*sizes.lock().unwrap(), vec![1]);
            });
        });
    }
}
