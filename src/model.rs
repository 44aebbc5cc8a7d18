//! The safe Rust API: a [`Model`] owns a configuration and its f32 parameters
//! and runs forward inference, forward training and backward.
//!
//! The calls run on the fast engine (`engine`): SIMD kernels for the ISA
//! chosen at run time (see [`Isa::selected`]) or pinned with
//! [`Model::with_isa`]. The f64 reference (`rnn::reference`) is the oracle
//! the engine is tested against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::config::{Config, ParamKind};
use crate::engine::{self, BufferPool, Packed};
use crate::error::{check_len, try_vec, try_zeros_untouched, Error, Result};
use crate::io::{CallMemory, Gradients, Input, Output, OutputGrads, Shapes};
use crate::kernels::Isa;
use crate::precision::Precision;
use crate::rng::SplitMix64;

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A recurrent network: its configuration and its parameters.
///
/// Parameters are one flat `Vec<f32>`; [`Config::param_range`] says where each
/// tensor lives. A model is immutable during forward and backward calls, so a
/// `&Model` may be shared between threads that run calls concurrently.
///
/// Memory: a model keeps the scratch buffers of its recent calls and
/// reuses them, so repeated calls do not map fresh pages: at most 32
/// buffers and at most [`Model::MAX_IDLE_BYTES`] (256 MiB) while idle,
/// however many calls ran at once. [`Model::release_memory`] frees them;
/// so does dropping the model.
///
/// ```
/// use rnn::{CellKind, Config, Input, Model, OutputGrads};
///
/// // An LSTM over 3 input features with 8 hidden units, random weights.
/// let config = Config::builder(CellKind::Lstm, 3, 8).build()?;
/// let model = Model::random(config, 42);
/// // 5 steps of a batch of 2, time-major [T, N, I].
/// let x = vec![0.5f32; 5 * 2 * 3];
/// let out = model.forward_inference(&Input::new(&x, 5, 2))?;
/// assert_eq!((out.y.len(), out.h_n.len()), (5 * 2 * 8, 2 * 8));
///
/// // Training: forward with a trace, then every gradient.
/// let (out, trace) = model.forward_training(&Input::new(&x, 5, 2))?;
/// let dy = vec![1.0f32; out.y.len()];
/// let grads = model.backward(&trace, &OutputGrads::new(&dy))?;
/// assert_eq!(grads.dparams.len(), model.params().len());
/// # Ok::<(), rnn::Error>(())
/// ```
#[derive(Debug)]
pub struct Model {
    config: Config,
    params: Vec<f32>,
    /// Identifies this model and this version of its parameters, so a
    /// [`Trace`] is never used with weights other than those that made it.
    id: u64,
    version: u64,
    /// Pinned ISA, or `None` for [`Isa::selected`].
    isa: Option<Isa>,
    /// The format inference packs the weights in (training needs f32).
    precision: Precision,
    /// The parameters packed for the kernels, made on first use and dropped
    /// whenever the parameters change. A failure to pack (out of memory) is
    /// not kept: the next call tries again.
    packed: OnceLock<Packed>,
    /// Scratch buffers reused across calls (shared with live traces, which
    /// give theirs back when dropped).
    pool: Arc<BufferPool>,
}

impl Clone for Model {
    fn clone(&self) -> Self {
        let mut m = Model::with_params(self.config.clone(), self.params.clone());
        m.isa = self.isa;
        m.precision = self.precision;
        m
    }
}

/// What [`Model::backward`] needs from a [`Model::forward_training`] call.
#[derive(Clone, Debug)]
pub struct Trace {
    model_id: u64,
    model_version: u64,
    inner: engine::Trace,
}

impl Trace {
    /// Shapes of the forward call that produced this trace.
    pub fn shapes(&self) -> &Shapes {
        &self.inner.shapes
    }
}

impl Model {
    fn with_params(config: Config, params: Vec<f32>) -> Model {
        Model {
            config,
            params,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            version: 0,
            isa: None,
            precision: Precision::F32,
            packed: OnceLock::new(),
            pool: Arc::default(),
        }
    }

    /// A copy of this model that is the same model for traces (same id and
    /// parameter version, same buffer pool), for a change that either
    /// completes and replaces this one or is dropped with nothing changed.
    #[cfg(feature = "capi")]
    pub(crate) fn successor(&self) -> Result<Model> {
        Ok(Model {
            config: self.config.clone(),
            params: crate::error::try_copy(&self.params, "a copy of the parameters")?,
            id: self.id,
            version: self.version,
            isa: self.isa,
            precision: self.precision,
            packed: OnceLock::new(),
            pool: self.pool.clone(),
        })
    }

    /// The most bytes of idle scratch buffers a model keeps between calls.
    pub const MAX_IDLE_BYTES: usize = engine::MAX_IDLE_BYTES;

    /// Bytes of scratch buffers this model keeps for its next calls (not
    /// counting its parameters and packed weights).
    pub fn idle_bytes(&self) -> usize {
        self.pool.idle_bytes()
    }

    /// Frees the scratch buffers kept for later calls (buffers that running
    /// calls or live traces use are freed when they are done); returns how
    /// many bytes were freed. The next call allocates afresh.
    pub fn release_memory(&self) -> usize {
        self.pool.release()
    }

    /// The most memory calls of `seq_len` steps over `batch` sequences
    /// allocate besides the caller's buffers, so a caller can check before
    /// calling (e.g. to pick a batch size or a TBPTT chunk).
    pub fn call_memory(&self, seq_len: usize, batch: usize) -> Result<CallMemory> {
        let shapes = Shapes::new(&self.config, seq_len, batch)?;
        let unit = crate::kernels::Kernels::for_isa(self.isa()?)?.unit();
        Ok(engine::call_memory(
            &self.config,
            &shapes,
            unit,
            crate::threads::num_threads(),
        ))
    }

    /// Whether `trace` was made by this model (with any parameters).
    pub(crate) fn made(&self, trace: &Trace) -> bool {
        trace.model_id == self.id
    }

    /// This model with its kernels pinned to `isa` (an error if the CPU
    /// does not support it), e.g. to compare ISAs or to benchmark one.
    pub fn with_isa(mut self, isa: Isa) -> Result<Model> {
        self.pin_isa(isa)?;
        Ok(self)
    }

    /// Pins this model's kernels to `isa` in place (see [`Model::with_isa`]).
    pub(crate) fn pin_isa(&mut self, isa: Isa) -> Result<()> {
        crate::kernels::Kernels::for_isa(isa)?;
        self.isa = Some(isa);
        self.packed = OnceLock::new();
        Ok(())
    }

    /// The ISA this model's calls run on.
    pub fn isa(&self) -> Result<Isa> {
        self.isa.map_or_else(Isa::selected, Ok)
    }

    /// This model with its inference in `precision` (see [`Precision`]):
    /// the weights are packed in that format at the next call. The f32
    /// parameters stay as they are (reading or changing them works as
    /// before); training calls need [`Precision::F32`] and return
    /// [`Error::InvalidArgument`] otherwise.
    pub fn with_precision(mut self, precision: Precision) -> Model {
        self.set_precision(precision);
        self
    }

    /// Sets the inference precision in place (see [`Model::with_precision`]).
    pub fn set_precision(&mut self, precision: Precision) {
        if precision != self.precision {
            self.precision = precision;
            self.packed = OnceLock::new();
        }
    }

    /// The precision this model's inference runs in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes of weights packed for the kernels in this model's precision
    /// and ISA (packing them first if no call has yet): the memory a model
    /// holds besides its f32 parameters and its scratch buffers. An f32
    /// model packs the backward's panels too; a bf16 model only the
    /// forward's, at half the bytes each.
    pub fn packed_bytes(&self) -> Result<usize> {
        Ok(self.packed()?.bytes())
    }

    pub(crate) fn packed(&self) -> Result<&Packed> {
        if let Some(packed) = self.packed.get() {
            return Ok(packed);
        }
        // Two threads may pack at once; one result is kept, both are equal.
        let fresh = Packed::new(
            &self.config,
            &self.params,
            (self.isa()?, self.precision),
            &self.pool,
        )?;
        Ok(self.packed.get_or_init(|| fresh))
    }

    /// Training calls run in f32: a clear error for any other precision.
    fn check_training(&self) -> Result<()> {
        for dir in 0..self.config.num_directions() {
            if let Some(f) =
                (self.config.activations(dir).iter()).find(|f| !f.invertible_for_training())
            {
                return Err(Error::InvalidArgument(format!(
                    "training needs each activation's derivative from its output, \
                     which {f} (α < 0) does not determine: use α ≥ 0 to train"
                )));
            }
        }
        match self.precision {
            Precision::F32 => Ok(()),
            p => Err(Error::InvalidArgument(format!(
                "training runs in f32, and this model's inference precision is {}: \
                 set Precision::F32 for training calls",
                p.name()
            ))),
        }
    }

    /// A model whose parameters are all zero. Aborts if the parameters
    /// cannot be allocated; [`Model::try_zeros`] reports that instead.
    pub fn zeros(config: Config) -> Model {
        let n = config.num_params();
        Model::with_params(config, vec![0.0; n])
    }

    /// [`Model::zeros`], with [`Error::OutOfMemory`] for parameters too
    /// large to allocate.
    pub fn try_zeros(config: Config) -> Result<Model> {
        let params = try_vec(config.num_params(), 0.0, "the parameters")?;
        Ok(Model::with_params(config, params))
    }

    /// A model with every parameter drawn uniformly from
    /// `[-1/sqrt(H), 1/sqrt(H))` (PyTorch's default), reproducibly from `seed`.
    /// Aborts if the parameters cannot be allocated; [`Model::try_random`]
    /// reports that instead.
    pub fn random(config: Config, seed: u64) -> Model {
        let mut model = Model::zeros(config);
        model.fill_random(seed);
        model
    }

    /// [`Model::random`], with [`Error::OutOfMemory`] for parameters too
    /// large to allocate.
    pub fn try_random(config: Config, seed: u64) -> Result<Model> {
        let mut model = Model::try_zeros(config)?;
        model.fill_random(seed);
        Ok(model)
    }

    /// Redraws every parameter as [`Model::random`] does (invalidates
    /// earlier traces).
    pub(crate) fn fill_random(&mut self, seed: u64) {
        let bound = 1.0 / (self.config.hidden_size() as f32).sqrt();
        SplitMix64::new(seed).fill_uniform(self.params_mut(), -bound, bound);
    }

    /// A model with the given flat parameters (length [`Config::num_params`]).
    pub fn from_params(config: Config, params: Vec<f32>) -> Result<Model> {
        check_len("params", config.num_params(), params.len())?;
        Ok(Model::with_params(config, params))
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// All parameters, in the layout of [`Config::param_range`].
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Mutable parameters. Traces made before this call are rejected by
    /// [`Model::backward`] afterwards.
    pub fn params_mut(&mut self) -> &mut [f32] {
        self.version += 1;
        self.packed = OnceLock::new();
        &mut self.params
    }

    /// One parameter tensor (row-major), e.g. `model.param(0, 0, ParamKind::W)`.
    pub fn param(&self, layer: usize, dir: usize, kind: ParamKind) -> Result<&[f32]> {
        let range = self.config.param_range(layer, dir, kind)?;
        Ok(&self.params[range])
    }

    /// One parameter tensor, mutable (invalidates earlier traces).
    pub fn param_mut(&mut self, layer: usize, dir: usize, kind: ParamKind) -> Result<&mut [f32]> {
        let range = self.config.param_range(layer, dir, kind)?;
        Ok(&mut self.params_mut()[range])
    }

    /// Runs the network over `input` and returns `y`, `h_n` and `c_n`.
    pub fn forward_inference(&self, input: &Input<'_>) -> Result<Output> {
        let packed = self.packed()?;
        self.run_forward(packed, input, false, || {
            engine::forward(&self.config, packed, &self.pool, input, false)
        })
        .map(|(out, _)| out)
    }

    /// Runs a forward call's `work` on the caller's thread where the engine
    /// would give a call over `input` one thread anyway
    /// ([`engine::forward_runs_alone`]); else an inference call there too,
    /// the pool's workers joining its teams
    /// ([`crate::threads::run_in_place_unless_alone`]), and a training call
    /// on the pool: a backward follows it there, whose forks find the
    /// workers that the forward woke still awake (with the forward in
    /// place, training steps ran 0.89-1.08× as fast on the 2-vCPU Xeon VM:
    /// no gain to have).
    fn run_forward<R: Send>(
        &self,
        packed: &engine::Packed,
        input: &Input<'_>,
        training: bool,
        work: impl FnOnce() -> Result<R> + Send,
    ) -> Result<R> {
        let shape = (input.batch, input.seq_len);
        let alone = |threads| engine::forward_runs_alone(&self.config, packed, shape, threads);
        match training {
            false => crate::threads::run_in_place_unless_alone(alone, work),
            true => crate::threads::run_unless_alone(alone, work),
        }
    }

    /// Like [`Model::forward_inference`], writing into caller-owned buffers
    /// (the last layer writes `y` directly; nothing is allocated for the
    /// results): `y` and `h_n` must have the sizes of [`Shapes`]; `c_n` is
    /// optional (LSTM only) and must then have `Shapes::c` elements.
    pub fn forward_inference_into(
        &self,
        input: &Input<'_>,
        y: &mut [f32],
        h_n: &mut [f32],
        c_n: Option<&mut [f32]>,
    ) -> Result<()> {
        self.forward_into(input, y, h_n, c_n, false).map(|_| ())
    }

    /// [`Model::forward_training`] into caller-owned buffers, as
    /// [`Model::forward_inference_into`]; returns the trace.
    pub fn forward_training_into(
        &self,
        input: &Input<'_>,
        y: &mut [f32],
        h_n: &mut [f32],
        c_n: Option<&mut [f32]>,
    ) -> Result<Trace> {
        let inner = self
            .forward_into(input, y, h_n, c_n, true)?
            .expect("a training forward pass returns a trace");
        Ok(self.trace(inner))
    }

    fn forward_into(
        &self,
        input: &Input<'_>,
        y: &mut [f32],
        h_n: &mut [f32],
        c_n: Option<&mut [f32]>,
        training: bool,
    ) -> Result<Option<engine::Trace>> {
        self.forward_into_placed(input, y, h_n, c_n, training, None)
    }

    /// The most threads a call over `batch` items of this model would give
    /// one of its layers (1: it may as well run on the caller's thread).
    pub(crate) fn team_size(&self, batch: usize) -> Result<usize> {
        let packed = self.packed()?;
        crate::threads::run(|| Ok(engine::team_size(&self.config, packed, batch)))
    }

    /// One inference call into caller buffers, on the caller's thread (a
    /// team formed there takes helpers installed on it, see
    /// [`crate::engine::helpers`]; with none, it is a team of one), its
    /// state kept in `kept` for the next (see [`engine::KeptState`]).
    pub(crate) fn stream_step_into(
        &self,
        input: &Input<'_>,
        y: &mut [f32],
        h_n: &mut [f32],
        c_n: Option<&mut [f32]>,
        kept: &mut engine::KeptState,
    ) -> Result<()> {
        self.forward_into_placed(input, y, h_n, c_n, false, Some(kept))
            .map(|_| ())
    }

    fn forward_into_placed(
        &self,
        input: &Input<'_>,
        y: &mut [f32],
        h_n: &mut [f32],
        c_n: Option<&mut [f32]>,
        training: bool,
        kept: Option<&mut engine::KeptState>,
    ) -> Result<Option<engine::Trace>> {
        if training {
            self.check_training()?;
        }
        let shapes = Shapes::of_input(&self.config, input)?;
        check_len("y", shapes.y, y.len())?;
        check_len("h_n", shapes.h, h_n.len())?;
        if let Some(c_n) = &c_n {
            if !self.config.has_cell_state() {
                return Err(Error::InvalidArgument(format!(
                    "c_n given, but a {:?} has no cell state",
                    self.config.cell()
                )));
            }
            check_len("c_n", shapes.c, c_n.len())?;
        }
        let packed = self.packed()?;
        // An LSTM's final c goes somewhere even when the caller does not want it.
        let mut c_scratch;
        let c_n = match c_n {
            Some(c_n) => c_n,
            None => {
                // forward_into writes every element first.
                c_scratch = try_zeros_untouched(shapes.c, "c_n")?;
                &mut c_scratch[..]
            }
        };
        let dest = engine::Dest { y, h_n, c_n };
        let inline = kept.is_some();
        let work = || {
            engine::forward_into(
                &self.config,
                packed,
                &self.pool,
                input,
                training,
                dest,
                kept,
            )
        };
        match inline {
            true => crate::threads::run_inline(work),
            false => self.run_forward(packed, input, training, work),
        }
    }

    fn trace(&self, inner: engine::Trace) -> Trace {
        Trace {
            model_id: self.id,
            model_version: self.version,
            inner,
        }
    }

    /// Forward pass that also keeps what [`Model::backward`] needs. Its
    /// outputs equal those of [`Model::forward_inference`].
    pub fn forward_training(&self, input: &Input<'_>) -> Result<(Output, Trace)> {
        self.check_training()?;
        let packed = self.packed()?;
        let (out, inner) = self.run_forward(packed, input, true, || {
            engine::forward(&self.config, packed, &self.pool, input, true)
        })?;
        let inner = inner.expect("a training forward pass returns a trace");
        Ok((out, self.trace(inner)))
    }

    /// Backpropagation through time over the call that made `trace`: given
    /// the loss gradients with respect to `y` (and optionally `h_n`, `c_n`),
    /// returns those with respect to `x`, `h0`, `c0` and every parameter.
    pub fn backward(&self, trace: &Trace, grads: &OutputGrads<'_>) -> Result<Gradients> {
        self.check_trace(trace)?;
        let packed = self.packed()?;
        self.run_backward(packed, trace, || {
            engine::backward(&self.config, packed, &self.pool, &trace.inner, grads)
        })
    }

    /// Runs a backward call's `work` on the pool, or on the caller's thread
    /// where the engine would give a call over `trace`'s steps one thread
    /// anyway ([`engine::backward_runs_alone`]).
    fn run_backward<R: Send>(
        &self,
        packed: &engine::Packed,
        trace: &Trace,
        work: impl FnOnce() -> Result<R> + Send,
    ) -> Result<R> {
        let s = trace.shapes();
        let shape = (s.batch, s.seq_len);
        crate::threads::run_unless_alone(
            |threads| engine::backward_runs_alone(&self.config, packed, shape, threads),
            work,
        )
    }

    /// [`Model::backward`] into caller-owned buffers (`None` for a gradient
    /// not wanted), so a training loop allocates nothing per step: each
    /// buffer has the length of its [`Gradients`] field (checked before any
    /// work) and is overwritten entirely; none may overlap another or the
    /// output gradients (Rust's borrows ensure it).
    pub fn backward_into(
        &self,
        trace: &Trace,
        grads: &OutputGrads<'_>,
        out: crate::io::GradientBuffers<'_>,
    ) -> Result<()> {
        self.check_trace(trace)?;
        let s = *trace.shapes();
        let check = |what: &'static str, want: usize, buf: &Option<&mut [f32]>| match buf {
            Some(b) => check_len(what, want, b.len()),
            None => Ok(()),
        };
        check("dx", s.x, &out.dx)?;
        check("dh0", s.h, &out.dh0)?;
        check("dparams", self.config.num_params(), &out.dparams)?;
        if out.dc0.is_some() && !self.config.has_cell_state() {
            return Err(Error::InvalidArgument(format!(
                "dc0 given, but a {:?} has no cell state",
                self.config.cell()
            )));
        }
        check("dc0", s.c, &out.dc0)?;
        let packed = self.packed()?;
        let dest = engine::GradDest {
            dx: out.dx,
            dh0: out.dh0,
            dc0: out.dc0,
            dparams: out.dparams,
        };
        self.run_backward(packed, trace, || {
            engine::backward_into(&self.config, packed, &self.pool, &trace.inner, grads, dest)
        })
    }

    fn check_trace(&self, trace: &Trace) -> Result<()> {
        self.check_training()?;
        if !self.made(trace) {
            return Err(Error::InvalidArgument(
                "the trace was produced by another model".into(),
            ));
        }
        if trace.model_version != self.version {
            return Err(Error::InvalidArgument(
                "the trace was produced before this model's parameters changed".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigBuilder;
    use crate::{CellKind, Direction};

    /// What `rule` (`engine::forward_runs_alone` or `backward_runs_alone`)
    /// says of a call over `shape` (batch, steps) to a model of `config`,
    /// given `threads` threads.
    fn alone(
        rule: fn(&Config, &Packed, (usize, usize), usize) -> bool,
        config: ConfigBuilder,
        shape: (usize, usize),
        threads: usize,
    ) -> bool {
        let model = Model::zeros(config.build().unwrap());
        rule(model.config(), model.packed().unwrap(), shape, threads)
    }

    fn lstm(input: usize, hidden: usize) -> ConfigBuilder {
        Config::builder(CellKind::Lstm, input, hidden)
    }

    /// The calls that run on the caller's thread: those the engine would
    /// give one thread of the pool anyway (and, in a pool of one, all).
    #[test]
    #[cfg_attr(
        miri,
        ignore = "packs models of up to 2M weights (Miri takes about 40 s per 40k floats), and the rules are safe code"
    )]
    fn a_call_runs_alone_where_each_team_has_one_member_and_nothing_forks() {
        let forward = engine::forward_runs_alone;
        assert!(
            alone(forward, lstm(16, 16), (1, 200), 2),
            "a small LSTM at batch 1"
        );
        assert!(alone(forward, lstm(16, 16), (1, 200), 16));
        assert!(
            !alone(forward, lstm(512, 512), (64, 50), 2),
            "a block of the batch each"
        );
        assert!(alone(forward, lstm(512, 512), (64, 50), 1), "a pool of one");
        // One member steps, but the pool's others take the projection.
        assert!(!alone(forward, lstm(4096, 16), (1, 1000), 2));
        assert!(alone(forward, lstm(4096, 16), (1, 1000), 1));
        // The two directions take a member each.
        let both = lstm(256, 256).direction(Direction::BidirectionalConcat);
        assert!(!alone(forward, both, (1, 100), 2));
        // Any layer that splits keeps the call on the pool.
        assert!(!alone(forward, lstm(16, 512).num_layers(2), (64, 50), 2));
    }

    /// The same for a backward call, whose products over all steps fork
    /// too once large enough.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "packs models of up to 2M weights (Miri takes about 40 s per 40k floats), and the rules are safe code"
    )]
    fn a_backward_call_runs_alone_where_no_team_product_or_transpose_forks() {
        let backward = engine::backward_runs_alone;
        assert!(
            alone(backward, lstm(16, 16), (1, 200), 2),
            "a small LSTM at batch 1"
        );
        // 64 gate columns of 20,000 rows: the transpose forks.
        assert!(!alone(backward, lstm(16, 16), (1, 20_000), 2));
        assert!(
            alone(backward, lstm(16, 16), (1, 20_000), 1),
            "a pool of one"
        );
        // dW: 64 × 1000 rows × 4096 inputs, beyond a product on one thread.
        assert!(!alone(backward, lstm(4096, 16), (1, 1000), 2));
        assert!(
            !alone(backward, lstm(512, 512), (64, 50), 2),
            "a block of the batch each"
        );
    }
}
