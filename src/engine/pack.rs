//! Weights rearranged for the kernels, once per model and ISA.
//!
//! Hidden units are padded to a multiple of the ISA's panel width `U`, with
//! zero weights, so padded units stay exactly zero through every cell and
//! every load is a whole vector. See `kernels::fused` for the interleaved and
//! gate-major layouts.

use super::workspace::BufferPool;
use crate::config::{CellKind, Config, GruVariant, ParamKind};
use crate::error::{try_vec, Result};
use crate::precision::{to_bf16_bits, Precision};
use rayon::prelude::*;

/// What the allocations here are for, in out-of-memory errors.
const PACKED: &str = "packed weights";

/// f32 storage whose first element starts a 64-byte cache line, so that the
/// kernels' whole-vector loads of a weight panel never straddle two lines
/// (a `Vec<f32>` of this size is typically 16 bytes past a line).
#[derive(Debug, Default)]
pub(crate) struct Aligned {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    const LINE: usize = 64;
    /// Floats of slack that let `len` floats start on a line anywhere in a
    /// buffer: an f32-aligned address is at most 15 floats before one.
    pub const SLACK: usize = Self::LINE / std::mem::size_of::<f32>() - 1;

    pub fn new(values: &[f32]) -> Result<Self> {
        let buf = try_vec(values.len() + Self::SLACK, 0.0, PACKED)?;
        let mut aligned = Self::within(buf, values.len());
        aligned.copy_from_slice(values);
        Ok(aligned)
    }

    /// The first `len` floats from the first cache line of `buf`, which
    /// holds at least `len + SLACK` (a scratch buffer from the model's pool;
    /// [`into_buffer`](Self::into_buffer) gives it back).
    pub fn within(buf: Vec<f32>, len: usize) -> Self {
        assert!(buf.len() >= len + Self::SLACK, "buffer too short to align");
        let start = buf.as_ptr().align_offset(Self::LINE).min(Self::SLACK);
        Aligned { buf, start, len }
    }

    pub fn into_buffer(self) -> Vec<f32> {
        self.buf
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// One layer and direction, packed.
#[derive(Debug)]
pub(crate) struct PackedBlock {
    /// The format of the forward panels (`w_panels`, `r_panels`,
    /// `r_panels_n`, `proj_panels`): a panel of `k` rows is
    /// `precision.panel_rows(k)` rows of words (see
    /// `kernels::fused::format`). A reduced-precision
    /// block has no backward panels (training runs in f32).
    pub precision: Precision,
    /// The cell (its kernels, and in bf16 whether rows may be rounded: see
    /// `Kernels::layer_steps`).
    pub cell: CellKind,
    pub gates: usize,
    pub hidden: usize,
    /// Hidden size padded to a multiple of the panel width.
    pub hp: usize,
    /// State size (H_out) and its padded row stride.
    pub state: usize,
    pub state_stride: usize,
    pub input: usize,
    /// `Wᵀ` as one-gate panels over the interleaved columns (K = I,
    /// N = G·Hp), for the input projection.
    pub w_panels: Aligned,
    /// `Wb + Rb` interleaved (GRU linear-before-reset: Rbn left out).
    pub bias_interleaved: Vec<f32>,
    /// Recurrent panels: all gates, or r and z for GRU.
    pub r_panels: Aligned,
    /// GRU: n-gate recurrent panels.
    pub r_panels_n: Aligned,
    /// GRU linear-before-reset: Rbn `[Hp]`.
    pub rb_n: Vec<f32>,
    /// LSTM peepholes `[3·Hp]`.
    pub peephole: Option<Vec<f32>>,
    /// LSTM projection as one-gate panels over K = H.
    pub proj_panels: Aligned,
    /// Backward: `W` gate-major `[G·Hp, I]` as one-gate panels (K = G·Hp,
    /// N = I), for dX = dG × W.
    pub w_back_panels: Aligned,
    /// Backward per-step products as one-gate panels: `dG × R` (K = G·Hp, or
    /// 2·Hp for GRU's r and z), GRU `d_rn × Rn` (K = Hp), and the projection
    /// `dh × P` (K = H_out, N = Hp).
    pub r_back_panels: Aligned,
    pub r_back_panels_n: Aligned,
    pub proj_back_panels: Aligned,
}

/// Packs `B [k, n]` (given element-wise by `b`) as one-gate panels for
/// `panel_matmul`: `round_up(n, unit) / unit` panels of `k × unit` (the
/// tests' packing; a model packs into pooled storage with `fill_panels`).
#[cfg(test)]
pub(crate) fn pack_b(
    k: usize,
    n: usize,
    unit: usize,
    b: impl Fn(usize, usize) -> f32 + Sync,
) -> Result<Vec<f32>> {
    let mut out = try_vec(k * round_up(n, unit), 0.0, PACKED)?;
    fill_panels((k, n, unit), &mut out, |kk, q0, dst| {
        for (u, v) in dst.iter_mut().enumerate() {
            *v = b(kk, q0 + u);
        }
    });
    Ok(out)
}

/// Packs `B [rows, cols]` as one-gate panels for the panel products
/// (`round_up(cols, unit) / unit` panels of `rows × unit`): row `r`'s
/// values of the panel starting at column `c0` (`width <= unit` of them)
/// written by `fill(r, c0, dst)`, zeros past `cols`, so `out` may hold
/// anything before. Large packs run on the pool's threads, a panel per task.
pub(crate) fn fill_panels(
    (rows, cols, unit): (usize, usize, usize),
    out: &mut [f32],
    fill: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    let panel_len = rows * unit;
    let panels = cols.div_ceil(unit);
    assert!(out.len() >= panels * panel_len, "packed buffer too short");
    if rows == 0 {
        return;
    }
    let pack_panel = |(p, panel): (usize, &mut [f32])| {
        let (c0, width) = (p * unit, unit.min(cols - p * unit));
        for (r, dst) in panel.chunks_exact_mut(unit).enumerate() {
            fill(r, c0, &mut dst[..width]);
            dst[width..].fill(0.0);
        }
    };
    let out = &mut out[..panels * panel_len];
    let forked = crate::threads::num_threads() > 1
        && out.len() >= 1 << 16
        && crate::threads::on_pool(|| {
            out.par_chunks_mut(panel_len)
                .enumerate()
                .for_each(pack_panel)
        })
        .is_ok();
    if !forked {
        out.chunks_mut(panel_len).enumerate().for_each(pack_panel);
    }
}

/// f32 panels of `k` rows of `width` values each, as words of `precision`
/// (see `kernels::fused::format`): for bf16, row pair `(2i, 2i + 1)` of
/// each panel becomes one row of words, the even row's value in the low
/// half, a missing last odd row zero; for int8, see `quantize::pack_panels`.
pub(crate) fn to_words(
    panels: &[f32],
    k: usize,
    width: usize,
    precision: Precision,
) -> Result<Vec<f32>> {
    match precision {
        Precision::F32 => crate::error::try_copy(panels, PACKED),
        Precision::Int8 => super::quantize::pack_panels(panels, k, width),
        Precision::Bf16 => {
            let (per, word_rows) = (k * width, k.div_ceil(2));
            let count = panels.len().checked_div(per).unwrap_or(0);
            let mut out = try_vec(count * word_rows * width, 0.0, PACKED)?;
            for (src, dst) in panels
                .chunks_exact(per.max(1))
                .zip(out.chunks_exact_mut((word_rows * width).max(1)))
            {
                for (i, words) in dst.chunks_exact_mut(width).enumerate() {
                    for (c, word) in words.iter_mut().enumerate() {
                        let low = u32::from(to_bf16_bits(src[2 * i * width + c]));
                        let high = match 2 * i + 1 < k {
                            true => u32::from(to_bf16_bits(src[(2 * i + 1) * width + c])),
                            false => 0,
                        };
                        *word = f32::from_bits(low | high << 16);
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Rounds `n` up to a multiple of `unit`.
pub(crate) fn round_up(n: usize, unit: usize) -> usize {
    n.div_ceil(unit) * unit
}

/// Interleaved column of gate `g`, unit `j`, for `gates` gates per panel.
pub(crate) fn interleaved(g: usize, j: usize, gates: usize, unit: usize) -> usize {
    (j / unit) * gates * unit + g * unit + j % unit
}

/// Packs rows `[g·H + j, 0..k]` of `m` for the gates in `gate_list` into
/// `out` (`hp · gate_list.len() · k` floats, every one written): panels of
/// `unit` hidden units, then runs of `side` gates (all of them, or the
/// LSTM's two halves where the kernels read so: see
/// `kernels::fused::pairs_apart`), then row kk, then gate, then unit.
fn panels_into(
    out: &mut [f32],
    m: &[f32],
    (hidden, k, hp): (usize, usize, usize),
    gate_list: &[usize],
    (unit, side): (usize, usize),
) {
    let gu = gate_list.len() * unit;
    assert_eq!(out.len(), hp * gate_list.len() * k, "packed buffer size");
    assert!(
        side > 0 && gate_list.len().is_multiple_of(side),
        "runs of whole gates"
    );
    for (p, panel) in out.chunks_exact_mut((k * gu).max(1)).enumerate() {
        let runs = panel.chunks_exact_mut((k * side * unit).max(1));
        for (run, gates) in runs.zip(gate_list.chunks(side)) {
            for (kk, row) in run.chunks_exact_mut(side * unit).enumerate() {
                for (&g, gate) in gates.iter().zip(row.chunks_exact_mut(unit)) {
                    for (u, v) in gate.iter_mut().enumerate() {
                        let j = p * unit + u;
                        *v = if j < hidden {
                            m[(g * hidden + j) * k + kk]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// Where the packed weights' storage comes from and goes back to: the
/// model's buffer pool, so that packing again after each training update
/// writes into the previous packing's memory instead of faulting in fresh
/// pages (which took half of the packing time). A buffer is reused only if
/// it is at most an eighth larger than the panels need.
pub(crate) struct Storage<'a>(pub &'a BufferPool);

impl Storage<'_> {
    /// `len` floats starting a cache line, contents unspecified.
    fn aligned(&self, len: usize) -> Result<Aligned> {
        if len == 0 {
            return Ok(Aligned::default());
        }
        Ok(Aligned::within(
            self.0.take_fitted(len + Aligned::SLACK)?,
            len,
        ))
    }
}

impl PackedBlock {
    /// The panels' storage, for the pool.
    pub fn into_buffers(self) -> impl Iterator<Item = Vec<f32>> {
        [
            self.w_panels,
            self.r_panels,
            self.r_panels_n,
            self.proj_panels,
            self.w_back_panels,
            self.r_back_panels,
            self.r_back_panels_n,
            self.proj_back_panels,
        ]
        .into_iter()
        .map(Aligned::into_buffer)
    }

    /// Rows of words a panel of `k` rows takes in this block's format.
    pub fn words(&self, k: usize) -> usize {
        self.precision.panel_rows(k)
    }

    /// The packed weights a forward step reads: W (the input projection),
    /// R and the LSTM projection.
    fn forward_panels(&self) -> [&Aligned; 4] {
        [
            &self.w_panels,
            &self.r_panels,
            &self.r_panels_n,
            &self.proj_panels,
        ]
    }

    /// Bytes of [`Self::forward_panels`].
    pub fn forward_bytes(&self) -> usize {
        let floats = self.forward_panels().iter().map(|p| p.len()).sum::<usize>();
        floats * std::mem::size_of::<f32>()
    }

    /// Bytes of packed weights and biases this block holds.
    pub fn bytes(&self) -> usize {
        let backward = [
            &self.w_back_panels,
            &self.r_back_panels,
            &self.r_back_panels_n,
            &self.proj_back_panels,
        ];
        let panels = self.forward_panels().into_iter().chain(backward);
        let floats = panels.map(|p| p.len()).sum::<usize>()
            + self.bias_interleaved.len()
            + self.rb_n.len()
            + self.peephole.as_ref().map_or(0, Vec::len);
        floats * std::mem::size_of::<f32>()
    }

    pub fn new(
        config: &Config,
        params: &[f32],
        (layer, dir): (usize, usize),
        (unit, lstm_pairs_apart): (usize, bool),
        precision: Precision,
        storage: &Storage,
    ) -> Result<Self> {
        let tensor = |kind| {
            config
                .param_range(layer, dir, kind)
                .map(|r| &params[r])
                .unwrap_or(&[])
        };
        let (w, r, wb, rb) = (
            tensor(ParamKind::W),
            tensor(ParamKind::R),
            tensor(ParamKind::Wb),
            tensor(ParamKind::Rb),
        );
        let (g_count, h) = (config.gates(), config.hidden_size());
        let hp = round_up(h, unit);
        let (state, input) = (config.state_size(), config.layer_input_size(layer));
        let state_stride = round_up(state, unit);
        let gru = config.cell() == CellKind::Gru;
        let lbr = config.gru_variant() == GruVariant::LinearBeforeReset;

        let mut bias_interleaved = try_vec(g_count * hp, 0.0, PACKED)?;
        for g in 0..g_count {
            for j in 0..h {
                let src = g * h + j;
                let rb_part = if gru && lbr && g == 2 { 0.0 } else { rb[src] };
                bias_interleaved[interleaved(g, j, g_count, unit)] = wb[src] + rb_part;
            }
        }
        // Each forward panel set is packed in f32 into pooled storage, then
        // (reduced precision) turned into words, its f32 storage given back.
        let words = |f32_panels: Aligned, k: usize, width: usize| -> Result<Aligned> {
            if precision == Precision::F32 {
                return Ok(f32_panels);
            }
            let packed = Aligned::new(&to_words(&f32_panels, k, width, precision)?);
            storage.0.give(f32_panels.into_buffer());
            packed
        };
        let gate_panels = |gate_list: &[usize]| -> Result<Aligned> {
            let mut out = storage.aligned(hp * gate_list.len() * state)?;
            let side = match lstm_pairs_apart && config.cell() == CellKind::Lstm {
                true => gate_list.len() / 2,
                false => gate_list.len(),
            };
            panels_into(&mut out, r, (h, state, hp), gate_list, (unit, side));
            words(out, state, gate_list.len() * unit)
        };
        let (r_panels, r_panels_n) = if gru {
            (gate_panels(&[0, 1])?, gate_panels(&[2])?)
        } else {
            let all: Vec<usize> = (0..g_count).collect();
            (gate_panels(&all)?, Aligned::default())
        };
        let mut rb_n = try_vec(if gru { hp } else { 0 }, 0.0, PACKED)?;
        if gru {
            rb_n[..h].copy_from_slice(&rb[2 * h..3 * h]);
        }
        let peephole = match config.peepholes() {
            true => {
                let p = tensor(ParamKind::Peephole);
                let mut out = try_vec(3 * hp, 0.0, PACKED)?;
                for g in 0..3 {
                    out[g * hp..g * hp + h].copy_from_slice(&p[g * h..(g + 1) * h]);
                }
                Some(out)
            }
            false => None,
        };
        // `B [k, n]` packed into pooled storage, `fill` as in `fill_panels`.
        let packed_b = |(k, n): (usize, usize),
                        fill: &(dyn Fn(usize, usize, &mut [f32]) + Sync)| {
            let mut out = storage.aligned(k * round_up(n, unit))?;
            fill_panels((k, n, unit), &mut out, fill);
            Ok::<_, crate::Error>(out)
        };
        // Row `kk` of a gate-major padded matrix, columns `q0..`: from row
        // `g·H + j` of `m` (rows `width` long), zeros for a padded unit.
        let gate_major = |m: &[f32], width: usize, kk: usize, q0: usize, dst: &mut [f32]| {
            let (g, j) = (kk / hp, kk % hp);
            match j < h {
                true => dst.copy_from_slice(&m[(g * h + j) * width + q0..][..dst.len()]),
                false => dst.fill(0.0),
            }
        };
        let p_mat = tensor(ParamKind::Projection);
        let proj_panels = if config.proj_size() > 0 {
            // out[q] = Σ_j P[q, j] m[j]: B = Pᵀ, K = H over j, N = P over q.
            let panels = packed_b((h, state), &|j, q0, dst| {
                for (u, v) in dst.iter_mut().enumerate() {
                    *v = p_mat[(q0 + u) * h + j];
                }
            })?;
            words(panels, h, unit)?
        } else {
            Aligned::default()
        };
        // Wᵀ over the interleaved columns: a panel's columns are the units
        // `j0..` of one gate `g` (see `interleaved`), zero for padded units.
        let w_panels = packed_b((input, g_count * hp), &|kk, c0, dst| {
            let per_panel = g_count * unit;
            let (g, j0) = ((c0 % per_panel) / unit, c0 / per_panel * unit);
            for (u, v) in dst.iter_mut().enumerate() {
                let j = j0 + u;
                *v = if j < h {
                    w[(g * h + j) * input + kk]
                } else {
                    0.0
                };
            }
        })?;
        let w_panels = words(w_panels, input, unit)?;
        // The backward's panels; training runs in f32, so a reduced-precision
        // block has none.
        let (w_back_panels, r_back_panels, r_back_panels_n, proj_back_panels) =
            if precision == Precision::F32 {
                let (r_back, r_back_n) = if gru {
                    (
                        packed_b((2 * hp, state), &|kk, q0, dst| {
                            gate_major(r, state, kk, q0, dst)
                        })?,
                        packed_b((hp, state), &|kk, q0, dst| {
                            gate_major(r, state, 2 * hp + kk, q0, dst)
                        })?,
                    )
                } else {
                    (
                        packed_b((g_count * hp, state), &|kk, q0, dst| {
                            gate_major(r, state, kk, q0, dst)
                        })?,
                        Aligned::default(),
                    )
                };
                let proj_back = if config.proj_size() > 0 {
                    // Row q of P, padded: columns j0.. of it.
                    packed_b((state, hp), &|q, j0, dst| {
                        let valid = h.saturating_sub(j0).min(dst.len());
                        let (values, padding) = dst.split_at_mut(valid);
                        values.copy_from_slice(&p_mat[q * h + j0..][..valid]);
                        padding.fill(0.0);
                    })?
                } else {
                    Aligned::default()
                };
                let w_back = packed_b((g_count * hp, input), &|kk, q0, dst| {
                    gate_major(w, input, kk, q0, dst)
                })?;
                (w_back, r_back, r_back_n, proj_back)
            } else {
                Default::default()
            };
        Ok(PackedBlock {
            precision,
            cell: config.cell(),
            gates: g_count,
            hidden: h,
            hp,
            state,
            state_stride,
            input,
            w_panels,
            bias_interleaved,
            r_panels,
            r_panels_n,
            rb_n,
            peephole,
            proj_panels,
            w_back_panels,
            r_back_panels,
            r_back_panels_n,
            proj_back_panels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Aligned;

    #[test]
    fn aligned_panels_start_a_cache_line_and_keep_their_values() {
        // Miri (about 40 s per 40,000 floats copied and compared) stops
        // at 1000; the large allocation runs natively.
        let lens: &[usize] = if cfg!(miri) {
            &[0, 1, 15, 16, 17, 1000]
        } else {
            &[0, 1, 15, 16, 17, 1000, 40_000]
        };
        for &len in lens {
            let values: Vec<f32> = (0..len).map(|v| v as f32).collect();
            let a = Aligned::new(&values).unwrap();
            assert_eq!(&a[..], &values[..], "len {len}");
            if len > 0 {
                assert_eq!(a.as_ptr() as usize % 64, 0, "len {len}");
            }
        }
    }

    /// Scratch buffers of many sizes (so many start addresses) each yield
    /// `len` writable floats on a line, and are given back whole.
    #[test]
    fn scratch_within_a_buffer_starts_a_cache_line() {
        let len = 100;
        for skip in 0..16 {
            let buf = vec![0f32; skip + len + Aligned::SLACK];
            let mut a = Aligned::within(buf, len);
            assert_eq!(a.len(), len);
            assert_eq!(a.as_ptr() as usize % 64, 0, "skip {skip}");
            a.fill(1.0);
            let back = a.into_buffer();
            assert_eq!(back.len(), skip + len + Aligned::SLACK);
            assert_eq!(back.iter().filter(|&&v| v == 1.0).count(), len);
        }
    }
}
