#![doc = include_str!("../README.md")]
#![warn(missing_debug_implementations)]

pub mod attention;
pub mod config;
mod engine;
pub mod error;
pub mod ffi;
mod files;
mod gemm;
pub mod interop;
pub mod io;
pub mod kernels;
pub mod model;
pub mod precision;
pub mod reference;
pub mod rng;
mod threads;
pub mod train;

pub use config::{
    Activation, CellKind, Coded, Config, ConfigBuilder, Direction, GruVariant, Layout, ParamKind,
};
pub use error::{Error, Result};
pub use io::{CallMemory, GradientBuffers, Gradients, Input, Output, OutputGrads, Shapes};
pub use kernels::Isa;
pub use model::{Model, Trace};
pub use precision::Precision;
