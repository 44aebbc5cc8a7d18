//! The machine's single-core f32 FMA peak per ISA, so every engine figure
//! can be read as a fraction of it. Independent FMA chains in registers,
//! counted as 2 FLOPs per lane per FMA.
//!
//! Run: `cargo bench --bench peak`

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    for isa in rnn::Isa::supported() {
        let best = (0..3)
            .map(|_| rnn::kernels::dispatch::measure_fma_peak(isa, 0.3).unwrap())
            .fold(0.0, f64::max);
        println!("fma peak {:>6}: {best:7.1} GFLOP/s (one core)", isa.name());
    }
}
