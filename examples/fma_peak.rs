fn main() { for isa in rnn::Isa::supported() { println!("{isa:?}: {:.1} GFLOP/s", rnn::kernels::dispatch::measure_fma_peak(isa, 0.5).unwrap()); } }
