//! The C ABI from real C and C++ programs (tests/c/): they are compiled with
//! the system compiler against include/librnn.h and the static library, then
//! run on case files whose expected values come from the Rust f64 reference.
//!
//! Also here: the committed header must equal what cbindgen generates now.
//! With `RNN_ASAN=1` the C program is also built with -fsanitize=address and
//! run; with `RNN_VALGRIND=1` it runs under valgrind (no errors, no leaks).
//! .ci/run sets both.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{native, random_batch, widen};
use rnn::rng::SplitMix64;
use rnn::{
    ActivationFunction, ActivationKind, CellKind, Coded, Config, Direction, EmptySequenceState,
    GruVariant, Input, Layout, Model, OutputGrads,
};

/// The static library, built once per run with this test's profile: the C
/// library is a package of its own (capi/), which `cargo test` builds no
/// library of, so this asks cargo for it as `tests/examples.rs` does for
/// the examples. With this test target: built alone, the C library's
/// dependencies resolve without the other packages' and the
/// dev-dependencies' features (criterion, the benchmarks', turns on
/// `either/use_std` under rayon, for one), so cargo would compile
/// librnn a second time (2.5 minutes on a 2-core machine); beside a test
/// target it reuses the librnn that `cargo test` built, and naming this
/// one builds no other test.
fn static_lib() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let args = [
                "build",
                "--quiet",
                "--workspace",
                "--lib",
                "--test",
                "c_abi",
            ];
            let mut build = Command::new(env!("CARGO"));
            build.args(args);
            if !cfg!(debug_assertions) {
                build.arg("--release");
            }
            let status = build.current_dir(root()).status().expect("cargo runs");
            assert!(status.success(), "cargo {}", args.join(" "));
            // This test runs from target/<profile>/deps/.
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("librnn.a")
        })
        .clone()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_abi");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn put_f32s(buf: &mut Vec<u8>, v: &[f32]) {
    buf.extend((v.len() as u64).to_le_bytes());
    for x in v {
        buf.extend(x.to_le_bytes());
    }
}

/// Writes one case file (format read by tests/c/consumer.c) with inputs,
/// weights and the reference's outputs and gradients.
fn write_case(path: &Path, config: &Config, seed: u64) {
    let (seq_len, batch) = (4, 3);
    let model = Model::random(config.clone(), seed);
    let mut rng = SplitMix64::new(seed ^ 0xc);
    let mut b = random_batch(&mut rng, config, seq_len, batch);
    b.seq_lens = vec![4, 0, 2];
    let params = widen(model.params());
    let (x, h0, c0) = (widen(&b.x), widen(&b.h0), widen(&b.c0));
    let mut input = Input::new(&x[..], seq_len, batch)
        .with_seq_lens(&b.seq_lens)
        .with_h0(&h0);
    if config.has_cell_state() {
        input = input.with_c0(&c0);
    }
    let (out, trace) = rnn::reference::forward_training(config, &params, &input).unwrap();
    let dy = widen(&rng.uniform_vec(out.y.len(), -1.0, 1.0));
    let dh = widen(&rng.uniform_vec(out.h_n.len(), -1.0, 1.0));
    let dc = widen(&rng.uniform_vec(c0.len(), -1.0, 1.0));
    let mut og = OutputGrads::new(&dy[..]).with_dh_n(&dh);
    if config.has_cell_state() {
        og = og.with_dc_n(&dc);
    }
    let g = rnn::reference::backward(config, &params, &trace, &og).unwrap();

    let mut buf = b"RNNC".to_vec();
    for v in [
        3,
        config.cell().code(),
        config.activation().code(),
        config.direction().code(),
        config.gru_variant().code(),
        config.layout().code(),
        u32::from(config.peepholes()),
    ] {
        buf.extend(v.to_le_bytes());
    }
    for v in [
        config.input_size(),
        config.hidden_size(),
        config.proj_size(),
        config.num_layers(),
    ] {
        buf.extend((v as u64).to_le_bytes());
    }
    buf.extend(config.cell_clip().unwrap_or(0.0).to_le_bytes());
    buf.extend(config.gate_clip().unwrap_or(0.0).to_le_bytes());
    buf.extend(u32::from(config.input_forget()).to_le_bytes());
    // Version 3: the empty-sequence state and six activation functions
    // (C's RNN_FUNCTION_* codes are ActivationKind codes + 1).
    buf.extend(config.empty_sequence_state().code().to_le_bytes());
    for i in 0..6 {
        let (dir, role) = (i / 3, i % 3);
        let f = match config.activations(dir).get(role) {
            Some(f) if dir < config.num_directions() => *f,
            _ => ActivationFunction::new(ActivationKind::Tanh),
        };
        let used = dir < config.num_directions() && role < config.activations(dir).len();
        buf.extend(if used { f.kind.code() + 1 } else { 0 }.to_le_bytes());
        buf.extend(f.alpha.to_le_bytes());
        buf.extend(f.beta.to_le_bytes());
    }
    for v in [seq_len, batch, b.seq_lens.len()] {
        buf.extend((v as u64).to_le_bytes());
    }
    for &l in &b.seq_lens {
        buf.extend((l as u64).to_le_bytes());
    }
    let c_n = out.c_n.clone().unwrap_or_default();
    let dc0 = g.dc0.clone().unwrap_or_default();
    let dc_in: Vec<f64> = if config.has_cell_state() {
        dc
    } else {
        Vec::new()
    };
    for v in [
        &params, &x, &h0, &c0, &out.y, &out.h_n, &c_n, &dy, &dh, &dc_in, &g.dx, &g.dh0, &dc0,
        &g.dparams,
    ] {
        put_f32s(&mut buf, &narrow(v));
    }
    std::fs::write(path, buf).unwrap();
}

fn case_files() -> Vec<PathBuf> {
    let cases = [
        Config::builder(CellKind::Lstm, 3, 5)
            .num_layers(2)
            .direction(Direction::BidirectionalConcat)
            .peepholes(true)
            .proj_size(2)
            .cell_clip(Some(0.8))
            .build()
            .unwrap(),
        Config::builder(CellKind::Gru, 2, 9)
            .gru_variant(GruVariant::LinearBeforeReset)
            .direction(Direction::BidirectionalSum)
            .layout(Layout::BatchFirst)
            .build()
            .unwrap(),
        Config::builder(CellKind::Gru, 4, 3)
            .direction(Direction::Reverse)
            .gate_clip(Some(0.5))
            .build()
            .unwrap(),
        Config::builder(CellKind::Lstm, 3, 6)
            .direction(Direction::BidirectionalConcat)
            .peepholes(true)
            .gate_clip(Some(0.5))
            .input_forget(true)
            .build()
            .unwrap(),
        Config::builder(CellKind::Rnn, 4, 17)
            .activation(rnn::Activation::Relu)
            .num_layers(3)
            .build()
            .unwrap(),
        // ONNX's other functions, different per direction, and
        // onnxruntime's zeros for the empty item.
        Config::builder(CellKind::Lstm, 3, 6)
            .direction(Direction::BidirectionalConcat)
            .num_layers(2)
            .activations(&[
                ActivationFunction::with(ActivationKind::HardSigmoid, 0.3, 0.45),
                ActivationFunction::new(ActivationKind::Softsign),
                ActivationFunction::with(ActivationKind::ScaledTanh, 1.3, 0.7),
                ActivationFunction::new(ActivationKind::Sigmoid),
                ActivationFunction::with(ActivationKind::Elu, 0.8, 0.0),
                ActivationFunction::new(ActivationKind::Softplus),
            ])
            .empty_sequence_state(EmptySequenceState::Zeros)
            .build()
            .unwrap(),
        Config::builder(CellKind::Gru, 4, 5)
            .direction(Direction::BidirectionalSum)
            .activations(&[
                ActivationFunction::with(ActivationKind::Affine, 0.4, 0.5),
                ActivationFunction::with(ActivationKind::LeakyRelu, 0.2, 0.0),
            ])
            .build()
            .unwrap(),
    ];
    cases
        .iter()
        .enumerate()
        .map(|(i, config)| {
            let path = out_dir().join(format!("case{i}.bin"));
            write_case(&path, config, 100 + i as u64);
            path
        })
        .collect()
}

/// Compiles `source` with `compiler` and `flags` against librnn.a.
fn compile(compiler: &str, source: &str, output: &str, flags: &[&str]) -> Option<PathBuf> {
    let exe = out_dir().join(output);
    let status = Command::new(compiler)
        .args(flags)
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join("tests/c").join(source))
        .arg(static_lib())
        .args(["-lm", "-lpthread", "-ldl", "-o"])
        .arg(&exe)
        .status()
        .ok()?;
    status.success().then_some(exe)
}

fn run(exe: &Path, cases: &[PathBuf], wrapper: &[&str], env: &[(&str, &str)]) {
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(cases).envs(env.iter().copied());
    let out = cmd.output().expect("the consumer runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "{} {:?} failed:\n{text}",
        exe.display(),
        wrapper
    );
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Compiles tests/c/`source` as `name` and runs it with `args` on two
/// threads; then, when .ci/run asks (`RNN_ASAN=1`, `RNN_VALGRIND=1`), again
/// built with AddressSanitizer and UBSan, and under valgrind (no errors, no
/// leaks). Returns the plain build.
fn check_c_program(source: &str, name: &str, args: &[PathBuf]) -> PathBuf {
    let flags = [
        "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread",
    ];
    let threads = ("RAYON_NUM_THREADS", "2");
    let exe = compile("cc", source, name, &flags)
        .unwrap_or_else(|| panic!("cc compiles tests/c/{source}"));
    run(&exe, args, &[], &[threads]);
    if required("RNN_ASAN") {
        let asan = [
            &flags[..],
            &["-fsanitize=address,undefined", "-fno-omit-frame-pointer"],
        ]
        .concat();
        let asan_exe = compile("cc", source, &format!("{name}_asan"), &asan)
            .unwrap_or_else(|| panic!("cc builds tests/c/{source} with -fsanitize=address"));
        // allocator_may_return_null: an absurd model size must come back
        // as RNN_OUT_OF_MEMORY, which needs the failed allocation to return.
        let options = "detect_leaks=1:abort_on_error=1:allocator_may_return_null=1";
        run(
            &asan_exe,
            args,
            &[],
            &[
                ("ASAN_OPTIONS", options),
                ("UBSAN_OPTIONS", "halt_on_error=1"),
                threads,
            ],
        );
    }
    if required("RNN_VALGRIND") {
        let valgrind = [
            "valgrind",
            "--error-exitcode=1",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect",
            // A forked child holds memory of parent threads that do not
            // exist in it, which a leak check there reports as lost; the
            // programs check a child's results themselves.
            "--child-silent-after-fork=yes",
            "--quiet",
        ];
        run(&exe, args, &valgrind, &[threads]);
    }
    exe
}

#[test]
fn c_consumer_matches_the_reference_and_checks_every_error_path() {
    if native("cc") {
        check_c_program("consumer.c", "consumer_c", &case_files());
    }
}

/// tests/c/host.c: fork, thread-exit destructors, weights swapped while
/// serving, misuse, failed updates, huge gradients, special files, idle
/// memory; then fork on one thread and memory exhaustion under a limit.
#[test]
fn c_host_process_guarantees_hold() {
    if !native("cc") {
        return;
    }
    let exe = check_c_program("host.c", "host_c", &[]);
    // A pool of one thread hung after fork as well; eight pool threads on
    // this machine's cores oversubscribe them (teams must not stall).
    run(&exe, &[], &[], &[("RAYON_NUM_THREADS", "1")]);
    run(&exe, &[], &[], &[("RAYON_NUM_THREADS", "8")]);
    // Memory exhaustion under a 2 GiB address-space limit (not with ASan,
    // whose shadow memory needs more address space than that).
    run(
        &exe,
        &[PathBuf::from("oom")],
        &["sh", "-c", "ulimit -v 2097152 && exec \"$0\" \"$1\""],
        &[("RAYON_NUM_THREADS", "2")],
    );
}

#[test]
fn cpp_consumer_matches_the_reference() {
    if !native("c++") {
        return;
    }
    let cases = case_files();
    // librnn.hpp needs C++11; the test runs as C++11 and as C++17.
    for std in ["-std=c++11", "-std=c++17"] {
        let flags = [std, "-O1", "-g", "-Wall", "-Wextra", "-Werror"];
        let name = format!("consumer_cpp{}", &std[8..]);
        let exe = compile("c++", "consumer.cpp", &name, &flags)
            .unwrap_or_else(|| panic!("c++ {std} compiles tests/c/consumer.cpp"));
        run(&exe, &cases, &[], &[]);
    }
}

/// include/librnn.h is cbindgen's output for src/ffi as it is now. The
/// header is committed and nothing rewrites it during a build; when this
/// fails, `LIBRNN_WRITE_HEADER=1 cargo test --test c_abi
/// committed_header_is_current` writes the current one (then commit it).
#[test]
fn committed_header_is_current() {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml"))
        .expect("cbindgen.toml is readable and valid");
    let header = cbindgen::Builder::new()
        .with_crate(root())
        .with_config(config)
        .generate()
        .expect("cbindgen parses the crate");
    let mut generated = Vec::new();
    header.write(&mut generated);
    let path = root().join("include/librnn.h");
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed == generated {
        return;
    }
    if std::env::var("LIBRNN_WRITE_HEADER").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("include/librnn.h is writable");
        println!("wrote {}", path.display());
        return;
    }
    panic!(
        "include/librnn.h is stale: run `LIBRNN_WRITE_HEADER=1 cargo test --test c_abi \
         committed_header_is_current` and commit it"
    );
}

/// The C example in the README compiles as shown and runs.
#[test]
fn readme_c_example_compiles_and_runs() {
    if !native("cc") {
        return;
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("```c\n").expect("the README has a C example") + 5;
    let len = readme[start..].find("```").unwrap();
    let source = out_dir().join("readme_example.c");
    std::fs::write(&source, &readme[start..start + len]).unwrap();
    let exe = out_dir().join("readme_example");
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("include"))
        .arg(&source)
        .arg(static_lib())
        .args(["-lm", "-lpthread", "-ldl", "-o"])
        .arg(&exe)
        .status()
        .unwrap();
    assert!(status.success(), "the README's C example compiles");
    let out = Command::new(&exe).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("h_n = "),
        "README example printed {text:?}"
    );
}
