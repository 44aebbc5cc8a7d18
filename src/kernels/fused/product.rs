//! Large products over all time steps (the backward pass's weight
//! gradients and dX): `out = a × B` (or `out += a × B`) with `B` packed as
//! one-gate panels, `k` blocked so that a block of the packed panels stays
//! in L1/L2 while a chunk of rows runs against it, and output rows that are
//! *not* padded (a row of `dparams` or of dX is exactly `n` floats), so the
//! result lands where the caller wants it without an intermediate copy.
//!
//! Bits: every output is one FMA chain per `k` block, the blocks added in
//! order into the output; `KC` is a constant, so the result does not depend
//! on how the rows are split over threads.

use super::{for_rows, Epilogue, MatRow};
use crate::kernels::{unit, Simd};

/// Rows of `k` per block: `KC × U` floats of each panel, four panels per
/// tile, stay in L1/L2 (64 KiB on AVX-512) while every row of a chunk runs.
pub(crate) const KC: usize = 256;

/// Stores (or adds) a block's accumulators into an unpadded row of `n`
/// floats; the left operand of each row starts `k0` floats in.
struct BlockEpilogue {
    k0: usize,
    n: usize,
    add: bool,
}

impl<S: Simd, const V: usize> Epilogue<S, MatRow, V> for BlockEpilogue {
    #[inline(always)]
    fn a(&self, row: &MatRow) -> *const f32 {
        row.a.wrapping_add(self.k0)
    }
    #[inline(always)]
    unsafe fn apply(&self, row: &MatRow, panel: usize, acc: &[S::V; V]) {
        for w in 0..S::W {
            let col = panel * unit::<S>() + w * S::LANES;
            if col >= self.n {
                return;
            }
            // SAFETY: `out` holds `n` floats; whole vectors are stored only
            // below `n`, the row's last partial vector through a local copy.
            unsafe {
                let out = row.out.add(col);
                if col + S::LANES <= self.n {
                    let v = if self.add {
                        S::add(S::load(out), acc[w])
                    } else {
                        acc[w]
                    };
                    S::store(out, v);
                } else {
                    let mut lanes = [0f32; 64];
                    S::store(lanes.as_mut_ptr(), acc[w]);
                    for (i, &lane) in lanes[..self.n - col].iter().enumerate() {
                        let o = out.add(i);
                        *o = if self.add { *o + lane } else { lane };
                    }
                }
            }
        }
    }
}

/// `out[row] = a[row] × B` (`accumulate`: `+=`) for rows of `a` holding `k`
/// floats each, `B [k, n]` packed as `ceil(n / U)` one-gate panels of
/// `k × U` floats, and output rows of exactly `n` floats.
///
/// # Safety
/// The ISA is the caller's (the kernel table's) contract; every `a` points to
/// `k` readable floats, every `out` to `n` writable ones no other row shares,
/// and `packed` holds the panels.
#[inline(always)]
pub(crate) unsafe fn blocked_matmul<S: Simd, const MR: usize>(
    k: usize,
    n: usize,
    packed: &[f32],
    rows: &[MatRow],
    accumulate: bool,
) {
    let u = unit::<S>();
    let panels = n.div_ceil(u);
    assert!(packed.len() >= panels * k * u, "packed panels too short");
    if k == 0 {
        if !accumulate {
            for row in rows {
                // SAFETY: `out` holds `n` writable floats.
                unsafe { std::ptr::write_bytes(row.out, 0, n) };
            }
        }
        return;
    }
    let stride = k * u;
    // Rows per chunk: one chunk's block of `a` (MR · 12 rows × KC floats,
    // 72 KiB on AVX-512) stays in L2 while it runs against every panel.
    let chunk = MR * 12;
    for rows in rows.chunks(chunk) {
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let epi = BlockEpilogue {
                k0,
                n,
                add: accumulate || k0 > 0,
            };
            // SAFETY: the block's panels start `k0` rows into each panel
            // (still `stride` apart); `a` rows hold k0 + kc floats.
            unsafe {
                let base = packed.as_ptr().add(k0 * u);
                match S::W {
                    1 => for_rows::<S, _, _, MR, 1, 4, 8>(kc, base, (0, panels), stride, rows, &epi),
                    2 => for_rows::<S, _, _, MR, 2, 2, 4>(kc, base, (0, panels), stride, rows, &epi),
                    4 => for_rows::<S, _, _, MR, 4, 1, 2>(kc, base, (0, panels), stride, rows, &epi),
                    8 => for_rows::<S, _, _, MR, 8, 1, 1>(kc, base, (0, panels), stride, rows, &epi),
                    w => unreachable!("no product instance for {w} vectors per panel"),
                }
            }
        }
    }
}
