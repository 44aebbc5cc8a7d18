//! Backward pass of the fast engine: BPTT over a training trace.

use rayon::prelude::*;

use super::forward::{DirTrace, Trace};
use super::pack::PackedBlock;
use super::workspace::{zeroed, BufferPool};
use super::{batch_blocks, row, row_mut, Packed, SharedMut};
use crate::config::{CellKind, Config, Direction, GruVariant, ParamKind};
use crate::error::{try_copy, try_with_capacity, Result};
use crate::gemm::{add_column_sums, par_gemm, Mat};
use crate::io::{from_time_major, to_time_major, Gradients, OutputGrads};
use crate::kernels::fused::{BackParams, BackRow, MatRow};

/// Per-direction results the batch blocks write, one row per (time, item).
struct DirGrads {
    /// Gate pre-activation gradients, gate-major `[TN, G·Hp]`.
    dg: Vec<f32>,
    /// GRU: gradient of `Rn v + Rbn` `[TN, Hp]`.
    d_rn: Vec<f32>,
    /// LSTM with projection: gradient of the projected h `[TN, state_stride]`.
    dh_proj: Vec<f32>,
}

struct DirBack<'a> {
    config: &'a Config,
    pb: &'a PackedBlock,
    packed: &'a Packed,
    trace: &'a DirTrace,
    batch: usize,
    lens: &'a [usize],
    reversed: bool,
    /// Gradient of the layer output `[TN, width]`; this direction reads `slot`.
    d_out: &'a [f32],
    width: usize,
    slot: usize,
    /// `[N, H_out]` / `[N, H]`: dh_n / dc_n in, dh0 / dc0 out.
    dh_state: SharedMut,
    dc_state: SharedMut,
    out: [SharedMut; 3],
}

pub(crate) fn backward(
    config: &Config,
    packed: &Packed,
    pool: &BufferPool,
    trace: &Trace,
    grads: &OutputGrads<'_>,
) -> Result<Gradients> {
    let shapes = trace.shapes;
    grads.check(config, &shapes)?;
    let (t_len, n) = (shapes.seq_len, shapes.batch);
    let rows = t_len * n;
    let (hs, cs) = (config.state_size(), config.hidden_size());
    let width = config.output_size();
    let mut dparams = zeroed(config.num_params())?;
    let mut dh0 = grads
        .dh_n
        .map_or_else(|| zeroed(shapes.h), |d| try_copy(d, "dh0"))?;
    let mut dc0 = grads
        .dc_n
        .map_or_else(|| zeroed(shapes.c), |d| try_copy(d, "dc0"))?;
    let mut d_out = to_time_major(config.layout(), grads.dy, t_len, n, width)?;

    for layer in (0..config.num_layers()).rev() {
        let x = &trace.layer_inputs[layer];
        let in_size = config.layer_input_size(layer);
        let mut d_in = pool.take_zeroed(rows * in_size)?;
        for dir in 0..config.num_directions() {
            let ld = layer * config.num_directions() + dir;
            let pb = &packed.blocks[ld];
            let dt = &trace.dirs[ld];
            let (hp, ks) = (pb.hp, pb.state_stride);
            let gru = config.cell() == CellKind::Gru;
            let proj = config.proj_size() > 0;
            let mut dg = DirGrads {
                dg: pool.take_zeroed(rows * pb.gates * hp)?,
                d_rn: pool.take_zeroed(if gru { rows * hp } else { 0 })?,
                dh_proj: pool.take_zeroed(if proj { rows * ks } else { 0 })?,
            };
            let c_slice: &mut [f32] = if config.has_cell_state() {
                &mut dc0[ld * n * cs..(ld + 1) * n * cs]
            } else {
                &mut []
            };
            let run = DirBack {
                config,
                pb,
                packed,
                trace: dt,
                batch: n,
                lens: &trace.lens,
                reversed: config.direction().is_reversed(dir),
                d_out: &d_out,
                width,
                slot: if config.direction() == Direction::BidirectionalConcat {
                    dir * hs
                } else {
                    0
                },
                dh_state: SharedMut::new(&mut dh0[ld * n * hs..(ld + 1) * n * hs]),
                dc_state: SharedMut::new(c_slice),
                out: [&mut dg.dg, &mut dg.d_rn, &mut dg.dh_proj].map(|v| {
                    if v.is_empty() {
                        SharedMut::null()
                    } else {
                        SharedMut::new(v)
                    }
                }),
            };
            let peephole_grads: Vec<Vec<f32>> = batch_blocks(n)
                .par_iter()
                .map(|&(b0, nb)| run.block(b0, nb))
                .collect::<Result<_>>()?;
            weight_grads(
                config,
                pb,
                pool,
                layer,
                dir,
                x,
                dt,
                &dg,
                &peephole_grads,
                &mut dparams,
            )?;
            // dX += dG × W (gate-major).
            let gh = pb.gates * hp;
            par_gemm(
                Mat::rows(&dg.dg, rows, gh, gh),
                Mat::rows(&pb.w_gate_major, gh, in_size, in_size),
                1.0,
                &mut d_in,
                in_size,
            );
            for buf in [dg.dg, dg.d_rn, dg.dh_proj] {
                pool.give(buf);
            }
        }
        pool.give(std::mem::replace(&mut d_out, d_in));
    }
    let dx = from_time_major(config.layout(), d_out, t_len, n, config.input_size())?;
    Ok(Gradients {
        dx,
        dh0,
        dc0: config.has_cell_state().then_some(dc0),
        dparams,
    })
}

/// dW, dR, the biases, peepholes and projection of one layer and direction,
/// as GEMMs over all steps, unpadded into `dparams`.
#[allow(clippy::too_many_arguments)]
fn weight_grads(
    config: &Config,
    pb: &PackedBlock,
    pool: &BufferPool,
    layer: usize,
    dir: usize,
    x: &[f32],
    dt: &DirTrace,
    g: &DirGrads,
    peephole_grads: &[Vec<f32>],
    dparams: &mut [f32],
) -> Result<()> {
    let (hp, h, st, ks, gates, input) = (
        pb.hp,
        pb.hidden,
        pb.state,
        pb.state_stride,
        pb.gates,
        pb.input,
    );
    let gh = gates * hp;
    let rows = g.dg.len() / gh; // gh > 0: every cell has gates and Hp >= U
    let gru = config.cell() == CellKind::Gru;
    let range = |kind| config.param_range(layer, dir, kind).expect("tensor exists");

    // Gate-major padded [G·Hp, cols] → [G·H, cols] rows of dparams.
    let unpad = |padded: &[f32], cols: usize, dst: &mut [f32]| {
        for gi in 0..gates {
            for j in 0..h {
                let (src, out) = ((gi * hp + j) * cols, (gi * h + j) * cols);
                dst[out..out + cols].copy_from_slice(&padded[src..src + cols]);
            }
        }
    };

    let mut dw = pool.take(gh * input)?; // beta = 0: fully overwritten
    par_gemm(
        Mat::transposed(&g.dg, gh, rows, gh),
        Mat::rows(x, rows, input, input),
        0.0,
        &mut dw,
        input,
    );
    unpad(&dw, input, &mut dparams[range(ParamKind::W)]);
    pool.give(dw);

    let mut dwb = zeroed(gh)?;
    add_column_sums(&g.dg, rows, gh, &mut dwb)?;
    unpad(&dwb, 1, &mut dparams[range(ParamKind::Wb)]);

    let mut dr = pool.take(gh * st)?; // every part below is written with beta = 0
    let mut drb = try_copy(&dwb, "a bias gradient")?;
    let h_prev = Mat::rows(&dt.h_prev, rows, st, ks);
    if gru {
        // r and z: the gate gradients times h_prev; n: d_rn times the vector
        // Rn multiplied (r ⊙ h, or h for linear-before-reset).
        let rz = 2 * hp;
        let dg_rz = Mat {
            data: &g.dg,
            rows: rz,
            cols: rows,
            row_stride: 1,
            col_stride: gh,
        };
        par_gemm(dg_rz, h_prev, 0.0, &mut dr[..rz * st], st);
        let v = if config.gru_variant() == GruVariant::LinearBeforeReset {
            h_prev
        } else {
            Mat::rows(&dt.aux, rows, st, hp)
        };
        par_gemm(
            Mat::transposed(&g.d_rn, hp, rows, hp),
            v,
            0.0,
            &mut dr[rz * st..],
            st,
        );
        drb[rz..].fill(0.0);
        add_column_sums(&g.d_rn, rows, hp, &mut drb[rz..])?;
    } else {
        par_gemm(
            Mat::transposed(&g.dg, gh, rows, gh),
            h_prev,
            0.0,
            &mut dr,
            st,
        );
    }
    unpad(&dr, st, &mut dparams[range(ParamKind::R)]);
    pool.give(dr);
    unpad(&drb, 1, &mut dparams[range(ParamKind::Rb)]);

    if config.peepholes() {
        let dst = &mut dparams[range(ParamKind::Peephole)];
        for part in peephole_grads {
            for gi in 0..3 {
                for j in 0..h {
                    dst[gi * h + j] += part[gi * hp + j];
                }
            }
        }
    }
    if config.proj_size() > 0 {
        // dP [P, H] = dh_projᵀ × m.
        let mut dp = zeroed(st * hp)?;
        par_gemm(
            Mat::transposed(&g.dh_proj, st, rows, ks),
            Mat::rows(&dt.m, rows, hp, hp),
            0.0,
            &mut dp,
            hp,
        );
        let dst = &mut dparams[range(ParamKind::Projection)];
        for q in 0..st {
            dst[q * h..(q + 1) * h].copy_from_slice(&dp[q * hp..q * hp + h]);
        }
    }
    Ok(())
}

impl DirBack<'_> {
    /// Backpropagates items `b0 .. b0 + nb` through every step; returns the
    /// block's peephole gradient `[3·Hp]` (empty without peepholes).
    fn block(&self, b0: usize, nb: usize) -> Result<Vec<f32>> {
        let (pb, cfg, table) = (self.pb, self.config, &self.packed.kernels.table);
        let (ks, hp, st, h) = (pb.state_stride, pb.hp, pb.state, pb.hidden);
        let gh = pb.gates * hp;
        let cell = cfg.cell();
        let proj = cfg.proj_size() > 0;
        let mut peephole_grad = zeroed(if cfg.peepholes() { 3 * hp } else { 0 })?;
        let params = BackParams {
            hp,
            peephole: pb.peephole.as_deref(),
            peephole_grad: if peephole_grad.is_empty() {
                std::ptr::null_mut()
            } else {
                peephole_grad.as_mut_ptr()
            },
            clip: cfg.cell_clip(),
            input_forget: cfg.input_forget(),
            relu: cfg.activation() == crate::config::Activation::Relu,
            linear_before_reset: cfg.gru_variant() == GruVariant::LinearBeforeReset,
        };
        // Carried gradients of the state, per block row.
        let mut dh = zeroed(nb * ks)?;
        let mut dc = zeroed(if cell == CellKind::Lstm { nb * hp } else { 0 })?;
        for r in 0..nb {
            let b = b0 + r;
            // SAFETY: row b of the state gradients belongs to this block alone.
            unsafe {
                dh[r * ks..r * ks + st]
                    .copy_from_slice(std::slice::from_raw_parts(self.dh_state.at(b * st), st));
                if cell == CellKind::Lstm {
                    dc[r * hp..r * hp + h]
                        .copy_from_slice(std::slice::from_raw_parts(self.dc_state.at(b * h), h));
                }
            }
        }
        // Step buffers, one compacted row per active item.
        let mut dh_tot = zeroed(nb * ks)?;
        let mut dm = zeroed(if proj { nb * hp } else { 0 })?;
        let mut dg = zeroed(nb * gh)?;
        let mut d_rn = zeroed(if cell == CellKind::Gru { nb * hp } else { 0 })?;
        let mut dr = zeroed(d_rn.len())?;
        let mut dv = zeroed(d_rn.len())?;
        let mut tmp = zeroed(if cell == CellKind::Gru { nb * ks } else { 0 })?;
        let mut dh_prev = zeroed(nb * ks)?;
        let mut active: Vec<(usize, usize)> = try_with_capacity(nb, "a block's row list")?;
        let mut back_rows: Vec<BackRow> = try_with_capacity(nb, "a block's row list")?;
        let mut mat_rows: Vec<MatRow> = try_with_capacity(nb, "a block's row list")?;
        let max_len = self.lens[b0..b0 + nb].iter().copied().max().unwrap_or(0);

        for s in (0..max_len).rev() {
            active.clear();
            for r in 0..nb {
                let len = self.lens[b0 + r];
                if s < len {
                    let t = if self.reversed { len - 1 - s } else { s };
                    active.push((r, t * self.batch + b0 + r));
                }
            }
            // Compacted row a: dh_tot = carried dh + this step's output gradient.
            for (a, &(r, row_t)) in active.iter().enumerate() {
                let dst = &mut dh_tot[a * ks..(a + 1) * ks];
                dst.copy_from_slice(&dh[r * ks..(r + 1) * ks]);
                let dy = &self.d_out[row_t * self.width + self.slot..][..st];
                for (d, v) in dst.iter_mut().zip(dy) {
                    *d += v;
                }
                if proj {
                    // SAFETY: row row_t belongs to item b of this block.
                    unsafe {
                        std::ptr::copy_nonoverlapping(dst.as_ptr(), self.out[2].at(row_t * ks), ks)
                    };
                }
            }
            let na = active.len();
            let rows_of = |buf: &mut Vec<f32>, width: usize, a: usize| {
                buf.as_mut_ptr().wrapping_add(a * width)
            };
            // SAFETY (kernel calls below): `Kernels` exists only for a supported
            // ISA; every pointer addresses a whole padded row of a live buffer:
            // compacted rows a < na of the step buffers, rows r of the carries,
            // rows row_t of the trace.
            unsafe {
                if proj {
                    // dm = dh_tot × P (the projection's input gradient).
                    mat_rows.clear();
                    mat_rows.extend((0..na).map(|a| MatRow {
                        a: dh_tot.as_ptr().add(a * ks),
                        out: rows_of(&mut dm, hp, a),
                    }));
                    (table.panel_matmul)(st, hp, &pb.proj_back_panels, None, &mat_rows);
                }
                back_rows.clear();
                let tr = self.trace;
                for (a, &(r, row_t)) in active.iter().enumerate() {
                    back_rows.push(BackRow {
                        gates: row(&tr.gates, gh, row_t),
                        h_prev: row(&tr.h_prev, ks, row_t),
                        c_prev: row(&tr.c_prev, hp, row_t),
                        aux: row(
                            if cell == CellKind::Lstm {
                                &tr.c_raw
                            } else {
                                &tr.aux
                            },
                            hp,
                            row_t,
                        ),
                        dh: if proj {
                            row(&dm, hp, a)
                        } else {
                            row(&dh_tot, ks, a)
                        },
                        dc: row_mut(&mut dc, hp, r),
                        dg: row_mut(&mut dg, gh, a),
                        d_rn: row_mut(&mut d_rn, hp, a),
                        dh_prev: row_mut(&mut dh_prev, ks, a),
                        dr: row_mut(&mut dr, hp, a),
                        dv: row(&dv, hp, a),
                        clip_mask: row(&tr.clip_mask, gh, row_t),
                    });
                }
                let dg_rows = |a: usize| MatRow {
                    a: dg.as_ptr().add(a * gh),
                    out: dh_prev.as_mut_ptr().add(a * ks),
                };
                match cell {
                    CellKind::Lstm | CellKind::Rnn => {
                        let elementwise = if cell == CellKind::Lstm {
                            table.lstm_backward
                        } else {
                            table.rnn_backward
                        };
                        elementwise(&params, &back_rows);
                        mat_rows.clear();
                        mat_rows.extend((0..na).map(dg_rows));
                        (table.panel_matmul)(gh, ks, &pb.r_back_panels, None, &mat_rows);
                    }
                    CellKind::Gru => {
                        (table.gru_backward_a)(&params, &back_rows);
                        mat_rows.clear();
                        mat_rows.extend((0..na).map(|a| MatRow {
                            a: d_rn.as_ptr().add(a * hp),
                            out: dv.as_mut_ptr().add(a * hp),
                        }));
                        (table.panel_matmul)(hp, ks, &pb.r_back_panels_n, None, &mat_rows);
                        (table.gru_backward_b)(&params, &back_rows);
                        // dh_prev += [dr, dz] × R_rz.
                        mat_rows.clear();
                        mat_rows.extend((0..na).map(|a| MatRow {
                            a: dg.as_ptr().add(a * gh),
                            out: tmp.as_mut_ptr().add(a * ks),
                        }));
                        (table.panel_matmul)(2 * hp, ks, &pb.r_back_panels, None, &mat_rows);
                        for (d, t) in dh_prev[..na * ks].iter_mut().zip(&tmp[..na * ks]) {
                            *d += t;
                        }
                    }
                }
            }
            for (a, &(r, row_t)) in active.iter().enumerate() {
                dh[r * ks..(r + 1) * ks].copy_from_slice(&dh_prev[a * ks..(a + 1) * ks]);
                // SAFETY: rows row_t of the direction's gradients belong to item b.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        dg.as_ptr().add(a * gh),
                        self.out[0].at(row_t * gh),
                        gh,
                    );
                    if cell == CellKind::Gru {
                        std::ptr::copy_nonoverlapping(
                            d_rn.as_ptr().add(a * hp),
                            self.out[1].at(row_t * hp),
                            hp,
                        );
                    }
                }
            }
        }
        for r in 0..nb {
            let b = b0 + r;
            // SAFETY: row b of the state gradients belongs to this block alone.
            unsafe {
                std::slice::from_raw_parts_mut(self.dh_state.at(b * st), st)
                    .copy_from_slice(&dh[r * ks..r * ks + st]);
                if cell == CellKind::Lstm {
                    std::slice::from_raw_parts_mut(self.dc_state.at(b * h), h)
                        .copy_from_slice(&dc[r * hp..r * hp + h]);
                }
            }
        }
        Ok(peephole_grad)
    }
}
