//! What a forward call reads ([`Input`]) and the buffer sizes it implies
//! ([`Shapes`]), checked once here for every engine.

use crate::config::{Config, Layout};
use crate::error::{check_len, checked_product, Error, Result};

/// One batch of sequences to run through a model.
///
/// `x` holds `T * N * input_size` values in the configuration's layout
/// (`[T, N, I]` time-major or `[N, T, I]` batch-first). Optional: per-item
/// sequence lengths (each `<= T`), initial hidden state `h0 [L*D, N, H_out]`
/// and, for LSTM, initial cell state `c0 [L*D, N, H]`; missing states are zero.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a, F = f32> {
    pub(crate) x: &'a [F],
    pub(crate) seq_len: usize,
    pub(crate) batch: usize,
    pub(crate) seq_lens: Option<&'a [usize]>,
    pub(crate) h0: Option<&'a [F]>,
    pub(crate) c0: Option<&'a [F]>,
}

impl<'a, F> Input<'a, F> {
    /// A batch of `batch` sequences of `seq_len` steps.
    pub fn new(x: &'a [F], seq_len: usize, batch: usize) -> Self {
        Input {
            x,
            seq_len,
            batch,
            seq_lens: None,
            h0: None,
            c0: None,
        }
    }
    /// Per-item lengths: item `b` uses steps `0..seq_lens[b]`; later steps
    /// output zeros and leave its state alone.
    pub fn with_seq_lens(mut self, seq_lens: &'a [usize]) -> Self {
        self.seq_lens = Some(seq_lens);
        self
    }
    /// The initial hidden state `[L·D, N, H_out]` (default zeros).
    pub fn with_h0(mut self, h0: &'a [F]) -> Self {
        self.h0 = Some(h0);
        self
    }
    /// The initial LSTM cell state `[L·D, N, H]` (default zeros).
    pub fn with_c0(mut self, c0: &'a [F]) -> Self {
        self.c0 = Some(c0);
        self
    }
    /// The input sequence.
    pub fn x(&self) -> &'a [F] {
        self.x
    }
    /// T: steps.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
    /// N: items.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Each item's length, if given.
    pub fn seq_lens(&self) -> Option<&'a [usize]> {
        self.seq_lens
    }
    /// The initial hidden state, if given.
    pub fn h0(&self) -> Option<&'a [F]> {
        self.h0
    }
    /// The initial cell state, if given.
    pub fn c0(&self) -> Option<&'a [F]> {
        self.c0
    }
}

/// Element counts of every buffer of a call with `seq_len` steps and `batch`
/// items, overflow-checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shapes {
    /// T: steps.
    pub seq_len: usize,
    /// N: items.
    pub batch: usize,
    /// `x` and `dx`.
    pub x: usize,
    /// `y` and `dy`.
    pub y: usize,
    /// `h0`, `hN`, `dh0`, `dhN`.
    pub h: usize,
    /// `c0`, `cN`, `dc0`, `dcN` (0 when the cell has no cell state).
    pub c: usize,
}

impl Shapes {
    /// The sizes for `config` at `seq_len` steps of `batch` items
    /// (`Error::InvalidArgument` if a size overflows).
    pub fn new(config: &Config, seq_len: usize, batch: usize) -> Result<Shapes> {
        let ld = config.num_layers() * config.num_directions();
        Ok(Shapes {
            seq_len,
            batch,
            x: checked_product("x", &[seq_len, batch, config.input_size()])?,
            y: checked_product("y", &[seq_len, batch, config.output_size()])?,
            h: checked_product("h", &[ld, batch, config.state_size()])?,
            c: if config.has_cell_state() {
                checked_product("c", &[ld, batch, config.hidden_size()])?
            } else {
                0
            },
        })
    }

    /// Validates an input against the configuration and returns its shapes.
    pub fn of_input<F>(config: &Config, input: &Input<'_, F>) -> Result<Shapes> {
        let s = Shapes::new(config, input.seq_len, input.batch)?;
        check_len("x", s.x, input.x.len())?;
        if let Some(lens) = input.seq_lens {
            check_len("seq_lens", s.batch, lens.len())?;
            if let Some((b, &len)) = lens.iter().enumerate().find(|(_, &l)| l > s.seq_len) {
                return Err(Error::InvalidArgument(format!(
                    "seq_lens[{b}] = {len} exceeds the sequence length {}",
                    s.seq_len
                )));
            }
        }
        if let Some(h0) = input.h0 {
            check_len("h0", s.h, h0.len())?;
        }
        if let Some(c0) = input.c0 {
            if !config.has_cell_state() {
                return Err(Error::InvalidArgument(format!(
                    "c0 given, but a {:?} has no cell state",
                    config.cell()
                )));
            }
            check_len("c0", s.c, c0.len())?;
        }
        Ok(s)
    }

    /// Length of item `b`: its entry in `seq_lens`, or the full sequence.
    pub(crate) fn item_len(&self, seq_lens: Option<&[usize]>, b: usize) -> usize {
        seq_lens.map_or(self.seq_len, |l| l[b])
    }
}

/// Converts a `[N, T, F]` tensor to `[T, N, F]` (or keeps a time-major one).
pub(crate) fn to_time_major<F: Copy + Default>(
    layout: Layout,
    data: &[F],
    seq_len: usize,
    batch: usize,
    features: usize,
) -> crate::error::Result<Vec<F>> {
    match layout {
        Layout::TimeMajor => crate::error::try_copy(data, "a time-major copy"),
        Layout::BatchFirst => swap_outer_axes(data, batch, seq_len, features),
    }
}

/// Converts a `[T, N, F]` tensor to the configuration's layout.
pub(crate) fn from_time_major<F: Copy + Default>(
    layout: Layout,
    data: Vec<F>,
    seq_len: usize,
    batch: usize,
    features: usize,
) -> crate::error::Result<Vec<F>> {
    match layout {
        Layout::TimeMajor => Ok(data),
        Layout::BatchFirst => swap_outer_axes(&data, seq_len, batch, features),
    }
}

/// [`to_time_major`] into `dst` (of the same length).
pub(crate) fn to_time_major_into<F: Copy>(
    layout: Layout,
    data: &[F],
    seq_len: usize,
    batch: usize,
    features: usize,
    dst: &mut [F],
) {
    match layout {
        Layout::TimeMajor => dst.copy_from_slice(data),
        Layout::BatchFirst => swap_outer_axes_into(data, batch, seq_len, features, dst),
    }
}

/// [`from_time_major`] into `dst` (of the same length): the same swap of
/// the outer axes as [`to_time_major_into`], from `[T, N, F]`.
pub(crate) fn from_time_major_into<F: Copy>(
    layout: Layout,
    data: &[F],
    seq_len: usize,
    batch: usize,
    features: usize,
    dst: &mut [F],
) {
    to_time_major_into(layout, data, batch, seq_len, features, dst);
}

/// `[A, B, F]` → `[B, A, F]`.
fn swap_outer_axes<F: Copy + Default>(
    data: &[F],
    a: usize,
    b: usize,
    features: usize,
) -> crate::error::Result<Vec<F>> {
    let mut out = crate::error::try_vec(data.len(), F::default(), "a transposed copy")?;
    swap_outer_axes_into(data, a, b, features, &mut out);
    Ok(out)
}

/// `[A, B, F]` `src` → `[B, A, F]` `dst` (of the same length).
pub(crate) fn swap_outer_axes_into<F: Copy>(
    src: &[F],
    a: usize,
    b: usize,
    features: usize,
    dst: &mut [F],
) {
    assert_eq!(src.len(), dst.len(), "swap_outer_axes_into: lengths");
    for j in 0..b {
        for i in 0..a {
            let (from, to) = ((i * b + j) * features, (j * a + i) * features);
            dst[to..to + features].copy_from_slice(&src[from..from + features]);
        }
    }
}

/// Caller-owned buffers that [`crate::Model::backward_into`] writes the
/// gradients into, each with the length of its [`Gradients`] field; `None`
/// for a gradient the caller does not want (it is not computed into any
/// buffer of the caller's). Every element of a given buffer is overwritten.
#[derive(Debug, Default)]
pub struct GradientBuffers<'a> {
    /// Same shape as `x`.
    pub dx: Option<&'a mut [f32]>,
    /// Same shape as `h0`.
    pub dh0: Option<&'a mut [f32]>,
    /// LSTM only.
    pub dc0: Option<&'a mut [f32]>,
    /// The model's flat parameter layout.
    pub dparams: Option<&'a mut [f32]>,
}

/// Bytes a call allocates besides the caller's buffers, at most, for one
/// shape ([`crate::Model::call_memory`]). The `_into` calls allocate
/// exactly this; the owned ones also allocate the `y`, `h_n` and `c_n` they
/// return. Memory the model's pool already holds from earlier calls is
/// reused first, so a call may allocate less.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallMemory {
    /// Packing the weights for the kernels: done by the first call, and by
    /// the first call after the parameters or the ISA change.
    pub packing: usize,
    /// A forward inference call, while it runs.
    pub inference: usize,
    /// A forward training call while it runs, besides its trace.
    pub training_forward: usize,
    /// What a training call's trace holds until it is dropped.
    pub trace: usize,
    /// A backward call while it runs, its results (dx, dh0, dc0, dparams)
    /// included.
    pub backward: usize,
}

/// Results of a forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Output<F = f32> {
    /// `[T, N, output_size]` (or `[N, T, output_size]` batch-first) outputs of
    /// the last layer; zero at steps past an item's length.
    pub y: Vec<F>,
    /// Final hidden state `[L*D, N, H_out]`: each item's state after its own
    /// last step (for a reverse direction, after step 0).
    pub h_n: Vec<F>,
    /// Final cell state `[L*D, N, H]` (LSTM only).
    pub c_n: Option<Vec<F>>,
}

/// Gradients of a scalar loss with respect to a forward pass's outputs, the
/// input of [`backward`](crate::Model::backward).
///
/// `dy` has the shape of `y`; `dh_n` and `dc_n`, if given, the shapes of
/// `h_n` and `c_n` (missing ones are zero).
#[derive(Clone, Copy, Debug)]
pub struct OutputGrads<'a, F = f32> {
    pub(crate) dy: &'a [F],
    pub(crate) dh_n: Option<&'a [F]>,
    pub(crate) dc_n: Option<&'a [F]>,
}

impl<'a, F> OutputGrads<'a, F> {
    /// Gradients of the outputs `y` (same shape), and none of the final states.
    pub fn new(dy: &'a [F]) -> Self {
        OutputGrads {
            dy,
            dh_n: None,
            dc_n: None,
        }
    }
    /// Also the gradient of the final hidden state `h_n`.
    pub fn with_dh_n(mut self, dh_n: &'a [F]) -> Self {
        self.dh_n = Some(dh_n);
        self
    }
    /// Also the gradient of the final LSTM cell state `c_n`.
    pub fn with_dc_n(mut self, dc_n: &'a [F]) -> Self {
        self.dc_n = Some(dc_n);
        self
    }

    /// Validates the gradient buffers against the forward pass's shapes.
    pub(crate) fn check(&self, config: &Config, shapes: &Shapes) -> Result<()> {
        check_len("dy", shapes.y, self.dy.len())?;
        if let Some(dh) = self.dh_n {
            check_len("dh_n", shapes.h, dh.len())?;
        }
        if let Some(dc) = self.dc_n {
            if !config.has_cell_state() {
                return Err(Error::InvalidArgument(format!(
                    "dc_n given, but a {:?} has no cell state",
                    config.cell()
                )));
            }
            check_len("dc_n", shapes.c, dc.len())?;
        }
        Ok(())
    }
}

/// Results of a backward pass: gradients of the loss with respect to every
/// input of the forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients<F = f32> {
    /// Same shape and layout as `x`.
    pub dx: Vec<F>,
    /// Same shape as `h0` (and returned whether or not `h0` was given).
    pub dh0: Vec<F>,
    /// Same shape as `c0` (LSTM only).
    pub dc0: Option<Vec<F>>,
    /// Same layout as the model's flat parameter vector (see
    /// [`Config::param_range`]), summed over batch and time.
    pub dparams: Vec<F>,
}
