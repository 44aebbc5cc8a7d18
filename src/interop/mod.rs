//! Weights from other frameworks: PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU`
//! state dicts and the ONNX `RNN` / `LSTM` / `GRU` operators' inputs, in both
//! directions, with their gate orders and layouts (see DESIGN.md); and
//! safetensors files under PyTorch's names.

pub mod onnx;
pub mod pytorch;
pub mod safetensors;
