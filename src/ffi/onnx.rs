//! ONNX for C: a node's attributes to an `rnn_config` with the same
//! validation as Rust's `OnnxAttributes`, and the layout conversions
//! between librnn's and ONNX's `Y`, `Y_h`/`Y_c` and `initial_h`/`initial_c`.

use std::ffi::CStr;
use std::os::raw::c_char;

use super::guard::{guard, optional, rnn_status, slice, slice_mut, Failure};
use super::{
    pick, rnn_activation, rnn_config, rnn_config_default, rnn_config_ext, RNN_EMPTY_ZEROS,
};
use crate::config::{CellKind, Coded, Config};
use crate::interop::onnx::{state_from_onnx, state_to_onnx, y_to_onnx, OnnxAttributes};

/// The attributes of one ONNX `RNN`, `LSTM` or `GRU` node, as the node
/// holds them. Start from `rnn_onnx_attributes_default(hidden_size)`.
/// Added in ABI version 6.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types)]
pub struct rnn_onnx_attributes {
    /// `hidden_size`.
    pub hidden_size: i64,
    /// `direction`: "forward", "reverse" or "bidirectional" (NUL-terminated;
    /// NULL for the default, "forward").
    pub direction: *const c_char,
    /// `layout`: 0 or 1.
    pub layout: i64,
    /// `linear_before_reset` (GRU): 0 or 1.
    pub linear_before_reset: i64,
    /// `input_forget` (LSTM): 0 or 1.
    pub input_forget: i64,
    /// 1 when the node has a `clip` attribute (then `clip` applies, even 0).
    pub has_clip: u32,
    /// `clip`.
    pub clip: f32,
    /// `activations`: `activations_len` NUL-terminated names (NULL, 0 for
    /// the defaults).
    pub activations: *const *const c_char,
    pub activations_len: usize,
    /// `activation_alpha` (NULL, 0 for none).
    pub activation_alpha: *const f32,
    pub activation_alpha_len: usize,
    /// `activation_beta` (NULL, 0 for none).
    pub activation_beta: *const f32,
    pub activation_beta_len: usize,
}

/// A node with ONNX's default attributes and the given `hidden_size`.
#[no_mangle]
pub extern "C" fn rnn_onnx_attributes_default(hidden_size: i64) -> rnn_onnx_attributes {
    rnn_onnx_attributes {
        hidden_size,
        direction: std::ptr::null(),
        layout: 0,
        linear_before_reset: 0,
        input_forget: 0,
        has_clip: 0,
        clip: 0.0,
        activations: std::ptr::null(),
        activations_len: 0,
        activation_alpha: std::ptr::null(),
        activation_alpha_len: 0,
        activation_beta: std::ptr::null(),
        activation_beta_len: 0,
    }
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` is NULL or NUL-terminated.
unsafe fn text(ptr: *const c_char, what: &str) -> Result<String, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: per the function's contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map(str::to_owned)
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// # Safety
/// The pointers in `a` hold their stated lengths and strings are NUL-terminated.
unsafe fn to_attributes(a: &rnn_onnx_attributes) -> Result<OnnxAttributes, Failure> {
    let hidden = usize::try_from(a.hidden_size).map_err(|_| {
        Failure::invalid(format!(
            "attributes.hidden_size = {} is negative",
            a.hidden_size
        ))
    })?;
    let mut out = OnnxAttributes::new(hidden);
    if !a.direction.is_null() {
        // SAFETY: per the function's contract.
        out.direction = unsafe { text(a.direction, "attributes.direction")? };
    }
    out.layout = a.layout;
    out.linear_before_reset = a.linear_before_reset;
    out.input_forget = a.input_forget;
    out.clip = match a.has_clip {
        0 => None,
        1 => Some(a.clip),
        other => {
            return Err(Failure::invalid(format!(
                "attributes.has_clip = {other} must be 0 or 1"
            )))
        }
    };
    // SAFETY: per the function's contract.
    unsafe {
        let names = optional(a.activations, a.activations_len, "attributes.activations")?;
        for (i, &name) in names.unwrap_or(&[]).iter().enumerate() {
            out.activations
                .push(text(name, &format!("attributes.activations[{i}]"))?);
        }
        let floats = |p, n, what| optional(p, n, what).map(|v| v.unwrap_or(&[]).to_vec());
        out.activation_alpha = floats(
            a.activation_alpha,
            a.activation_alpha_len,
            "attributes.activation_alpha",
        )?;
        out.activation_beta = floats(
            a.activation_beta,
            a.activation_beta_len,
            "attributes.activation_beta",
        )?;
    }
    Ok(out)
}

/// The configuration of one ONNX node, for `rnn_model_create_ext`, as a
/// one-layer network of `cell` (RNN_CELL_*) over `input_size` features,
/// `peepholes` 1 when the LSTM node has a `P` input: every attribute
/// mapped and validated as Rust's `OnnxAttributes` does (an unsupported
/// value is RNN_INVALID_ARGUMENT naming the attribute), into `*config`
/// and `*ext` (activations with their alpha and beta, `empty_sequence_state
/// = RNN_EMPTY_ZEROS`: onnxruntime's final state of an item of length 0,
/// and a `clip` of 0 kept). Set `num_layers` for a stack of nodes. Added in
/// ABI version 6.
///
/// # Safety
/// `attributes` valid (its pointers hold their stated lengths, strings
/// NUL-terminated); `config` and `ext` writable.
#[no_mangle]
pub unsafe extern "C" fn rnn_onnx_config(
    attributes: *const rnn_onnx_attributes,
    cell: u32,
    input_size: usize,
    peepholes: u32,
    config: *mut rnn_config,
    ext: *mut rnn_config_ext,
) -> rnn_status {
    guard(|| {
        // SAFETY: per the function's contract.
        let a = unsafe { attributes.as_ref() }.ok_or_else(|| Failure::null("attributes"))?;
        // SAFETY: per the function's contract.
        let attrs = unsafe { to_attributes(a)? };
        let cell: CellKind = pick("cell", cell)?;
        let built = attrs
            .builder(cell, input_size)?
            .peepholes(super::flag("peepholes", peepholes)?)
            .build()?;
        // SAFETY: per the function's contract.
        let (out, out_ext) = unsafe { (config.as_mut(), ext.as_mut()) };
        let out = out.ok_or_else(|| Failure::null("config"))?;
        let out_ext = out_ext.ok_or_else(|| Failure::null("ext"))?;
        (*out, *out_ext) = to_c_config(&built);
        Ok(())
    })
}

/// A validated configuration as C's structs.
fn to_c_config(c: &Config) -> (rnn_config, rnn_config_ext) {
    let mut out = rnn_config_default();
    let mut ext = rnn_config_ext::default();
    out.cell = c.cell().code();
    out.activation = c.activation().code();
    out.input_size = c.input_size();
    out.hidden_size = c.hidden_size();
    out.proj_size = c.proj_size();
    out.num_layers = c.num_layers();
    out.direction = c.direction().code();
    out.gru_variant = c.gru_variant().code();
    out.cell_clip = c.cell_clip().unwrap_or(0.0);
    out.peepholes = u32::from(c.peepholes());
    out.layout = c.layout().code();
    out.gate_clip = c.gate_clip().unwrap_or(0.0);
    ext.gate_clip_set = u32::from(c.gate_clip().is_some());
    out.input_forget = u32::from(c.input_forget());
    for dir in 0..c.num_directions() {
        for (role, f) in c.activations(dir).iter().enumerate() {
            ext.activations[3 * dir + role] = rnn_activation {
                function: f.kind.code() + 1,
                alpha: f.alpha,
                beta: f.beta,
            };
        }
    }
    if c.empty_sequence_state() == crate::config::EmptySequenceState::Zeros {
        ext.empty_sequence_state = RNN_EMPTY_ZEROS;
    }
    (out, ext)
}

/// `seq_len · batch · dirs · hidden` (or without `seq_len` for a state),
/// checked for overflow, as the length `what` must have.
fn expected(dims: &[usize], what: &str) -> Result<usize, Failure> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Failure::invalid(format!("{what}: the sizes overflow")))
}

fn batch_first(layout: u32) -> Result<bool, Failure> {
    match layout {
        0 | 1 => Ok(layout == 1),
        other => Err(Failure::invalid(format!(
            "layout = {other} must be 0 or 1 (ONNX's layout attribute)"
        ))),
    }
}

/// One conversion: checks both lengths, converts, copies out.
///
/// # Safety
/// `src` and `dst` hold their stated lengths.
#[allow(clippy::too_many_arguments)]
unsafe fn convert(
    src: *const f32,
    src_len: usize,
    dst: *mut f32,
    dst_len: usize,
    dims: &[usize],
    what: (&'static str, &'static str),
    f: impl FnOnce(&[f32]) -> Vec<f32>,
) -> Result<(), Failure> {
    let len = expected(dims, what.0)?;
    // SAFETY: per the function's contract.
    let (src, dst) = unsafe {
        (
            slice(src, src_len, what.0)?,
            slice_mut(dst, dst_len, what.1)?,
        )
    };
    crate::error::check_len(what.0, len, src.len())?;
    crate::error::check_len(what.1, len, dst.len())?;
    dst.copy_from_slice(&f(src));
    Ok(())
}

/// ONNX `Y` (`[T, D, N, H]` for layout 0, `[N, T, D, H]` for layout 1)
/// from one layer's librnn `y` (`[T, N, D·H]`, or `[N, T, D·H]` batch-first
/// with layout 1): both hold `seq_len · batch · dirs · hidden` floats.
/// Added in ABI version 6.
///
/// # Safety
/// `y` and `out` hold their stated lengths.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_onnx_y_from_librnn(
    y: *const f32,
    y_len: usize,
    seq_len: usize,
    batch: usize,
    dirs: usize,
    hidden: usize,
    layout: u32,
    out: *mut f32,
    out_len: usize,
) -> rnn_status {
    guard(|| {
        let bf = batch_first(layout)?;
        // SAFETY: per the function's contract.
        unsafe {
            convert(
                y,
                y_len,
                out,
                out_len,
                &[seq_len, batch, dirs, hidden],
                ("y", "out"),
                |y| y_to_onnx(y, seq_len, batch, dirs, hidden, bf),
            )
        }
    })
}

/// One state conversion, to ONNX's layout or from it, as a C call.
///
/// # Safety
/// `state` and `out` hold their stated lengths.
unsafe fn convert_state(
    state: *const f32,
    state_len: usize,
    (batch, dirs, hidden): (usize, usize, usize),
    layout: u32,
    out: *mut f32,
    out_len: usize,
    to_onnx: bool,
) -> rnn_status {
    guard(|| {
        let bf = batch_first(layout)?;
        let f = |s: &[f32]| match to_onnx {
            true => state_to_onnx(s, batch, dirs, hidden, bf),
            false => state_from_onnx(s, batch, dirs, hidden, bf),
        };
        let dims = [batch, dirs, hidden];
        // SAFETY: per the function's contract.
        unsafe { convert(state, state_len, out, out_len, &dims, ("state", "out"), f) }
    })
}

/// ONNX `Y_h` / `Y_c` (`[D, N, H]` for layout 0, `[N, D, H]` for layout 1)
/// from one layer's librnn final state `[D, N, H]`. Added in ABI version 6.
///
/// # Safety
/// `state` and `out` hold their stated lengths.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_onnx_state_from_librnn(
    state: *const f32,
    state_len: usize,
    batch: usize,
    dirs: usize,
    hidden: usize,
    layout: u32,
    out: *mut f32,
    out_len: usize,
) -> rnn_status {
    // SAFETY: per the function's contract.
    unsafe {
        convert_state(
            state,
            state_len,
            (batch, dirs, hidden),
            layout,
            out,
            out_len,
            true,
        )
    }
}

/// librnn's `h0` / `c0` of one layer (`[D, N, H]`) from ONNX `initial_h` /
/// `initial_c` (`[D, N, H]` for layout 0, `[N, D, H]` for layout 1). Added
/// in ABI version 6.
///
/// # Safety
/// `state` and `out` hold their stated lengths.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn rnn_onnx_state_to_librnn(
    state: *const f32,
    state_len: usize,
    batch: usize,
    dirs: usize,
    hidden: usize,
    layout: u32,
    out: *mut f32,
    out_len: usize,
) -> rnn_status {
    // SAFETY: per the function's contract.
    unsafe {
        convert_state(
            state,
            state_len,
            (batch, dirs, hidden),
            layout,
            out,
            out_len,
            false,
        )
    }
}
