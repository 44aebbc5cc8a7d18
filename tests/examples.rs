//! The examples as a new user runs them, with bad arguments: a clear
//! message under one prefix and a non-zero exit, never a panic or an abort;
//! `--help` on stdout; char_rnn's checkpoints refused when they belong to
//! another network, and its loss history kept across `--resume`.

mod common;

use common::native;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The example binary `name`, built with this test's profile.
fn example(name: &str) -> PathBuf {
    let release = !cfg!(debug_assertions);
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "--example", name]);
    if release {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build --example {name}");
    // This test runs from target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join(name)
}

fn run(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .output()
        .expect("the example starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A refused run: exit `code`, one line (or more) under `prefix`, naming
/// `mentions`, and no panic.
fn refused(out: &Output, code: i32, prefix: &str, mentions: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit status; stderr: {err}");
    assert!(err.starts_with(prefix), "prefix {prefix:?}: {err}");
    assert!(err.contains(mentions), "{mentions:?} in: {err}");
    assert!(!err.contains("panicked"), "a panic: {err}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("librnn-examples-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn char_rnn_refuses_bad_arguments_with_a_message() {
    if !native("cc") {
        return;
    }
    let exe = example("char_rnn");
    let dir = scratch("args");
    let out_dir = dir.join("out");
    let out = out_dir.to_str().unwrap();
    for (args, mentions) in [
        (vec!["--seconds", "-1"], "--seconds"),
        (vec!["--seconds", "nan"], "--seconds"),
        (vec!["--lr", "nan"], "--lr"),
        (vec!["--lr", "0"], "--lr"),
        (vec!["--hidden", "-3"], "--hidden"),
        (vec!["--temperature", "inf"], "--temperature"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--cell", "transformer"], "--cell"),
        (vec!["--bogus"], "unknown option"),
    ] {
        refused(&run(&exe, &args), 2, "char_rnn: ", mentions);
    }
    // A text too short to hold out 10 %, or to fill one chunk: an error,
    // not an index out of bounds.
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/genesis.txt"))
            .unwrap();
    for (len, mentions) in [(10, "held out"), (60, "--seq-len")] {
        let path = dir.join(format!("short{len}.txt"));
        std::fs::write(&path, &text[..len]).unwrap();
        let args = [
            "--text",
            path.to_str().unwrap(),
            "--seconds",
            "1",
            "--out",
            out,
        ];
        refused(&run(&exe, &args), 1, "char_rnn: ", mentions);
    }
    // A network too large for memory: an out-of-memory error, not an abort.
    let args = ["--hidden", "60000", "--seconds", "1", "--out", out];
    refused(&run(&exe, &args), 1, "char_rnn: ", "memory");
    // --help: the usage on stdout, success.
    let help = run(&exe, &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("options:"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn char_rnn_keeps_other_checkpoints_and_its_loss_history() {
    if !native("cc") {
        return;
    }
    let exe = example("char_rnn");
    let dir = scratch("checkpoints");
    let out = dir.to_str().unwrap();
    let tiny = [
        "--hidden",
        "8",
        "--seq-len",
        "8",
        "--batch",
        "2",
        "--out",
        out,
    ];
    let first = run(&exe, &[&tiny[..], &["--seconds", "1"]].concat());
    assert!(first.status.success(), "{}", stderr(&first));
    let path = dir.join("checkpoint.bin");
    let saved = std::fs::read(&path).unwrap();
    let steps_before = rnn::train::load(&path)
        .unwrap()
        .extra("loss_history")
        .unwrap()
        .len()
        / 2;
    assert!(steps_before > 0);
    // Another cell into the same directory: refused, the file untouched.
    let gru = run(
        &exe,
        &[&tiny[..], &["--cell", "gru", "--seconds", "1"]].concat(),
    );
    refused(&gru, 1, "char_rnn: ", "would overwrite");
    // --resume with a network that disagrees: refused.
    let args = [&tiny[..], &["--resume", "--hidden", "16", "--seconds", "1"]].concat();
    refused(&run(&exe, &args), 1, "char_rnn: ", "--resume");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        saved,
        "the checkpoint is unchanged"
    );
    // --resume as saved: the history continues from the first run's.
    let again = run(&exe, &[&tiny[..], &["--resume", "--seconds", "1"]].concat());
    assert!(again.status.success(), "{}", stderr(&again));
    let history = rnn::train::load(&path)
        .unwrap()
        .extra("loss_history")
        .unwrap()
        .to_vec();
    let steps: Vec<f32> = history.chunks_exact(2).map(|p| p[0]).collect();
    assert!(
        steps.len() > steps_before,
        "{} after {steps_before}",
        steps.len()
    );
    assert_eq!(
        steps[0], 1.0,
        "the history starts at the first run's first step"
    );
    assert!(
        steps.windows(2).all(|w| w[1] > w[0]),
        "steps increase across the runs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn seq2seq_refuses_bad_arguments_with_a_message() {
    if !native("cc") {
        return;
    }
    let exe = example("seq2seq");
    for (args, mentions) in [
        (vec!["--seconds", "-1"], "--seconds"),
        (vec!["--score", "cosine"], "--score"),
        (vec!["--bogus"], "unknown option"),
        (vec!["--lr", "nan"], "--lr"),
    ] {
        refused(&run(&exe, &args), 2, "seq2seq: ", mentions);
    }
    let dir = scratch("seq2seq");
    let args = ["--out", dir.to_str().unwrap(), "--translate", "4 July 1976"];
    refused(&run(&exe, &args), 1, "seq2seq: ", "train first");
    let help = run(&exe, &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("options:"));
    let _ = std::fs::remove_dir_all(&dir);
}
