//! Drives the C ABI as a careless C caller would: arbitrary configuration
//! fields (invalid enum values, zero and overflowing sizes), NULL pointers,
//! buffer lengths that are too short or too long (never longer than the real
//! allocation: that would be the caller's undefined behaviour, not ours),
//! and NaN, infinite and huge values. Every call must return a status; a
//! panic caught at the boundary (RNN_INTERNAL) is a bug.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../common/values.rs"]
mod values;
use rnn::ffi::*;
use std::ptr;
use values::value;

/// A size that is usually small and valid, sometimes 0 or absurd.
fn size(u: &mut Unstructured, max: usize) -> Result<usize> {
    Ok(match u.int_in_range(0..=19u8)? {
        0 => 0,
        1 => usize::MAX / 3,
        2 => 1 << 40,
        _ => u.int_in_range(1..=max)?,
    })
}

/// A real buffer and the (pointer, length) a caller passes for it: the true
/// length, a shorter or longer claim within the allocation, or NULL.
struct Buf {
    data: Vec<f32>,
    ptr_null: bool,
    claimed: usize,
}

impl Buf {
    fn new(u: &mut Unstructured, want: usize) -> Result<Buf> {
        let want = want.min(1 << 12);
        let data: Vec<f32> = (0..want + 1).map(|_| value(u)).collect::<Result<_>>()?;
        let claimed = match u.int_in_range(0..=9u8)? {
            0 => want.saturating_sub(1),
            1 => want + 1,
            2 => 0,
            _ => want,
        };
        Ok(Buf {
            data,
            ptr_null: u.ratio(1, 12)?,
            claimed,
        })
    }
    fn ptr(&self) -> *const f32 {
        if self.ptr_null {
            ptr::null()
        } else {
            self.data.as_ptr()
        }
    }
    fn ptr_mut(&mut self) -> *mut f32 {
        if self.ptr_null {
            ptr::null_mut()
        } else {
            self.data.as_mut_ptr()
        }
    }
}

fn ok(status: rnn_status) -> bool {
    assert_ne!(
        status,
        rnn_status::RNN_INTERNAL,
        "a panic reached the boundary"
    );
    status == rnn_status::RNN_OK
}

fn run(u: &mut Unstructured) -> Result<()> {
    let mut cfg = rnn_config_default();
    cfg.cell = u.int_in_range(0..=3)?;
    cfg.activation = u.int_in_range(0..=2)?;
    cfg.direction = u.int_in_range(0..=4)?;
    cfg.gru_variant = u.int_in_range(0..=2)?;
    cfg.layout = u.int_in_range(0..=2)?;
    cfg.peepholes = u.int_in_range(0..=2)?;
    cfg.input_size = size(u, 6)?;
    cfg.hidden_size = size(u, 9)?;
    cfg.proj_size = if u.ratio(1, 4)? { size(u, 4)? } else { 0 };
    cfg.num_layers = size(u, 3)?;
    cfg.cell_clip = if u.ratio(1, 4)? { value(u)? } else { 0.0 };
    cfg.gate_clip = if u.ratio(1, 4)? { value(u)? } else { 0.0 };
    cfg.input_forget = u.int_in_range(0..=2)?;
    let mut ext = rnn_config_ext_default();
    ext.empty_sequence_state = u.int_in_range(0..=2)?;
    ext.gate_clip_set = u.int_in_range(0..=2)?;
    for a in ext.activations.iter_mut() {
        if u.ratio(1, 4)? {
            a.function = u.int_in_range(0..=12)?;
            a.alpha = value(u)?;
            a.beta = value(u)?;
        }
    }

    let mut model: *mut rnn_model = ptr::null_mut();
    // SAFETY: valid pointers to a config, its extension and an out slot.
    if !ok(unsafe { rnn_model_create_ext(&cfg, &ext, &mut model) }) {
        assert!(model.is_null());
        return Ok(());
    }
    let (seq_len, batch) = (u.int_in_range(0..=5usize)?, u.int_in_range(0..=4usize)?);
    let mut sizes = rnn_sizes::default();
    // SAFETY: model from rnn_model_create, sizes writable.
    assert!(ok(unsafe {
        rnn_sizes_for(model, seq_len, batch, &mut sizes)
    }));

    let params = Buf::new(u, sizes.params)?;
    // SAFETY: the claimed length never exceeds the allocation.
    let _ = ok(unsafe { rnn_model_set_params(model, params.ptr(), params.claimed) });
    let x = Buf::new(u, sizes.x)?;
    let h0 = Buf::new(u, sizes.h)?;
    let c0 = Buf::new(u, sizes.c)?;
    let lens: Vec<usize> = (0..=batch)
        .map(|_| u.int_in_range(0..=seq_len + 1))
        .collect::<Result<_>>()?;
    let lens_len = if u.ratio(1, 8)? { batch + 1 } else { batch };
    let use_lens = u.arbitrary::<bool>()?;
    let input = rnn_input {
        x: x.ptr(),
        x_len: x.claimed,
        seq_len,
        batch,
        seq_lens: if use_lens { lens.as_ptr() } else { ptr::null() },
        seq_lens_len: if use_lens { lens_len } else { 0 },
        h0: if u.arbitrary()? {
            h0.ptr()
        } else {
            ptr::null()
        },
        h0_len: h0.claimed,
        c0: if u.arbitrary()? {
            c0.ptr()
        } else {
            ptr::null()
        },
        c0_len: c0.claimed,
    };
    let (mut y, mut h_n, mut c_n) = (
        Buf::new(u, sizes.y)?,
        Buf::new(u, sizes.h)?,
        Buf::new(u, sizes.c)?,
    );
    let output = rnn_output {
        y: y.ptr_mut(),
        y_len: y.claimed,
        h_n: h_n.ptr_mut(),
        h_n_len: h_n.claimed,
        c_n: if u.arbitrary()? {
            c_n.ptr_mut()
        } else {
            ptr::null_mut()
        },
        c_n_len: c_n.claimed,
    };
    // SAFETY: every claimed length fits its allocation.
    let _ = ok(unsafe { rnn_forward_inference(model, &input, &output) });
    let mut trace: *mut rnn_trace = ptr::null_mut();
    // SAFETY: as above.
    if ok(unsafe { rnn_forward_training(model, &input, &output, &mut trace) }) {
        let (dy, dh) = (Buf::new(u, sizes.y)?, Buf::new(u, sizes.h)?);
        let og = rnn_output_grads {
            dy: dy.ptr(),
            dy_len: dy.claimed,
            dh_n: if u.arbitrary()? {
                dh.ptr()
            } else {
                ptr::null()
            },
            dh_n_len: dh.claimed,
            dc_n: ptr::null(),
            dc_n_len: 0,
        };
        let (mut dx, mut dp) = (Buf::new(u, sizes.x)?, Buf::new(u, sizes.params)?);
        let grads = rnn_gradients {
            dx: dx.ptr_mut(),
            dx_len: dx.claimed,
            dh0: ptr::null_mut(),
            dh0_len: 0,
            dc0: ptr::null_mut(),
            dc0_len: 0,
            dparams: dp.ptr_mut(),
            dparams_len: dp.claimed,
        };
        // SAFETY: as above; the trace came from this model.
        let _ = ok(unsafe { rnn_backward(model, trace, &og, &grads) });
        // Destroyed once: anything but RNN_OK is a bug.
        assert_eq!(rnn_trace_destroy(trace), rnn_status::RNN_OK);
    }
    assert_eq!(rnn_model_destroy(model), rnn_status::RNN_OK);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
