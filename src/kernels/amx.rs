//! Intel AMX (Sapphire Rapids and later): the tile instructions the bf16
//! tile path (`fused::tiles`) uses, as inline assembly because Rust's AMX
//! intrinsics are unstable, and the check that both the CPU and the OS let
//! this process use them.
//!
//! Tiles are eight registers `tmm0..tmm7` of up to 16 rows × 64 bytes,
//! shaped by a 64-byte configuration (`ldtilecfg`). The compiler knows
//! nothing of them: whoever configures them owns all eight until it
//! releases them (`tilerelease`), and no other code of this crate uses
//! them. Every wrapper below is `unsafe`: it may only run after
//! [`available`] returned true, with the tiles it names configured.

use std::arch::asm;
use std::sync::OnceLock;

/// Whether this CPU has AMX-TILE, AMX-BF16 and AMX-INT8 and the OS granted
/// this process the tile data state. Asked once per process: on Linux the
/// permission (`arch_prctl(ARCH_REQ_XCOMP_PERM)`) is process-wide and must
/// be requested before the first tile instruction.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu_has_amx() && request_tile_data())
}

/// CPUID leaf 7, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE, bit 25 AMX-INT8.
fn cpu_has_amx() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU, and leaf 7 is only read
    // when the highest leaf (leaf 0's EAX) includes it.
    let edx = unsafe {
        if __cpuid(0).eax < 7 {
            return false;
        }
        __cpuid_count(7, 0).edx
    };
    let all = (1 << 22) | (1 << 24) | (1 << 25);
    edx & all == all
}

/// Asks Linux for the tile data state (XTILEDATA, feature 18) and checks it
/// was granted: a kernel without AMX support, or one that refuses (a
/// sigaltstack too small for the larger signal frame), says no.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these codes reads its integer argument or
    // writes one u64 through the pointer, which points to a live local.
    unsafe {
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) != 0
        {
            return false;
        }
        let mut granted: u64 = 0;
        let r = libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut granted as *mut u64,
        );
        r == 0 && granted & (1 << XFEATURE_XTILEDATA) != 0
    }
}

/// Other systems: not used (whether and how they grant the state was not
/// tested).
#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// Rows of a tile at most (palette 1).
pub(crate) const MAX_ROWS: usize = 16;
/// Bytes of a tile row at most (palette 1).
pub(crate) const ROW_BYTES: usize = 64;

/// A tile configuration (palette 1): the shape of each of the 8 tiles; a
/// tile left at 0 × 0 must not be used.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    pub(crate) fn new() -> TileConfig {
        TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        }
    }

    /// Shapes tile `tile` as `rows` rows of `bytes` bytes.
    pub(crate) fn shape(&mut self, tile: usize, rows: usize, bytes: usize) {
        assert!(tile < 8 && rows <= MAX_ROWS && bytes <= ROW_BYTES);
        self.rows[tile] = rows as u8;
        self.bytes_per_row[tile] = bytes as u16;
    }
}

/// Loads `config` (which also zeroes every tile).
///
/// # Safety
/// [`available`] returned true; `config` is valid for palette 1.
#[inline(always)]
pub(crate) unsafe fn configure(config: &TileConfig) {
    // SAFETY: the caller's contract; ldtilecfg reads the 64 bytes of `config`.
    unsafe { asm!("ldtilecfg [{}]", in(reg) config, options(nostack, readonly)) }
}

/// Returns the tiles to their initial state, so context switches stop
/// saving them.
///
/// # Safety
/// [`available`] returned true.
#[inline(always)]
pub(crate) unsafe fn release() {
    // SAFETY: the caller's contract.
    unsafe { asm!("tilerelease", options(nostack)) }
}

/// Zeroes tile `T`.
///
/// # Safety
/// Tile `T` is configured.
#[inline(always)]
pub(crate) unsafe fn zero<const T: u8>() {
    // SAFETY: the caller's contract.
    unsafe { asm!("tilezero tmm{t}", t = const T, options(nostack)) }
}

/// Loads tile `T`'s rows from `src`, `stride` bytes apart.
///
/// # Safety
/// Tile `T` is configured, and each of its rows is readable at `src`,
/// `src + stride`, ….
#[inline(always)]
pub(crate) unsafe fn load<const T: u8>(src: *const u8, stride: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!(
            "tileloadd tmm{t}, [{src} + {stride}*1]",
            t = const T,
            src = in(reg) src,
            stride = in(reg) stride,
            options(nostack, readonly)
        )
    }
}

/// Stores tile `T`'s rows at `dst`, `stride` bytes apart.
///
/// # Safety
/// Tile `T` is configured, and each of its rows is writable at `dst`,
/// `dst + stride`, ….
#[inline(always)]
pub(crate) unsafe fn store<const T: u8>(dst: *mut u8, stride: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!(
            "tilestored [{dst} + {stride}*1], tmm{t}",
            t = const T,
            dst = in(reg) dst,
            stride = in(reg) stride,
            options(nostack)
        )
    }
}

/// `C += A × B` in bf16 pairs: `C[m][n] += A[m][2i]·B[i][2n] +
/// A[m][2i+1]·B[i][2n+1]` summed over the pairs `i`, in f32 (bf16 products
/// are exact in f32; denormal inputs and results are flushed to zero).
///
/// # Safety
/// Tiles `C`, `A`, `B` are configured with matching shapes (A's row bytes
/// / 4 = B's rows, C's rows = A's, C's row bytes = B's).
#[inline(always)]
pub(crate) unsafe fn dot_bf16<const C: u8, const A: u8, const B: u8>() {
    // SAFETY: the caller's contract.
    unsafe {
        asm!("tdpbf16ps tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B, options(nostack))
    }
}

/// `C += A × B` in bytes, exactly: `C[m][n] += Σ A[m][4i+j]·B[i][4n+j]`
/// over the quads `i` and `j < 4`, A's bytes unsigned and B's signed, in
/// i32 (wrapping, as `vpdpbusd`).
///
/// # Safety
/// As [`dot_bf16`].
#[inline(always)]
pub(crate) unsafe fn dot_u8i8<const C: u8, const A: u8, const B: u8>() {
    // SAFETY: the caller's contract.
    unsafe {
        asm!("tdpbusd tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B, options(nostack))
    }
}

/// [`dot_u8i8`] where `int8`, else [`dot_bf16`] (a constant once inlined).
///
/// # Safety
/// As [`dot_bf16`].
#[inline(always)]
pub(crate) unsafe fn dot<const C: u8, const A: u8, const B: u8>(int8: bool) {
    // SAFETY: the caller's contract.
    unsafe {
        if int8 {
            dot_u8i8::<C, A, B>()
        } else {
            dot_bf16::<C, A, B>()
        }
    }
}
