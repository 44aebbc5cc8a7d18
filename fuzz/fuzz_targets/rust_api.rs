//! Drives the Rust API with arbitrary configurations, shapes, lengths and
//! buffers (wrong sizes, NaN, infinities, huge values). Every call must
//! return `Ok` with correctly sized outputs or a typed `Err`; a panic is a bug.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../common/values.rs"]
mod values;
use rnn::{
    Activation, ActivationFunction, ActivationKind, CellKind, Config, Direction, EmptySequenceState,
    GruVariant, Input, Layout, Model, OutputGrads, Shapes,
};
use values::value;

/// A buffer of `len` elements, or occasionally of a wrong length.
fn buffer(u: &mut Unstructured, len: usize) -> Result<Vec<f32>> {
    let len = match u.int_in_range(0..=15u8)? {
        0 => len.saturating_sub(1),
        1 => len + 1,
        _ => len,
    };
    (0..len.min(1 << 14)).map(|_| value(u)).collect()
}

fn config(u: &mut Unstructured) -> Result<std::result::Result<Config, rnn::Error>> {
    let cell = *u.choose(&[CellKind::Rnn, CellKind::Lstm, CellKind::Gru])?;
    let mut b = Config::builder(cell, u.int_in_range(0..=6)?, u.int_in_range(0..=6)?)
        .num_layers(u.int_in_range(0..=3)?)
        .direction(*u.choose(&[
            Direction::Forward,
            Direction::Reverse,
            Direction::BidirectionalConcat,
            Direction::BidirectionalSum,
        ])?)
        .layout(*u.choose(&[Layout::TimeMajor, Layout::BatchFirst])?);
    if u.ratio(1, 4)? {
        b = b.activation(Activation::Relu);
    }
    if u.ratio(1, 4)? {
        b = b.gru_variant(GruVariant::LinearBeforeReset);
    }
    if u.ratio(1, 4)? {
        b = b.peepholes(true);
    }
    if u.ratio(1, 4)? {
        b = b.proj_size(u.int_in_range(0..=4)?);
    }
    if u.ratio(1, 4)? {
        b = b.cell_clip(Some(value(u)?));
    }
    if u.ratio(1, 4)? {
        b = b.gate_clip(Some(value(u)?));
    }
    if u.ratio(1, 4)? {
        b = b.input_forget(true);
    }
    if u.ratio(1, 4)? {
        // Any ONNX functions, any count (a wrong one is an error), any α, β.
        let count = u.int_in_range(0..=7)?;
        let mut functions = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = *u.choose(<ActivationKind as rnn::Coded>::ALL)?;
            functions.push(ActivationFunction::with(kind, value(u)?, value(u)?));
        }
        b = b.activations(&functions);
    }
    if u.ratio(1, 4)? {
        b = b.empty_sequence_state(EmptySequenceState::Zeros);
    }
    Ok(b.build())
}

fn run(u: &mut Unstructured) -> Result<()> {
    let Ok(config) = config(u)? else {
        return Ok(());
    };
    let params = buffer(u, config.num_params())?;
    let Ok(model) = Model::from_params(config.clone(), params) else {
        return Ok(());
    };
    let (seq_len, batch) = (u.int_in_range(0..=5)?, u.int_in_range(0..=4)?);
    let shapes = Shapes::new(&config, seq_len, batch).expect("small shapes never overflow");
    let x = buffer(u, shapes.x)?;
    let lens: Vec<usize> = (0..batch + usize::from(u.ratio(1, 8)?))
        .map(|_| u.int_in_range(0..=seq_len + 1))
        .collect::<Result<_>>()?;
    let h0 = buffer(u, shapes.h)?;
    let c0 = buffer(u, shapes.c.max(1))?;
    let mut input = Input::new(&x, seq_len, batch);
    if u.arbitrary()? {
        input = input.with_seq_lens(&lens);
    }
    if u.arbitrary()? {
        input = input.with_h0(&h0);
    }
    if u.arbitrary()? {
        input = input.with_c0(&c0);
    }
    let Ok((out, trace)) = model.forward_training(&input) else {
        return Ok(());
    };
    assert_eq!(out.y.len(), shapes.y);
    assert_eq!(out.h_n.len(), shapes.h);
    let inference = model
        .forward_inference(&input)
        .expect("training accepted the same input");
    assert_eq!(inference.y.len(), out.y.len());
    let dy = buffer(u, shapes.y)?;
    let dh = buffer(u, shapes.h)?;
    let mut grads = OutputGrads::new(&dy);
    if u.arbitrary()? {
        grads = grads.with_dh_n(&dh);
    }
    if let Ok(g) = model.backward(&trace, &grads) {
        assert_eq!(g.dx.len(), shapes.x);
        assert_eq!(g.dh0.len(), shapes.h);
        assert_eq!(g.dparams.len(), config.num_params());
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
