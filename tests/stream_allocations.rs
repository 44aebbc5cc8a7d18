//! A stream's steps allocate nothing once it has taken a few (real-time
//! callers, an audio callback say, must not wait on the allocator): a
//! counting global allocator counts the allocations made while a stream
//! steps, on every thread (the stream's helpers included). One test in its
//! own binary, so no other test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rnn::rng::SplitMix64;
use rnn::{CellKind, Config, GruVariant, Model, Precision};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter only observes that an allocation happened.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded; `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn stream_steps_allocate_nothing_once_warm() -> Result<(), rnn::Error> {
    let configs = [
        Config::builder(CellKind::Lstm, 12, 64).build()?,
        Config::builder(CellKind::Lstm, 12, 48)
            .num_layers(2)
            .proj_size(16)
            .peepholes(true)
            .build()?,
        Config::builder(CellKind::Gru, 7, 40).build()?,
        Config::builder(CellKind::Gru, 7, 40)
            .gru_variant(GruVariant::LinearBeforeReset)
            .num_layers(2)
            .build()?,
        Config::builder(CellKind::Rnn, 5, 33).build()?,
        // Large enough for a team of two threads where the pool has them
        // (a stream's helper threads then step with the caller).
        Config::builder(CellKind::Lstm, 40, 256).build()?,
        Config::builder(CellKind::Gru, 40, 256).build()?,
    ];
    let mut rng = SplitMix64::new(3);
    for config in configs {
        for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
            for batch in [1, 3] {
                let model = Model::random(config.clone(), 7).with_precision(precision);
                let input = config.input_size();
                let x = rng.uniform_vec(batch * input, -1.0, 1.0);
                let active: Vec<bool> = (0..batch).map(|b| b != 1).collect();
                let mut stream = model.stream(batch)?;
                // Warm: the first steps pack the model, size the kept
                // state and the threads' scratch, and try both placements.
                for _ in 0..40 {
                    stream.step(&x)?;
                    stream.step_items(&x, &active)?;
                }
                let (h, c) = (stream.h().to_vec(), stream.c().to_vec());
                let before = ALLOCATIONS.load(Ordering::SeqCst);
                for i in 0..40 {
                    // Items start new sequences, the whole stream starts
                    // again, a state is set: the steps after allocate
                    // nothing either.
                    match i % 10 {
                        3 => stream.reset_item(batch - 1)?,
                        6 => stream.reset(),
                        9 => stream.set_state(&h, Some(&c))?,
                        _ => {}
                    }
                    stream.step(&x)?;
                    stream.step_items(&x, &active)?;
                }
                let made = ALLOCATIONS.load(Ordering::SeqCst) - before;
                assert_eq!(
                    made,
                    0,
                    "{:?} H{} {} at batch {batch}: 80 warm steps (with resets and a state set) \
                     allocated {made} times",
                    config.cell(),
                    config.hidden_size(),
                    precision.name()
                );
            }
        }
    }
    #[cfg(feature = "capi")]
    c_stream_steps_allocate_nothing_once_warm();
    Ok(())
}

/// The same through the C ABI: `rnn_stream_step` adds its checks and the
/// thread's error message (a fixed buffer) to the step. (Called by the
/// test above: two tests would run at once and count each other's.)
#[cfg(feature = "capi")]
fn c_stream_steps_allocate_nothing_once_warm() {
    use rnn::ffi::*;
    let check = |status: rnn_status| assert!(matches!(status, rnn_status::RNN_OK));
    let mut config = rnn_config_default();
    config.cell = RNN_CELL_LSTM;
    config.input_size = 40;
    config.hidden_size = 256;
    let (mut model, mut stream) = (std::ptr::null_mut(), std::ptr::null_mut());
    let x = SplitMix64::new(4).uniform_vec(2 * 40, -1.0, 1.0);
    let mut y = vec![0.0f32; 2 * 256];
    let active = [1u8, 0];
    // SAFETY: each pointer is a live handle made above or a buffer of the
    // length passed with it.
    unsafe {
        check(rnn_model_create(&config, &mut model));
        check(rnn_model_init_random(model, 5));
        check(rnn_stream_create(model, 2, &mut stream));
        let mut steps = |count: usize| {
            for _ in 0..count {
                check(rnn_stream_step(
                    stream,
                    x.as_ptr(),
                    x.len(),
                    std::ptr::null(),
                    0,
                    y.as_mut_ptr(),
                    y.len(),
                ));
                check(rnn_stream_step(
                    stream,
                    x.as_ptr(),
                    x.len(),
                    active.as_ptr(),
                    active.len(),
                    y.as_mut_ptr(),
                    y.len(),
                ));
            }
        };
        steps(40);
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        steps(40);
        let made = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert_eq!(made, 0, "80 warm C stream steps allocated {made} times");
        check(rnn_stream_destroy(stream));
        check(rnn_model_destroy(model));
    }
}
