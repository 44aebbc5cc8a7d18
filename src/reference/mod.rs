//! The naive reference engine: the oracle every fast path is tested against.
//!
//! Everything here is plain loops over one item and one step at a time, in
//! f64, written to be obviously correct rather than fast. The cell equations
//! live one file per cell (`rnn`, `lstm`, `gru`); this file walks layers,
//! directions, items and steps, and handles sequence lengths, initial states
//! and the two layouts exactly as DESIGN.md specifies:
//!
//! * Layer `l` reads the previous layer's output (the input for `l = 0`).
//! * A forward direction runs steps `0..len_b` of item `b`, a reversed one
//!   `len_b - 1` down to `0`. Steps `t >= len_b` output zero and leave the state
//!   alone, so the final state is the state after the item's own last step
//!   (for `len_b = 0`, the initial state, or zeros under
//!   [`EmptySequenceState::Zeros`]).
//! * Bidirectional outputs are concatenated (forward first) or summed.
//!
//! The backward pass recomputes each step's intermediates from the stored
//! layer inputs and per-step incoming states, then applies the chain rule in
//! exactly the reverse order of the forward pass.

pub mod attention;
mod block;
mod gru;
mod lstm;
mod math;
mod rnn;

use crate::config::{CellKind, Config, Direction, EmptySequenceState};
use crate::error::{Error, Result};
use crate::io::{from_time_major, to_time_major, Gradients, Input, Output, OutputGrads, Shapes};
use block::{block, block_mut, Block};

/// What [`backward`] needs from a [`forward_training`] call.
#[derive(Clone, Debug)]
pub struct Trace {
    config: Config,
    shapes: Shapes,
    seq_lens: Vec<usize>,
    /// Per layer: its time-major input `[T, N, I_l]`.
    layer_inputs: Vec<Vec<f64>>,
    /// Per layer and direction: the hidden state each step started from,
    /// `[T, N, H_out]` indexed by the step's time (unused past an item's length).
    h_prev: Vec<Vec<f64>>,
    /// Same for the cell state, `[T, N, H]` (LSTM only, else empty).
    c_prev: Vec<Vec<f64>>,
}

impl Trace {
    /// The shapes of the forward call that produced this trace.
    pub fn shapes(&self) -> &Shapes {
        &self.shapes
    }
}

/// Steps of item `b` in the order the direction visits them.
fn visit_order(reversed: bool, len: usize) -> Box<dyn Iterator<Item = usize>> {
    if reversed {
        Box::new((0..len).rev())
    } else {
        Box::new(0..len)
    }
}

/// Offset of this direction's slice inside a `y` row. Summed directions share
/// offset 0 and add into it; concatenated ones each own a slice.
fn output_slot(config: &Config, dir: usize) -> usize {
    match config.direction() {
        Direction::BidirectionalConcat => dir * config.state_size(),
        _ => 0,
    }
}

/// Direction `dir`'s gate functions and gate clip.
fn gates(config: &Config, dir: usize) -> math::Gates {
    let mut fns = [crate::config::ActivationFunction::new(crate::config::ActivationKind::Tanh); 3];
    for (f, a) in fns.iter_mut().zip(config.activations(dir)) {
        *f = *a;
    }
    math::Gates {
        clip: config.gate_clip().map(f64::from),
        fns,
    }
}

fn lstm_options(config: &Config, dir: usize) -> lstm::Options {
    lstm::Options {
        cell_clip: config.cell_clip().map(f64::from),
        gates: gates(config, dir),
        input_forget: config.input_forget(),
    }
}

/// One step of any cell: returns the new `(h, c)` (`c` empty without a cell state).
fn cell_forward(
    config: &Config,
    dir: usize,
    p: &Block<&[f64]>,
    x: &[f64],
    h: &[f64],
    c: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    match config.cell() {
        CellKind::Rnn => (rnn::forward(p, &gates(config, dir), x, h), Vec::new()),
        CellKind::Lstm => lstm::forward(p, lstm_options(config, dir), x, h, c),
        CellKind::Gru => (
            gru::forward(p, config.gru_variant(), &gates(config, dir), x, h),
            Vec::new(),
        ),
    }
}

/// Backward of one step of any cell: returns `(dx, dh_prev, dc_prev)`.
#[allow(clippy::too_many_arguments)]
fn cell_backward(
    config: &Config,
    dir: usize,
    p: &Block<&[f64]>,
    g: &mut Block<&mut [f64]>,
    x: &[f64],
    h: &[f64],
    c: &[f64],
    dh: &[f64],
    dc: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    match config.cell() {
        CellKind::Rnn => {
            let (dx, dh) = rnn::backward(p, g, &gates(config, dir), x, h, dh);
            (dx, dh, Vec::new())
        }
        CellKind::Lstm => lstm::backward(p, g, lstm_options(config, dir), x, h, c, dh, dc),
        CellKind::Gru => {
            let gates = gates(config, dir);
            let (dx, dh) = gru::backward(p, g, config.gru_variant(), &gates, x, h, dh);
            (dx, dh, Vec::new())
        }
    }
}

fn check_params(config: &Config, params: &[f64]) -> Result<()> {
    crate::error::check_len("params", config.num_params(), params.len())
}

/// Forward inference: runs `input` through the network described by `config`
/// with parameters `params` (flat layout, see [`Config::param_range`]).
pub fn forward(config: &Config, params: &[f64], input: &Input<'_, f64>) -> Result<Output<f64>> {
    run_forward(config, params, input).map(|(out, _)| out)
}

/// Forward pass that also returns the [`Trace`] [`backward`] needs.
pub fn forward_training(
    config: &Config,
    params: &[f64],
    input: &Input<'_, f64>,
) -> Result<(Output<f64>, Trace)> {
    run_forward(config, params, input)
}

fn run_forward(
    config: &Config,
    params: &[f64],
    input: &Input<'_, f64>,
) -> Result<(Output<f64>, Trace)> {
    check_params(config, params)?;
    let shapes = Shapes::of_input(config, input)?;
    let (t_len, n) = (shapes.seq_len, shapes.batch);
    let (hs, cs) = (config.state_size(), config.hidden_size());
    let lstm = config.has_cell_state();
    let seq_lens: Vec<usize> = (0..n).map(|b| shapes.item_len(input.seq_lens, b)).collect();
    let mut h_n = input
        .h0
        .map_or_else(|| vec![0.0; shapes.h], <[f64]>::to_vec);
    let mut c_n = input
        .c0
        .map_or_else(|| vec![0.0; shapes.c], <[f64]>::to_vec);

    let mut layer_in = to_time_major(config.layout(), input.x, t_len, n, config.input_size())?;
    let mut trace = Trace {
        config: config.clone(),
        shapes,
        seq_lens: seq_lens.clone(),
        layer_inputs: Vec::new(),
        h_prev: Vec::new(),
        c_prev: Vec::new(),
    };
    let width = config.output_size();
    for layer in 0..config.num_layers() {
        let in_size = config.layer_input_size(layer);
        let mut layer_out = vec![0.0; t_len * n * width];
        for dir in 0..config.num_directions() {
            let ld = layer * config.num_directions() + dir;
            let p = block(config, params, layer, dir);
            let slot = output_slot(config, dir);
            let mut h_prev = vec![0.0; t_len * n * hs];
            let mut c_prev = vec![0.0; if lstm { t_len * n * cs } else { 0 }];
            for (b, &len) in seq_lens.iter().enumerate() {
                let h_state = (ld * n + b) * hs..(ld * n + b + 1) * hs;
                let c_state = (ld * n + b) * cs..(ld * n + b + 1) * cs;
                let mut h = h_n[h_state.clone()].to_vec();
                let mut c = if lstm {
                    c_n[c_state.clone()].to_vec()
                } else {
                    Vec::new()
                };
                for t in visit_order(config.direction().is_reversed(dir), len) {
                    let row = t * n + b;
                    h_prev[row * hs..(row + 1) * hs].copy_from_slice(&h);
                    if lstm {
                        c_prev[row * cs..(row + 1) * cs].copy_from_slice(&c);
                    }
                    let x = &layer_in[row * in_size..(row + 1) * in_size];
                    (h, c) = cell_forward(config, dir, &p, x, &h, &c);
                    let y = &mut layer_out[row * width + slot..row * width + slot + hs];
                    for (y, v) in y.iter_mut().zip(&h) {
                        *y += v;
                    }
                }
                if len == 0 && config.empty_sequence_state() == EmptySequenceState::Zeros {
                    h.fill(0.0);
                    c.fill(0.0);
                }
                h_n[h_state].copy_from_slice(&h);
                if lstm {
                    c_n[c_state].copy_from_slice(&c);
                }
            }
            trace.h_prev.push(h_prev);
            trace.c_prev.push(c_prev);
        }
        trace
            .layer_inputs
            .push(std::mem::replace(&mut layer_in, layer_out));
    }
    let y = from_time_major(config.layout(), layer_in, t_len, n, width)?;
    let c_n = lstm.then_some(c_n);
    Ok((Output { y, h_n, c_n }, trace))
}

/// Backward pass (full BPTT over the traced call): gradients of a loss with
/// respect to `x`, `h0`, `c0` and every parameter, given its gradients with
/// respect to `y`, `h_n` and `c_n`.
pub fn backward(
    config: &Config,
    params: &[f64],
    trace: &Trace,
    grads: &OutputGrads<'_, f64>,
) -> Result<Gradients<f64>> {
    check_params(config, params)?;
    if *config != trace.config {
        return Err(Error::InvalidArgument(
            "the trace was produced with a different configuration".into(),
        ));
    }
    let shapes = trace.shapes;
    grads.check(config, &shapes)?;
    let (t_len, n) = (shapes.seq_len, shapes.batch);
    let (hs, cs) = (config.state_size(), config.hidden_size());
    let lstm = config.has_cell_state();
    let width = config.output_size();

    let mut dparams = vec![0.0; params.len()];
    let mut dh0 = grads
        .dh_n
        .map_or_else(|| vec![0.0; shapes.h], <[f64]>::to_vec);
    let mut dc0 = grads
        .dc_n
        .map_or_else(|| vec![0.0; shapes.c], <[f64]>::to_vec);
    // Gradient with respect to the current layer's time-major output.
    let mut d_out = to_time_major(config.layout(), grads.dy, t_len, n, width)?;
    for layer in (0..config.num_layers()).rev() {
        let in_size = config.layer_input_size(layer);
        let layer_in = &trace.layer_inputs[layer];
        let mut d_in = vec![0.0; t_len * n * in_size];
        for dir in 0..config.num_directions() {
            let ld = layer * config.num_directions() + dir;
            let p = block(config, params, layer, dir);
            let mut g = block_mut(config, &mut dparams, layer, dir);
            let slot = output_slot(config, dir);
            let reversed = config.direction().is_reversed(dir);
            for b in 0..n {
                let h_state = (ld * n + b) * hs..(ld * n + b + 1) * hs;
                let c_state = (ld * n + b) * cs..(ld * n + b + 1) * cs;
                // Start from dh_n / dc_n; overwrite with dh0 / dc0 at the end.
                let mut dh = dh0[h_state.clone()].to_vec();
                let mut dc = if lstm {
                    dc0[c_state.clone()].to_vec()
                } else {
                    Vec::new()
                };
                let len = trace.seq_lens[b];
                if len == 0 && config.empty_sequence_state() == EmptySequenceState::Zeros {
                    // The final state is a constant zero: h0 / c0 get nothing.
                    dh.fill(0.0);
                    dc.fill(0.0);
                }
                let order: Vec<usize> = visit_order(reversed, len).collect();
                for &t in order.iter().rev() {
                    let row = t * n + b;
                    let dy = &d_out[row * width + slot..row * width + slot + hs];
                    for (d, v) in dh.iter_mut().zip(dy) {
                        *d += v;
                    }
                    let x = &layer_in[row * in_size..(row + 1) * in_size];
                    let h = &trace.h_prev[ld][row * hs..(row + 1) * hs];
                    let c = if lstm {
                        &trace.c_prev[ld][row * cs..(row + 1) * cs]
                    } else {
                        &[][..]
                    };
                    let dx;
                    (dx, dh, dc) = cell_backward(config, dir, &p, &mut g, x, h, c, &dh, &dc);
                    for (d, v) in d_in[row * in_size..(row + 1) * in_size].iter_mut().zip(&dx) {
                        *d += v;
                    }
                }
                dh0[h_state].copy_from_slice(&dh);
                if lstm {
                    dc0[c_state].copy_from_slice(&dc);
                }
            }
        }
        d_out = d_in;
    }
    let dx = from_time_major(config.layout(), d_out, t_len, n, config.input_size())?;
    let dc0 = lstm.then_some(dc0);
    Ok(Gradients {
        dx,
        dh0,
        dc0,
        dparams,
    })
}
