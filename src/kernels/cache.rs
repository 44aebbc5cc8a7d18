//! The sizes of a core's L2 and L3 caches, for rules that decide what may
//! be asked into them (the tile core's look-ahead, `fused::for_rows`).
//!
//! Linux says them in sysfs (`/sys/devices/system/cpu/cpu0/cache/index*/`,
//! the unified or data cache of each level); elsewhere, or where it does
//! not say, [`FALLBACK_L2`] stands in for the L2 (the smallest L2 of the
//! x86-64 and AArch64 cores in use, 256 KiB, so a rule never asks for more
//! than a core holds) and no L3 is assumed (0).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The L2 assumed where the OS does not say.
pub(crate) const FALLBACK_L2: usize = 256 << 10;

/// The L2 and L3 sizes found, in bytes (`usize::MAX`: not looked up yet).
static L2_BYTES: AtomicUsize = AtomicUsize::new(usize::MAX);
static L3_BYTES: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The L2 cache of the first CPU, in bytes (looked up once).
pub(crate) fn l2_bytes() -> usize {
    looked_up(&L2_BYTES, 2, FALLBACK_L2)
}

/// The L3 cache the first CPU shares with others, in bytes (0: none known;
/// looked up once).
pub(crate) fn l3_bytes() -> usize {
    looked_up(&L3_BYTES, 3, 0)
}

/// Tests: take `bytes` as the L3 from now on (the rules that read it
/// change speed only, never bits, so tests running meanwhile are unharmed).
#[cfg(test)]
pub(crate) fn set_l3_for_test(bytes: usize) {
    L3_BYTES.store(bytes, Ordering::Relaxed);
}

fn looked_up(cell: &AtomicUsize, level: u32, fallback: usize) -> usize {
    let known = cell.load(Ordering::Relaxed);
    if known != usize::MAX {
        return known;
    }
    let bytes = os::cache_bytes(level).unwrap_or(fallback);
    cell.store(bytes, Ordering::Relaxed);
    bytes
}

/// A sysfs cache size: `512K`, `1M` or a plain number of bytes.
#[cfg_attr(not(all(target_os = "linux", not(miri))), allow(dead_code))]
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (at, 'K') => (&text[..at], 1 << 10),
        (at, 'M') => (&text[..at], 1 << 20),
        _ => (text, 1),
    };
    digits
        .parse::<usize>()
        .ok()?
        .checked_mul(unit)
        .filter(|&b| b > 0)
}

#[cfg(all(target_os = "linux", not(miri)))]
mod os {
    use std::fs::read_to_string;

    /// The data or unified cache of `level`.
    pub(super) fn cache_bytes(level: u32) -> Option<usize> {
        (0..8).find_map(|index| {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
            let found = read_to_string(format!("{dir}/level")).ok()?;
            let kind = read_to_string(format!("{dir}/type")).ok()?;
            if found.trim() != level.to_string() || kind.trim() == "Instruction" {
                return None;
            }
            super::parse_size(&read_to_string(format!("{dir}/size")).ok()?)
        })
    }
}

#[cfg(not(all(target_os = "linux", not(miri))))]
mod os {
    pub(super) fn cache_bytes(_level: u32) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_sizes_parse_and_nonsense_does_not() {
        assert_eq!(parse_size("512K\n"), Some(512 << 10));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("2048"), Some(2048));
        for bad in ["", "K", "0K", "-1K", "12Q", "x512K"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_caches_are_found_or_the_fallbacks_stand_in() {
        let (l2, l3) = (l2_bytes(), l3_bytes());
        assert!((64 << 10..=1 << 30).contains(&l2), "L2 {l2} bytes");
        assert!(l3 == 0 || l3 >= l2, "L3 {l3} bytes, L2 {l2}");
        assert_eq!((l2_bytes(), l3_bytes()), (l2, l3), "looked up once");
        assert_eq!(os::cache_bytes(2).unwrap_or(FALLBACK_L2), l2);
        assert_eq!(os::cache_bytes(3).unwrap_or(0), l3);
    }
}
