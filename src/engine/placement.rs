//! Keeping a team's members on distinct CPUs.
//!
//! The OS may wake a sleeping worker on the CPU of the thread that woke it
//! (Linux's wake-affine placement), and two members of a team that share a
//! CPU run one at a time: each spins out at a barrier, sleeps, and wakes
//! only once the other sleeps in turn, so every step costs a wake-up. The
//! scheduler's load balancing does not part them, for the pair never has
//! two threads runnable for long. Measured on the 2-core VM (BENCHMARKS.md,
//! "Team members on one CPU"): after 20 ms idle, half of the two-thread
//! calls ran with both members on one CPU, at 60 µs a step instead of 8.
//!
//! A member that finds a member of lower index on its CPU moves itself: it
//! narrows its own affinity to the CPUs it may use less those the team's
//! other members are on, which moves it at once, and sets the affinity back
//! as it was (the thread stays where it went until the scheduler moves it
//! again). Only the calling thread's own affinity is touched, only for the
//! length of two system calls, and never the caller's (member 0, the
//! user's thread). Elsewhere than on Linux this does nothing.

/// No CPU known.
pub(crate) const UNKNOWN: usize = usize::MAX;

/// The CPU the calling thread runs on now ([`UNKNOWN`] where the OS does
/// not say).
pub(crate) fn current_cpu() -> usize {
    os::current_cpu().unwrap_or(UNKNOWN)
}

/// Moves the calling thread to a CPU it may use that is not in `taken`;
/// the CPU it runs on afterwards, or `None` if it may use no other CPU (or
/// the OS refused).
pub(crate) fn move_off(taken: impl Iterator<Item = usize>) -> Option<usize> {
    os::move_off(taken)
}

#[cfg(all(target_os = "linux", not(miri)))]
mod os {
    use std::mem::{size_of, MaybeUninit};

    pub(super) fn current_cpu() -> Option<usize> {
        // SAFETY: sched_getcpu takes no arguments and only returns a value.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }

    fn affinity() -> Option<libc::cpu_set_t> {
        let mut set = MaybeUninit::<libc::cpu_set_t>::zeroed();
        // SAFETY: `set` is a writable cpu_set_t of the size passed; pid 0
        // is the calling thread.
        let rc =
            unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), set.as_mut_ptr()) };
        // SAFETY: zeroed is a valid cpu_set_t, and the call filled it.
        (rc == 0).then(|| unsafe { set.assume_init() })
    }

    fn set_affinity(set: &libc::cpu_set_t) -> bool {
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is
        // the calling thread.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) == 0 }
    }

    #[cfg(test)]
    pub(super) fn allowed_cpus() -> Option<usize> {
        // SAFETY: CPU_COUNT only reads the set.
        affinity().and_then(|set| usize::try_from(unsafe { libc::CPU_COUNT(&set) }).ok())
    }

    pub(super) fn move_off(taken: impl Iterator<Item = usize>) -> Option<usize> {
        let allowed = affinity()?;
        let mut elsewhere = allowed;
        for cpu in taken {
            if cpu < libc::CPU_SETSIZE as usize {
                // SAFETY: `cpu` is below the set's size.
                unsafe { libc::CPU_CLR(cpu, &mut elsewhere) };
            }
        }
        // SAFETY: CPU_COUNT only reads the set.
        if unsafe { libc::CPU_COUNT(&elsewhere) } == 0 || !set_affinity(&elsewhere) {
            return None;
        }
        let now = current_cpu();
        // Back as it was: the thread stays on the CPU it moved to.
        set_affinity(&allowed);
        now
    }
}

#[cfg(not(all(target_os = "linux", not(miri))))]
mod os {
    pub(super) fn current_cpu() -> Option<usize> {
        None
    }

    pub(super) fn move_off(_taken: impl Iterator<Item = usize>) -> Option<usize> {
        None
    }

    #[cfg(test)]
    pub(super) fn allowed_cpus() -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_moves_off_the_cpus_it_is_told_and_keeps_its_affinity() {
        let here = current_cpu();
        if here == UNKNOWN {
            return; // Not Linux: nothing to move.
        }
        let before = os_affinity_count();
        match move_off([here].into_iter()) {
            Some(there) => assert_ne!(there, here, "moved off CPU {here}"),
            None => assert!(before <= 1, "{before} CPUs allowed, yet it did not move"),
        }
        assert_eq!(os_affinity_count(), before, "the affinity is as it was");
        assert_eq!(move_off(0..1024), None, "nowhere to go");
        assert_eq!(os_affinity_count(), before);
    }

    /// How many CPUs the calling thread may run on (0 where unknown).
    fn os_affinity_count() -> usize {
        os::allowed_cpus().unwrap_or(0)
    }
}
