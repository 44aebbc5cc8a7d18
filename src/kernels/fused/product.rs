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

use super::{for_rows, Epilogue, MatRow, PanelTiles, F32, NARROW_1, NARROW_2};
use crate::kernels::{unit, Simd};

/// Rows of `k` per block, and output columns per block: a block of the
/// packed panels (KC × NC floats, 512 KiB) stays in a 1 MiB L2 beside a
/// chunk of `a` while the chunk runs against it; one tile's panels (four on
/// AVX-512, 128 KiB) stay nearer. Measured on AVX-512 over the backward's
/// shapes (m × k × n from 400 × 4096 × 1024 to 4096 × 50 × 1024): KC = 128
/// ran 140-205 GFLOP/s, 256 at 149-210, 512 at 180-220, 1024 at 184-227;
/// NC = 128 no better. Both are constants, so the bits do not depend on
/// anything but the shape.
const KC: usize = 512;
const NC: usize = 256;

/// Stores (or adds) a block's accumulators into an unpadded row of `n`
/// floats; the left operand of each row starts `k0` floats in.
struct BlockEpilogue {
    k0: usize,
    n: usize,
    add: bool,
}

impl<S: Simd, const V: usize> Epilogue<S, MatRow, V> for BlockEpilogue {
    #[inline(always)]
    fn a(&self, row: &MatRow, _quantized: bool) -> *const f32 {
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
    // Rows per chunk: the chunk's block of `a` (MR · 12 rows × KC floats,
    // 144 KiB on AVX-512) and its output rows stay in L2 meanwhile.
    let panels_per_block = (NC / u).max(1);
    let chunk = MR * 12;
    for p0 in (0..panels).step_by(panels_per_block) {
        let p1 = panels.min(p0 + panels_per_block);
        for rows in rows.chunks(chunk) {
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                let epi = BlockEpilogue {
                    k0,
                    n,
                    add: accumulate || k0 > 0,
                };
                let cols = (p0, p1);
                // SAFETY: the block's panels start `k0` rows into each panel
                // (still `stride` apart); `a` rows hold k0 + kc floats.
                unsafe {
                    // Not a step's weights: tiles do not ask ahead.
                    let base = (packed.as_ptr().add(k0 * u), 0);
                    match PanelTiles::<S, F32, 1>::SHAPE {
                        // MR is `tile_rows::<S>(1, 1, 1)`: see `narrow_tiles`.
                        NARROW_1 => for_rows::<S, F32, _, _, MR, 1, 2, 4, 8>(
                            kc, base, cols, stride, rows, &epi,
                        ),
                        1 => for_rows::<S, F32, _, _, MR, 1, 4, 4, 8>(
                            kc, base, cols, stride, rows, &epi,
                        ),
                        // Two vectors per panel take no narrow tile here.
                        2 | NARROW_2 => for_rows::<S, F32, _, _, MR, 2, 2, 2, 4>(
                            kc, base, cols, stride, rows, &epi,
                        ),
                        4 => for_rows::<S, F32, _, _, MR, 4, 1, 1, 2>(
                            kc, base, cols, stride, rows, &epi,
                        ),
                        8 => for_rows::<S, F32, _, _, MR, 8, 1, 1, 1>(
                            kc, base, cols, stride, rows, &epi,
                        ),
                        w => unreachable!("no product instance for tile shape {w:#x}"),
                    }
                }
            }
        }
    }
}
