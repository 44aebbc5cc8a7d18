//! librnn's work runs on its own pool (or the caller's thread, or a
//! stream's helpers), never on rayon's global pool, which may be the
//! caller's own and busy: packing a large model and a `Dense` layer's
//! backward once started that pool as well. A file of its own, so that no
//! other test's threads come and go meanwhile.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use rnn::train::Dense;
use rnn::{CellKind, Config, Input, Model};

/// The names of this process's threads, by thread id.
fn threads() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let entry = entry.unwrap();
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            name.trim().to_owned(),
        ));
    }
    out
}

#[test]
fn every_thread_a_call_starts_is_one_of_librnns() {
    let before = threads();
    // Large enough that packing, the projection, the products and the
    // transposes each split where the pool has several threads.
    let config = Config::builder(CellKind::Lstm, 256, 256).build().unwrap();
    let model = Model::random(config, 1);
    let (t, n) = (20, 32);
    let x = vec![0.25f32; t * n * 256];
    let (out, trace) = model.forward_training(&Input::new(&x, t, n)).unwrap();
    let grads = rnn::OutputGrads::new(&out.y);
    model.backward(&trace, &grads).unwrap();
    let dense = Dense::new(256, 64, 2);
    let rows = t * n * 4;
    let dx = vec![0.5f32; rows * 256];
    let y = dense.forward(&dx).unwrap();
    dense.backward(&dx, &y).unwrap();
    let started: Vec<_> = threads()
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect();
    for (id, name) in &started {
        assert!(
            name.starts_with("librnn-"),
            "thread {id} ({name:?}) is not one of librnn's: {started:?}"
        );
    }
}
