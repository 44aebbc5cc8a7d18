//! What splitting a step between cores costs on this machine, and so the
//! smallest parts the team splits a step into.
//!
//! A split step costs a few cache-line round trips between cores more than
//! its part of the work (the barrier's counter and generation, then the
//! lines of the new state the other members wrote), and a round trip takes
//! tens to hundreds of nanoseconds depending on the machine, so the same
//! rule needs parts four times larger on one machine than on another (BENCHMARKS.md: the Zen 3 VM's steps paid from parts of 8k
//! multiply-adds, an Intel Xeon VM's from about 40k, with a 145-190 ns
//! round trip). The round trip is measured once per process (two threads
//! passing a cache line back and forth, well under a millisecond, at the
//! first call that could split), and the bounds follow from it
//! ([`bounds_for_round_trip`]); `RNN_MIN_PART_MACS` sets them instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The multiply-adds a member's part of a split step needs, per barrier
/// of the step, and the part size below which a stack of layers runs as a
/// wavefront rather than each layer split over the team.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SplitBounds {
    /// Below this a part's barriers and the state it exchanges cost more
    /// than the split saves.
    pub min_part: usize,
    /// Below this a wavefront of layers beats each layer split
    /// ([`crate::engine::team::wavefront_pays`]).
    pub wavefront_part: usize,
}

/// The bounds measured on the 2-core Zen 3 VM, where they were first set:
/// used where the round trip cannot be measured (one CPU free, Miri) and by
/// the unit tests, whose plans are written for them.
pub(crate) const REFERENCE: SplitBounds = bounds_for_min_part(1 << 13);

/// How much larger than [`SplitBounds::min_part`] parts must be for a
/// stack's layers to split rather than run as a wavefront. Measured on the
/// Zen 3 VM (two-layer stacks, two threads: parts of 8-24k ran 1.15-1.4×
/// faster as a wavefront, 32k 0.96-1.05×, 131k 0.97×) and on the Xeon
/// (parts of 33k 1.12-1.51× faster as a wavefront, 98-131k 0.96-1.02×).
const WAVEFRONT_TIMES_MIN_PART: usize = 4;

/// Multiply-adds a part needs per nanosecond of a core-to-core round trip.
/// A split step takes longer than half a step by several round trips, more
/// as the state the members exchange grows (on the Xeon VM, vanilla H =
/// 128-512 at batch 1: 1.3-5.3 µs, 8-32 of its round trips), while steps
/// at batch 1 run 12-15 multiply-adds a nanosecond on one core of either
/// machine measured; parts pay once their time clearly exceeds that cost.
/// On the Xeon VM (round trip 145-190 ns as [`measure_round_trip_ns`]
/// measures it) two threads broke even at parts of about 40k: one layer
/// at batch 1, parts of 16k ran 0.60-0.87× as fast as one thread, 33k
/// 0.91-0.96× (once 1.12×), 49-65k 1.14-1.37× (BENCHMARKS.md, twenty-ninth
/// and thirtieth sessions). So 250 a nanosecond (36-48k there), which
/// gives the Zen 3 VM's 8k at a 33 ns round trip (not measured there).
const PART_MACS_PER_ROUND_TRIP_NS: f64 = 250.0;

/// The range [`bounds_for_round_trip`] keeps `min_part` in: below 4k a
/// part is a fraction of a microsecond of work, which no split has paid
/// for on any machine measured; above 256k a step of a few tens of
/// microseconds would not split, which would mean a round trip of almost
/// two microseconds (a core shared with another process, not the cost of
/// a split).
const MIN_PART_RANGE: (usize, usize) = (1 << 12, 1 << 18);

/// The bounds where a core-to-core round trip takes `round_trip_ns`.
pub(crate) fn bounds_for_round_trip(round_trip_ns: f64) -> SplitBounds {
    let (least, most) = MIN_PART_RANGE;
    let wanted = round_trip_ns * PART_MACS_PER_ROUND_TRIP_NS;
    bounds_for_min_part(if wanted.is_finite() {
        (wanted as usize).clamp(least, most)
    } else {
        most
    })
}

/// The bounds where a part needs `min_part` multiply-adds (measured, or
/// given outright: `RNN_MIN_PART_MACS`).
const fn bounds_for_min_part(min_part: usize) -> SplitBounds {
    SplitBounds {
        min_part,
        wavefront_part: WAVEFRONT_TIMES_MIN_PART.saturating_mul(min_part),
    }
}

/// The environment variable that sets [`SplitBounds::min_part`] (and the
/// wavefront's bound, four times it) instead of the measured round trip.
const VARIABLE: &str = "RNN_MIN_PART_MACS";

/// `RNN_MIN_PART_MACS`'s value, read once per process: `None` where it is
/// unset or empty, an error naming it where it is not a whole number of
/// one or more.
pub(crate) fn selected_min_part() -> Result<Option<usize>> {
    static SELECTED: OnceLock<Result<Option<usize>>> = OnceLock::new();
    SELECTED
        .get_or_init(|| match std::env::var(VARIABLE) {
            Err(_) => Ok(None),
            Ok(value) => parse_min_part(&value),
        })
        .clone()
}

/// A value of `RNN_MIN_PART_MACS`.
fn parse_min_part(value: &str) -> Result<Option<usize>> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<usize>() {
        Ok(n @ 1..) => Ok(Some(n)),
        _ => Err(Error::InvalidArgument(format!(
            "{VARIABLE}={value:?}: expected a whole number of multiply-adds, 1 or more"
        ))),
    }
}

/// This process's bounds: `RNN_MIN_PART_MACS`'s where it is set (a bad
/// value is reported by every call, through [`selected_min_part`], and
/// ignored here), else those of the round trip measured at the first call
/// (about a quarter of a millisecond, once), else [`REFERENCE`].
pub(crate) fn bounds() -> SplitBounds {
    if cfg!(any(test, miri)) {
        return REFERENCE;
    }
    static BOUNDS: OnceLock<SplitBounds> = OnceLock::new();
    *BOUNDS.get_or_init(|| match selected_min_part() {
        Ok(Some(min_part)) => bounds_for_min_part(min_part),
        _ => measure_round_trip_ns().map_or(REFERENCE, bounds_for_round_trip),
    })
}

/// A cache line of its own for the value the two threads pass.
#[repr(align(128))]
struct Line(AtomicU64);

/// Round trips timed together; the median batch's average is the answer,
/// so that neither a batch in which a thread was interrupted nor one in
/// which the two shared a core for a moment (a VM's vCPUs can: 36 ns
/// against the usual 115-150 on the Xeon VM) sets it.
const ROUND_TRIPS_PER_BATCH: u32 = 64;
const BATCHES: usize = 15;

/// The longest the measurement may take in all, the second thread's start
/// included (a thread start takes 20-100 µs): past it, the other CPUs are
/// busy and the answer would be theirs, not the cost of a split.
const MEASURE_AT_MOST: Duration = Duration::from_millis(20);

/// Tells the partner thread to stop.
const STOP: u64 = u64::MAX;

/// Spins until `line` holds `want` or [`STOP`] (then `Some(value)`), or
/// `deadline` passes (`None`). Spins as the team's barriers do, with the
/// CPU's spin-wait hint, so that the round trip is the one they see.
fn wait_for(line: &Line, want: u64, deadline: Instant) -> Option<u64> {
    let mut spins = 0u32;
    loop {
        let value = line.0.load(Ordering::Acquire);
        if value == want || value == STOP {
            return Some(value);
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(256) && Instant::now() > deadline {
            return None;
        }
        std::hint::spin_loop();
    }
}

/// The core-to-core round trip, nanoseconds: this thread and a second one
/// pass a counter back and forth through one cache line, each waiting for
/// the other's increment. `None` with one CPU, where the second thread
/// cannot start, or where it does not answer within [`MEASURE_AT_MOST`].
pub(crate) fn measure_round_trip_ns() -> Option<f64> {
    if crate::threads::cores() < 2 {
        return None;
    }
    let line = Line(AtomicU64::new(0));
    let deadline = Instant::now() + MEASURE_AT_MOST;
    let line = &line;
    std::thread::scope(|scope| {
        let partner = std::thread::Builder::new()
            .name("librnn-round-trip".into())
            .spawn_scoped(scope, move || {
                // Answers each odd value with the next even one.
                let mut want = 1;
                while wait_for(line, want, deadline) == Some(want) {
                    line.0.store(want + 1, Ordering::Release);
                    want += 2;
                }
            })
            .ok()?;
        let mut batches = [0.0; BATCHES];
        let mut sent = 1;
        let mut answered = true;
        'batches: for batch in &mut batches {
            let start = Instant::now();
            for _ in 0..ROUND_TRIPS_PER_BATCH {
                line.0.store(sent, Ordering::Release);
                if wait_for(line, sent + 1, deadline) != Some(sent + 1) {
                    answered = false;
                    break 'batches;
                }
                sent += 2;
            }
            *batch = start.elapsed().as_nanos() as f64 / f64::from(ROUND_TRIPS_PER_BATCH);
        }
        line.0.store(STOP, Ordering::Release);
        // The partner stops at STOP or at the deadline; it cannot panic.
        let _ = partner.join();
        answered.then(|| {
            batches.sort_by(f64::total_cmp);
            batches[BATCHES / 2]
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_round_trip_within_their_range() {
        // The Xeon VM's measured round trips give its measured break-even;
        // the reference's 8k comes back at about 33 ns.
        for nanos in [145.0, 165.0, 190.0] {
            let xeon = bounds_for_round_trip(nanos);
            assert!((33_000..=49_000).contains(&xeon.min_part), "{xeon:?}");
            assert_eq!(xeon.wavefront_part, 4 * xeon.min_part);
        }
        let zen3 = bounds_for_round_trip(33.0);
        assert!((7_000..=9_000).contains(&zen3.min_part), "{zen3:?}");
        // Out of range, or not a number: clamped, never zero.
        assert_eq!(bounds_for_round_trip(1.0).min_part, MIN_PART_RANGE.0);
        assert_eq!(bounds_for_round_trip(1e9).min_part, MIN_PART_RANGE.1);
        assert_eq!(bounds_for_round_trip(f64::NAN).min_part, MIN_PART_RANGE.1);
        assert_eq!(
            bounds_for_round_trip(f64::INFINITY).min_part,
            MIN_PART_RANGE.1
        );
        assert_eq!(REFERENCE, bounds_for_min_part(1 << 13));
    }

    #[test]
    fn the_variable_takes_a_count_of_one_or_more() {
        assert_eq!(parse_min_part("").unwrap(), None);
        assert_eq!(parse_min_part(" 8192 ").unwrap(), Some(8192));
        assert_eq!(parse_min_part("1").unwrap(), Some(1));
        for bad in ["0", "-5", "8k", "1.5", "lots"] {
            let message = parse_min_part(bad).unwrap_err().to_string();
            assert!(message.contains(VARIABLE), "{bad}: {message}");
        }
        assert_eq!(
            bounds_for_min_part(usize::MAX).wavefront_part,
            usize::MAX,
            "saturates"
        );
    }

    /// The round trip is measured where a second CPU is free, and takes
    /// somewhere between a shared cache's latency and the microseconds of
    /// an emulator (qemu). Tried for up to about three seconds, pausing
    /// between tries: the tests running beside this one (or another
    /// process) may hold every CPU for a while, and under qemu five quick
    /// tries during the other lib tests all ran past the 20 ms limit once.
    #[test]
    #[cfg_attr(miri, ignore = "spins on two threads against the clock")]
    fn the_round_trip_is_measured_on_two_cpus() {
        if crate::threads::cores() < 2 {
            assert_eq!(measure_round_trip_ns(), None);
            return;
        }
        let measured = (0..100).find_map(|_| {
            measure_round_trip_ns().or_else(|| {
                std::thread::sleep(Duration::from_millis(10));
                None
            })
        });
        let nanos = measured.expect("a second CPU answered within 20 ms in one of 100 tries");
        let bounds = bounds_for_round_trip(nanos);
        println!("round trip {nanos:.0} ns: {bounds:?}");
        assert!((5.0..100_000.0).contains(&nanos), "{nanos} ns");
    }
}
