//! `RNN_ISA`, `RNN_BF16_DOT` and `RNN_MIN_PART_MACS` are checked where a C
//! user makes a model, not at the first call: an unknown or bad value is
//! RNN_INVALID_ARGUMENT, an ISA this CPU lacks RNN_UNSUPPORTED, each naming
//! the variable. Each is read once per process, so each case runs this
//! test again in a child process.

mod common;

use std::process::Command;

use rnn::ffi::{rnn_config_default, rnn_model_create, rnn_status};

const CHILD: &str = "LIBRNN_TEST_ISA_EXPECT";
const NAME: &str = "a_bad_rnn_isa_is_reported_where_a_model_is_made";

/// In the child: make a model and check the answer (`expect` is
/// `invalid` or `unsupported`, then `:` and the variable's name).
fn child(expect: &str) {
    let (expect, variable) = expect.split_once(':').expect("expect:VARIABLE");
    let mut config = rnn_config_default();
    config.input_size = 3;
    config.hidden_size = 4;
    let mut model = std::ptr::null_mut();
    // SAFETY: valid pointers to a config and an out slot.
    let status = unsafe { rnn_model_create(&config, &mut model) };
    let want = match expect {
        "unsupported" => rnn_status::RNN_UNSUPPORTED,
        _ => rnn_status::RNN_INVALID_ARGUMENT,
    };
    assert_eq!(status, want, "{variable}={:?}", std::env::var(variable));
    assert!(model.is_null(), "no model on failure");
    // SAFETY: a NUL-terminated, thread-local message.
    let message = unsafe { std::ffi::CStr::from_ptr(rnn::ffi::rnn_last_error_message()) };
    assert!(message.to_string_lossy().contains(variable), "{message:?}");
}

#[test]
fn a_bad_rnn_isa_is_reported_where_a_model_is_made() {
    if let Ok(expect) = std::env::var(CHILD) {
        child(&expect);
        return;
    }
    // Under qemu (tests built for another architecture) a child process of
    // this one does not start.
    if !common::native("cc") {
        return;
    }
    let missing = if cfg!(target_arch = "aarch64") {
        "avx2"
    } else {
        "neon"
    };
    let cases = [
        ("RNN_ISA", "sse9", "invalid"),
        ("RNN_ISA", missing, "unsupported"),
        ("RNN_BF16_DOT", "sideways", "invalid"),
        ("RNN_MIN_PART_MACS", "lots", "invalid"),
        ("RNN_MIN_PART_MACS", "0", "invalid"),
    ];
    for (variable, value, expect) in cases {
        let run = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env_remove("RNN_ISA")
            .env_remove("RNN_BF16_DOT")
            .env_remove("RNN_MIN_PART_MACS")
            .env(variable, value)
            .env(CHILD, format!("{expect}:{variable}"))
            .output();
        let out = run.expect("the test binary starts again");
        assert!(
            out.status.success(),
            "{variable}={value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
