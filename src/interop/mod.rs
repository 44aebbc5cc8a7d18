//! Weights from other frameworks: PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU`
//! state dicts and the ONNX `RNN` / `LSTM` / `GRU` operators' inputs, in both
//! directions, with their gate orders and layouts (see DESIGN.md).

pub mod onnx;
pub mod pytorch;
