//! The safe Rust API: a [`Model`] owns a configuration and its f32 parameters
//! and runs forward inference, forward training and backward.
//!
//! The engine behind these calls may change (today it is the f64 reference;
//! the SIMD engine replaces it) without changing any signature here.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Config, ParamKind};
use crate::error::{check_len, Error, Result};
use crate::io::{Gradients, Input, Output, OutputGrads, Shapes};
use crate::reference;
use crate::rng::SplitMix64;

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A recurrent network: its configuration and its parameters.
///
/// Parameters are one flat `Vec<f32>`; [`Config::param_range`] says where each
/// tensor lives. A model is immutable during forward and backward calls, so a
/// `&Model` may be shared between threads that run calls concurrently.
#[derive(Debug)]
pub struct Model {
    config: Config,
    params: Vec<f32>,
    /// Identifies this model and this version of its parameters, so a
    /// [`Trace`] is never used with weights other than those that made it.
    id: u64,
    version: u64,
}

impl Clone for Model {
    fn clone(&self) -> Self {
        Model::with_params(self.config.clone(), self.params.clone())
    }
}

/// What [`Model::backward`] needs from a [`Model::forward_training`] call.
#[derive(Clone, Debug)]
pub struct Trace {
    model_id: u64,
    model_version: u64,
    inner: reference::Trace,
}

impl Trace {
    /// Shapes of the forward call that produced this trace.
    pub fn shapes(&self) -> &Shapes {
        self.inner.shapes()
    }
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn narrow_output(out: Output<f64>) -> Output<f32> {
    Output {
        y: narrow(&out.y),
        h_n: narrow(&out.h_n),
        c_n: out.c_n.as_deref().map(narrow),
    }
}

/// f64 copies of an input's buffers, so the reference can borrow them.
struct WideInput {
    x: Vec<f64>,
    h0: Option<Vec<f64>>,
    c0: Option<Vec<f64>>,
}

impl WideInput {
    fn new(input: &Input<'_>) -> Self {
        WideInput {
            x: widen(input.x),
            h0: input.h0.map(widen),
            c0: input.c0.map(widen),
        }
    }
    fn as_input<'a>(&'a self, input: &Input<'a>) -> Input<'a, f64> {
        Input {
            x: &self.x,
            seq_len: input.seq_len,
            batch: input.batch,
            seq_lens: input.seq_lens,
            h0: self.h0.as_deref(),
            c0: self.c0.as_deref(),
        }
    }
}

impl Model {
    fn with_params(config: Config, params: Vec<f32>) -> Model {
        Model {
            config,
            params,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            version: 0,
        }
    }

    /// A model whose parameters are all zero.
    pub fn zeros(config: Config) -> Model {
        let n = config.num_params();
        Model::with_params(config, vec![0.0; n])
    }

    /// A model with every parameter drawn uniformly from
    /// `[-1/sqrt(H), 1/sqrt(H))` (PyTorch's default), reproducibly from `seed`.
    pub fn random(config: Config, seed: u64) -> Model {
        let bound = 1.0 / (config.hidden_size() as f32).sqrt();
        let params = SplitMix64::new(seed).uniform_vec(config.num_params(), -bound, bound);
        Model::with_params(config, params)
    }

    /// A model with the given flat parameters (length [`Config::num_params`]).
    pub fn from_params(config: Config, params: Vec<f32>) -> Result<Model> {
        check_len("params", config.num_params(), params.len())?;
        Ok(Model::with_params(config, params))
    }

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
        Shapes::of_input(&self.config, input)?;
        let wide = WideInput::new(input);
        let out = reference::forward(&self.config, &widen(&self.params), &wide.as_input(input))?;
        Ok(narrow_output(out))
    }

    /// Like [`Model::forward_inference`], writing into caller-owned buffers:
    /// `y` and `h_n` must have the sizes of [`Shapes`]; `c_n` is optional (LSTM
    /// only) and must then have `Shapes::c` elements.
    pub fn forward_inference_into(
        &self,
        input: &Input<'_>,
        y: &mut [f32],
        h_n: &mut [f32],
        c_n: Option<&mut [f32]>,
    ) -> Result<()> {
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
        let out = self.forward_inference(input)?;
        y.copy_from_slice(&out.y);
        h_n.copy_from_slice(&out.h_n);
        if let (Some(dst), Some(src)) = (c_n, out.c_n) {
            dst.copy_from_slice(&src);
        }
        Ok(())
    }

    /// Forward pass that also keeps what [`Model::backward`] needs. Its
    /// outputs equal those of [`Model::forward_inference`].
    pub fn forward_training(&self, input: &Input<'_>) -> Result<(Output, Trace)> {
        Shapes::of_input(&self.config, input)?;
        let wide = WideInput::new(input);
        let (out, inner) =
            reference::forward_training(&self.config, &widen(&self.params), &wide.as_input(input))?;
        let trace = Trace {
            model_id: self.id,
            model_version: self.version,
            inner,
        };
        Ok((narrow_output(out), trace))
    }

    /// Backpropagation through time over the call that made `trace`: given
    /// the loss gradients with respect to `y` (and optionally `h_n`, `c_n`),
    /// returns those with respect to `x`, `h0`, `c0` and every parameter.
    pub fn backward(&self, trace: &Trace, grads: &OutputGrads<'_>) -> Result<Gradients> {
        if trace.model_id != self.id || trace.model_version != self.version {
            return Err(Error::InvalidArgument(
                "the trace was produced by another model, or before this model's parameters changed"
                    .into(),
            ));
        }
        grads.check(&self.config, trace.shapes())?;
        let dy = widen(grads.dy);
        let dh_n = grads.dh_n.map(widen);
        let dc_n = grads.dc_n.map(widen);
        let wide = OutputGrads {
            dy: &dy,
            dh_n: dh_n.as_deref(),
            dc_n: dc_n.as_deref(),
        };
        let g = reference::backward(&self.config, &widen(&self.params), &trace.inner, &wide)?;
        Ok(Gradients {
            dx: narrow(&g.dx),
            dh0: narrow(&g.dh0),
            dc0: g.dc0.as_deref().map(narrow),
            dparams: narrow(&g.dparams),
        })
    }
}
