//! `Model::call_memory` against what calls really allocate: a counting
//! global allocator measures the peak above the start of each call. The
//! reported figures must bound it, and stay within a small factor of it.
//! One test in its own binary, so no other test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rnn::rng::SplitMix64;
use rnn::{
    Activation, CellKind, Config, Direction, GruVariant, Input, Layout as DataLayout, Model,
    OutputGrads,
};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded; `ptr` came from this allocator with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Old and new blocks may both exist for a moment.
            grew(new_size);
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`; returns its result, the peak bytes above the start while it
/// ran, and the bytes still allocated by it afterwards.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, isize) {
    let start = CURRENT.load(Ordering::SeqCst);
    PEAK.store(start, Ordering::SeqCst);
    let r = f();
    let peak = PEAK.load(Ordering::SeqCst) - start;
    let kept = CURRENT.load(Ordering::SeqCst) as isize - start as isize;
    (r, peak, kept)
}

fn check(what: &str, measured: usize, bound: usize) {
    println!("  {what}: measured {measured} bytes, bound {bound}");
    assert!(
        measured <= bound,
        "{what}: {measured} bytes > the bound {bound}"
    );
    // Useful, not just safe: within a small factor of what really happens
    // (plus a little for the fixed bookkeeping of tiny calls).
    assert!(
        bound <= 4 * measured + (1 << 20),
        "{what}: the bound {bound} is far above the {measured} bytes measured"
    );
}

#[test]
fn call_memory_bounds_what_calls_allocate() {
    use CellKind::*;
    let cases = [
        (
            "lstm 2 layers bi, projection, peepholes, batch-first",
            Config::builder(Lstm, 5, 24)
                .num_layers(2)
                .direction(Direction::BidirectionalConcat)
                .proj_size(4)
                .peepholes(true)
                .layout(DataLayout::BatchFirst),
            7,
            6,
        ),
        (
            "lstm, gate and cell clips",
            Config::builder(Lstm, 16, 64)
                .gate_clip(Some(3.0))
                .cell_clip(Some(2.0)),
            20,
            33,
        ),
        (
            "gru reset-before, 3 layers",
            Config::builder(Gru, 9, 40).num_layers(3),
            12,
            10,
        ),
        (
            "gru linear-before-reset, bi sum",
            Config::builder(Gru, 4, 17)
                .gru_variant(GruVariant::LinearBeforeReset)
                .direction(Direction::BidirectionalSum),
            30,
            3,
        ),
        (
            "rnn relu, large batch",
            Config::builder(Rnn, 32, 128).activation(Activation::Relu),
            10,
            64,
        ),
    ];
    // Start librnn's threads outside any measurement.
    let warm = Model::random(Config::builder(Rnn, 1, 1).build().unwrap(), 0);
    warm.forward_inference(&Input::new(&[0.0], 1, 1)).unwrap();

    for (name, builder, seq_len, batch) in cases {
        println!("{name}, T = {seq_len}, N = {batch}");
        let config = builder.build().unwrap();
        let model = Model::random(config.clone(), 1);
        let bound = model.call_memory(seq_len, batch).unwrap();
        let mut rng = SplitMix64::new(2);
        let x = rng.uniform_vec(seq_len * batch * config.input_size(), -1.0, 1.0);
        let input = Input::new(&x, seq_len, batch);
        let shapes = rnn::Shapes::new(&config, seq_len, batch).unwrap();
        let (mut y, mut h_n, mut c_n) = (
            vec![0.0; shapes.y],
            vec![0.0; shapes.h],
            vec![0.0; shapes.c],
        );
        let dy = rng.uniform_vec(shapes.y, -1.0, 1.0);

        // The first call packs the weights, and no c_n is asked for.
        let (r, peak, _) = measure(|| model.forward_inference_into(&input, &mut y, &mut h_n, None));
        r.unwrap();
        check(
            "first inference (packing)",
            peak,
            bound.packing + bound.inference,
        );

        model.release_memory();
        let (r, peak, _) = measure(|| model.forward_inference_into(&input, &mut y, &mut h_n, None));
        r.unwrap();
        check("inference", peak, bound.inference);

        model.release_memory();
        let c_out = config.has_cell_state().then_some(&mut c_n[..]);
        let (trace, peak, kept) =
            measure(|| model.forward_training_into(&input, &mut y, &mut h_n, c_out));
        let trace = trace.unwrap();
        check(
            "training forward",
            peak,
            bound.training_forward + bound.trace,
        );
        let held = (kept - model.idle_bytes() as isize).max(0) as usize;
        check("trace", held, bound.trace);

        model.release_memory();
        let (grads, peak, _) = measure(|| model.backward(&trace, &OutputGrads::new(&dy)));
        grads.unwrap();
        check("backward", peak, bound.backward);
        drop(trace);

        // An update makes the next call pack again, into the storage the
        // old packing gave back to the model's pool: almost nothing new.
        model.release_memory();
        let (r, plain, _) =
            measure(|| model.forward_inference_into(&input, &mut y, &mut h_n, None));
        r.unwrap();
        let mut model = model;
        model.params_mut()[0] += 0.5;
        let (r, repacking, _) =
            measure(|| model.forward_inference_into(&input, &mut y, &mut h_n, None));
        r.unwrap();
        let packed = model.packed_bytes().unwrap();
        println!("  repacking: {repacking} bytes at peak against {plain}, {packed} packed");
        assert!(
            repacking <= plain + packed / 10,
            "packing again took {} new bytes of {packed}",
            repacking - plain
        );
    }
}
