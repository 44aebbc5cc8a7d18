//! How much memory a call allocates besides the caller's buffers, from the
//! shapes alone, so a caller can check before calling
//! ([`crate::Model::call_memory`], `rnn_call_memory`).
//!
//! Each figure is an upper bound that follows the allocations of
//! `forward.rs`, `backward.rs` and `pack.rs` (tests/call_memory.rs checks
//! it against a counting allocator): buffers that a call reuses from its
//! model's pool are counted once, the way the pool hands them back.

use super::forward::MOST_PROJECTION_ROWS;
use super::pack::round_up;
use crate::config::{CellKind, Config, Direction, GruVariant, Layout};
use crate::io::{CallMemory, Shapes};
use crate::kernels::fused::{BackRow, MatRow, StepRow};

const F32: u128 = std::mem::size_of::<f32>() as u128;

/// Small bookkeeping of any call (the team's share lists, rayon's jobs, ...).
const BOOKKEEPING: u128 = 16 << 10; // bytes

/// A thread team's own memory per member: its barrier (two 128-byte
/// lines), its share list and the team's per-layer vectors, rounded up.
const TEAM_BYTES_PER_MEMBER: u128 = 1 << 10;

/// Sizes of one layer's (and direction's) buffers, in f32 elements.
struct Geometry {
    /// Gate rows, padded: G · Hp.
    gh: u128,
    hp: u128,
    /// The state (H or P), and its padded stride.
    st: u128,
    ks: u128,
}

fn geometry(config: &Config, unit: usize) -> Geometry {
    let hp = round_up(config.hidden_size(), unit) as u128;
    let st = config.state_size();
    Geometry {
        gh: config.gates() as u128 * hp,
        hp,
        st: st as u128,
        ks: round_up(st, unit) as u128,
    }
}

fn bytes(elements: u128) -> usize {
    usize::try_from(elements.saturating_mul(F32)).unwrap_or(usize::MAX)
}

pub(crate) fn call_memory(
    config: &Config,
    shapes: &Shapes,
    unit: usize,
    threads: usize,
) -> CallMemory {
    let g = geometry(config, unit);
    let (t, n) = (shapes.seq_len as u128, shapes.batch as u128);
    let rows = t * n;
    let (i, width) = (config.input_size() as u128, config.output_size() as u128);
    let layers = config.num_layers() as u128;
    let layer_dirs = (layers * config.num_directions() as u128).max(1);
    let (lstm, gru) = (
        config.cell() == CellKind::Lstm,
        config.cell() == CellKind::Gru,
    );
    let lbr = config.gru_variant() == GruVariant::LinearBeforeReset;
    let proj = config.proj_size() > 0;
    let batch_first = config.layout() == Layout::BatchFirst;
    let on = |flag: bool, v: u128| if flag { v } else { 0 };
    // Fixed small allocations, plus each thread's row list of one input
    // projection block, in f32 elements.
    let small = (BOOKKEEPING
        + threads.max(1) as u128 * (MOST_PROJECTION_ROWS * std::mem::size_of::<MatRow>()) as u128)
        / F32;
    let widest_input = i.max(width);

    // Every call: the lengths, a time-major copy of a batch-first x, the
    // last layer's time-major output before it is transposed into y, the
    // final c when the caller does not ask for it, and one input
    // projection (given back to the pool after each direction, reused by
    // the next).
    let lens = n * std::mem::size_of::<usize>() as u128 / F32;
    let x_copy = on(batch_first, rows * i);
    let y_scratch = on(batch_first, rows * width);
    let c_scratch = on(lstm, shapes.c as u128);
    // A layer's directions run at the same time: each has its input
    // projection and its step state; a second summed direction writes a
    // buffer of its own. Each team member has its row lists, the team a
    // barrier per member.
    let dirs = config.num_directions() as u128;
    let xw = dirs * rows * g.gh;
    let summed = on(
        config.direction() == Direction::BidirectionalSum,
        rows * g.st,
    );
    let row_lists =
        (std::mem::size_of::<StepRow>() + 2 * std::mem::size_of::<MatRow>()) as u128 / F32 + 1;
    let members = threads.max(1) as u128;
    let team = members * (n * row_lists + TEAM_BYTES_PER_MEMBER / F32);
    let step_state = |training: bool| {
        dirs * n
            * (2 * g.ks
                + on(lstm, g.hp)
                + on(gru && !lbr, g.hp)
                + on(proj, g.hp)
                + on(!training, on(gru, g.gh)))
            + summed
            + team
    };

    // Inference keeps at most two layer outputs at once (the pool hands the
    // older back for the next layer).
    let layer_buffers = layers.saturating_sub(1).min(2) * rows * width;
    let inference =
        small + lens + x_copy + y_scratch + c_scratch + layer_buffers + xw + step_state(false);

    // Training keeps every layer's input and each direction's step values
    // in the trace; the rest is the same transient work.
    // The LSTM keeps its unclipped cell states, and the states before each
    // step only where a cell clip makes them differ (else just the first);
    // the backward forms the projection's input (LSTM) and r ⊙ h (GRU)
    // again.
    let cell_clip = config.cell_clip().is_some();
    let per_direction_trace = rows
        * (g.gh
            + g.ks
            + on(lstm, g.hp)
            + on(lstm && cell_clip, g.hp)
            + on(gru && lbr, g.hp)
            + on(config.gate_clip().is_some(), g.gh))
        + on(lstm && !cell_clip, n * g.hp);
    let trace =
        small + lens + rows * i + (layers - 1) * rows * width + layer_dirs * per_direction_trace;
    let training = small + y_scratch + c_scratch + xw + step_state(true);

    // Backward: its results (dx, dh0, dc0, dparams), the output gradient
    // and a layer's input gradient, one direction's gate gradients, each
    // block's carried and step gradients, one weight gradient at a time.
    let results = rows * i
        + on(batch_first, rows * i)
        + 2 * shapes.h as u128
        + 2 * shapes.c as u128
        + config.num_params() as u128;
    // A layer's directions step back at the same time: each has its gate
    // gradients (projection: and the packed m) and its carried and step
    // gradients; each team member its row lists.
    let layer_grads = rows * (width + widest_input);
    let gate_grads = dirs * rows * (g.gh + on(gru, g.hp) + on(proj, g.ks + g.hp));
    let back_rows = (std::mem::size_of::<BackRow>()
        + std::mem::size_of::<MatRow>()
        + 2 * std::mem::size_of::<usize>()) as u128
        / F32
        + 1;
    let back_state =
        dirs * n * (2 * g.ks + on(lstm, g.hp) + on(proj, g.hp) + on(gru, 2 * g.hp + g.ks))
            + members * (n * back_rows + TEAM_BYTES_PER_MEMBER / F32)
            + on(config.peepholes(), 2 * 3 * g.hp);
    // The products over all steps (products.rs), one direction at a time:
    // the transposed gate gradients (GRU: and d_rn; projection: dh_proj),
    // rows of `transposed_stride(rows)`, each right operand packed, the f64
    // bias sums and the row lists.
    let packed_operands =
        round_up(widest_input as usize, unit) as u128 + g.ks + on(gru && !lbr, g.hp);
    let row_list = (std::mem::size_of::<MatRow>() as u128 / F32) * rows.max(g.gh);
    // `transpose::padded_stride`, in u128 like every figure here.
    let tile = crate::kernels::transpose::TILE as u128;
    let ts = tile * (rows.div_ceil(tile) | 1);
    let weight_grads =
        ts * (g.gh + on(gru, g.hp) + on(proj, g.ks)) + rows * packed_operands + 4 * g.gh + row_list;
    let backward = small + results + layer_grads + gate_grads + back_state + weight_grads;

    // Packing, once per model and ISA (and after each update): per block,
    // W and R each as forward and backward panels (the projection too),
    // written once into their storage, each with a cache line's slack;
    // biases and peepholes. A reduced-precision block also holds one panel
    // set's f32 packing, its words and their aligned copy while it
    // converts them.
    let packed_block = |layer: usize| {
        let input = config.layer_input_size(layer) as u128;
        let (w, r) = (g.gh * input, g.gh * g.ks);
        let p = on(proj, g.ks * g.hp);
        let kept = 2 * w + 2 * r + 2 * p + 6 * g.gh + 6 * g.hp + 16 * 8;
        (kept, 3 * w.max(r).max(p))
    };
    let (first, last) = (packed_block(0), packed_block(config.num_layers() - 1));
    let packing = layer_dirs * first.0.max(last.0) + first.1.max(last.1);

    CallMemory {
        packing: bytes(packing),
        inference: bytes(inference),
        training_forward: bytes(training),
        trace: bytes(trace),
        backward: bytes(backward),
    }
}
