//! PyTorch layout: per layer `k` and direction (`_reverse` for the second),
//! `weight_ih_l{k}` `[G·H, I_k]`, `weight_hh_l{k}` `[G·H, H_out]`,
//! `bias_ih_l{k}` and `bias_hh_l{k}` `[G·H]`, and with `proj_size`
//! `weight_hr_l{k}` `[P, H]`. Gate orders match librnn's (LSTM i, f, g, o;
//! GRU r, z, n, linear before reset), so tensors copy over unchanged.

use crate::config::{CellKind, Config, Direction, GruVariant, ParamKind};
use crate::error::{check_len, Error, Result};
use crate::model::Model;

/// Checks that PyTorch can express this configuration.
pub fn check_compatible(config: &Config) -> Result<()> {
    let no = |what: &str| Err(Error::InvalidArgument(format!("PyTorch has no {what}")));
    if config.peepholes() {
        return no("LSTM peepholes");
    }
    if config.cell_clip().is_some() {
        return no("LSTM cell clip");
    }
    if config.gate_clip().is_some() {
        return no("gate clip");
    }
    if config.input_forget() {
        return no("LSTM input-forget coupling");
    }
    if config.cell() == CellKind::Gru && config.gru_variant() != GruVariant::LinearBeforeReset {
        return no("GRU with the reset gate before the matmul (use GruVariant::LinearBeforeReset)");
    }
    if !matches!(
        config.direction(),
        Direction::Forward | Direction::BidirectionalConcat
    ) {
        return no("reverse-only or summed bidirectional layers");
    }
    // PyTorch refuses proj_size >= hidden_size; librnn itself allows it.
    if config.proj_size() != 0 && config.proj_size() >= config.hidden_size() {
        return Err(Error::InvalidArgument(format!(
            "PyTorch requires proj_size < hidden_size (got {} and {})",
            config.proj_size(),
            config.hidden_size()
        )));
    }
    Ok(())
}

/// Every state-dict entry for `config`: name and shape, in PyTorch's order.
pub fn tensor_names(config: &Config) -> Result<Vec<(String, Vec<usize>)>> {
    check_compatible(config)?;
    Ok(named_tensors(config)
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect())
}

/// One parameter tensor under its state-dict name.
pub(crate) struct Named {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
    pub layer: usize,
    pub dir: usize,
}

/// Every parameter tensor of `config` under PyTorch's naming scheme, in
/// PyTorch's order, for any configuration (no compatibility check): LSTM
/// peepholes, which PyTorch has not, are `weight_peephole_l{k}` `[3, H]`
/// (for the safetensors files librnn writes).
pub(crate) fn named_tensors(config: &Config) -> Vec<Named> {
    let mut out = Vec::new();
    for layer in 0..config.num_layers() {
        for dir in 0..config.num_directions() {
            let suffix = if dir == 1 { "_reverse" } else { "" };
            for &(base, kind) in KINDS.iter().chain([&PEEPHOLES]) {
                if let Some((rows, cols)) = config.param_shape(layer, kind) {
                    let shape = match kind {
                        ParamKind::Wb | ParamKind::Rb => vec![rows * cols],
                        ParamKind::Peephole => vec![3, rows * cols / 3],
                        _ => vec![rows, cols],
                    };
                    out.push(Named {
                        name: format!("{base}_l{layer}{suffix}"),
                        shape,
                        kind,
                        layer,
                        dir,
                    });
                }
            }
        }
    }
    out
}

/// librnn's name for LSTM peepholes in PyTorch's scheme.
const PEEPHOLES: (&str, ParamKind) = ("weight_peephole", ParamKind::Peephole);

const KINDS: [(&str, ParamKind); 5] = [
    ("weight_ih", ParamKind::W),
    ("weight_hh", ParamKind::R),
    ("bias_ih", ParamKind::Wb),
    ("bias_hh", ParamKind::Rb),
    ("weight_hr", ParamKind::Projection),
];

/// Parses `weight_ih_l2_reverse` into (kind, layer, direction); a module
/// path before it (`encoder.lstm.weight_ih_l2_reverse`, as the state dict
/// of a larger network names it) is allowed: parameter names have no dot.
fn parse(name: &str) -> Result<(ParamKind, usize, usize)> {
    let bad = || Error::InvalidArgument(format!("`{name}` is not a PyTorch RNN parameter name"));
    let name = name.rsplit('.').next().unwrap_or(name);
    let (kind, rest) = KINDS
        .iter()
        .find_map(|(base, kind)| {
            name.strip_prefix(base)
                .and_then(|r| r.strip_prefix("_l"))
                .map(|r| (*kind, r))
        })
        .ok_or_else(bad)?;
    let (layer, dir) = match rest.strip_suffix("_reverse") {
        Some(l) => (l, 1),
        None => (rest, 0),
    };
    // Exactly as PyTorch writes it: decimal digits, no sign, no leading zero.
    let canonical = !layer.is_empty()
        && layer.bytes().all(|b| b.is_ascii_digit())
        && (layer == "0" || !layer.starts_with('0'));
    if !canonical {
        return Err(bad());
    }
    Ok((kind, layer.parse().map_err(|_| bad())?, dir))
}

/// Where tensor `name` goes in the parameter vector, after checking that
/// the model has it and that `len` values fit it.
fn destination(model: &Model, name: &str, len: usize) -> Result<std::ops::Range<usize>> {
    let (kind, layer, dir) = parse(name)?;
    let range = model.config().param_range(layer, dir, kind)?;
    check_len("tensor", range.len(), len)?;
    Ok(range)
}

/// Copies one state-dict tensor (row-major, as `tensor.numpy().ravel()`)
/// into the model. The name may carry the module's path, as the state dict
/// of a larger network has it (`encoder.lstm.weight_ih_l0`). On error the
/// model is unchanged (its traces stay valid).
pub fn import_tensor(model: &mut Model, name: &str, data: &[f32]) -> Result<()> {
    check_compatible(model.config())?;
    let range = destination(model, name, data.len())?;
    model.params_mut()[range].copy_from_slice(data);
    Ok(())
}

/// Imports a whole state dict; every entry [`tensor_names`] lists must be
/// present once (extra or repeated entries are an error too; names may
/// carry a module path, as in [`import_tensor`], so pass one module's
/// entries). Every entry is checked before any is copied: on error the
/// model is unchanged.
pub fn import_state_dict<'a>(
    model: &mut Model,
    tensors: impl IntoIterator<Item = (&'a str, &'a [f32])>,
) -> Result<()> {
    let mut missing: Vec<String> = tensor_names(model.config())?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut writes = Vec::new();
    for (full, data) in tensors {
        let range = destination(model, full, data.len())?;
        let name = full.rsplit('.').next().unwrap_or(full);
        let Some(at) = missing.iter().position(|n| n == name) else {
            return Err(Error::InvalidArgument(format!(
                "the state dict has `{name}` more than once (`{full}`: \
                 pass one module's entries, e.g. those under its prefix)"
            )));
        };
        missing.swap_remove(at);
        writes.push((range, data));
    }
    if let Some(n) = missing.first() {
        return Err(Error::InvalidArgument(format!(
            "the state dict has no `{n}`"
        )));
    }
    let params = model.params_mut();
    for (range, data) in writes {
        params[range].copy_from_slice(data);
    }
    Ok(())
}

/// One state-dict tensor of the model, by PyTorch name.
pub fn export_tensor(model: &Model, name: &str) -> Result<Vec<f32>> {
    check_compatible(model.config())?;
    let (kind, layer, dir) = parse(name)?;
    Ok(model.param(layer, dir, kind)?.to_vec())
}

/// One state-dict entry: name, shape, row-major values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The model's parameters as a PyTorch state dict.
pub fn export_state_dict(model: &Model) -> Result<Vec<NamedTensor>> {
    tensor_names(model.config())?
        .into_iter()
        .map(|(name, shape)| {
            let (kind, layer, dir) = parse(&name)?;
            Ok((name, shape, model.param(layer, dir, kind)?.to_vec()))
        })
        .collect()
}
