//! Network configuration: which cell, how big, how many layers and directions.
//!
//! A [`Config`] is always valid: it can only be made by [`ConfigBuilder::build`],
//! which checks every field. Everything else in the crate (parameter layout,
//! buffer sizes, engines) derives from it.

use crate::error::{Error, Result};

/// The recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// Elman RNN: `h = act(W x + Wb + R h + Rb)`, one gate.
    Rnn,
    /// LSTM, gates in the order i, f, g (c~), o.
    Lstm,
    /// GRU, gates in the order r, z, n.
    Gru,
}

impl CellKind {
    /// The activation roles ONNX gives the cell, with their default
    /// functions: RNN `f` (Tanh); LSTM `f` (i, f, o: Sigmoid), `g` (the cell
    /// input: Tanh), `h` (on the cell state before o: Tanh); GRU `f` (r, z:
    /// Sigmoid), `g` (n: Tanh).
    pub fn default_activations(self) -> &'static [ActivationKind] {
        match self {
            CellKind::Rnn => &[ActivationKind::Tanh],
            CellKind::Lstm => &[
                ActivationKind::Sigmoid,
                ActivationKind::Tanh,
                ActivationKind::Tanh,
            ],
            CellKind::Gru => &[ActivationKind::Sigmoid, ActivationKind::Tanh],
        }
    }

    /// Number of gates G: the weight matrices have `G * hidden_size` rows.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

/// The non-linearity of a vanilla RNN. LSTM and GRU have fixed activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    #[default]
    /// `tanh` (the default).
    Tanh,
    /// `max(0, x)`.
    Relu,
}

/// A function the ONNX RNN, GRU and LSTM operators may apply to a gate
/// (ONNX's `activations` attribute). Formulas, with the parameters α
/// (`alpha`) and β (`beta`) of [`ActivationFunction`]:
///
/// | kind | `f(x)` |
/// |---|---|
/// | `Sigmoid` | `1 / (1 + e^-x)` |
/// | `Tanh` | `tanh x` |
/// | `Relu` | `max(0, x)` |
/// | `Affine` | `α x + β` |
/// | `LeakyRelu` | `x` if `x ≥ 0`, else `α x` |
/// | `ThresholdedRelu` | `x` if `x > α`, else 0 |
/// | `ScaledTanh` | `α tanh(β x)` |
/// | `HardSigmoid` | `min(max(α x + β, 0), 1)` |
/// | `Elu` | `x` if `x ≥ 0`, else `α (e^x − 1)` |
/// | `Softsign` | `x / (1 + |x|)` |
/// | `Softplus` | `ln(1 + e^x)` |
///
/// Backward, a kink takes the derivative of the branch that holds for
/// `x < 0` (or `x ≤ α`): `relu'(0) = 0` as in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActivationKind {
    /// The logistic function.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `max(0, x)`.
    Relu,
    /// `α x + β`.
    Affine,
    /// `x` for `x ≥ 0`, else `α x`.
    LeakyRelu,
    /// `x` for `x > α`, else 0.
    ThresholdedRelu,
    /// `α tanh(β x)`.
    ScaledTanh,
    /// `min(max(α x + β, 0), 1)`.
    HardSigmoid,
    /// `x` for `x ≥ 0`, else `α (e^x − 1)`.
    Elu,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `ln(1 + e^x)`.
    Softplus,
}

impl ActivationKind {
    /// The name ONNX uses (`"Sigmoid"`, `"LeakyRelu"`, ...).
    pub fn onnx_name(self) -> &'static str {
        match self {
            ActivationKind::Sigmoid => "Sigmoid",
            ActivationKind::Tanh => "Tanh",
            ActivationKind::Relu => "Relu",
            ActivationKind::Affine => "Affine",
            ActivationKind::LeakyRelu => "LeakyRelu",
            ActivationKind::ThresholdedRelu => "ThresholdedRelu",
            ActivationKind::ScaledTanh => "ScaledTanh",
            ActivationKind::HardSigmoid => "HardSigmoid",
            ActivationKind::Elu => "Elu",
            ActivationKind::Softsign => "Softsign",
            ActivationKind::Softplus => "Softplus",
        }
    }

    /// The kind ONNX calls `name` (any case).
    pub fn from_onnx_name(name: &str) -> Option<ActivationKind> {
        ActivationKind::ALL
            .iter()
            .copied()
            .find(|k| k.onnx_name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether the function reads α, and β (in ONNX's `activation_alpha`
    /// and `activation_beta` lists, only such functions take an entry).
    pub fn uses_parameters(self) -> (bool, bool) {
        match self {
            ActivationKind::Affine | ActivationKind::ScaledTanh | ActivationKind::HardSigmoid => {
                (true, true)
            }
            ActivationKind::LeakyRelu | ActivationKind::ThresholdedRelu | ActivationKind::Elu => {
                (true, false)
            }
            _ => (false, false),
        }
    }
}

/// One activation function with its parameters.
///
/// [`ActivationFunction::new`] gives onnxruntime's defaults for α and β
/// (those it uses when a node's `activation_alpha` / `activation_beta`
/// lists do not reach the function): LeakyRelu α = 0.01, HardSigmoid
/// α = 0.2 and β = 0.5, Elu α = 1, and 0 for every other (so `Affine` and
/// `ScaledTanh` need theirs given, and ThresholdedRelu's threshold is 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationFunction {
    /// Which function.
    pub kind: ActivationKind,
    /// α (ignored by functions without one).
    pub alpha: f32,
    /// β (ignored by functions without one).
    pub beta: f32,
}

impl ActivationFunction {
    /// `kind` with onnxruntime's default α and β.
    pub fn new(kind: ActivationKind) -> Self {
        let (alpha, beta) = match kind {
            ActivationKind::LeakyRelu => (0.01, 0.0),
            ActivationKind::HardSigmoid => (0.2, 0.5),
            ActivationKind::Elu => (1.0, 0.0),
            _ => (0.0, 0.0),
        };
        ActivationFunction { kind, alpha, beta }
    }

    /// `kind` with the given α and β.
    pub fn with(kind: ActivationKind, alpha: f32, beta: f32) -> Self {
        ActivationFunction { kind, alpha, beta }
    }

    /// Whether the backward pass can recover `f'(x)` from `f(x)`, which is
    /// what the training trace keeps: not for a LeakyRelu or Elu with
    /// α < 0, which map negative inputs to positive outputs.
    pub fn invertible_for_training(&self) -> bool {
        !matches!(self.kind, ActivationKind::LeakyRelu | ActivationKind::Elu) || self.alpha >= 0.0
    }
}

impl std::fmt::Display for ActivationFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind.uses_parameters() {
            (true, true) => write!(
                f,
                "{}(α = {}, β = {})",
                self.kind.onnx_name(),
                self.alpha,
                self.beta
            ),
            (true, false) => write!(f, "{}(α = {})", self.kind.onnx_name(), self.alpha),
            _ => f.write_str(self.kind.onnx_name()),
        }
    }
}

/// What the final state of an item whose sequence length is 0 holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EmptySequenceState {
    /// The initial state (h0, c0): no step ran, so the state did not
    /// change (the default, as in PyTorch's packed sequences).
    #[default]
    Initial,
    /// Zeros, as onnxruntime returns (selected by
    /// [`OnnxAttributes`](crate::interop::onnx::OnnxAttributes)). The
    /// initial state then gets no gradient through that item's final state.
    Zeros,
}

/// Where the GRU applies its reset gate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GruVariant {
    /// ONNX default (`linear_before_reset = 0`):
    /// `n = tanh(Wn x + Wbn + Rn (r ⊙ h) + Rbn)`.
    #[default]
    ResetBeforeMatmul,
    /// cuDNN / PyTorch (`linear_before_reset = 1`):
    /// `n = tanh(Wn x + Wbn + r ⊙ (Rn h + Rbn))`.
    LinearBeforeReset,
}

/// Direction(s) in which each layer reads the sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// One direction, first step to last.
    #[default]
    Forward,
    /// One direction, last step to first (ONNX `direction = "reverse"`).
    Reverse,
    /// Two directions; the output is `[forward, backward]` concatenated on the
    /// feature axis (width `2 * H_out`).
    BidirectionalConcat,
    /// Two directions; the output is their element-wise sum (width `H_out`).
    BidirectionalSum,
}

impl Direction {
    /// Number of directions D (1 or 2).
    pub fn count(self) -> usize {
        match self {
            Direction::Forward | Direction::Reverse => 1,
            Direction::BidirectionalConcat | Direction::BidirectionalSum => 2,
        }
    }

    /// Whether direction index `dir` (0 or 1) reads the sequence backwards.
    pub fn is_reversed(self, dir: usize) -> bool {
        match self {
            Direction::Forward => false,
            Direction::Reverse => true,
            Direction::BidirectionalConcat | Direction::BidirectionalSum => dir == 1,
        }
    }
}

/// Memory order of the sequence tensors `x`, `y` (and `dx`, `dy`).
/// States (`h0`, `hN`, ...) are always `[L * D, N, H]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[T, N, features]`.
    #[default]
    TimeMajor,
    /// `[N, T, features]`.
    BatchFirst,
}

/// One of the parameter tensors of a layer and direction.
///
/// Inside the flat parameter vector each (layer, direction) stores, in this
/// order: `W [G*H, I_l]`, `R [G*H, H_out]`, `Wb [G*H]`, `Rb [G*H]`, then
/// `Peephole [3*H]` (p_i, p_f, p_o) if peepholes are on, then
/// `Projection [H_out, H]` if `proj_size > 0`. All matrices are row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// Input weights `W [G·H, I_l]`.
    W,
    /// Recurrent weights `R [G·H, H_out]`.
    R,
    /// Input bias `Wb [G·H]`.
    Wb,
    /// Recurrent bias `Rb [G·H]`.
    Rb,
    /// LSTM peepholes `[3·H]`: `p_i`, `p_f`, `p_o`.
    Peephole,
    /// LSTM projection `[H_out, H]`.
    Projection,
}

/// Stable numeric codes for the configuration enums, shared by the C ABI
/// (`RNN_CELL_*`, `RNN_DIRECTION_*`, ...) and the checkpoint format: a
/// value's code is its position in `ALL`.
pub trait Coded: Copy + PartialEq + Sized + 'static {
    /// Every value, in code order.
    const ALL: &'static [Self];

    /// The value's code: its position in `ALL`.
    fn code(self) -> u32 {
        Self::ALL
            .iter()
            .position(|&v| v == self)
            .expect("ALL lists every value") as u32
    }

    /// The value of `code`, if there is one.
    fn from_code(code: u32) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }
}

impl Coded for CellKind {
    const ALL: &'static [Self] = &[CellKind::Rnn, CellKind::Lstm, CellKind::Gru];
}

impl Coded for Activation {
    const ALL: &'static [Self] = &[Activation::Tanh, Activation::Relu];
}

impl Coded for ActivationKind {
    const ALL: &'static [Self] = &[
        ActivationKind::Sigmoid,
        ActivationKind::Tanh,
        ActivationKind::Relu,
        ActivationKind::Affine,
        ActivationKind::LeakyRelu,
        ActivationKind::ThresholdedRelu,
        ActivationKind::ScaledTanh,
        ActivationKind::HardSigmoid,
        ActivationKind::Elu,
        ActivationKind::Softsign,
        ActivationKind::Softplus,
    ];
}

impl Coded for EmptySequenceState {
    const ALL: &'static [Self] = &[EmptySequenceState::Initial, EmptySequenceState::Zeros];
}

impl Coded for Direction {
    const ALL: &'static [Self] = &[
        Direction::Forward,
        Direction::Reverse,
        Direction::BidirectionalConcat,
        Direction::BidirectionalSum,
    ];
}

impl Coded for GruVariant {
    const ALL: &'static [Self] = &[GruVariant::ResetBeforeMatmul, GruVariant::LinearBeforeReset];
}

/// In storage order within a (layer, direction) block; the codes are the
/// C ABI's `RNN_PARAM_*`.
impl Coded for ParamKind {
    const ALL: &'static [Self] = &[
        ParamKind::W,
        ParamKind::R,
        ParamKind::Wb,
        ParamKind::Rb,
        ParamKind::Peephole,
        ParamKind::Projection,
    ];
}

impl Coded for Layout {
    const ALL: &'static [Self] = &[Layout::TimeMajor, Layout::BatchFirst];
}

/// A validated network configuration. Build one with [`Config::builder`].
///
/// ```
/// use rnn::{CellKind, Config, Direction, GruVariant, ParamKind};
///
/// // Two stacked bidirectional GRU layers, PyTorch's variant.
/// let config = Config::builder(CellKind::Gru, 40, 128)
///     .num_layers(2)
///     .direction(Direction::BidirectionalConcat)
///     .gru_variant(GruVariant::LinearBeforeReset)
///     .build()?;
/// assert_eq!(config.output_size(), 256);
/// // Where layer 1's reverse-direction recurrent weights live.
/// let r = config.param_range(1, 1, ParamKind::R)?;
/// assert_eq!(r.len(), 3 * 128 * 128);
/// // Invalid combinations are errors, not panics.
/// assert!(Config::builder(CellKind::Gru, 40, 128).peepholes(true).build().is_err());
/// # Ok::<(), rnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    cell: CellKind,
    /// Per direction, per role (`CellKind::default_activations`); roles
    /// past the cell's hold Tanh and are unused.
    activations: [[ActivationFunction; 3]; 2],
    empty_sequence_state: EmptySequenceState,
    input_size: usize,
    hidden_size: usize,
    proj_size: usize,
    num_layers: usize,
    direction: Direction,
    gru_variant: GruVariant,
    cell_clip: Option<f32>,
    gate_clip: Option<f32>,
    input_forget: bool,
    peepholes: bool,
    layout: Layout,
}

/// Builder for [`Config`]; every setter is optional except the three
/// arguments of [`Config::builder`].
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
    activation: Activation,
    /// ONNX-ordered list from [`ConfigBuilder::activations`].
    activation_list: Option<Vec<ActivationFunction>>,
}

/// The cell's default functions, per role, padded with Tanh.
fn default_activations(cell: CellKind) -> [ActivationFunction; 3] {
    let mut out = [ActivationFunction::new(ActivationKind::Tanh); 3];
    for (o, &k) in out.iter_mut().zip(cell.default_activations()) {
        *o = ActivationFunction::new(k);
    }
    out
}

impl Config {
    /// Starts a configuration for `cell` with the given input and hidden sizes;
    /// the rest defaults to one forward layer, tanh, no projection, no
    /// peepholes, no clips, no input-forget coupling, time-major, ONNX GRU
    /// variant.
    pub fn builder(cell: CellKind, input_size: usize, hidden_size: usize) -> ConfigBuilder {
        ConfigBuilder {
            activation: Activation::Tanh,
            activation_list: None,
            config: Config {
                cell,
                activations: [default_activations(cell); 2],
                empty_sequence_state: EmptySequenceState::Initial,
                input_size,
                hidden_size,
                proj_size: 0,
                num_layers: 1,
                direction: Direction::Forward,
                gru_variant: GruVariant::ResetBeforeMatmul,
                cell_clip: None,
                gate_clip: None,
                input_forget: false,
                peepholes: false,
                layout: Layout::TimeMajor,
            },
        }
    }

    /// The cell type.
    pub fn cell(&self) -> CellKind {
        self.cell
    }
    /// The vanilla RNN's non-linearity where it is Relu in every direction
    /// (`Relu`), else `Tanh`; [`Config::activations`] gives every cell's
    /// functions in general.
    pub fn activation(&self) -> Activation {
        let relu =
            (0..self.num_directions()).all(|d| self.activations[d][0].kind == ActivationKind::Relu);
        if self.cell == CellKind::Rnn && relu {
            Activation::Relu
        } else {
            Activation::Tanh
        }
    }
    /// The activation functions of direction `dir` (0, or 1 for the
    /// reverse direction of a bidirectional layer), one per role of
    /// [`CellKind::default_activations`]. Every layer uses the same.
    pub fn activations(&self, dir: usize) -> &[ActivationFunction] {
        &self.activations[dir.min(1)][..self.cell.default_activations().len()]
    }
    /// What an item of sequence length 0 returns as its final state.
    pub fn empty_sequence_state(&self) -> EmptySequenceState {
        self.empty_sequence_state
    }
    /// I: the features of each input step.
    pub fn input_size(&self) -> usize {
        self.input_size
    }
    /// H: the size of the cell state and of each gate.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }
    /// 0 when there is no projection.
    pub fn proj_size(&self) -> usize {
        self.proj_size
    }
    /// Stacked layers.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }
    /// Forward, reverse or both (concatenated or summed).
    pub fn direction(&self) -> Direction {
        self.direction
    }
    /// Where the GRU applies its reset gate.
    pub fn gru_variant(&self) -> GruVariant {
        self.gru_variant
    }
    /// LSTM cell clip (see [`ConfigBuilder::cell_clip`]).
    pub fn cell_clip(&self) -> Option<f32> {
        self.cell_clip
    }
    /// ONNX `clip`: the bound on every gate pre-activation (see
    /// [`ConfigBuilder::gate_clip`]).
    pub fn gate_clip(&self) -> Option<f32> {
        self.gate_clip
    }
    /// ONNX `input_forget`: LSTM forget gate `f = 1 - i`.
    pub fn input_forget(&self) -> bool {
        self.input_forget
    }
    /// LSTM peephole connections.
    pub fn peepholes(&self) -> bool {
        self.peepholes
    }
    /// Time-major (`[T, N, ·]`) or batch-first (`[N, T, ·]`) inputs and outputs.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// G: gates per cell.
    pub fn gates(&self) -> usize {
        self.cell.gates()
    }
    /// D: 1 or 2.
    pub fn num_directions(&self) -> usize {
        self.direction.count()
    }
    /// H_out: the size of h (the projection size when projecting, else H).
    pub fn state_size(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }
    /// Whether the model carries a cell state c (LSTM only).
    pub fn has_cell_state(&self) -> bool {
        self.cell == CellKind::Lstm
    }
    /// Feature width of each layer's output y: `2 * H_out` for concatenated
    /// bidirectional layers, `H_out` otherwise.
    pub fn output_size(&self) -> usize {
        match self.direction {
            Direction::BidirectionalConcat => 2 * self.state_size(),
            _ => self.state_size(),
        }
    }
    /// I_l: the input width of layer `layer` (the input size for layer 0, the
    /// previous layer's output width after that).
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }

    /// Floating-point operations of the matrix products of one forward pass
    /// over `seq_len` steps of `batch` items, counted as `2·m·n·k` per product
    /// (the element-wise gate math is not counted). Backward costs about
    /// twice this. Benchmarks divide it by time to report GFLOP/s.
    pub fn forward_flops(&self, seq_len: usize, batch: usize) -> u64 {
        let rows = (seq_len * batch) as u64;
        let gh = (self.gates() * self.hidden_size) as u64;
        let per_dir = |layer: usize| {
            let inner = (self.layer_input_size(layer) + self.state_size()) as u64;
            2 * rows * gh * inner + 2 * rows * (self.proj_size * self.hidden_size) as u64
        };
        (0..self.num_layers)
            .map(|l| per_dir(l) * self.num_directions() as u64)
            .sum()
    }

    /// Shape (rows, cols) of one parameter tensor of `layer`, or `None` if this
    /// configuration does not have it. A vector has `cols == 1`.
    pub fn param_shape(&self, layer: usize, kind: ParamKind) -> Option<(usize, usize)> {
        let gh = self.gates() * self.hidden_size;
        match kind {
            ParamKind::W => Some((gh, self.layer_input_size(layer))),
            ParamKind::R => Some((gh, self.state_size())),
            ParamKind::Wb | ParamKind::Rb => Some((gh, 1)),
            ParamKind::Peephole => self.peepholes.then_some((3 * self.hidden_size, 1)),
            ParamKind::Projection => {
                (self.proj_size > 0).then_some((self.proj_size, self.hidden_size))
            }
        }
    }

    /// Parameters of one (layer, direction) block.
    fn block_len(&self, layer: usize) -> usize {
        ParamKind::ALL
            .iter()
            .filter_map(|&k| self.param_shape(layer, k))
            .map(|(r, c)| r * c)
            .sum()
    }

    /// The parameter count with every product overflow-checked (`None` on
    /// overflow), for validation before any unchecked size arithmetic.
    fn param_count_checked(&self) -> Option<usize> {
        let (h, i, p, l) = (
            self.hidden_size,
            self.input_size,
            self.proj_size,
            self.num_layers,
        );
        let state = if p > 0 { p } else { h };
        let gh = self.gates().checked_mul(h)?;
        let out = state.checked_mul(2)?;
        // W (widest input) + R + two biases + peepholes + projection, per
        // layer and direction, over-counted as if every layer had the widest input.
        let per_block = gh
            .checked_mul(i.max(out).checked_add(state)?.checked_add(2)?)?
            .checked_add(h.checked_mul(3)?)?
            .checked_add(p.checked_mul(h)?)?;
        per_block.checked_mul(l)?.checked_mul(2)
    }

    /// Total number of f32 parameters.
    pub fn num_params(&self) -> usize {
        self.params_before_layer(self.num_layers)
    }

    /// Parameters of layers `0..layer`, in O(1): every layer after the first
    /// has the same shape.
    fn params_before_layer(&self, layer: usize) -> usize {
        let d = self.num_directions();
        match layer {
            0 => 0,
            _ => d * (self.block_len(0) + (layer - 1) * self.block_len(1)),
        }
    }

    /// Range of the (layer, dir) block inside the flat parameter vector: all
    /// tensors of that layer and direction, in [`ParamKind`] order.
    pub fn block_range(&self, layer: usize, dir: usize) -> Result<std::ops::Range<usize>> {
        self.check_block(layer, dir)?;
        Ok(self.block_range_unchecked(layer, dir))
    }

    fn check_block(&self, layer: usize, dir: usize) -> Result<()> {
        if layer >= self.num_layers || dir >= self.num_directions() {
            return Err(Error::InvalidArgument(format!(
                "layer {layer}, direction {dir} does not exist ({} layers, {} directions)",
                self.num_layers,
                self.num_directions()
            )));
        }
        Ok(())
    }

    /// [`Config::block_range`] for indices the caller knows are valid.
    pub(crate) fn block_range_unchecked(&self, layer: usize, dir: usize) -> std::ops::Range<usize> {
        let start = self.params_before_layer(layer) + dir * self.block_len(layer);
        start..start + self.block_len(layer)
    }

    /// Range of one tensor inside the flat parameter vector, or an error if the
    /// layer, direction or kind does not exist in this configuration.
    pub fn param_range(
        &self,
        layer: usize,
        dir: usize,
        kind: ParamKind,
    ) -> Result<std::ops::Range<usize>> {
        self.check_block(layer, dir)?;
        if self.param_shape(layer, kind).is_none() {
            return Err(Error::InvalidArgument(format!(
                "this configuration has no {kind:?} parameters"
            )));
        }
        let mut offset = self.block_range_unchecked(layer, dir).start;
        for &k in ParamKind::ALL {
            if let Some((r, c)) = self.param_shape(layer, k) {
                if k == kind {
                    return Ok(offset..offset + r * c);
                }
                offset += r * c;
            }
        }
        unreachable!("kind {kind:?} has a shape, so the loop returned")
    }
}

impl ConfigBuilder {
    /// Non-linearity of a vanilla RNN (LSTM and GRU accept only the
    /// default); [`ConfigBuilder::activations`] sets any cell's functions.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }
    /// The activation functions, in ONNX's order: one per role of
    /// [`CellKind::default_activations`] (RNN `f`; LSTM `f, g, h`; GRU
    /// `f, g`) for every direction, or that many for the forward direction
    /// followed by as many for the reverse one.
    ///
    /// ```
    /// use rnn::{ActivationFunction, ActivationKind, CellKind, Config, Direction};
    ///
    /// let config = Config::builder(CellKind::Gru, 8, 16)
    ///     .direction(Direction::BidirectionalConcat)
    ///     .activations(&[
    ///         ActivationFunction::new(ActivationKind::HardSigmoid),
    ///         ActivationFunction::new(ActivationKind::Softsign),
    ///         ActivationFunction::new(ActivationKind::Sigmoid),
    ///         ActivationFunction::with(ActivationKind::LeakyRelu, 0.1, 0.0),
    ///     ])
    ///     .build()?;
    /// assert_eq!(config.activations(1)[1].kind, ActivationKind::LeakyRelu);
    /// # Ok::<(), rnn::Error>(())
    /// ```
    pub fn activations(mut self, functions: &[ActivationFunction]) -> Self {
        self.activation_list = Some(functions.to_vec());
        self
    }
    /// What an item of sequence length 0 returns as its final state
    /// (default: the initial state).
    pub fn empty_sequence_state(mut self, state: EmptySequenceState) -> Self {
        self.config.empty_sequence_state = state;
        self
    }
    /// LSTM projection size P (h becomes `P_r (o ⊙ tanh c)`, of size P); 0 = none.
    pub fn proj_size(mut self, proj_size: usize) -> Self {
        self.config.proj_size = proj_size;
        self
    }
    /// Stacked layers (default 1): layer `l + 1` reads layer `l`'s output.
    pub fn num_layers(mut self, num_layers: usize) -> Self {
        self.config.num_layers = num_layers;
        self
    }
    /// Forward (default), reverse, or bidirectional.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.config.direction = direction;
        self
    }
    /// GRU variant (default: ONNX's reset before the matmul).
    pub fn gru_variant(mut self, variant: GruVariant) -> Self {
        self.config.gru_variant = variant;
        self
    }
    /// LSTM cell clip: after each update, c is clamped to `[-clip, clip]`.
    pub fn cell_clip(mut self, clip: Option<f32>) -> Self {
        self.config.cell_clip = clip;
        self
    }
    /// Gate clip, ONNX's `clip` attribute, for every cell: the input of each
    /// activation (every gate pre-activation, peephole terms included, and the
    /// RNN's `W x + R h + b`) is clamped to `[-clip, clip]` before the
    /// sigmoid, tanh or relu. Unlike [`ConfigBuilder::cell_clip`], it leaves
    /// the LSTM cell state alone. A clamped value passes no gradient.
    /// `Some(0.0)` is ONNX's `clip = 0`, which onnxruntime runs: every
    /// pre-activation becomes 0.
    pub fn gate_clip(mut self, clip: Option<f32>) -> Self {
        self.config.gate_clip = clip;
        self
    }
    /// LSTM input-forget coupling, ONNX's `input_forget`: the forget gate is
    /// `f = 1 - i` instead of its own sigmoid. The forget gate's rows of W, R
    /// and the biases, and its peephole `p_f`, stay in the parameter vector
    /// (so layouts do not change) but are unused and get zero gradients.
    pub fn input_forget(mut self, on: bool) -> Self {
        self.config.input_forget = on;
        self
    }
    /// LSTM peephole connections (p_i, p_f on c_{t-1}, p_o on c_t).
    pub fn peepholes(mut self, on: bool) -> Self {
        self.config.peepholes = on;
        self
    }
    /// Layout of `x`, `y` and their gradients (default time-major).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.config.layout = layout;
        self
    }

    /// Checks every field and returns the configuration.
    pub fn build(self) -> Result<Config> {
        let mut c = self.config;
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if c.input_size == 0 {
            return bad("input_size must be at least 1".into());
        }
        if c.hidden_size == 0 {
            return bad("hidden_size must be at least 1".into());
        }
        if c.num_layers == 0 {
            return bad("num_layers must be at least 1".into());
        }
        let lstm_only = c.cell != CellKind::Lstm;
        if c.proj_size > 0 && lstm_only {
            return bad(format!("proj_size applies only to LSTM, not {:?}", c.cell));
        }
        if c.peepholes && lstm_only {
            return bad(format!("peepholes apply only to LSTM, not {:?}", c.cell));
        }
        if let Some(clip) = c.cell_clip {
            if lstm_only {
                return bad(format!("cell_clip applies only to LSTM, not {:?}", c.cell));
            }
            if !(clip.is_finite() && clip > 0.0) {
                return bad(format!("cell_clip must be finite and positive, got {clip}"));
            }
        }
        if let Some(clip) = c.gate_clip {
            if !(clip.is_finite() && clip >= 0.0) {
                return bad(format!(
                    "gate_clip must be finite and not negative, got {clip}"
                ));
            }
        }
        if c.input_forget && lstm_only {
            return bad(format!(
                "input_forget applies only to LSTM, not {:?}",
                c.cell
            ));
        }
        if self.activation != Activation::Tanh && c.cell != CellKind::Rnn {
            return bad(format!(
                "activation {:?} applies only to RNN; set {:?}'s functions with activations",
                self.activation, c.cell
            ));
        }
        if self.activation == Activation::Relu {
            for dir in &mut c.activations {
                dir[0] = ActivationFunction::new(ActivationKind::Relu);
            }
        }
        if let Some(list) = &self.activation_list {
            let (roles, dirs) = (c.cell.default_activations().len(), c.direction.count());
            if self.activation != Activation::Tanh {
                return bad("set either activation or activations, not both".into());
            }
            if list.len() != roles && list.len() != roles * dirs {
                return bad(format!(
                    "activations: {:?} takes {roles} functions per direction, so {roles}{} in all; got {}",
                    c.cell,
                    if dirs == 2 { format!(" or {}", 2 * roles) } else { String::new() },
                    list.len()
                ));
            }
            for (i, f) in list.iter().enumerate() {
                if !(f.alpha.is_finite() && f.beta.is_finite()) {
                    return bad(format!(
                        "activations[{i}] ({f}): alpha and beta must be finite"
                    ));
                }
                let (dir, role) = (i / roles, i % roles);
                c.activations[dir][role] = *f;
                if list.len() == roles {
                    c.activations[1][role] = *f;
                }
            }
        }
        if c.gru_variant != GruVariant::ResetBeforeMatmul && c.cell != CellKind::Gru {
            return bad(format!("gru_variant applies only to GRU, not {:?}", c.cell));
        }
        // Every buffer size must be representable: the parameter count,
        // computed with overflow checks, bounds the sizes the crate derives.
        if c.param_count_checked()
            .is_none_or(|n| n > isize::MAX as usize / 8)
        {
            return bad("the parameter count overflows the address space".into());
        }
        Ok(c)
    }
}
