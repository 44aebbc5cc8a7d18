//! safetensors files (Hugging Face's tensor format) with PyTorch's
//! state-dict names, so weights move between PyTorch and librnn as files:
//!
//! ```python
//! safetensors.torch.save_file(lstm.state_dict(), "m.safetensors")   # PyTorch
//! ```
//! ```no_run
//! # use rnn::{CellKind, Config};
//! # fn main() -> rnn::Result<()> {
//! // The PyTorch module's configuration, which PyTorch does not store:
//! let config = Config::builder(CellKind::Lstm, 3, 4).num_layers(2).build()?;
//! let loaded = rnn::interop::safetensors::load("m.safetensors", Some(&config))?;
//! let model = loaded.model;
//! # Ok(()) }
//! ```
//!
//! Names: per layer `k` and direction (`_reverse` for the second),
//! `weight_ih_l{k}` `[G·H, I_k]`, `weight_hh_l{k}` `[G·H, H_out]`,
//! `bias_ih_l{k}`, `bias_hh_l{k}` `[G·H]`, `weight_hr_l{k}` `[H_out, H]`,
//! as `nn.RNN`/`nn.LSTM`/`nn.GRU` name them (gate orders are librnn's,
//! which are PyTorch's), and for librnn's own LSTM peepholes
//! `weight_peephole_l{k}` `[3, H]` (p_i, p_f, p_o).
//!
//! A file librnn writes also holds its configuration in the header's
//! metadata (`librnn.*` keys: every option, the ONNX-only ones included),
//! and extra tensors (an optimiser's state, an output layer) under
//! `librnn.extra.<name>`; loading such a file needs no configuration.
//! Loading reads at most the file's size, refuses anything but a regular
//! file, lets the format's own checks bound every offset by the file, and
//! names the tensor in every error. Tensors may be float32, float64,
//! bfloat16 or float16 (converted to f32; f64 rounds).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::config::{
    Activation, ActivationFunction, ActivationKind, CellKind, Coded, Config, Direction,
    EmptySequenceState, GruVariant, Layout,
};
use crate::error::{Error, Result};
use crate::interop::pytorch::{named_tensors, Named};
use crate::model::Model;
use crate::train::Checkpoint;

/// The largest file [`load`] reads (1 TiB), on top of the file's own size.
pub const MAX_FILE_BYTES: u64 = 1 << 40;

/// Prefix of the names of extra tensors.
pub const EXTRA_PREFIX: &str = "librnn.extra.";

/// Version of the `librnn.*` metadata this librnn writes.
const FORMAT: &str = "1";

/// A value's name as stored in the metadata (its `Debug` name).
fn coded_name<T: Coded + std::fmt::Debug>(value: T) -> String {
    format!("{value:?}")
}

fn from_coded_name<T: Coded + std::fmt::Debug>(key: &str, name: &str) -> Result<T> {
    T::ALL
        .iter()
        .copied()
        .find(|v| coded_name(*v) == name)
        .ok_or_else(|| bad(format!("metadata `{key}`: unknown value {name:?}")))
}

fn bad(message: String) -> Error {
    Error::Checkpoint(message)
}

/// The configuration as `librnn.*` metadata.
fn metadata(config: &Config) -> HashMap<String, String> {
    let clip = |c: Option<f32>| c.map_or("none".to_string(), |c| format!("{c:?}"));
    [
        ("format", FORMAT.to_string()),
        ("cell", coded_name(config.cell())),
        ("activation", coded_name(config.activation())),
        ("direction", coded_name(config.direction())),
        ("gru_variant", coded_name(config.gru_variant())),
        ("layout", coded_name(config.layout())),
        ("input_size", config.input_size().to_string()),
        ("hidden_size", config.hidden_size().to_string()),
        ("proj_size", config.proj_size().to_string()),
        ("num_layers", config.num_layers().to_string()),
        ("peepholes", config.peepholes().to_string()),
        ("cell_clip", clip(config.cell_clip())),
        ("gate_clip", clip(config.gate_clip())),
        ("input_forget", config.input_forget().to_string()),
        ("activations", activations_text(config)),
        (
            "empty_sequence_state",
            coded_name(config.empty_sequence_state()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (format!("librnn.{k}"), v))
    .collect()
}

/// Every direction's activation functions in ONNX's order, as
/// `Kind:alpha:beta` separated by commas.
fn activations_text(config: &Config) -> String {
    (0..config.num_directions())
        .flat_map(|d| config.activations(d).iter())
        .map(|f| format!("{}:{:?}:{:?}", f.kind.onnx_name(), f.alpha, f.beta))
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`activations_text`].
fn parse_activations(text: &str) -> Result<Vec<ActivationFunction>> {
    let invalid = |f: &str| bad(format!("metadata `librnn.activations`: cannot read {f:?}"));
    text.split(',')
        .map(|f| {
            let parts: Vec<&str> = f.split(':').collect();
            let [kind, alpha, beta] = parts[..] else {
                return Err(invalid(f));
            };
            let kind = ActivationKind::from_onnx_name(kind).ok_or_else(|| invalid(f))?;
            let number = |v: &str| v.parse::<f32>().map_err(|_| invalid(f));
            Ok(ActivationFunction::with(
                kind,
                number(alpha)?,
                number(beta)?,
            ))
        })
        .collect()
}

/// The configuration stored in `librnn.*` metadata, or `None` without any.
fn config_from_metadata(meta: &HashMap<String, String>) -> Result<Option<Config>> {
    if !meta.keys().any(|k| k.starts_with("librnn.")) {
        return Ok(None);
    }
    let get = |key: &str| -> Result<&str> {
        meta.get(&format!("librnn.{key}"))
            .map(String::as_str)
            .ok_or_else(|| bad(format!("metadata `librnn.{key}` is missing")))
    };
    if get("format")? != FORMAT {
        return Err(bad(format!(
            "metadata `librnn.format` is {:?}; this librnn reads {FORMAT:?}",
            get("format")?
        )));
    }
    let size = |key: &str| -> Result<usize> {
        get(key)?
            .parse()
            .map_err(|_| bad(format!("metadata `librnn.{key}`: not a size")))
    };
    let flag = |key: &str| -> Result<bool> {
        get(key)?
            .parse()
            .map_err(|_| bad(format!("metadata `librnn.{key}`: not true or false")))
    };
    let clip = |key: &str| -> Result<Option<f32>> {
        match get(key)? {
            "none" => Ok(None),
            v => v
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("metadata `librnn.{key}`: not a number or none"))),
        }
    };
    let mut builder = Config::builder(
        from_coded_name::<CellKind>("librnn.cell", get("cell")?)?,
        size("input_size")?,
        size("hidden_size")?,
    );
    // Files written before ONNX's other functions existed have only the
    // RNN's `activation`.
    builder = match meta.get("librnn.activations") {
        Some(text) => builder.activations(&parse_activations(text)?),
        None => builder.activation(from_coded_name::<Activation>(
            "librnn.activation",
            get("activation")?,
        )?),
    };
    if let Some(state) = meta.get("librnn.empty_sequence_state") {
        builder = builder.empty_sequence_state(from_coded_name::<EmptySequenceState>(
            "librnn.empty_sequence_state",
            state,
        )?);
    }
    let config = builder
        .direction(from_coded_name::<Direction>(
            "librnn.direction",
            get("direction")?,
        )?)
        .gru_variant(from_coded_name::<GruVariant>(
            "librnn.gru_variant",
            get("gru_variant")?,
        )?)
        .layout(from_coded_name::<Layout>("librnn.layout", get("layout")?)?)
        .proj_size(size("proj_size")?)
        .num_layers(size("num_layers")?)
        .peepholes(flag("peepholes")?)
        .cell_clip(clip("cell_clip")?)
        .gate_clip(clip("gate_clip")?)
        .input_forget(flag("input_forget")?)
        .build()
        .map_err(|e| bad(format!("the stored configuration is invalid: {e}")))?;
    Ok(Some(config))
}

/// f32 values as little-endian bytes.
fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The model's parameters (and `extras`) as a safetensors file's bytes.
pub fn to_bytes(model: &Model, extras: &[(&str, &[f32])]) -> Result<Vec<u8>> {
    let config = model.config();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in named_tensors(config) {
        owned.push((
            t.name,
            t.shape,
            le_bytes(model.param(t.layer, t.dir, t.kind)?),
        ));
    }
    for (name, values) in extras {
        let full = format!("{EXTRA_PREFIX}{name}");
        if owned.iter().any(|(n, _, _)| *n == full) {
            return Err(Error::InvalidArgument(format!(
                "two extra tensors are called `{name}`"
            )));
        }
        owned.push((full, vec![values.len()], le_bytes(values)));
    }
    let views = owned
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
                .map_err(|e| Error::Internal(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata(config)))
        .map_err(|e| Error::Internal(format!("safetensors: {e}")))
}

/// Writes the model (and `extras`) as a safetensors file, atomically and
/// durably as `train::save` does: a failed save leaves the old file.
pub fn save(path: impl AsRef<Path>, model: &Model, extras: &[(&str, &[f32])]) -> Result<()> {
    crate::files::write_atomic(path.as_ref(), &to_bytes(model, extras)?).map_err(Error::Checkpoint)
}

/// Reads a safetensors file (see the module docs). `config` is needed for
/// a file without librnn's metadata (e.g. a PyTorch state dict); for one
/// with it, a `config` given must equal the stored one. A state dict of a
/// larger PyTorch network, whose names carry the module's path
/// (`lstm.weight_ih_l0`), is read when one module's names match
/// unambiguously; [`load_module`] names the module otherwise.
pub fn load(path: impl AsRef<Path>, config: Option<&Config>) -> Result<Checkpoint> {
    load_module(path, config, None)
}

/// [`load`] of the tensors under `prefix` (e.g. `"encoder.lstm."`, as
/// `model.state_dict()` of a larger network names them): the parameters
/// are `prefix` + their PyTorch names, tensors outside `prefix` are left
/// alone, and one inside that is not a parameter is an error. `None`:
/// the names as they are, or, if the file has none of them, the one
/// prefix under which it has them all (an error naming the candidates if
/// several modules have them).
pub fn load_module(
    path: impl AsRef<Path>,
    config: Option<&Config>,
    prefix: Option<&str>,
) -> Result<Checkpoint> {
    let bytes =
        crate::files::read_bounded(path.as_ref(), MAX_FILE_BYTES).map_err(Error::Checkpoint)?;
    from_bytes_module(&bytes, config, prefix)
}

/// A tensor's values as f32, whatever its floating-point type.
fn values(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let data = view.data();
    let from_u16 = |f: fn(u16) -> f32| -> Vec<f32> {
        data.chunks_exact(2)
            .map(|b| f(u16::from_le_bytes([b[0], b[1]])))
            .collect()
    };
    Ok(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::BF16 => from_u16(|h| f32::from_bits(u32::from(h) << 16)),
        Dtype::F16 => from_u16(f16_to_f32),
        other => {
            return Err(bad(format!(
                "tensor `{name}` is {other:?}; librnn reads float32, float64, bfloat16 and float16"
            )))
        }
    })
}

/// An IEEE half-precision value as f32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1F);
    let frac = u32::from(h & 0x3FF);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac · 2^-24, normalised for f32.
            let shift = frac.leading_zeros() - 21; // to put the top bit at bit 10
            let frac = (frac << shift) & 0x3FF;
            sign | ((113 - shift) << 23) | (frac << 13)
        }
        (0x1F, 0) => sign | 0x7F80_0000,
        (0x1F, _) => sign | 0x7FC0_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Parses a safetensors file's bytes (see [`load`]).
pub fn from_bytes(bytes: &[u8], config: Option<&Config>) -> Result<Checkpoint> {
    from_bytes_module(bytes, config, None)
}

/// The prefix under which `names` hold `first` (a parameter's name): `""`
/// if they hold it as it is, else the one `p` with `p + first` among them
/// and `p` ending in `.` (an error naming them if there are several).
fn module_prefix(names: &[&str], first: &str) -> Result<String> {
    if names.contains(&first) {
        return Ok(String::new());
    }
    let dotted = format!(".{first}");
    let candidates: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(first).filter(|_| n.ends_with(&dotted)))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Ok(String::new()),
        several => Err(bad(format!(
            "tensor `{first}` is in several modules ({several:?}): \
             name the module's prefix (load_module, rnn_model_load_safetensors_module)"
        ))),
    }
}

/// [`from_bytes`] of one module's tensors (see [`load_module`]).
pub fn from_bytes_module(
    bytes: &[u8],
    config: Option<&Config>,
    prefix: Option<&str>,
) -> Result<Checkpoint> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let stored = match header.metadata() {
        Some(meta) => config_from_metadata(meta)?,
        None => None,
    };
    let config = match (stored, config) {
        (Some(stored), Some(given)) if stored != *given => {
            return Err(bad(format!(
                "the file's configuration ({stored:?}) is not the one given ({given:?})"
            )))
        }
        (Some(stored), _) => stored,
        (None, Some(given)) => given.clone(),
        (None, None) => {
            return Err(Error::InvalidArgument(
                "the file has no librnn configuration (a PyTorch state dict?): \
                 pass the configuration of the module that saved it"
                    .into(),
            ))
        }
    };
    let mut params = crate::error::try_vec(config.num_params(), 0.0, "the parameters")?;
    let expected = named_tensors(&config);
    let prefix = match (prefix, expected.first()) {
        (Some(p), _) => p.to_string(),
        (None, Some(first)) => module_prefix(&file.names(), &first.name)?,
        (None, None) => String::new(),
    };
    for Named {
        name,
        shape,
        kind,
        layer,
        dir,
    } in &expected
    {
        let full = format!("{prefix}{name}");
        let view = file.tensor(&full).map_err(|_| {
            bad(format!(
                "tensor `{full}` ({shape:?}) is missing; the file has {:?}",
                sorted(file.names())
            ))
        })?;
        if view.shape() != shape.as_slice() {
            return Err(bad(format!(
                "tensor `{full}` has shape {:?}; this configuration needs {shape:?}",
                view.shape()
            )));
        }
        let range = config.param_range(*layer, *dir, *kind)?;
        params[range].copy_from_slice(&values(&full, &view)?);
    }
    let mut extras = Vec::new();
    for full in sorted(file.names()) {
        // Under a module prefix, the rest of the network is not ours.
        let Some(name) = full.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if expected.iter().any(|t| t.name == name) {
            continue;
        }
        let Some(extra) = name.strip_prefix(EXTRA_PREFIX) else {
            return Err(bad(format!(
                "tensor `{full}` is not a parameter of this configuration ({:?} with {} layer(s), {:?})",
                config.cell(),
                config.num_layers(),
                config.direction()
            )));
        };
        let view = file
            .tensor(full)
            .map_err(|e| bad(format!("tensor `{full}`: {e}")))?;
        extras.push((extra.to_string(), values(full, &view)?));
    }
    Ok(Checkpoint {
        model: Model::from_params(config, params)?,
        extras,
    })
}

fn sorted(mut names: Vec<&str>) -> Vec<&str> {
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::tests::pow2;

    #[test]
    fn half_precision_values_convert_exactly() {
        assert_eq!(f16_to_f32(0x3C00), 1.0);
        assert_eq!(f16_to_f32(0xC000), -2.0);
        assert_eq!(f16_to_f32(0x7BFF), 65504.0);
        assert_eq!(f16_to_f32(0x0001), pow2(-24));
        assert_eq!(f16_to_f32(0x03FF), 1023.0 * pow2(-24));
        assert_eq!(f16_to_f32(0x0400), pow2(-14));
        assert_eq!(f16_to_f32(0x7C00), f32::INFINITY);
        assert!(f16_to_f32(0x7E00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }
}
