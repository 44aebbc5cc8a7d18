#![doc = include_str!("../README.md")]
#![warn(missing_debug_implementations)]
// Every public item is documented; CI builds with warnings denied.
#![warn(missing_docs)]

// The public surface a Rust user may rely on: the modules below that are
// `pub` and not `#[doc(hidden)]`, and the re-exports at the crate root.
// `kernels` is public for `Isa` and the vectorised functions' checks
// (`tanh_in_place`, `sigmoid_in_place`, `measure_fma_peak`, `MAX_ULP`);
// `reference` is the f64 oracle, public so that users can check their own
// models against it; `rng` the generator the examples and tests share.

pub mod attention;
pub mod config;
mod engine;
pub mod error;
// The C ABI: `pub` so that its functions are exported and cbindgen sees
// them; hidden from the Rust docs because Rust users call the Rust API
// (the header, include/librnn.h, documents it).
#[cfg(feature = "capi")]
#[doc(hidden)]
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
mod stream;
mod thread_slot;
mod threads;
pub mod train;

pub use config::{
    Activation, ActivationFunction, ActivationKind, CellKind, Coded, Config, ConfigBuilder,
    Direction, EmptySequenceState, GruVariant, Layout, ParamKind,
};
pub use error::{Error, Result};
pub use io::{CallMemory, GradientBuffers, Gradients, Input, Output, OutputGrads, Shapes};
pub use kernels::Isa;
pub use model::{Model, Trace};
pub use precision::Precision;
pub use stream::Stream;
