//! Truncated backpropagation through time: a long sequence in chunks of `k`
//! steps, the state carried from chunk to chunk, gradients confined to each
//! chunk (no gradient flows into the carried state).

use std::ops::Range;

use crate::config::Layout;
use crate::error::{check_len, checked_product, Error, Result};
use crate::io::{GradientBuffers, Input, Output, OutputGrads};
use crate::model::Model;

/// The recurrent state carried between calls (`h [L·D, N, H_out]`, LSTM `c`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// Hidden state `[L·D, N, H_out]`.
    pub h: Vec<f32>,
    /// LSTM cell state `[L·D, N, H]`.
    pub c: Option<Vec<f32>>,
}

impl State {
    /// The final state of a forward pass.
    pub fn from_output(output: &Output) -> State {
        State {
            h: output.h_n.clone(),
            c: output.c_n.clone(),
        }
    }
}

/// What a truncated-BPTT pass returns.
#[derive(Clone, Debug)]
pub struct TbpttResult {
    /// Sum of the chunk losses.
    pub loss: f32,
    /// Parameter gradients summed over the chunks.
    pub dparams: Vec<f32>,
    /// The state after the last step, to start the next pass from.
    pub state: State,
}

/// Runs `x` (`[T, N, I]`, time-major) in chunks of `k` steps from `initial`
/// (zeros if `None`). For each chunk, `loss(steps, &output)` returns the
/// chunk's loss and its gradient with respect to `output.y`; the chunk is
/// backpropagated on its own and the parameter gradients are summed.
///
/// With `k >= T` this is ordinary BPTT over the whole sequence.
pub fn truncated_bptt(
    model: &Model,
    x: &[f32],
    seq_len: usize,
    batch: usize,
    k: usize,
    initial: Option<&State>,
    mut loss: impl FnMut(Range<usize>, &Output) -> Result<(f32, Vec<f32>)>,
) -> Result<TbpttResult> {
    let config = model.config();
    if config.layout() != Layout::TimeMajor {
        return Err(Error::InvalidArgument(
            "truncated_bptt takes time-major input".into(),
        ));
    }
    if k == 0 {
        return Err(Error::InvalidArgument(
            "the chunk length k must be at least 1".into(),
        ));
    }
    let step = checked_product("x", &[batch, config.input_size()])?;
    check_len("x", checked_product("x", &[seq_len, step])?, x.len())?;
    let mut state = initial.cloned();
    let mut dparams = vec![0.0; config.num_params()];
    let mut chunk_dparams: Option<Vec<f32>> = None;
    let mut total = 0.0;
    for start in (0..seq_len).step_by(k) {
        let steps = start..(start + k).min(seq_len);
        let chunk = &x[steps.start * step..steps.end * step];
        let mut input = Input::new(chunk, steps.len(), batch);
        if let Some(s) = &state {
            input = input.with_h0(&s.h);
            if let Some(c) = &s.c {
                input = input.with_c0(c);
            }
        }
        let (output, trace) = model.forward_training(&input)?;
        let (chunk_loss, dy) = loss(steps, &output)?;
        total += chunk_loss;
        // Only the parameter gradients: dx is not computed at all, and the
        // first chunk writes straight into the sum.
        let only = |dparams| GradientBuffers {
            dparams: Some(dparams),
            ..Default::default()
        };
        if start == 0 {
            model.backward_into(&trace, &OutputGrads::new(&dy), only(&mut dparams))?;
        } else {
            let chunk_grads = chunk_dparams.get_or_insert_with(|| vec![0.0; dparams.len()]);
            model.backward_into(&trace, &OutputGrads::new(&dy), only(chunk_grads))?;
            for (acc, g) in dparams.iter_mut().zip(chunk_grads.iter()) {
                *acc += g;
            }
        }
        state = Some(State::from_output(&output));
    }
    let state = state.unwrap_or_else(|| State {
        h: vec![0.0; config.num_layers() * config.num_directions() * batch * config.state_size()],
        c: config.has_cell_state().then(|| {
            vec![0.0; config.num_layers() * config.num_directions() * batch * config.hidden_size()]
        }),
    });
    Ok(TbpttResult {
        loss: total,
        dparams,
        state,
    })
}
