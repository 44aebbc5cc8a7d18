//! Training on top of the model's forward and backward passes: truncated
//! BPTT, gradient clipping, a dense output layer with softmax cross-entropy
//! and mean squared error, SGD with momentum and Adam, and checkpoints.

pub mod checkpoint;
mod clip;
mod dense;
mod optim;
mod tbptt;

pub use checkpoint::{load, save, Checkpoint};
pub use clip::{clip_grad_norm, clip_grad_norm_all, clip_grad_value};
pub use dense::{mse, softmax_cross_entropy, softmax_in_place, Dense, IGNORE};
pub use optim::{Adam, Sgd};
pub use tbptt::{truncated_bptt, State, TbpttResult};
