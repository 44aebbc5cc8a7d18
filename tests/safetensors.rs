//! safetensors files: librnn's own round trip (every option in the
//! metadata, extras), PyTorch's files (in tests/interop.rs, against
//! PyTorch's outputs and gradients), and every way a file can be wrong,
//! each error naming what is wrong.

mod common;

use common::cell_variants;
use rnn::interop::safetensors::{from_bytes, from_bytes_module, load, save, to_bytes};
use rnn::{CellKind, Config, Input, Model};

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("librnn-safetensors-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_variant_round_trips_with_its_configuration_and_extras() {
    for (name, builder) in cell_variants(3, 5) {
        for direction in common::DIRECTIONS {
            let config = builder
                .clone()
                .num_layers(2)
                .direction(direction)
                .build()
                .unwrap();
            let model = Model::random(config.clone(), 7);
            let adam = [0.5f32, -1.25, 3.0];
            let path = dir().join(format!("{name}-{direction:?}.safetensors"));
            save(&path, &model, &[("adam.m", &adam), ("empty", &[])]).unwrap();
            // No configuration needed: it is in the file.
            let back = load(&path, None).unwrap();
            assert_eq!(back.model.config(), &config, "{name} {direction:?}");
            let same_bits = back
                .model
                .params()
                .iter()
                .zip(model.params())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same_bits, "{name} {direction:?}: parameters");
            assert_eq!(back.extra("adam.m"), Some(&adam[..]));
            assert_eq!(back.extra("empty"), Some(&[][..]));
            // The same configuration given explicitly is accepted too.
            assert!(load(&path, Some(&config)).is_ok());
            std::fs::remove_file(&path).unwrap();
        }
    }
}

#[test]
fn a_file_without_librnn_metadata_needs_the_configuration() {
    // A PyTorch state dict: PyTorch's names, no metadata.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pt_lstm.safetensors");
    let err = load(&path, None).unwrap_err();
    assert!(matches!(err, rnn::Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("configuration"), "{err}");
    let config = Config::builder(CellKind::Lstm, 3, 4).build().unwrap();
    let model = load(&path, Some(&config)).unwrap().model;
    let x = vec![0.5f32; 2 * 3];
    assert!(model.forward_inference(&Input::new(&x, 2, 1)).is_ok());
    // A configuration the file does not fit: the error names the tensor.
    let wrong = Config::builder(CellKind::Lstm, 3, 6).build().unwrap();
    let err = load(&path, Some(&wrong)).unwrap_err().to_string();
    assert!(
        err.contains("weight_ih_l0") && err.contains("[24, 3]"),
        "{err}"
    );
    let gru = Config::builder(CellKind::Gru, 3, 4).build().unwrap();
    assert!(load(&path, Some(&gru)).is_err());
}

#[test]
fn mismatched_or_malformed_files_are_refused_naming_the_problem() {
    let config = Config::builder(CellKind::Lstm, 3, 4)
        .num_layers(2)
        .build()
        .unwrap();
    let model = Model::random(config.clone(), 1);
    let bytes = to_bytes(&model, &[]).unwrap();
    // A different configuration than the stored one.
    let other = Config::builder(CellKind::Lstm, 3, 4).build().unwrap();
    let err = from_bytes(&bytes, Some(&other)).unwrap_err().to_string();
    assert!(err.contains("not the one given"), "{err}");
    // Truncated anywhere: refused, never a panic.
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        assert!(from_bytes(&bytes[..cut], None).is_err(), "cut at {cut}");
    }
    // A header that claims far more bytes than the file has.
    let mut inflated = bytes.clone();
    inflated[..8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert!(from_bytes(&inflated, None).is_err());
    // Duplicate extras.
    assert!(to_bytes(&model, &[("a", &[1.0]), ("a", &[2.0])]).is_err());
}

/// Builds a safetensors file by hand: tensors as (name, dtype, shape, raw
/// bytes), and metadata.
fn hand_made(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)], metadata: Option<&str>) -> Vec<u8> {
    let mut header = String::from("{");
    let mut offset = 0;
    let mut data = Vec::new();
    for (i, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{offset},{}]}}",
            offset + bytes.len()
        ));
        offset += bytes.len();
        data.extend_from_slice(bytes);
    }
    if let Some(m) = metadata {
        header.push_str(&format!(",\"__metadata__\":{m}"));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// A larger network's state dict (`model.state_dict()` of a module that
/// holds an LSTM as `encoder.lstm` and a linear layer as `fc`): the LSTM's
/// parameters load by their module path, found when unambiguous and named
/// when not; a name inside the module that is no parameter is refused.
#[test]
fn a_module_of_a_larger_state_dict_loads_by_its_prefix() {
    let config = Config::builder(CellKind::Lstm, 3, 4).build().unwrap();
    let model = Model::random(config.clone(), 9);
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let dict = rnn::interop::pytorch::export_state_dict(&model).unwrap();
    let module = |prefix: &str| -> Vec<(String, Vec<usize>, Vec<u8>)> {
        dict.iter()
            .map(|(name, shape, values)| (format!("{prefix}{name}"), shape.clone(), le(values)))
            .collect()
    };
    let file = |entries: &[(String, Vec<usize>, Vec<u8>)]| {
        let tensors: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = entries
            .iter()
            .map(|(n, s, b)| (n.as_str(), "F32", s.clone(), b.clone()))
            .collect();
        hand_made(&tensors, None)
    };
    let fc = ("fc.weight".to_string(), vec![2, 4], le(&[0.5; 8]));
    let mut one = module("encoder.lstm.");
    one.push(fc.clone());
    let bytes = file(&one);
    for prefix in [None, Some("encoder.lstm.")] {
        let loaded = from_bytes_module(&bytes, Some(&config), prefix).unwrap();
        assert_eq!(loaded.model.params(), model.params(), "prefix {prefix:?}");
        assert!(loaded.extras.is_empty());
    }
    // Two LSTMs: ambiguous without a prefix, each loads with its own.
    let other = Model::random(config.clone(), 10);
    let mut two = one.clone();
    two.extend(
        rnn::interop::pytorch::export_state_dict(&other)
            .unwrap()
            .into_iter()
            .map(|(n, s, v)| (format!("decoder.lstm.{n}"), s, le(&v))),
    );
    let bytes = file(&two);
    let err = from_bytes(&bytes, Some(&config)).unwrap_err().to_string();
    assert!(
        err.contains("several modules") && err.contains("decoder.lstm."),
        "{err}"
    );
    let decoder = from_bytes_module(&bytes, Some(&config), Some("decoder.lstm.")).unwrap();
    assert_eq!(decoder.model.params(), other.params());
    // A stray tensor inside the module: refused by its full name.
    let mut stray = one.clone();
    stray.push(("encoder.lstm.weight_xx_l0".to_string(), vec![1], le(&[1.0])));
    let err = from_bytes_module(&file(&stray), Some(&config), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("encoder.lstm.weight_xx_l0"), "{err}");
    // The importer takes a prefixed name too.
    let mut m = Model::zeros(config);
    let (name, _, values) = &dict[0];
    rnn::interop::pytorch::import_tensor(&mut m, &format!("encoder.lstm.{name}"), values).unwrap();
    assert!(rnn::interop::pytorch::import_tensor(&mut m, "encoder.lstm.bogus", values).is_err());
}

#[test]
fn other_float_types_convert_and_other_types_are_refused_by_name() {
    // An RNN with I = 1, H = 1: four tensors of one value each.
    let config = Config::builder(CellKind::Rnn, 1, 1).build().unwrap();
    let names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"];
    let shapes = [vec![1, 1], vec![1, 1], vec![1], vec![1]];
    let file = |dtype: &str, bytes: Vec<u8>| {
        let tensors: Vec<_> = names
            .iter()
            .zip(&shapes)
            .map(|(n, s)| (*n, dtype, s.clone(), bytes.clone()))
            .collect();
        hand_made(&tensors, None)
    };
    for (dtype, bytes) in [
        ("F32", 1.5f32.to_le_bytes().to_vec()),
        ("F64", 1.5f64.to_le_bytes().to_vec()),
        ("BF16", 0x3FC0u16.to_le_bytes().to_vec()),
        ("F16", 0x3E00u16.to_le_bytes().to_vec()),
    ] {
        let model = from_bytes(&file(dtype, bytes), Some(&config))
            .unwrap()
            .model;
        assert_eq!(model.params(), &[1.5; 4][..], "{dtype}");
    }
    let err = from_bytes(&file("I32", 7i32.to_le_bytes().to_vec()), Some(&config))
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight_ih_l0") && err.contains("I32"), "{err}");
    // A tensor the configuration does not have.
    let mut tensors: Vec<_> = names
        .iter()
        .zip(&shapes)
        .map(|(n, s)| (*n, "F32", s.clone(), 1.0f32.to_le_bytes().to_vec()))
        .collect();
    tensors.push((
        "weight_ih_l1",
        "F32",
        vec![1, 1],
        1.0f32.to_le_bytes().to_vec(),
    ));
    let err = from_bytes(&hand_made(&tensors, None), Some(&config))
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight_ih_l1"), "{err}");
    // A missing tensor.
    let err = from_bytes(&hand_made(&tensors[1..4], None), Some(&config))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weight_ih_l0") && err.contains("missing"),
        "{err}"
    );
    // librnn metadata that is incomplete or wrong names the key.
    let meta = r#"{"librnn.format":"1","librnn.cell":"Lstm"}"#;
    let err = from_bytes(&hand_made(&tensors[..4], Some(meta)), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("librnn."), "{err}");
    let meta = r#"{"librnn.format":"9"}"#;
    let err = from_bytes(&hand_made(&tensors[..4], Some(meta)), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("librnn.format"), "{err}");
}

#[test]
fn a_failed_save_keeps_the_old_file_and_loads_are_bounded() {
    let config = Config::builder(CellKind::Gru, 2, 3).build().unwrap();
    let model = Model::random(config, 3);
    let path = dir().join("keep.safetensors");
    save(&path, &model, &[]).unwrap();
    let before = std::fs::read(&path).unwrap();
    // The directory vanishes: the save fails, nothing is left half written.
    let gone = dir().join("gone").join("m.safetensors");
    assert!(matches!(
        save(&gone, &model, &[]),
        Err(rnn::Error::Checkpoint(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Only regular files are read.
    assert!(load(dir(), None).is_err());
    std::fs::remove_file(&path).unwrap();
}
