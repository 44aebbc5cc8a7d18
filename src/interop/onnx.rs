//! ONNX operator layout (one operator = one layer): `W [D, G·H, I]`,
//! `R [D, G·H, H]`, `B [D, 2·G·H]` (Wb then Rb), LSTM `P [D, 3·H]`; gate
//! orders LSTM i, o, f, c and GRU z, r, h; `Y [T, D, N, H]` (layout 0) or
//! `[N, T, D, H]` (layout 1), `Y_h` / `Y_c` `[D, N, H]`.
//!
//! Every attribute of the ONNX RNN, LSTM and GRU operators maps to a
//! [`Config`] field ([`OnnxAttributes::builder`]): `hidden_size`,
//! `direction`, `layout`, `linear_before_reset` (the GRU variant), `clip`
//! ([`ConfigBuilder::gate_clip`](crate::ConfigBuilder::gate_clip)),
//! `input_forget`, `activations` with `activation_alpha` and
//! `activation_beta` (every function ONNX lists, per direction:
//! [`ConfigBuilder::activations`](crate::ConfigBuilder::activations)).
//! The builder also selects onnxruntime's final state for an item of
//! length 0 (zeros: [`EmptySequenceState::Zeros`]). `sequence_lens`,
//! `initial_h` and `initial_c` are [`Input`](crate::Input) fields.

use crate::config::{
    ActivationFunction, ActivationKind, CellKind, Config, ConfigBuilder, Direction,
    EmptySequenceState, GruVariant, Layout, ParamKind,
};
use crate::error::{check_len, Error, Result};
use crate::model::Model;

/// librnn gate index for each ONNX gate position.
fn gate_map(cell: CellKind) -> &'static [usize] {
    match cell {
        CellKind::Rnn => &[0],
        // ONNX i, o, f, c -> librnn i(0), o(3), f(1), g(2).
        CellKind::Lstm => &[0, 3, 1, 2],
        // ONNX z, r, h -> librnn z(1), r(0), n(2).
        CellKind::Gru => &[1, 0, 2],
    }
}

/// ONNX peephole order i, o, f -> librnn p_i(0), p_o(2), p_f(1).
const PEEPHOLE_MAP: [usize; 3] = [0, 2, 1];

/// The ONNX inputs of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxWeights {
    /// `[D, G·H, I]`.
    pub w: Vec<f32>,
    /// `[D, G·H, H]`.
    pub r: Vec<f32>,
    /// `[D, 2·G·H]`.
    pub b: Vec<f32>,
    /// LSTM `[D, 3·H]` (empty without peepholes).
    pub p: Vec<f32>,
}

/// The attributes of one ONNX RNN, LSTM or GRU node.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxAttributes {
    /// `hidden_size`: H.
    pub hidden_size: usize,
    /// `"forward"`, `"reverse"` or `"bidirectional"`.
    pub direction: String,
    /// 0 (`[T, N, ...]`) or 1 (`[N, T, ...]`).
    pub layout: i64,
    /// GRU: 0 (reset before the matmul, ONNX's default) or 1.
    pub linear_before_reset: i64,
    /// The gate clip; `None` when the node has no `clip` attribute.
    pub clip: Option<f32>,
    /// LSTM: 0 or 1.
    pub input_forget: i64,
    /// As in the node (ONNX's order: the forward direction's functions,
    /// then the reverse one's), or empty for the defaults. Names are
    /// matched in any case.
    pub activations: Vec<String>,
    /// `activation_alpha`: consumed in order by the functions that take an
    /// α (Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid,
    /// Elu), as onnxruntime does; a function past the list's end gets its
    /// default ([`ActivationFunction::new`]).
    pub activation_alpha: Vec<f32>,
    /// `activation_beta`: likewise, for Affine, ScaledTanh and HardSigmoid.
    pub activation_beta: Vec<f32>,
}

impl OnnxAttributes {
    /// The attributes' ONNX defaults for a layer of `hidden_size`.
    pub fn new(hidden_size: usize) -> Self {
        OnnxAttributes {
            hidden_size,
            direction: "forward".into(),
            layout: 0,
            linear_before_reset: 0,
            clip: None,
            input_forget: 0,
            activations: Vec::new(),
            activation_alpha: Vec::new(),
            activation_beta: Vec::new(),
        }
    }

    /// The librnn configuration of this node as a one-layer network of
    /// `cell` over `input_size` features, or an error naming the attribute
    /// librnn cannot express. Add `.peepholes(true)` when the LSTM node has
    /// a `P` input, then build.
    pub fn builder(&self, cell: CellKind, input_size: usize) -> Result<ConfigBuilder> {
        let invalid = |what: String| Error::InvalidArgument(format!("ONNX {cell:?}: {what}"));
        let direction = match self.direction.as_str() {
            "forward" => Direction::Forward,
            "reverse" => Direction::Reverse,
            "bidirectional" => Direction::BidirectionalConcat,
            other => return Err(invalid(format!("unknown direction {other:?}"))),
        };
        let layout = match self.layout {
            0 => Layout::TimeMajor,
            1 => Layout::BatchFirst,
            other => return Err(invalid(format!("layout {other} is not 0 or 1"))),
        };
        // A 0/1 attribute that only `only` accepts set.
        let flag = |name: &str, value: i64, only: CellKind| match value {
            0 => Ok(false),
            1 if cell == only => Ok(true),
            1 => Err(invalid(format!("{name} applies only to {only:?}"))),
            other => Err(invalid(format!("{name} = {other} is not 0 or 1"))),
        };
        let lbr = flag(
            "linear_before_reset",
            self.linear_before_reset,
            CellKind::Gru,
        )?;
        let input_forget = flag("input_forget", self.input_forget, CellKind::Lstm)?;
        let activations = self.functions(cell)?;
        Ok(Config::builder(cell, input_size, self.hidden_size)
            .direction(direction)
            .layout(layout)
            .gru_variant(if lbr {
                GruVariant::LinearBeforeReset
            } else {
                GruVariant::ResetBeforeMatmul
            })
            .gate_clip(self.clip)
            .input_forget(input_forget)
            .activations(&activations)
            .empty_sequence_state(EmptySequenceState::Zeros))
    }

    /// The node's functions, for every direction in ONNX's order, with
    /// their α and β, or an error naming what is wrong.
    fn functions(&self, cell: CellKind) -> Result<Vec<ActivationFunction>> {
        let invalid = |what: String| Error::InvalidArgument(format!("ONNX {cell:?}: {what}"));
        let defaults = cell.default_activations();
        let dirs = if self.direction == "bidirectional" {
            2
        } else {
            1
        };
        if self.activations.is_empty() {
            if !(self.activation_alpha.is_empty() && self.activation_beta.is_empty()) {
                return Err(invalid(
                    "activation_alpha / activation_beta given without activations".into(),
                ));
            }
            return Ok(defaults
                .iter()
                .map(|&k| ActivationFunction::new(k))
                .collect());
        }
        if self.activations.len() != defaults.len() * dirs {
            return Err(invalid(format!(
                "activations lists {} functions; a {} node takes {} ({} per direction)",
                self.activations.len(),
                self.direction,
                defaults.len() * dirs,
                defaults.len()
            )));
        }
        let (mut alphas, mut betas) = (self.activation_alpha.iter(), self.activation_beta.iter());
        let mut out = Vec::with_capacity(self.activations.len());
        for name in &self.activations {
            let kind = ActivationKind::from_onnx_name(name)
                .ok_or_else(|| invalid(format!("unknown activation function {name:?}")))?;
            let mut f = ActivationFunction::new(kind);
            let (takes_alpha, takes_beta) = kind.uses_parameters();
            if takes_alpha {
                f.alpha = alphas.next().copied().unwrap_or(f.alpha);
            }
            if takes_beta {
                f.beta = betas.next().copied().unwrap_or(f.beta);
            }
            out.push(f);
        }
        for (name, left) in [
            ("activation_alpha", alphas.len()),
            ("activation_beta", betas.len()),
        ] {
            if left > 0 {
                return Err(invalid(format!(
                    "{name} has {left} more values than the functions {:?} take",
                    self.activations
                )));
            }
        }
        Ok(out)
    }
}

fn check_compatible(config: &Config, layer: usize) -> Result<()> {
    if layer >= config.num_layers() {
        return Err(Error::InvalidArgument(format!(
            "layer {layer} does not exist ({} layers)",
            config.num_layers()
        )));
    }
    if config.proj_size() > 0 {
        return Err(Error::InvalidArgument("ONNX LSTM has no projection".into()));
    }
    if config.cell_clip().is_some() {
        return Err(Error::InvalidArgument(
            "ONNX `clip` clips gate pre-activations, not the cell state: librnn's cell clip has no ONNX equivalent (ONNX's clip is librnn's gate_clip)".into(),
        ));
    }
    if config.direction() == Direction::BidirectionalSum {
        return Err(Error::InvalidArgument(
            "ONNX has no summed bidirectional layer".into(),
        ));
    }
    Ok(())
}

/// Copies rows of gate blocks from `src` (ONNX order) to `dst` (librnn
/// order), or back when `to_onnx`.
fn map_gates(
    cell: CellKind,
    hidden: usize,
    cols: usize,
    src: &[f32],
    dst: &mut [f32],
    to_onnx: bool,
) {
    for (onnx_gate, &ours) in gate_map(cell).iter().enumerate() {
        let (from, to) = if to_onnx {
            (ours, onnx_gate)
        } else {
            (onnx_gate, ours)
        };
        let block = hidden * cols;
        dst[to * block..(to + 1) * block].copy_from_slice(&src[from * block..(from + 1) * block]);
    }
}

/// Sets layer `layer` of `model` from ONNX `W`, `R`, `B` (may be empty:
/// zero biases) and `P` (LSTM with peepholes; empty otherwise).
pub fn import_layer(model: &mut Model, layer: usize, weights: &OnnxWeights) -> Result<()> {
    let config = model.config().clone();
    check_compatible(&config, layer)?;
    let (cell, h, d) = (config.cell(), config.hidden_size(), config.num_directions());
    let gh = config.gates() * h;
    let input = config.layer_input_size(layer);
    check_len("W", d * gh * input, weights.w.len())?;
    check_len("R", d * gh * h, weights.r.len())?;
    if !weights.b.is_empty() {
        check_len("B", d * 2 * gh, weights.b.len())?;
    }
    let peep = config.peepholes();
    if !peep && !weights.p.is_empty() {
        // Name the setting to change, not only the count.
        return Err(crate::Error::InvalidArgument(format!(
            "`P` holds {} peephole values but the model has no peepholes: configure \
             them (rnn_config.peepholes = 1 in C, ConfigBuilder::peepholes(true) in Rust) \
             to import P, or pass no P",
            weights.p.len()
        )));
    }
    check_len("P", if peep { d * 3 * h } else { 0 }, weights.p.len())?;
    for dir in 0..d {
        map_gates(
            cell,
            h,
            input,
            &weights.w[dir * gh * input..(dir + 1) * gh * input],
            model.param_mut(layer, dir, ParamKind::W)?,
            false,
        );
        map_gates(
            cell,
            h,
            h,
            &weights.r[dir * gh * h..(dir + 1) * gh * h],
            model.param_mut(layer, dir, ParamKind::R)?,
            false,
        );
        for (k, kind) in [ParamKind::Wb, ParamKind::Rb].into_iter().enumerate() {
            let dst = model.param_mut(layer, dir, kind)?;
            if weights.b.is_empty() {
                dst.fill(0.0);
            } else {
                let start = dir * 2 * gh + k * gh;
                map_gates(cell, h, 1, &weights.b[start..start + gh], dst, false);
            }
        }
        if peep {
            let dst = model.param_mut(layer, dir, ParamKind::Peephole)?;
            for (onnx, &ours) in PEEPHOLE_MAP.iter().enumerate() {
                dst[ours * h..(ours + 1) * h].copy_from_slice(
                    &weights.p[dir * 3 * h + onnx * h..dir * 3 * h + (onnx + 1) * h],
                );
            }
        }
    }
    Ok(())
}

/// Layer `layer` of `model` as ONNX operator inputs.
pub fn export_layer(model: &Model, layer: usize) -> Result<OnnxWeights> {
    let config = model.config();
    check_compatible(config, layer)?;
    let (cell, h, d) = (config.cell(), config.hidden_size(), config.num_directions());
    let gh = config.gates() * h;
    let input = config.layer_input_size(layer);
    let mut out = OnnxWeights {
        w: vec![0.0; d * gh * input],
        r: vec![0.0; d * gh * h],
        b: vec![0.0; d * 2 * gh],
        p: vec![0.0; if config.peepholes() { d * 3 * h } else { 0 }],
    };
    for dir in 0..d {
        map_gates(
            cell,
            h,
            input,
            model.param(layer, dir, ParamKind::W)?,
            &mut out.w[dir * gh * input..(dir + 1) * gh * input],
            true,
        );
        map_gates(
            cell,
            h,
            h,
            model.param(layer, dir, ParamKind::R)?,
            &mut out.r[dir * gh * h..(dir + 1) * gh * h],
            true,
        );
        for (k, kind) in [ParamKind::Wb, ParamKind::Rb].into_iter().enumerate() {
            let start = dir * 2 * gh + k * gh;
            map_gates(
                cell,
                h,
                1,
                model.param(layer, dir, kind)?,
                &mut out.b[start..start + gh],
                true,
            );
        }
        if config.peepholes() {
            let src = model.param(layer, dir, ParamKind::Peephole)?;
            for (onnx, &ours) in PEEPHOLE_MAP.iter().enumerate() {
                out.p[dir * 3 * h + onnx * h..dir * 3 * h + (onnx + 1) * h]
                    .copy_from_slice(&src[ours * h..(ours + 1) * h]);
            }
        }
    }
    Ok(out)
}

/// ONNX `Y` (`[T, D, N, H]` for layout 0, `[N, T, D, H]` for layout 1) from
/// librnn's `y` (`[T, N, D·H]` time-major or `[N, T, D·H]` batch-first, with
/// the same layout).
pub fn y_to_onnx(
    y: &[f32],
    seq_len: usize,
    batch: usize,
    dirs: usize,
    hidden: usize,
    batch_first: bool,
) -> Vec<f32> {
    let mut out = vec![0.0; y.len()];
    for t in 0..seq_len {
        for b in 0..batch {
            for d in 0..dirs {
                let ours = if batch_first {
                    (b * seq_len + t) * dirs * hidden
                } else {
                    (t * batch + b) * dirs * hidden
                } + d * hidden;
                let theirs = if batch_first {
                    ((b * seq_len + t) * dirs + d) * hidden
                } else {
                    ((t * dirs + d) * batch + b) * hidden
                };
                out[theirs..theirs + hidden].copy_from_slice(&y[ours..ours + hidden]);
            }
        }
    }
    out
}

/// ONNX `Y_h`/`Y_c` `[N, D, H]` (layout 1) from librnn's `[D, N, H]`; layout 0
/// is the same as librnn's.
pub fn state_to_onnx(
    state: &[f32],
    batch: usize,
    dirs: usize,
    hidden: usize,
    batch_first: bool,
) -> Vec<f32> {
    transpose_state(state, batch, dirs, hidden, batch_first, true)
}

/// librnn's `h0`/`c0` `[D, N, H]` from ONNX `initial_h`/`initial_c`
/// (`[N, D, H]` for layout 1; layout 0 is the same as librnn's).
pub fn state_from_onnx(
    state: &[f32],
    batch: usize,
    dirs: usize,
    hidden: usize,
    batch_first: bool,
) -> Vec<f32> {
    transpose_state(state, batch, dirs, hidden, batch_first, false)
}

fn transpose_state(
    state: &[f32],
    batch: usize,
    dirs: usize,
    hidden: usize,
    batch_first: bool,
    to_onnx: bool,
) -> Vec<f32> {
    if !batch_first {
        return state.to_vec();
    }
    let mut out = vec![0.0; state.len()];
    for d in 0..dirs {
        for b in 0..batch {
            let (ours, theirs) = ((d * batch + b) * hidden, (b * dirs + d) * hidden);
            let (src, dst) = if to_onnx {
                (ours, theirs)
            } else {
                (theirs, ours)
            };
            out[dst..dst + hidden].copy_from_slice(&state[src..src + hidden]);
        }
    }
    out
}
