//! The C ABI of `rnn::attention`: an attention layer, the encoder side of a
//! batch (`rnn_attention_memory`), the record of a training forward
//! (`rnn_attention_trace`) and a backward's accumulated gradients
//! (`rnn_attention_grads`), all opaque, registered handles.
//!
//! A memory keeps the layer's parameters as they were when it was made (its
//! keys were computed with them); every call that takes a layer and a
//! memory checks that the layer's parameters have not changed since, and a
//! trace and gradients belong to the memory they were made with.

use std::sync::{Arc, Mutex, RwLock};

use super::guard::{guard, optional, slice, slice_mut, Failure};
use super::handles::{acquire, hand_out, release, Handle, Registry};
use super::rnn_status;
use crate::attention::{Attended, Attention, Backward, Memory, Score};
use crate::error::check_len;

/// `rnn_attention_create`: Luong's dot score `s · h` (encoder size = decoder size).
pub const RNN_SCORE_DOT: u32 = 0;
/// `rnn_attention_create`: Luong's general score `s · (W_a h)`, `W_a [D, E]`.
pub const RNN_SCORE_GENERAL: u32 = 1;
/// `rnn_attention_create`: Bahdanau's additive score `v · tanh(W_e h + W_d s)`,
/// `W_e [A, E]`, `W_d [A, D]`, `v [A]`.
pub const RNN_SCORE_ADDITIVE: u32 = 2;

/// An opaque attention layer: score function, sizes, parameters.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct rnn_attention {
    current: RwLock<Arc<Attention>>,
}

/// An opaque encoder side of a batch, for any number of decoder steps.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct rnn_attention_memory {
    layer: Arc<Attention>,
    memory: Memory,
}

/// An opaque record of `rnn_attention_forward_training`, for
/// `rnn_attention_backward`.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct rnn_attention_trace {
    /// The memory handle it was made with (its address, for checks).
    memory: usize,
    queries: Vec<f32>,
    attended: Attended,
}

/// Opaque gradients accumulated over `rnn_attention_backward` calls.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct rnn_attention_grads {
    memory: usize,
    backward: Mutex<Option<Backward>>,
}

static LAYERS: Registry = Registry::new("attention", "rnn_attention_create");
static MEMORIES: Registry = Registry::new("attention memory", "rnn_attention_memory_create");
static TRACES: Registry = Registry::new("attention trace", "rnn_attention_forward_training");
static GRADS: Registry = Registry::new("attention gradients", "rnn_attention_grads_create");

impl Handle for rnn_attention {
    fn registry() -> &'static Registry {
        &LAYERS
    }
}
impl Handle for rnn_attention_memory {
    fn registry() -> &'static Registry {
        &MEMORIES
    }
}
impl Handle for rnn_attention_trace {
    fn registry() -> &'static Registry {
        &TRACES
    }
}
impl Handle for rnn_attention_grads {
    fn registry() -> &'static Registry {
        &GRADS
    }
}

impl rnn_attention {
    fn snapshot(&self) -> Arc<Attention> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The layer's parameters now, checked to be those `memory` was made with.
fn layer_of(
    layer: *const rnn_attention,
    memory: &rnn_attention_memory,
) -> Result<Arc<Attention>, Failure> {
    let now = acquire(layer, "attention")?.snapshot();
    if !Arc::ptr_eq(&now, &memory.layer) {
        return Err(Failure::invalid(
            "the attention parameters changed since this memory was made \
             (its keys use the old ones): make a new memory",
        ));
    }
    Ok(now)
}

/// Writes `value` to `*out` (NULL is reported).
///
/// # Safety
/// `out` is NULL or writable.
unsafe fn store<T>(out: *mut T, value: T, what: &str) -> Result<(), Failure> {
    // SAFETY: per the function's contract.
    let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null(what))?;
    *out = value;
    Ok(())
}

/// Creates an attention layer (RNN_SCORE_*) for encoder outputs of
/// `encoder_size` (E) features and decoder states of `decoder_size` (D),
/// with `attention_size` (A, additive only; pass 0 otherwise) hidden
/// units, its parameters uniform in ±1/sqrt(fan-in) from `seed` (the
/// rnn_attention_* functions were added in ABI version 5). Stores it
/// in `*out`; free it with `rnn_attention_destroy`. RNN_INVALID_ARGUMENT for
/// a zero size, an unknown score, or a dot score with E != D.
///
/// # Safety
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_attention_create(
    score: u32,
    encoder_size: usize,
    decoder_size: usize,
    attention_size: usize,
    seed: u64,
    out: *mut *mut rnn_attention,
) -> rnn_status {
    guard(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let score = match score {
            RNN_SCORE_DOT => Score::Dot,
            RNN_SCORE_GENERAL => Score::General,
            RNN_SCORE_ADDITIVE => Score::Additive,
            other => {
                return Err(Failure::invalid(format!(
                    "score {other}: expected RNN_SCORE_*"
                )))
            }
        };
        let layer = Attention::new(score, encoder_size, decoder_size, attention_size, seed)?;
        // SAFETY: per the function's contract.
        unsafe {
            hand_out(
                out,
                rnn_attention {
                    current: RwLock::new(Arc::new(layer)),
                },
                "out",
            )
        }
    })
}

/// Frees an attention layer (NULL: RNN_OK). Memories made from it stay
/// valid objects to destroy.
#[no_mangle]
pub extern "C" fn rnn_attention_destroy(layer: *mut rnn_attention) -> rnn_status {
    guard(|| release(layer, "attention"))
}

/// Stores the number of parameters in `*count`: D·E (general),
/// A·(E + D + 1) (additive: W_e, W_d, v in that order), 0 (dot).
///
/// # Safety
/// `layer` from `rnn_attention_create`; `count` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_attention_param_count(
    layer: *const rnn_attention,
    count: *mut usize,
) -> rnn_status {
    guard(|| {
        let n = acquire(layer, "attention")?.snapshot().params().len();
        // SAFETY: per the function's contract.
        unsafe { store(count, n, "count") }
    })
}

/// Copies the parameters into `out` (`len` = the count).
///
/// # Safety
/// `layer` from `rnn_attention_create`; `out` holds `len` floats.
#[no_mangle]
pub unsafe extern "C" fn rnn_attention_get_params(
    layer: *const rnn_attention,
    out: *mut f32,
    len: usize,
) -> rnn_status {
    guard(|| {
        let now = acquire(layer, "attention")?.snapshot();
        // SAFETY: per the function's contract.
        let out = unsafe { slice_mut(out, len, "out")? };
        check_len("out", now.params().len(), out.len())?;
        out.copy_from_slice(now.params());
        Ok(())
    })
}

/// Replaces the parameters (`len` = the count). Memories made before no
/// longer match the layer: calls with them return RNN_INVALID_ARGUMENT.
///
/// # Safety
/// `layer` from `rnn_attention_create`; `params` holds `len` floats.
#[no_mangle]
pub unsafe extern "C" fn rnn_attention_set_params(
    layer: *mut rnn_attention,
    params: *const f32,
    len: usize,
) -> rnn_status {
    guard(|| {
        let handle = acquire(layer, "attention")?;
        // SAFETY: per the function's contract.
        let params = unsafe { slice(params, len, "params")? };
        let mut current = handle.current.write().unwrap_or_else(|e| e.into_inner());
        check_len("params", current.params().len(), params.len())?;
        let mut next = Attention::clone(&current);
        next.params_mut().copy_from_slice(params);
        *current = Arc::new(next);
        Ok(())
    })
}

/// The encoder side of a batch: `encoder_outputs [T, N, E]` (`len` =
/// T·N·E, time-major: e.g. a model's `y`), each item's length in
/// `seq_lens` (N entries, each <= T; NULL with length 0: all T). Computes
/// the score's encoder-side products once for every decoder step. Stores
/// it in `*out`; free it with `rnn_attention_memory_destroy`.
///
/// # Safety
/// `layer` from `rnn_attention_create`; the buffers hold their lengths;
/// `out` writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_attention_memory_create(
    layer: *const rnn_attention,
    encoder_outputs: *const f32,
    len: usize,
    seq_len: usize,
    batch: usize,
    seq_lens: *const usize,
    seq_lens_len: usize,
    out: *mut *mut rnn_attention_memory,
) -> rnn_status {
    guard(|| {
        let layer = acquire(layer, "attention")?.snapshot();
        // SAFETY: per the function's contract.
        let (outputs, lens) = unsafe {
            (
                slice(encoder_outputs, len, "encoder_outputs")?,
                optional(seq_lens, seq_lens_len, "seq_lens")?,
            )
        };
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let memory = layer.memory(outputs, seq_len, batch, lens)?;
        // SAFETY: per the function's contract.
        unsafe { hand_out(out, rnn_attention_memory { layer, memory }, "out") }
    })
}

/// Frees a memory (NULL: RNN_OK).
#[no_mangle]
pub extern "C" fn rnn_attention_memory_destroy(memory: *mut rnn_attention_memory) -> rnn_status {
    guard(|| release(memory, "memory"))
}

/// Attends `queries [M, N, D]` (`queries_len` = M·N·D: M decoder steps,
/// one or all) over `memory`: writes the contexts `[M, N, E]` and, if
/// `weights` is not NULL, the attention weights `[M, N, T]` (exactly 0 past
/// each item's length; an item of length 0 gets a zero context).
///
/// # Safety
/// Handles from their create functions; buffers hold their lengths and do
/// not overlap.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_attention_forward(
    layer: *const rnn_attention,
    memory: *const rnn_attention_memory,
    queries: *const f32,
    queries_len: usize,
    context: *mut f32,
    context_len: usize,
    weights: *mut f32,
    weights_len: usize,
) -> rnn_status {
    guard(|| {
        // SAFETY: forwarded.
        unsafe {
            forward(
                layer,
                memory,
                (queries, queries_len),
                (context, context_len),
                (weights, weights_len),
            )
        }
        .map(|_| ())
    })
}

/// The forward of both entry points: checks, attends, writes the outputs;
/// returns the memory and what backward needs.
///
/// # Safety
/// As for `rnn_attention_forward`.
unsafe fn forward(
    layer: *const rnn_attention,
    memory: *const rnn_attention_memory,
    (queries, queries_len): (*const f32, usize),
    (context, context_len): (*mut f32, usize),
    (weights, weights_len): (*mut f32, usize),
) -> Result<(usize, Vec<f32>, Attended), Failure> {
    let memory_handle = acquire(memory, "memory")?;
    let layer = layer_of(layer, &memory_handle)?;
    // SAFETY: per the caller's contract.
    let queries = unsafe { slice(queries, queries_len, "queries")? };
    let attended = layer.attend(&memory_handle.memory, queries)?;
    // SAFETY: per the caller's contract.
    let context = unsafe { slice_mut(context, context_len, "context")? };
    check_len("context", attended.context.len(), context.len())?;
    if !weights.is_null() || weights_len != 0 {
        // SAFETY: per the caller's contract.
        let weights = unsafe { slice_mut(weights, weights_len, "weights")? };
        check_len("weights", attended.weights.len(), weights.len())?;
        weights.copy_from_slice(&attended.weights);
    }
    context.copy_from_slice(&attended.context);
    Ok((memory as usize, queries.to_vec(), attended))
}

/// Like `rnn_attention_forward`, and stores in `*trace` what
/// `rnn_attention_backward` needs; free it with
/// `rnn_attention_trace_destroy`.
///
/// # Safety
/// As for `rnn_attention_forward`; `trace` writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_attention_forward_training(
    layer: *const rnn_attention,
    memory: *const rnn_attention_memory,
    queries: *const f32,
    queries_len: usize,
    context: *mut f32,
    context_len: usize,
    weights: *mut f32,
    weights_len: usize,
    trace: *mut *mut rnn_attention_trace,
) -> rnn_status {
    guard(|| {
        if trace.is_null() {
            return Err(Failure::null("trace"));
        }
        // SAFETY: forwarded.
        let (memory, queries, attended) = unsafe {
            forward(
                layer,
                memory,
                (queries, queries_len),
                (context, context_len),
                (weights, weights_len),
            )?
        };
        // SAFETY: per the function's contract.
        unsafe {
            hand_out(
                trace,
                rnn_attention_trace {
                    memory,
                    queries,
                    attended,
                },
                "trace",
            )
        }
    })
}

/// Frees a trace (NULL: RNN_OK).
#[no_mangle]
pub extern "C" fn rnn_attention_trace_destroy(trace: *mut rnn_attention_trace) -> rnn_status {
    guard(|| release(trace, "trace"))
}

/// Zero gradients for the decoder steps over `memory`, to accumulate with
/// `rnn_attention_backward` and read with `rnn_attention_grads_finish`.
/// Free them with `rnn_attention_grads_destroy`.
///
/// # Safety
/// Handles from their create functions; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_attention_grads_create(
    layer: *const rnn_attention,
    memory: *const rnn_attention_memory,
    out: *mut *mut rnn_attention_grads,
) -> rnn_status {
    guard(|| {
        let memory_handle = acquire(memory, "memory")?;
        let layer = layer_of(layer, &memory_handle)?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let backward = layer.start_backward(&memory_handle.memory)?;
        // SAFETY: per the function's contract.
        unsafe {
            hand_out(
                out,
                rnn_attention_grads {
                    memory: memory as usize,
                    backward: Mutex::new(Some(backward)),
                },
                "out",
            )
        }
    })
}

/// Frees gradients (NULL: RNN_OK).
#[no_mangle]
pub extern "C" fn rnn_attention_grads_destroy(grads: *mut rnn_attention_grads) -> rnn_status {
    guard(|| release(grads, "grads"))
}

/// Checks that `handle` was made with the memory at `memory`.
fn same_memory(
    made_with: usize,
    memory: *const rnn_attention_memory,
    what: &str,
) -> Result<(), Failure> {
    if made_with != memory as usize {
        return Err(Failure::invalid(format!(
            "this {what} was made with another memory"
        )));
    }
    Ok(())
}

/// The backward of the forward that made `trace`: given `d_context [M, N,
/// E]` and optionally `d_weights [M, N, T]` (NULL with length 0: the
/// weights feed no loss), writes the gradient of the queries `[M, N, D]` to
/// `d_queries` and adds the encoder outputs' and the parameters' to
/// `grads`. Call it once per forward (e.g. once per decoder step), then
/// `rnn_attention_grads_finish`.
///
/// # Safety
/// Handles from their create functions, `trace` and `grads` made with
/// `memory`; buffers hold their lengths and do not overlap.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_attention_backward(
    layer: *const rnn_attention,
    memory: *const rnn_attention_memory,
    trace: *const rnn_attention_trace,
    d_context: *const f32,
    d_context_len: usize,
    d_weights: *const f32,
    d_weights_len: usize,
    grads: *mut rnn_attention_grads,
    d_queries: *mut f32,
    d_queries_len: usize,
) -> rnn_status {
    guard(|| {
        let memory_handle = acquire(memory, "memory")?;
        let layer = layer_of(layer, &memory_handle)?;
        let (trace_handle, grads_handle) = (acquire(trace, "trace")?, acquire(grads, "grads")?);
        same_memory(trace_handle.memory, memory, "trace")?;
        same_memory(grads_handle.memory, memory, "gradient record")?;
        // SAFETY: per the function's contract.
        let (d_context, d_weights, d_queries) = unsafe {
            (
                slice(d_context, d_context_len, "d_context")?,
                optional(d_weights, d_weights_len, "d_weights")?,
                slice_mut(d_queries, d_queries_len, "d_queries")?,
            )
        };
        check_len("d_queries", trace_handle.queries.len(), d_queries.len())?;
        let mut slot = grads_handle
            .backward
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let backward = slot
            .as_mut()
            .ok_or_else(|| Failure::invalid("these gradients were finished already"))?;
        let dq = layer.backward(
            &memory_handle.memory,
            &trace_handle.queries,
            &trace_handle.attended,
            d_context,
            d_weights,
            backward,
        )?;
        d_queries.copy_from_slice(&dq);
        Ok(())
    })
}

/// Ends a backward: writes the gradient of the encoder outputs `[T, N, E]`
/// (through the contexts and the scores) and of the parameters (laid out
/// like them), summed over every `rnn_attention_backward` call. The record
/// is then spent: a later backward or finish with it is
/// RNN_INVALID_ARGUMENT.
///
/// # Safety
/// Handles from their create functions, `grads` made with `memory`;
/// buffers hold their lengths and do not overlap.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_attention_grads_finish(
    layer: *const rnn_attention,
    memory: *const rnn_attention_memory,
    grads: *mut rnn_attention_grads,
    d_encoder_outputs: *mut f32,
    d_encoder_outputs_len: usize,
    d_params: *mut f32,
    d_params_len: usize,
) -> rnn_status {
    guard(|| {
        let memory_handle = acquire(memory, "memory")?;
        let layer = layer_of(layer, &memory_handle)?;
        let grads_handle = acquire(grads, "grads")?;
        same_memory(grads_handle.memory, memory, "gradient record")?;
        // SAFETY: per the function's contract.
        let (d_enc, d_params) = unsafe {
            (
                slice_mut(
                    d_encoder_outputs,
                    d_encoder_outputs_len,
                    "d_encoder_outputs",
                )?,
                slice_mut(d_params, d_params_len, "d_params")?,
            )
        };
        check_len(
            "d_encoder_outputs",
            memory_handle.memory.values_len(),
            d_enc.len(),
        )?;
        check_len("d_params", layer.params().len(), d_params.len())?;
        let backward = grads_handle
            .backward
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Failure::invalid("these gradients were finished already"))?;
        let done = layer.finish_backward(&memory_handle.memory, backward)?;
        d_enc.copy_from_slice(&done.d_encoder_outputs);
        d_params.copy_from_slice(&done.d_params);
        Ok(())
    })
}
