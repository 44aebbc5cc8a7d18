//! The C ABI. Thin by design: validate, forward to the Rust API, convert
//! errors. cbindgen turns this module into `include/librnn.h` (see
//! `tests/c_abi.rs`, `committed_header_is_current`).
//!
//! Conventions (they hold for every function below):
//! - Every fallible function returns an `rnn_status`; on failure
//!   `rnn_last_error_message()` describes it. No call ever lets a panic
//!   cross into C: a bug surfaces as `RNN_INTERNAL`.
//! - Every buffer is passed as a pointer plus its length in elements, and
//!   the length is checked against what the configuration and shapes
//!   require (`rnn_sizes`). A NULL pointer is accepted only where the
//!   documentation says a buffer is optional, and then its length must be 0.
//! - Tensors are row-major f32: `x [T, N, I]`, `y [T, N, out]` (or `[N, T,
//!   ...]` with `RNN_LAYOUT_BATCH_FIRST`), states `[layers·directions, N, H]`.
//! - Ownership: `rnn_model_create` and `rnn_forward_training` hand out
//!   objects the caller frees with `rnn_model_destroy` / `rnn_trace_destroy`
//!   (both accept NULL). librnn never keeps a pointer to caller memory after
//!   a call returns.
//! - Handles are registered and reference-counted (`handles`): misuse is
//!   `RNN_MISUSE`, updates are transactions on a copy that running calls do
//!   not see, and a destroy frees a model only after the calls on it.
//! - Threads: any calls may run at once, updates included (see the header's
//!   conventions in cbindgen.toml).

mod attention;
mod guard;
mod handles;
mod onnx;
mod stream;

use std::ffi::CStr;
use std::os::raw::c_char;
use std::sync::Arc;

pub use attention::*;
pub use guard::rnn_status;
use guard::{check_disjoint, guard, last_error_ptr, optional, slice, slice_mut, span, Failure};
use handles::{acquire, register, release};
pub use handles::{rnn_model, rnn_trace};
pub use onnx::*;
pub use stream::*;

use crate::config::{
    Activation, ActivationFunction, ActivationKind, CellKind, Coded, Config, Direction, ParamKind,
};
use crate::io::{Input, OutputGrads, Shapes};
use crate::kernels::Isa;
use crate::model::Model;
use crate::precision::Precision;

/// Version of the C ABI described by this header. It changes whenever a
/// signature or struct layout changes incompatibly.
pub const RNN_ABI_VERSION: u32 = 6;

/// `rnn_config.cell`: Elman RNN (activation from `rnn_config.activation`).
pub const RNN_CELL_RNN: u32 = 0;
/// `rnn_config.cell`: LSTM, gates i, f, g, o.
pub const RNN_CELL_LSTM: u32 = 1;
/// `rnn_config.cell`: GRU, gates r, z, n.
pub const RNN_CELL_GRU: u32 = 2;
/// `rnn_config.activation` (RNN only).
pub const RNN_ACTIVATION_TANH: u32 = 0;
/// `rnn_config.activation` (RNN only).
pub const RNN_ACTIVATION_RELU: u32 = 1;
/// `rnn_activation.function`: the role's default (RNN: `rnn_config.activation`;
/// LSTM: sigmoid, tanh, tanh; GRU: sigmoid, tanh). Added in ABI version 6,
/// as are the other RNN_FUNCTION_* values, ONNX's activation functions.
pub const RNN_FUNCTION_DEFAULT: u32 = 0;
/// `1 / (1 + e^-x)`.
pub const RNN_FUNCTION_SIGMOID: u32 = 1;
/// `tanh x`.
pub const RNN_FUNCTION_TANH: u32 = 2;
/// `max(0, x)`.
pub const RNN_FUNCTION_RELU: u32 = 3;
/// `alpha x + beta`.
pub const RNN_FUNCTION_AFFINE: u32 = 4;
/// `x` if `x >= 0`, else `alpha x`.
pub const RNN_FUNCTION_LEAKY_RELU: u32 = 5;
/// `x` if `x > alpha`, else 0.
pub const RNN_FUNCTION_THRESHOLDED_RELU: u32 = 6;
/// `alpha tanh(beta x)`.
pub const RNN_FUNCTION_SCALED_TANH: u32 = 7;
/// `min(max(alpha x + beta, 0), 1)`.
pub const RNN_FUNCTION_HARD_SIGMOID: u32 = 8;
/// `x` if `x >= 0`, else `alpha (e^x - 1)`.
pub const RNN_FUNCTION_ELU: u32 = 9;
/// `x / (1 + |x|)`.
pub const RNN_FUNCTION_SOFTSIGN: u32 = 10;
/// `ln(1 + e^x)`.
pub const RNN_FUNCTION_SOFTPLUS: u32 = 11;
/// `rnn_config.empty_sequence_state`: an item of sequence length 0 returns
/// its initial state (h0, c0) as its final state (the default). Added in
/// ABI version 6.
pub const RNN_EMPTY_INITIAL: u32 = 0;
/// `rnn_config.empty_sequence_state`: an item of sequence length 0 returns
/// zeros, as onnxruntime does (h0 and c0 then get no gradient from it).
/// Added in ABI version 6.
pub const RNN_EMPTY_ZEROS: u32 = 1;
/// `rnn_config.direction`: one direction, first step to last.
pub const RNN_DIRECTION_FORWARD: u32 = 0;
/// `rnn_config.direction`: one direction, last step to first.
pub const RNN_DIRECTION_REVERSE: u32 = 1;
/// `rnn_config.direction`: both, outputs concatenated (forward first).
pub const RNN_DIRECTION_BIDIRECTIONAL_CONCAT: u32 = 2;
/// `rnn_config.direction`: both, outputs summed.
pub const RNN_DIRECTION_BIDIRECTIONAL_SUM: u32 = 3;
/// `rnn_config.gru_variant`: ONNX default, `n = tanh(Wn x + Rn (r ⊙ h) + b)`.
pub const RNN_GRU_RESET_BEFORE_MATMUL: u32 = 0;
/// `rnn_config.gru_variant`: PyTorch/cuDNN, `n = tanh(Wn x + r ⊙ (Rn h + Rbn) + Wbn)`.
pub const RNN_GRU_LINEAR_BEFORE_RESET: u32 = 1;
/// `rnn_config.layout`: `x` and `y` are `[T, N, features]`.
pub const RNN_LAYOUT_TIME_MAJOR: u32 = 0;
/// `rnn_config.layout`: `x` and `y` are `[N, T, features]`.
pub const RNN_LAYOUT_BATCH_FIRST: u32 = 1;
/// `rnn_model_set_precision`: f32 weights (the default; training needs it).
/// Added in ABI version 4.
pub const RNN_PRECISION_F32: u32 = 0;
/// `rnn_model_set_precision`: bfloat16 weights, rounded to nearest even from
/// the f32 parameters (inputs, states, accumulation and outputs stay f32).
/// Added in ABI version 4.
pub const RNN_PRECISION_BF16: u32 = 1;
/// `rnn_model_set_precision`: int8 weights, one scale per output row;
/// inputs and states quantised per row as they are multiplied (int32 sums,
/// scaled back to f32 before the biases and gate functions). Added in ABI
/// version 5.
pub const RNN_PRECISION_INT8: u32 = 2;
/// `rnn_model_param_range` kinds: input weights `W [G·H, I_l]`.
pub const RNN_PARAM_W: u32 = 0;
/// Recurrent weights `R [G·H, H_out]`.
pub const RNN_PARAM_R: u32 = 1;
/// Input bias `Wb [G·H]`.
pub const RNN_PARAM_WB: u32 = 2;
/// Recurrent bias `Rb [G·H]`.
pub const RNN_PARAM_RB: u32 = 3;
/// LSTM peepholes `[3·H]` (p_i, p_f, p_o).
pub const RNN_PARAM_PEEPHOLE: u32 = 4;
/// LSTM projection `[H_out, H]`.
pub const RNN_PARAM_PROJECTION: u32 = 5;

/// One activation function of `rnn_config.activations`: an RNN_FUNCTION_*
/// value and its parameters (read only by the functions whose formula has
/// them; `rnn_activation_default` gives onnxruntime's defaults). Added in
/// ABI version 6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_camel_case_types)]
pub struct rnn_activation {
    /// An RNN_FUNCTION_* value.
    pub function: u32,
    /// alpha.
    pub alpha: f32,
    /// beta.
    pub beta: f32,
}

/// A network configuration. Start from `rnn_config_default()` and set the
/// fields you need; `rnn_model_create` validates all of them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct rnn_config {
    /// RNN_CELL_RNN, RNN_CELL_LSTM or RNN_CELL_GRU.
    pub cell: u32,
    /// RNN_ACTIVATION_TANH or RNN_ACTIVATION_RELU (RNN only).
    pub activation: u32,
    /// Features per input step (I), at least 1.
    pub input_size: usize,
    /// Hidden size H, at least 1.
    pub hidden_size: usize,
    /// LSTM projection size (H_out); 0 for none.
    pub proj_size: usize,
    /// Stacked layers, at least 1.
    pub num_layers: usize,
    /// One of the RNN_DIRECTION_* values.
    pub direction: u32,
    /// RNN_GRU_RESET_BEFORE_MATMUL or RNN_GRU_LINEAR_BEFORE_RESET (GRU only).
    pub gru_variant: u32,
    /// LSTM cell clip: c is clamped to [-cell_clip, cell_clip]; 0 for none.
    pub cell_clip: f32,
    /// LSTM peephole connections: 0 or 1.
    pub peepholes: u32,
    /// RNN_LAYOUT_TIME_MAJOR or RNN_LAYOUT_BATCH_FIRST.
    pub layout: u32,
    /// Gate clip, ONNX's `clip` (any cell): the input of every activation
    /// (each gate pre-activation) is clamped to [-gate_clip, gate_clip]; 0
    /// for none unless `gate_clip_set` is 1. Added in ABI version 2.
    pub gate_clip: f32,
    /// LSTM input-forget coupling, ONNX's `input_forget`: 0 or 1; with 1 the
    /// forget gate is 1 - i and its weights are unused. Added in ABI version 2.
    pub input_forget: u32,
}

/// The options added after `rnn_config`'s layout was fixed (so that
/// programs built against an older header keep working): pass it to
/// `rnn_model_create_ext`. Start from `rnn_config_ext_default()`, whose
/// values give the same model as `rnn_model_create`. Added in ABI
/// version 6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_camel_case_types)]
pub struct rnn_config_ext {
    /// ONNX's activation functions: `activations[3 * dir + role]` for
    /// direction `dir` (0 forward, 1 the reverse direction of a
    /// bidirectional network) and role `role` (RNN: f; LSTM: f on i, f, o,
    /// g on the cell input, h on the cell state; GRU: f on r, z, g on n).
    /// RNN_FUNCTION_DEFAULT (all zeros) keeps the role's default (for RNN,
    /// `rnn_config.activation`); entries past the cell's roles or
    /// directions must stay default.
    pub activations: [rnn_activation; 6],
    /// RNN_EMPTY_INITIAL or RNN_EMPTY_ZEROS: what an item of sequence
    /// length 0 returns as its final state.
    pub empty_sequence_state: u32,
    /// 1: `rnn_config.gate_clip` applies even when it is 0 (ONNX's
    /// `clip = 0`, which onnxruntime's RNN runs: every pre-activation
    /// becomes 0); 0 (the default): a `gate_clip` of 0 means none.
    pub gate_clip_set: u32,
}

/// The extended options' defaults: every function its role's default,
/// RNN_EMPTY_INITIAL, a `gate_clip` of 0 meaning none. Added in ABI
/// version 6.
#[no_mangle]
pub extern "C" fn rnn_config_ext_default() -> rnn_config_ext {
    rnn_config_ext::default()
}

/// Element counts of every buffer of a call with given `seq_len` and `batch`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_camel_case_types)]
pub struct rnn_sizes {
    /// `x` and `dx`.
    pub x: usize,
    /// `y` and `dy`.
    pub y: usize,
    /// `h0`, `h_n`, `dh0`, `dh_n`.
    pub h: usize,
    /// `c0`, `c_n`, `dc0`, `dc_n` (0 unless LSTM).
    pub c: usize,
    /// The flat parameter vector and `dparams`.
    pub params: usize,
}

/// The inputs of a forward call. `seq_lens` (`batch` entries, each <=
/// `seq_len`), `h0` and `c0` are optional: NULL with length 0 means all
/// steps and zero initial states.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct rnn_input {
    pub x: *const f32,
    pub x_len: usize,
    pub seq_len: usize,
    pub batch: usize,
    pub seq_lens: *const usize,
    pub seq_lens_len: usize,
    pub h0: *const f32,
    pub h0_len: usize,
    pub c0: *const f32,
    pub c0_len: usize,
}

/// Where a forward call writes. `y` and `h_n` are required; `c_n` is
/// optional (LSTM only).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct rnn_output {
    pub y: *mut f32,
    pub y_len: usize,
    pub h_n: *mut f32,
    pub h_n_len: usize,
    pub c_n: *mut f32,
    pub c_n_len: usize,
}

/// Loss gradients with respect to a training call's outputs: `dy` required,
/// `dh_n` and `dc_n` optional (zero when NULL).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct rnn_output_grads {
    pub dy: *const f32,
    pub dy_len: usize,
    pub dh_n: *const f32,
    pub dh_n_len: usize,
    pub dc_n: *const f32,
    pub dc_n_len: usize,
}

/// Where `rnn_backward` writes; every buffer is optional (NULL skips it).
/// `dparams` has the layout of the parameter vector.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct rnn_gradients {
    pub dx: *mut f32,
    pub dx_len: usize,
    pub dh0: *mut f32,
    pub dh0_len: usize,
    pub dc0: *mut f32,
    pub dc0_len: usize,
    pub dparams: *mut f32,
    pub dparams_len: usize,
}

/// The library version as a NUL-terminated string, e.g. "0.1.0". The pointer
/// is static: never free it.
#[no_mangle]
pub extern "C" fn rnn_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version the library was built with; compare with RNN_ABI_VERSION.
#[no_mangle]
pub extern "C" fn rnn_abi_version() -> u32 {
    RNN_ABI_VERSION
}

/// A description of the last failed librnn call on this thread ("" if the
/// last call succeeded). Valid until the next librnn call on this thread;
/// never free it.
#[no_mangle]
pub extern "C" fn rnn_last_error_message() -> *const c_char {
    last_error_ptr()
}

/// A default configuration: a one-layer forward tanh RNN with input and
/// hidden size 1, no options, time-major. Set the fields you need.
#[no_mangle]
pub extern "C" fn rnn_config_default() -> rnn_config {
    rnn_config {
        cell: RNN_CELL_RNN,
        activation: RNN_ACTIVATION_TANH,
        input_size: 1,
        hidden_size: 1,
        proj_size: 0,
        num_layers: 1,
        direction: RNN_DIRECTION_FORWARD,
        gru_variant: RNN_GRU_RESET_BEFORE_MATMUL,
        cell_clip: 0.0,
        peepholes: 0,
        layout: RNN_LAYOUT_TIME_MAJOR,
        gate_clip: 0.0,
        input_forget: 0,
    }
}

/// `function` (an RNN_FUNCTION_* value) with onnxruntime's default alpha
/// and beta: LeakyRelu alpha 0.01, HardSigmoid alpha 0.2 and beta 0.5, Elu
/// alpha 1, 0 otherwise. An unknown value is returned as given (and
/// refused by `rnn_model_create`).
#[no_mangle]
pub extern "C" fn rnn_activation_default(function: u32) -> rnn_activation {
    match function_kind(function) {
        Some(kind) => {
            let f = ActivationFunction::new(kind);
            rnn_activation {
                function,
                alpha: f.alpha,
                beta: f.beta,
            }
        }
        None => rnn_activation {
            function,
            alpha: 0.0,
            beta: 0.0,
        },
    }
}

/// The kind of an RNN_FUNCTION_* value (`None` for DEFAULT or unknown).
fn function_kind(function: u32) -> Option<ActivationKind> {
    function.checked_sub(1).and_then(ActivationKind::from_code)
}

/// `rnn_config_ext.activations` as the ONNX-ordered list for
/// `ConfigBuilder::activations`, or `None` when every entry is default.
fn activation_list(
    c: &rnn_config,
    ext: &rnn_config_ext,
) -> Result<Option<Vec<ActivationFunction>>, Failure> {
    if ext
        .activations
        .iter()
        .all(|a| a.function == RNN_FUNCTION_DEFAULT)
    {
        return Ok(None);
    }
    let cell: CellKind = pick("cell", c.cell)?;
    let dirs = pick::<Direction>("direction", c.direction)?.count();
    let defaults = cell.default_activations();
    let relu = c.activation == RNN_ACTIVATION_RELU;
    let mut list = Vec::new();
    for (i, a) in ext.activations.iter().enumerate() {
        let (dir, role) = (i / 3, i % 3);
        if dir >= dirs || role >= defaults.len() {
            if a.function != RNN_FUNCTION_DEFAULT {
                return Err(Failure::invalid(format!(
                    "rnn_config_ext.activations[{i}] is set, but a {cell:?} network with {dirs} direction(s) has only {} functions (entries 0..{} and, bidirectional, 3..{})",
                    defaults.len() * dirs,
                    defaults.len(),
                    3 + defaults.len()
                )));
            }
            continue;
        }
        list.push(match a.function {
            RNN_FUNCTION_DEFAULT if relu && cell == CellKind::Rnn => {
                ActivationFunction::new(ActivationKind::Relu)
            }
            RNN_FUNCTION_DEFAULT => ActivationFunction::new(defaults[role]),
            f => {
                let kind = function_kind(f).ok_or_else(|| {
                    Failure::invalid(format!(
                        "rnn_config_ext.activations[{i}].function = {f} is not one of the RNN_FUNCTION_* values"
                    ))
                })?;
                ActivationFunction::with(kind, a.alpha, a.beta)
            }
        });
    }
    Ok(Some(list))
}

fn pick<T: Coded>(field: &str, value: u32) -> Result<T, Failure> {
    T::from_code(value).ok_or_else(|| {
        Failure::invalid(format!(
            "rnn_config.{field} = {value} is not one of the RNN_* values"
        ))
    })
}

/// A C float option: 0 means none.
fn clip_option(value: f32) -> Option<f32> {
    (value != 0.0).then_some(value)
}

fn flag(field: &str, value: u32) -> Result<bool, Failure> {
    match value {
        0 | 1 => Ok(value == 1),
        _ => Err(Failure::invalid(format!(
            "rnn_config.{field} = {value} must be 0 or 1"
        ))),
    }
}

fn to_config(c: &rnn_config) -> Result<Config, Failure> {
    to_config_ext(c, &rnn_config_ext::default())
}

fn to_config_ext(c: &rnn_config, ext: &rnn_config_ext) -> Result<Config, Failure> {
    let builder = Config::builder(pick("cell", c.cell)?, c.input_size, c.hidden_size);
    let activation: Activation = pick("activation", c.activation)?;
    let builder = match activation_list(c, ext)? {
        Some(list) => builder.activations(&list),
        None => builder.activation(activation),
    };
    let empty = Coded::from_code(ext.empty_sequence_state).ok_or_else(|| {
        Failure::invalid(format!(
            "rnn_config_ext.empty_sequence_state = {} is not one of the RNN_EMPTY_* values",
            ext.empty_sequence_state
        ))
    })?;
    let gate_clip_set = match ext.gate_clip_set {
        0 | 1 => ext.gate_clip_set == 1,
        other => {
            return Err(Failure::invalid(format!(
                "rnn_config_ext.gate_clip_set = {other} must be 0 or 1"
            )))
        }
    };
    Ok(builder
        .empty_sequence_state(empty)
        .proj_size(c.proj_size)
        .num_layers(c.num_layers)
        .direction(pick("direction", c.direction)?)
        .gru_variant(pick("gru_variant", c.gru_variant)?)
        .cell_clip(clip_option(c.cell_clip))
        .gate_clip(match gate_clip_set {
            true => Some(c.gate_clip),
            false => clip_option(c.gate_clip),
        })
        .input_forget(flag("input_forget", c.input_forget)?)
        .peepholes(flag("peepholes", c.peepholes)?)
        .layout(pick("layout", c.layout)?)
        .build()?)
}

/// The ISA `RNN_ISA` selects (or the best): a bad value is reported where
/// a model is made, RNN_UNSUPPORTED for an ISA this CPU lacks,
/// RNN_INVALID_ARGUMENT for an unknown name (and for an unknown
/// `RNN_BF16_DOT` or a bad `RNN_MIN_PART_MACS`, checked here too).
fn environment_isa() -> Result<Isa, Failure> {
    crate::kernels::dispatch::Bf16Dot::selected()
        .map_err(|e| Failure::new(rnn_status::RNN_INVALID_ARGUMENT, e.to_string()))?;
    crate::engine::split_cost::selected_min_part()
        .map_err(|e| Failure::new(rnn_status::RNN_INVALID_ARGUMENT, e.to_string()))?;
    Isa::selected().map_err(|e| {
        let named = std::env::var("RNN_ISA")
            .ok()
            .and_then(|n| Isa::from_name(&n).ok());
        let status = match named {
            Some(isa) if !isa.is_supported() => rnn_status::RNN_UNSUPPORTED,
            _ => rnn_status::RNN_INVALID_ARGUMENT,
        };
        let message = e.to_string();
        match message.contains("RNN_ISA") {
            true => Failure::new(status, message),
            false => Failure::new(status, format!("RNN_ISA: {message}")),
        }
    })
}

/// The model of a live handle, as it is now (a snapshot: updates from
/// other threads during the call do not change it).
pub(crate) fn model_ref(ptr: *const rnn_model) -> Result<Arc<Model>, Failure> {
    Ok(acquire(ptr, "model")?.snapshot())
}

/// Applies `change` to the model of a live handle as one transaction.
fn update_model(
    ptr: *const rnn_model,
    change: impl FnOnce(&mut Model) -> Result<(), Failure>,
) -> Result<(), Failure> {
    acquire(ptr, "model")?.update(change)
}

/// Creates a model for `*config` with all parameters zero and stores it in
/// `*out` (left untouched on failure). Free it with `rnn_model_destroy`.
/// RNN_OUT_OF_MEMORY if the parameters cannot be allocated.
///
/// # Safety
/// `config` and `out` must be valid pointers (or NULL, which is reported).
#[no_mangle]
pub unsafe extern "C" fn rnn_model_create(
    config: *const rnn_config,
    out: *mut *mut rnn_model,
) -> rnn_status {
    // SAFETY: forwarded; a NULL `ext` means the defaults.
    unsafe { rnn_model_create_ext(config, std::ptr::null(), out) }
}

/// `rnn_model_create` with the options of `*ext` too (ONNX's activation
/// functions, the empty-sequence state, a zero gate clip); NULL `ext` is
/// `rnn_config_ext_default()`. Added in ABI version 6.
///
/// # Safety
/// `config` and `out` valid pointers (or NULL, which is reported); `ext`
/// valid or NULL.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_create_ext(
    config: *const rnn_config,
    ext: *const rnn_config_ext,
    out: *mut *mut rnn_model,
) -> rnn_status {
    guard(|| {
        // SAFETY: the caller passes a valid config pointer or NULL.
        let config = unsafe { config.as_ref() }.ok_or_else(|| Failure::null("config"))?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: as above, for `ext`.
        let ext = unsafe { ext.as_ref() }.copied().unwrap_or_default();
        let config = to_config_ext(config, &ext)?;
        environment_isa()?;
        // A configuration can be valid yet far too large for this machine:
        // RNN_OUT_OF_MEMORY instead of an abort.
        let model = register(rnn_model::new(Model::try_zeros(config)?));
        // SAFETY: `out` is non-NULL and the caller passes a writable pointer.
        unsafe { *out = model };
        Ok(())
    })
}

/// Frees a model (NULL is accepted: RNN_OK). Calls still running on it from
/// other threads finish first on the model they started with. A handle
/// destroyed already, or not from librnn, gives RNN_MISUSE (best effort).
/// Traces of the model stay valid objects to destroy.
#[no_mangle]
pub extern "C" fn rnn_model_destroy(model: *mut rnn_model) -> rnn_status {
    guard(|| release(model, "model"))
}

/// Buffer sizes for calls of `seq_len` steps over `batch` sequences.
///
/// # Safety
/// `model` from `rnn_model_create`; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_sizes_for(
    model: *const rnn_model,
    seq_len: usize,
    batch: usize,
    out: *mut rnn_sizes,
) -> rnn_status {
    guard(|| {
        let model = model_ref(model)?;
        // SAFETY: per the function's contract.
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("out"))?;
        let s = Shapes::new(model.config(), seq_len, batch)?;
        *out = rnn_sizes {
            x: s.x,
            y: s.y,
            h: s.h,
            c: s.c,
            params: model.config().num_params(),
        };
        Ok(())
    })
}

/// The most memory, in bytes, calls of `seq_len` steps over `batch`
/// sequences allocate besides the caller's buffers (`rnn::CallMemory`), so
/// a caller can check before calling. Memory the model keeps from earlier
/// calls is reused first. Added in ABI version 3.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_camel_case_types)]
pub struct rnn_memory {
    /// Packing the weights: the first call, and the first after an update.
    pub packing: usize,
    /// `rnn_forward_inference` while it runs.
    pub inference: usize,
    /// `rnn_forward_training` while it runs, besides its trace.
    pub training_forward: usize,
    /// What a trace holds until `rnn_trace_destroy`.
    pub trace: usize,
    /// `rnn_backward` while it runs.
    pub backward: usize,
}

/// Fills `*out` with the memory calls of `seq_len` steps over `batch`
/// sequences allocate (see `rnn_memory`). Added in ABI version 3.
///
/// # Safety
/// `model` from `rnn_model_create` (checked); `out` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_call_memory(
    model: *const rnn_model,
    seq_len: usize,
    batch: usize,
    out: *mut rnn_memory,
) -> rnn_status {
    guard(|| {
        let model = model_ref(model)?;
        // SAFETY: per the function's contract.
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("out"))?;
        let m = model.call_memory(seq_len, batch)?;
        *out = rnn_memory {
            packing: m.packing,
            inference: m.inference,
            training_forward: m.training_forward,
            trace: m.trace,
            backward: m.backward,
        };
        Ok(())
    })
}

/// Copies the model's flat parameter vector into `out` (`len` must equal
/// `rnn_sizes.params`).
///
/// # Safety
/// `model` from `rnn_model_create`; `out` holds `len` floats.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_get_params(
    model: *const rnn_model,
    out: *mut f32,
    len: usize,
) -> rnn_status {
    guard(|| {
        // SAFETY: per the function's contract.
        let out = unsafe { slice_mut(out, len, "out")? };
        let model = model_ref(model)?;
        crate::error::check_len("out", model.params().len(), out.len())?;
        out.copy_from_slice(model.params());
        Ok(())
    })
}

/// Replaces the model's parameters with `params` (`len` = `rnn_sizes.params`),
/// in the layout `rnn_model_param_range` describes. Traces made before are
/// rejected by `rnn_backward` afterwards.
///
/// # Safety
/// `model` from `rnn_model_create` (checked; may be in use by other threads);
/// `params` holds `len` floats.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_set_params(
    model: *mut rnn_model,
    params: *const f32,
    len: usize,
) -> rnn_status {
    guard(|| {
        // SAFETY: per the function's contract.
        let params = unsafe { slice(params, len, "params")? };
        // Checked before the update copies the model (updates never change
        // the configuration, so the count holds).
        let expected = model_ref(model)?.config().num_params();
        crate::error::check_len("params", expected, params.len())?;
        update_model(model, |model| {
            model.params_mut().copy_from_slice(params);
            Ok(())
        })
    })
}

/// Fills every parameter uniformly from [-1/sqrt(H), 1/sqrt(H)) (PyTorch's
/// default), reproducibly from `seed`.
///
/// # Safety
/// `model` from `rnn_model_create` (checked; may be in use by other threads).
#[no_mangle]
pub unsafe extern "C" fn rnn_model_init_random(model: *mut rnn_model, seed: u64) -> rnn_status {
    guard(|| {
        update_model(model, |model| {
            model.fill_random(seed);
            Ok(())
        })
    })
}

/// Where one tensor lives in the parameter vector: `*offset` and `*len` in
/// elements, for `layer`, direction `dir` (0 forward, 1 backward) and `kind`
/// (an RNN_PARAM_* value). Matrices are row-major.
///
/// # Safety
/// `model` from `rnn_model_create`; `offset` and `len` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_param_range(
    model: *const rnn_model,
    layer: usize,
    dir: usize,
    kind: u32,
    offset: *mut usize,
    len: *mut usize,
) -> rnn_status {
    guard(|| {
        let model = model_ref(model)?;
        if offset.is_null() || len.is_null() {
            return Err(Failure::null(if offset.is_null() {
                "offset"
            } else {
                "len"
            }));
        }
        let kind = ParamKind::from_code(kind).ok_or_else(|| {
            Failure::invalid(format!("kind {kind} is not one of the RNN_PARAM_* values"))
        })?;
        let range = model.config().param_range(layer, dir, kind)?;
        // SAFETY: both non-NULL and writable per the contract.
        unsafe {
            *offset = range.start;
            *len = range.len();
        }
        Ok(())
    })
}

/// Stores in `*isa` the name ("scalar", "avx2", "avx512", "amx" or "neon", a
/// static string) of the instruction set the model's calls run on: the one
/// `rnn_model_set_isa` pinned, else RNN_ISA's, else the best of this CPU.
/// Added in ABI version 5.
///
/// # Safety
/// `model` from `rnn_model_create`; `isa` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_get_isa(
    model: *const rnn_model,
    isa: *mut *const c_char,
) -> rnn_status {
    guard(|| {
        let model = model_ref(model)?;
        // SAFETY: writable per the contract (NULL is reported).
        let out = unsafe { isa.as_mut() }.ok_or_else(|| Failure::null("isa"))?;
        // A pinned ISA answers at once; otherwise RNN_ISA's checks apply.
        let chosen = match model.isa() {
            Ok(isa) => isa,
            Err(_) => environment_isa()?,
        };
        let name: &'static CStr = match chosen {
            Isa::Scalar => c"scalar",
            Isa::Avx2 => c"avx2",
            Isa::Avx512 => c"avx512",
            Isa::Amx => c"amx",
            Isa::Neon => c"neon",
        };
        *out = name.as_ptr();
        Ok(())
    })
}

/// Pins the model's kernels to an instruction set: "scalar", "avx2",
/// "avx512", "amx" or "neon". RNN_UNSUPPORTED if this CPU (or, for AMX, the
/// OS) lacks it.
///
/// # Safety
/// `model` from `rnn_model_create` (checked; may be in use by other threads); `isa` a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_set_isa(
    model: *mut rnn_model,
    isa: *const c_char,
) -> rnn_status {
    guard(|| {
        if isa.is_null() {
            return Err(Failure::null("isa"));
        }
        // SAFETY: non-NULL and NUL-terminated per the contract.
        let name = unsafe { CStr::from_ptr(isa) }.to_string_lossy();
        let isa = Isa::from_name(&name)?;
        if !isa.is_supported() {
            return Err(Failure::new(
                rnn_status::RNN_UNSUPPORTED,
                format!("this CPU does not support the {} kernels", isa.name()),
            ));
        }
        update_model(model, |model| Ok(model.pin_isa(isa)?))
    })
}

/// Frees the scratch memory the model keeps for its next calls (at most 256
/// MiB while idle, however many calls ran at once) and stores the bytes
/// freed in `*released` if it is not NULL. Memory that running calls or live
/// traces use is freed when they are done. Parameters and packed weights
/// stay. Added in ABI version 3.
///
/// # Safety
/// `model` from `rnn_model_create` (checked); `released` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_release_memory(
    model: *const rnn_model,
    released: *mut usize,
) -> rnn_status {
    guard(|| {
        let bytes = model_ref(model)?.release_memory();
        // SAFETY: NULL or writable per the contract.
        if let Some(out) = unsafe { released.as_mut() } {
            *out = bytes;
        }
        Ok(())
    })
}

/// Sets the precision the model's inference runs in: RNN_PRECISION_F32 (the
/// default), RNN_PRECISION_BF16 (weights rounded to bfloat16 when they are
/// packed, at the next call: half the weight bytes, faster at small batch;
/// a bf16 model gives exactly what an f32 model with bf16-rounded W, R and
/// projection gives, except on AMX (rows split into two bf16 parts) and
/// for LSTM and GRU on CPUs where a bf16 dot product pays (`vdpbf16ps`
/// on AMD Zen 4, `bfdot`;
/// `RNN_BF16_DOT=auto|on|off`: rows rounded to bf16 too, 1.6-2.2x f32 at
/// batch there, within 4e-3 of f32)) or RNN_PRECISION_INT8 (ABI 5: int8 weights with a
/// scale per output row, a quarter of the weight bytes; each input and
/// state row quantised as it is multiplied; the same bits on every ISA).
/// The f32 parameters are kept: the getters and setters see them
/// unchanged. Training calls (`rnn_forward_training`, `rnn_backward`) need
/// RNN_PRECISION_F32 and return RNN_INVALID_ARGUMENT otherwise. Added in
/// ABI version 4.
///
/// # Safety
/// `model` from `rnn_model_create` (checked; may be in use by other threads).
#[no_mangle]
pub unsafe extern "C" fn rnn_model_set_precision(
    model: *mut rnn_model,
    precision: u32,
) -> rnn_status {
    guard(|| {
        let precision = match precision {
            RNN_PRECISION_F32 => Precision::F32,
            RNN_PRECISION_BF16 => Precision::Bf16,
            RNN_PRECISION_INT8 => Precision::Int8,
            other => {
                return Err(Failure::new(
                    rnn_status::RNN_INVALID_ARGUMENT,
                    format!(
                        "precision {other}: expected RNN_PRECISION_F32, RNN_PRECISION_BF16 \
                         or RNN_PRECISION_INT8"
                    ),
                ))
            }
        };
        update_model(model, |model| {
            model.set_precision(precision);
            Ok(())
        })
    })
}

/// Stores the model's inference precision (an RNN_PRECISION_* value) in
/// `*precision`. Added in ABI version 4.
///
/// # Safety
/// `model` from `rnn_model_create` (checked); `precision` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_get_precision(
    model: *const rnn_model,
    precision: *mut u32,
) -> rnn_status {
    guard(|| {
        let value = match model_ref(model)?.precision() {
            Precision::F32 => RNN_PRECISION_F32,
            Precision::Bf16 => RNN_PRECISION_BF16,
            Precision::Int8 => RNN_PRECISION_INT8,
        };
        // SAFETY: writable per the contract (NULL is reported).
        let out = unsafe { precision.as_mut() }.ok_or_else(|| Failure::null("precision"))?;
        *out = value;
        Ok(())
    })
}

/// Stores in `*bytes` the bytes of weights the model holds packed for its
/// kernels in its precision and ISA, packing them first if no call has yet
/// (RNN_OUT_OF_MEMORY if that fails): besides the f32 parameters and the
/// scratch memory of `rnn_model_release_memory`. An f32 model packs the
/// backward's panels too; a bf16 model only the forward's, at half the
/// bytes each, an int8 model at a quarter (plus a correction and a scale
/// per output row). Added in ABI version 4.
///
/// # Safety
/// `model` from `rnn_model_create` (checked); `bytes` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_packed_bytes(
    model: *const rnn_model,
    bytes: *mut usize,
) -> rnn_status {
    guard(|| {
        let value = model_ref(model)?.packed_bytes()?;
        // SAFETY: writable per the contract (NULL is reported).
        let out = unsafe { bytes.as_mut() }.ok_or_else(|| Failure::null("bytes"))?;
        *out = value;
        Ok(())
    })
}

/// The inputs as Rust types, borrowed from C memory.
///
/// # Safety
/// `input` points to a valid rnn_input whose buffers stay valid for `'a`.
unsafe fn to_input<'a>(input: *const rnn_input) -> Result<Input<'a>, Failure> {
    // SAFETY: per the function's contract.
    let i = unsafe { input.as_ref() }.ok_or_else(|| Failure::null("input"))?;
    // SAFETY: per the function's contract (buffers valid for 'a).
    unsafe {
        let mut input = Input::new(slice(i.x, i.x_len, "input.x")?, i.seq_len, i.batch);
        if let Some(lens) = optional(i.seq_lens, i.seq_lens_len, "input.seq_lens")? {
            input = input.with_seq_lens(lens);
        }
        if let Some(h0) = optional(i.h0, i.h0_len, "input.h0")? {
            input = input.with_h0(h0);
        }
        if let Some(c0) = optional(i.c0, i.c0_len, "input.c0")? {
            input = input.with_c0(c0);
        }
        Ok(input)
    }
}

/// `y`, `h_n` and (if given) `c_n` of an `rnn_output`.
type OutputSlices<'a> = (&'a mut [f32], &'a mut [f32], Option<&'a mut [f32]>);

/// The caller's output buffers, checked against the call's sizes before any
/// work is done.
///
/// # Safety
/// `output` is NULL or valid, its buffers holding the lengths it states and
/// not overlapping the input's.
unsafe fn output_slices<'a>(
    model: &Model,
    input: &Input<'_>,
    output: *const rnn_output,
) -> Result<OutputSlices<'a>, Failure> {
    let s = Shapes::of_input(model.config(), input)?;
    // SAFETY: per the function's contract.
    let o = unsafe { output.as_ref() }.ok_or_else(|| Failure::null("output"))?;
    crate::error::check_len("output.y", s.y, o.y_len)?;
    crate::error::check_len("output.h_n", s.h, o.h_n_len)?;
    let wants_c = !o.c_n.is_null() || o.c_n_len != 0;
    if wants_c {
        crate::error::check_len("output.c_n", s.c, o.c_n_len)?;
        if !model.config().has_cell_state() {
            return Err(Failure::invalid(
                "output.c_n given, but only an LSTM has a cell state",
            ));
        }
    }
    check_disjoint(
        &[
            span(o.y, o.y_len, "output.y"),
            span(o.h_n, o.h_n_len, "output.h_n"),
            span(o.c_n, o.c_n_len, "output.c_n"),
        ],
        &[
            span(input.x.as_ptr(), input.x.len(), "input.x"),
            input
                .seq_lens
                .and_then(|l| span(l.as_ptr(), l.len(), "input.seq_lens")),
            input.h0.and_then(|h| span(h.as_ptr(), h.len(), "input.h0")),
            input.c0.and_then(|c| span(c.as_ptr(), c.len(), "input.c0")),
        ],
    )?;
    // SAFETY: per the function's contract.
    unsafe {
        Ok((
            slice_mut(o.y, o.y_len, "output.y")?,
            slice_mut(o.h_n, o.h_n_len, "output.h_n")?,
            if wants_c {
                Some(slice_mut(o.c_n, o.c_n_len, "output.c_n")?)
            } else {
                None
            },
        ))
    }
}

/// Forward inference: runs `*input` through the model and writes `y`, `h_n`
/// (and `c_n` if given) into `*output`.
///
/// # Safety
/// `model` from `rnn_model_create`; `input` and `output` valid, their
/// buffers holding the lengths they state.
#[no_mangle]
pub unsafe extern "C" fn rnn_forward_inference(
    model: *const rnn_model,
    input: *const rnn_input,
    output: *const rnn_output,
) -> rnn_status {
    guard(|| {
        let model = model_ref(model)?;
        // SAFETY: per the function's contract.
        let input = unsafe { to_input(input)? };
        // SAFETY: per the function's contract.
        let (y, h_n, c_n) = unsafe { output_slices(&model, &input, output)? };
        Ok(model.forward_inference_into(&input, y, h_n, c_n)?)
    })
}

/// Forward pass for training: like `rnn_forward_inference`, and stores in
/// `*trace` what `rnn_backward` needs. Free it with `rnn_trace_destroy`.
///
/// # Safety
/// As for `rnn_forward_inference`; `trace` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_forward_training(
    model: *const rnn_model,
    input: *const rnn_input,
    output: *const rnn_output,
    trace: *mut *mut rnn_trace,
) -> rnn_status {
    guard(|| {
        let model = model_ref(model)?;
        // SAFETY: per the function's contract.
        let input = unsafe { to_input(input)? };
        if trace.is_null() {
            return Err(Failure::null("trace"));
        }
        // SAFETY: per the function's contract.
        let (y, h_n, c_n) = unsafe { output_slices(&model, &input, output)? };
        let t = model.forward_training_into(&input, y, h_n, c_n)?;
        // SAFETY: per the function's contract (`trace` is writable).
        unsafe { *trace = register(rnn_trace(t)) };
        Ok(())
    })
}

/// Frees a trace (NULL is accepted: RNN_OK). A trace destroyed already, or
/// not from librnn, gives RNN_MISUSE (best effort).
#[no_mangle]
pub extern "C" fn rnn_trace_destroy(trace: *mut rnn_trace) -> rnn_status {
    guard(|| release(trace, "trace"))
}

/// Backpropagation through time over the call that made `trace`, with the
/// same model and unchanged parameters: writes the gradients the caller asks
/// for (non-NULL buffers of `*grads`).
///
/// # Safety
/// `model` from `rnn_model_create`; `trace` from `rnn_forward_training`;
/// `output_grads` and `grads` valid, their buffers holding the stated lengths.
#[no_mangle]
pub unsafe extern "C" fn rnn_backward(
    model: *const rnn_model,
    trace: *const rnn_trace,
    output_grads: *const rnn_output_grads,
    grads: *const rnn_gradients,
) -> rnn_status {
    guard(|| {
        let model = model_ref(model)?;
        let trace = acquire(trace, "trace")?;
        if !model.made(&trace.0) {
            return Err(Failure::new(
                rnn_status::RNN_MISUSE,
                "the trace was made by another model",
            ));
        }
        // SAFETY: per the function's contract.
        let og = unsafe { output_grads.as_ref() }.ok_or_else(|| Failure::null("output_grads"))?;
        // SAFETY: per the function's contract.
        let g = unsafe { grads.as_ref() }.ok_or_else(|| Failure::null("grads"))?;
        let s = *trace.0.shapes();
        // SAFETY: per the function's contract.
        let (dy, dh_n, dc_n) = unsafe {
            (
                slice(og.dy, og.dy_len, "output_grads.dy")?,
                optional(og.dh_n, og.dh_n_len, "output_grads.dh_n")?,
                optional(og.dc_n, og.dc_n_len, "output_grads.dc_n")?,
            )
        };
        // Validate every output buffer before doing the work.
        let outs = [
            (g.dx, g.dx_len, s.x, "grads.dx"),
            (g.dh0, g.dh0_len, s.h, "grads.dh0"),
            (g.dc0, g.dc0_len, s.c, "grads.dc0"),
            (
                g.dparams,
                g.dparams_len,
                model.config().num_params(),
                "grads.dparams",
            ),
        ];
        for (ptr, len, want, what) in outs {
            if ptr.is_null() && len == 0 {
                continue;
            }
            if ptr.is_null() {
                return Err(Failure::null(what));
            }
            crate::error::check_len(what, want, len)?;
        }
        check_disjoint(
            &[
                span(g.dx, g.dx_len, "grads.dx"),
                span(g.dh0, g.dh0_len, "grads.dh0"),
                span(g.dc0, g.dc0_len, "grads.dc0"),
                span(g.dparams, g.dparams_len, "grads.dparams"),
            ],
            &[
                span(og.dy, og.dy_len, "output_grads.dy"),
                span(og.dh_n, og.dh_n_len, "output_grads.dh_n"),
                span(og.dc_n, og.dc_n_len, "output_grads.dc_n"),
            ],
        )?;
        let mut targets = [None, None, None, None];
        for (target, (ptr, len, _, what)) in targets.iter_mut().zip(outs) {
            if ptr.is_null() && len == 0 {
                continue;
            }
            // SAFETY: per the function's contract.
            *target = Some(unsafe { slice_mut(ptr, len, what)? });
        }
        let mut og_rust = OutputGrads::new(dy);
        if let Some(dh) = dh_n {
            og_rust = og_rust.with_dh_n(dh);
        }
        if let Some(dc) = dc_n {
            og_rust = og_rust.with_dc_n(dc);
        }
        // Straight into the caller's buffers: no copy of the gradients.
        let [dx, dh0, dc0, dparams] = targets;
        let dc0 = dc0.filter(|_| model.config().has_cell_state());
        model.backward_into(
            &trace.0,
            &og_rust,
            crate::GradientBuffers {
                dx,
                dh0,
                dc0,
                dparams,
            },
        )?;
        Ok(())
    })
}

/// Gradient clipping by global norm: scales `grads[0..len]` so that their L2
/// norm is at most `max_norm` (> 0) and stores the norm before clipping in
/// `*norm_out` if it is not NULL. To clip several vectors together (a model's
/// and an output layer's gradients), put them in one buffer.
///
/// # Safety
/// `grads` holds `len` floats; `norm_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_clip_grad_norm(
    grads: *mut f32,
    len: usize,
    max_norm: f32,
    norm_out: *mut f32,
) -> rnn_status {
    guard(|| {
        if !(max_norm.is_finite() && max_norm > 0.0) {
            return Err(Failure::invalid(format!(
                "max_norm must be finite and positive, got {max_norm}"
            )));
        }
        // SAFETY: per the function's contract.
        let grads = unsafe { slice_mut(grads, len, "grads")? };
        let norm = crate::train::clip_grad_norm(grads, max_norm);
        // SAFETY: NULL or writable per the contract.
        if let Some(out) = unsafe { norm_out.as_mut() } {
            *out = norm;
        }
        Ok(())
    })
}

/// Gradient clipping by value: clamps every element of `grads[0..len]` to
/// `[-limit, limit]` (`limit` >= 0).
///
/// # Safety
/// `grads` holds `len` floats.
#[no_mangle]
pub unsafe extern "C" fn rnn_clip_grad_value(
    grads: *mut f32,
    len: usize,
    limit: f32,
) -> rnn_status {
    guard(|| {
        if !(limit.is_finite() && limit >= 0.0) {
            return Err(Failure::invalid(format!(
                "limit must be finite and non-negative, got {limit}"
            )));
        }
        // SAFETY: per the function's contract.
        crate::train::clip_grad_value(unsafe { slice_mut(grads, len, "grads")? }, limit);
        Ok(())
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn path_arg(path: *const c_char) -> Result<std::path::PathBuf, Failure> {
    if path.is_null() {
        return Err(Failure::null("path"));
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    let s = unsafe { CStr::from_ptr(path) };
    Ok(std::path::PathBuf::from(
        s.to_str()
            .map_err(|_| Failure::invalid("path is not UTF-8"))?,
    ))
}

/// Saves the model (configuration and parameters) to `path` in librnn's
/// checkpoint format (see `rnn::train::checkpoint`), atomically: a
/// temporary file in the same directory is flushed to disk and renamed over
/// `path`, so a failure (RNN_INVALID_ARGUMENT, the message naming the step)
/// or a crash leaves the previous file intact.
///
/// # Safety
/// `model` from `rnn_model_create`; `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_save(
    model: *const rnn_model,
    path: *const c_char,
) -> rnn_status {
    guard(|| {
        // SAFETY: per the function's contract.
        let path = unsafe { path_arg(path)? };
        Ok(crate::train::save(path, &*model_ref(model)?, &[])?)
    })
}

/// Loads a model saved by `rnn_model_save` (or `rnn::train::save`) into a new
/// model in `*out`. A corrupt, truncated or foreign file gives
/// RNN_INVALID_ARGUMENT with the reason in the message; so does a path that
/// is not a regular file (a FIFO, a device, a directory), refused without
/// blocking. No more than the file's size is read.
///
/// # Safety
/// `path` NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_load(
    path: *const c_char,
    out: *mut *mut rnn_model,
) -> rnn_status {
    // SAFETY: per the function's contract.
    guard(|| unsafe { load_into(path, out, |path| Ok(crate::train::load(path)?.model)) })
}

/// Saves the model's configuration and parameters as a safetensors file:
/// tensors under PyTorch's state-dict names ("weight_ih_l0", ...; LSTM
/// peepholes as "weight_peephole_l0"), the configuration in the header's
/// metadata (`librnn.*` keys), written atomically as `rnn_model_save` writes.
/// For a configuration PyTorch can express, `safetensors.torch.load_file`
/// and `load_state_dict` take the file as it is. Added in ABI version 4.
///
/// # Safety
/// `model` from `rnn_model_create`; `path` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_save_safetensors(
    model: *const rnn_model,
    path: *const c_char,
) -> rnn_status {
    guard(|| {
        // SAFETY: per the function's contract.
        let path = unsafe { path_arg(path)? };
        Ok(crate::interop::safetensors::save(
            path,
            &*model_ref(model)?,
            &[],
        )?)
    })
}

/// Loads a safetensors file into a new model in `*out`: one written by
/// `rnn_model_save_safetensors` (its configuration is in the file; `config`
/// may be NULL, or must equal it), or a PyTorch state dict saved with
/// `safetensors.torch.save_file(module.state_dict(), path)` (then `config`
/// must describe the module; GRU needs RNN_GRU_LINEAR_BEFORE_RESET for
/// PyTorch's semantics). Tensors may be float32, float64, bfloat16 or
/// float16. A missing, misshapen or unknown tensor, or a file that is not
/// safetensors, gives RNN_INVALID_ARGUMENT with the tensor named in the
/// message; no configuration for a file without one gives it too. No more
/// than the file's size is read. Added in ABI version 4.
///
/// # Safety
/// `path` NUL-terminated; `config` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_load_safetensors(
    path: *const c_char,
    config: *const rnn_config,
    out: *mut *mut rnn_model,
) -> rnn_status {
    // SAFETY: forwarded.
    unsafe { rnn_model_load_safetensors_module(path, config, std::ptr::null(), out) }
}

/// `rnn_model_load_safetensors` of one module of a larger network's state
/// dict: its parameters are named `prefix` + their PyTorch names (e.g.
/// prefix "encoder.lstm." for "encoder.lstm.weight_ih_l0", as
/// `model.state_dict()` names them), tensors outside `prefix` are left
/// alone. With `prefix` NULL, as `rnn_model_load_safetensors`, which also
/// finds the one module whose names end in the parameters' (an error naming
/// the modules if several do). Added in ABI version 5.
///
/// # Safety
/// `path` NUL-terminated; `config` NULL or valid; `prefix` NULL or
/// NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_load_safetensors_module(
    path: *const c_char,
    config: *const rnn_config,
    prefix: *const c_char,
    out: *mut *mut rnn_model,
) -> rnn_status {
    guard(|| {
        // SAFETY: NULL or valid per the contract.
        let config = match unsafe { config.as_ref() } {
            Some(c) => Some(to_config(c)?),
            None => None,
        };
        let prefix = match prefix.is_null() {
            true => None,
            // SAFETY: NUL-terminated per the contract.
            false => Some(unsafe { str_arg(prefix, "prefix")? }),
        };
        // SAFETY: per the function's contract.
        unsafe {
            load_into(path, out, |path| {
                Ok(crate::interop::safetensors::load_module(path, config.as_ref(), prefix)?.model)
            })
        }
    })
}

/// Loads a model from the file at the C string `path` with `load` and
/// stores a new handle to it in `*out` (untouched on failure).
///
/// # Safety
/// `path` NULL or NUL-terminated; `out` NULL or writable.
unsafe fn load_into(
    path: *const c_char,
    out: *mut *mut rnn_model,
    load: impl FnOnce(std::path::PathBuf) -> Result<Model, Failure>,
) -> Result<(), Failure> {
    // SAFETY: per the function's contract.
    let path = unsafe { path_arg(path)? };
    if out.is_null() {
        return Err(Failure::null("out"));
    }
    environment_isa()?;
    let model = load(path)?;
    // SAFETY: non-NULL and writable per the contract.
    unsafe { *out = register(rnn_model::new(model)) };
    Ok(())
}

/// # Safety
/// `name` is NULL or NUL-terminated.
unsafe fn str_arg<'a>(name: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if name.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    unsafe { CStr::from_ptr(name) }
        .to_str()
        .map_err(|_| Failure::invalid(format!("`{what}` is not UTF-8")))
}

/// Sets one tensor given by its PyTorch state-dict name ("weight_ih_l0",
/// "weight_hh_l1_reverse", "bias_ih_l0", "weight_hr_l0", ...), row-major as
/// `tensor.numpy().ravel()`. The model must be PyTorch-compatible: no
/// peepholes or cell clip, GRU linear-before-reset, forward or concatenated
/// bidirectional layers.
///
/// # Safety
/// `model` from `rnn_model_create` (checked; may be in use by other threads); `name`
/// NUL-terminated; `data` holds `len` floats.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_set_pytorch_tensor(
    model: *mut rnn_model,
    name: *const c_char,
    data: *const f32,
    len: usize,
) -> rnn_status {
    guard(|| {
        // SAFETY: per the function's contract.
        let (name, data) = unsafe { (str_arg(name, "name")?, slice(data, len, "data")?) };
        update_model(model, |model| {
            Ok(crate::interop::pytorch::import_tensor(model, name, data)?)
        })
    })
}

/// Copies one tensor out under its PyTorch state-dict name (see
/// `rnn_model_set_pytorch_tensor`).
///
/// # Safety
/// `model` from `rnn_model_create`; `name` NUL-terminated; `out` holds `len` floats.
#[no_mangle]
pub unsafe extern "C" fn rnn_model_get_pytorch_tensor(
    model: *const rnn_model,
    name: *const c_char,
    out: *mut f32,
    len: usize,
) -> rnn_status {
    guard(|| {
        // SAFETY: per the function's contract.
        let (name, out) = unsafe { (str_arg(name, "name")?, slice_mut(out, len, "out")?) };
        let tensor = crate::interop::pytorch::export_tensor(&*model_ref(model)?, name)?;
        crate::error::check_len("out", tensor.len(), out.len())?;
        out.copy_from_slice(&tensor);
        Ok(())
    })
}

/// Sets layer `layer` from ONNX RNN/LSTM/GRU operator inputs: `W [D, G·H,
/// I]`, `R [D, G·H, H]`, `B [D, 2·G·H]` (NULL, 0 for zero biases) and `P [D,
/// 3·H]` (LSTM with peepholes; NULL, 0 otherwise), in ONNX gate orders
/// (LSTM i, o, f, c; GRU z, r, h). The model's direction must be forward,
/// reverse or concatenated bidirectional; `gru_variant` plays the role of
/// `linear_before_reset`.
///
/// # Safety
/// `model` from `rnn_model_create` (checked; may be in use by other threads); each
/// non-NULL buffer holds its stated length.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_model_set_onnx_layer(
    model: *mut rnn_model,
    layer: usize,
    w: *const f32,
    w_len: usize,
    r: *const f32,
    r_len: usize,
    b: *const f32,
    b_len: usize,
    p: *const f32,
    p_len: usize,
) -> rnn_status {
    guard(|| {
        // SAFETY: per the function's contract.
        let weights = unsafe {
            crate::interop::onnx::OnnxWeights {
                w: slice(w, w_len, "W")?.to_vec(),
                r: slice(r, r_len, "R")?.to_vec(),
                b: optional(b, b_len, "B")?.unwrap_or(&[]).to_vec(),
                p: optional(p, p_len, "P")?.unwrap_or(&[]).to_vec(),
            }
        };
        update_model(model, |model| {
            Ok(crate::interop::onnx::import_layer(model, layer, &weights)?)
        })
    })
}

/// Copies layer `layer` out as ONNX operator inputs (see
/// `rnn_model_set_onnx_layer`); `P` is required exactly when the model has
/// peepholes (NULL, 0 otherwise).
///
/// # Safety
/// `model` from `rnn_model_create`; each non-NULL buffer holds its stated length.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_model_get_onnx_layer(
    model: *const rnn_model,
    layer: usize,
    w: *mut f32,
    w_len: usize,
    r: *mut f32,
    r_len: usize,
    b: *mut f32,
    b_len: usize,
    p: *mut f32,
    p_len: usize,
) -> rnn_status {
    guard(|| {
        let weights = crate::interop::onnx::export_layer(&*model_ref(model)?, layer)?;
        for (ptr, len, src, what) in [
            (w, w_len, &weights.w, "W"),
            (r, r_len, &weights.r, "R"),
            (b, b_len, &weights.b, "B"),
            (p, p_len, &weights.p, "P"),
        ] {
            // SAFETY: per the function's contract.
            let dst = unsafe { slice_mut(ptr, len, what)? };
            crate::error::check_len(what, src.len(), dst.len())?;
            dst.copy_from_slice(src);
        }
        Ok(())
    })
}
