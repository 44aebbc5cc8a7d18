//! The vectorised tanh and logistic of every ISA this CPU supports, over the
//! whole float range (a sweep of bit patterns plus special values), against
//! f64: within `MAX_ULP` ulp, limits at ±inf, NaN preserved.

use rnn::kernels::dispatch::{sigmoid_in_place, tanh_in_place};
use rnn::kernels::math::MAX_ULP;
use rnn::Isa;

/// Distance in representable floats between two finite floats of one sign
/// (or across zero).
fn ulp_distance(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let bits = x.to_bits() as i64;
        if bits < 0x8000_0000 {
            bits
        } else {
            0x8000_0000 - bits
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

fn sweep() -> Vec<f32> {
    let mut xs: Vec<f32> = (0..u32::MAX / 1021)
        .map(|i| f32::from_bits(i * 1021))
        .collect();
    xs.extend([
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-40,
        -1e-40,
        f32::MAX,
        f32::MIN,
        0.625,
        -0.625,
        0.624_999_9,
        88.0,
        -88.0,
        87.0,
        -87.0,
        9.0,
        20.0,
        -20.0,
    ]);
    // Dense near the branch points and the origin.
    xs.extend((-2000..2000).map(|i| i as f32 * 1e-3));
    xs.extend((-300..300).map(|i| i as f32 * 0.37));
    xs
}

fn check(name: &str, isa: Isa, f: fn(Isa, &mut [f32]) -> rnn::Result<()>, exact: fn(f64) -> f64) {
    let xs = sweep();
    // Odd length so the tail path is used too.
    let odd = xs.len() - (1 - xs.len() % 2);
    let mut ys = xs[..odd].to_vec();
    let xs = &xs[..ys.len()];
    f(isa, &mut ys).unwrap();
    let mut worst = (0u64, 0.0f32);
    for (&x, &y) in xs.iter().zip(&ys) {
        if x.is_nan() {
            assert!(y.is_nan(), "{name}/{isa:?}({x}) = {y}, expected NaN");
            continue;
        }
        let want = exact(f64::from(x)) as f32;
        if want.abs() < f32::MIN_POSITIVE {
            assert!(
                (y - want).abs() <= 1e-38,
                "{name}/{isa:?}({x:e}) = {y:e}, expected {want:e}"
            );
            continue;
        }
        let d = ulp_distance(y, want);
        if d > worst.0 {
            worst = (d, x);
        }
    }
    assert!(
        worst.0 <= u64::from(MAX_ULP),
        "{name}/{isa:?}: {} ulp at x = {:e}",
        worst.0,
        worst.1
    );
    println!("{name}/{isa:?}: max error {} ulp", worst.0);
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn tanh_is_accurate_on_every_isa() {
    for isa in Isa::supported() {
        check("tanh", isa, tanh_in_place, f64::tanh);
    }
}

#[test]
fn sigmoid_is_accurate_on_every_isa() {
    for isa in Isa::supported() {
        check("sigmoid", isa, sigmoid_in_place, sigmoid);
    }
}

#[test]
fn limits_and_specials() {
    for isa in Isa::supported() {
        let mut t = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0, 1e-30];
        tanh_in_place(isa, &mut t).unwrap();
        assert_eq!(&t[..2], &[1.0, -1.0], "{isa:?}");
        assert!(t[2].is_nan());
        assert_eq!(t[3].to_bits(), 0.0f32.to_bits(), "tanh(+0) = +0");
        assert_eq!(t[4], 0.0, "tanh(-0) = 0 (the sign of zero is not kept)");
        assert_eq!(t[5], 1e-30, "tanh(x) = x for tiny x");
        let mut s = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, 1e-30];
        sigmoid_in_place(isa, &mut s).unwrap();
        assert_eq!(s[0], 1.0, "{isa:?}");
        assert!(
            (0.0..1e-38).contains(&s[1]),
            "{isa:?}: sigmoid(-inf) = {}",
            s[1]
        );
        assert!(s[2].is_nan());
        assert_eq!(&s[3..], &[0.5, 0.5]);
    }
}

#[test]
fn every_length_works() {
    for isa in Isa::supported() {
        for len in 0..40 {
            let xs: Vec<f32> = (0..len).map(|i| i as f32 * 0.3 - 5.0).collect();
            let mut ys = xs.clone();
            tanh_in_place(isa, &mut ys).unwrap();
            for (x, y) in xs.iter().zip(&ys) {
                assert!((x.tanh() - y).abs() < 1e-6, "{isa:?} len {len}");
            }
        }
    }
}

#[test]
fn unsupported_and_unknown_isas_are_errors() {
    assert!(Isa::from_name("sse9").is_err());
    assert_eq!(Isa::from_name(" AVX2 ").unwrap(), Isa::Avx2);
    let foreign = if cfg!(target_arch = "x86_64") {
        Isa::Neon
    } else {
        Isa::Avx2
    };
    assert!(!foreign.is_supported());
    assert!(tanh_in_place(foreign, &mut [0.0]).is_err());
    assert!(Isa::supported().contains(&Isa::Scalar));
}

/// The FMA-peak probe behind `cargo bench --bench peak` runs on every ISA
/// and reports a positive, finite rate. (No comparison between ISAs: rates
/// are timings, which tests do not assert, and under qemu NEON is no faster.)
#[test]
fn fma_peak_probe_runs_on_every_isa() {
    for isa in Isa::supported() {
        let gflops = rnn::kernels::dispatch::measure_fma_peak(isa, 0.02).unwrap();
        assert!(gflops.is_finite() && gflops > 0.0, "{isa:?}: {gflops}");
    }
}
