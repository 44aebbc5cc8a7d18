//! Saving and loading parameters.
//!
//! Format (all little-endian), version 3:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `LIBRNNCK` |
//! | 4 | format version (u32, 1) |
//! | 6 × 4 | cell, activation, direction, gru variant, layout, peepholes (u32 codes as in the C ABI) |
//! | 4 × 8 | input size, hidden size, projection size, layers (u64) |
//! | 4 | cell clip (f32, 0 = none) |
//! | 4 | gate clip (f32; none: NaN from version 3 on, 0 before) — not in version 1 |
//! | 4 | input_forget (u32, 0 or 1) — not in version 1 |
//! | 4 | empty-sequence state (u32 code, `RNN_EMPTY_*`) — version 3 on |
//! | 6 × 12 | activation functions, forward direction's 3 roles then the reverse one's: kind (u32 code, `RNN_ACTIVATION_*`), α, β (f32) — version 3 on |
//! | 8 + 4·n | parameter count n (u64), then n f32 |
//! | 4 | number of extra tensors m (u32) |
//! | m × … | each: name length (u32), UTF-8 name, count (u64), f32 values |
//! | 8 | FNV-1a 64 checksum of every byte before it |
//!
//! Loading checks the magic, the version, the checksum, every size and the
//! configuration, and reports what is wrong with [`Error::Checkpoint`].
//! Version 1 and 2 files (written before the gate clip and input_forget
//! options, or before any activation but tanh and relu, existed) still
//! load, as configurations without those options.

use std::path::Path;

use crate::config::{CellKind, Coded, Config};
use crate::error::{Error, Result};
use crate::model::Model;

const MAGIC: &[u8; 8] = b"LIBRNNCK";
const VERSION: u32 = 3;
/// The oldest version [`from_bytes`] reads.
const OLDEST_VERSION: u32 = 1;

/// A model plus named extra tensors (an output layer, optimiser state, ...).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The network.
    pub model: Model,
    /// The extra tensors, by name, in the order saved.
    pub extras: Vec<(String, Vec<f32>)>,
}

impl Checkpoint {
    /// The extra tensor called `name`.
    pub fn extra(&self, name: &str) -> Option<&[f32]> {
        self.extras
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn codes(c: &Config) -> [u32; 6] {
    [
        c.cell().code(),
        c.activation().code(),
        c.direction().code(),
        c.gru_variant().code(),
        c.layout().code(),
        u32::from(c.peepholes()),
    ]
}

/// Serialises a model and extra tensors.
pub fn to_bytes(model: &Model, extras: &[(&str, &[f32])]) -> Vec<u8> {
    let c = model.config();
    let mut out = MAGIC.to_vec();
    out.extend(VERSION.to_le_bytes());
    for code in codes(c) {
        out.extend(code.to_le_bytes());
    }
    for v in [
        c.input_size(),
        c.hidden_size(),
        c.proj_size(),
        c.num_layers(),
    ] {
        out.extend((v as u64).to_le_bytes());
    }
    out.extend(c.cell_clip().unwrap_or(0.0).to_le_bytes());
    out.extend(c.gate_clip().unwrap_or(f32::NAN).to_le_bytes());
    out.extend(u32::from(c.input_forget()).to_le_bytes());
    out.extend(c.empty_sequence_state().code().to_le_bytes());
    for dir in 0..2 {
        let fns = c.activations(dir);
        for role in 0..3 {
            let f = fns
                .get(role)
                .copied()
                .unwrap_or(crate::config::ActivationFunction::new(
                    crate::config::ActivationKind::Tanh,
                ));
            out.extend(f.kind.code().to_le_bytes());
            out.extend(f.alpha.to_le_bytes());
            out.extend(f.beta.to_le_bytes());
        }
    }
    let put = |out: &mut Vec<u8>, v: &[f32]| {
        out.extend((v.len() as u64).to_le_bytes());
        v.iter().for_each(|x| out.extend(x.to_le_bytes()));
    };
    put(&mut out, model.params());
    out.extend((extras.len() as u32).to_le_bytes());
    for (name, values) in extras {
        out.extend((name.len() as u32).to_le_bytes());
        out.extend(name.as_bytes());
        put(&mut out, values);
    }
    let sum = fnv1a(&out);
    out.extend(sum.to_le_bytes());
    out
}

/// The largest checkpoint file [`load`] reads (1 TiB): a format maximum on
/// top of the file's own size, which bounds every read.
pub const MAX_FILE_BYTES: u64 = 1 << 40;

/// Writes a checkpoint file atomically and durably: the bytes go to a
/// temporary file in the same directory, flushed to disk and renamed over
/// `path`, then the directory is flushed. A crash, a kill or a failed write
/// at any point leaves the previous file at `path` intact (and no
/// temporary behind where the process survives); readers see the old file
/// or the new one, never part of one. A failure is an [`Error::Checkpoint`]
/// naming the step that failed.
pub fn save(path: impl AsRef<Path>, model: &Model, extras: &[(&str, &[f32])]) -> Result<()> {
    crate::files::write_atomic(path.as_ref(), &to_bytes(model, extras)).map_err(Error::Checkpoint)
}

/// Reads a checkpoint file. Only a regular file of at most
/// [`MAX_FILE_BYTES`] is read (a FIFO, a device or a directory is refused
/// without blocking), and no more than its size.
pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let bytes =
        crate::files::read_bounded(path.as_ref(), MAX_FILE_BYTES).map_err(Error::Checkpoint)?;
    from_bytes(&bytes)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if self.bytes.len() < n {
            return Err(Error::Checkpoint(format!("truncated while reading {what}")));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn size(&mut self, what: &str) -> Result<usize> {
        usize::try_from(self.u64(what)?)
            .map_err(|_| Error::Checkpoint(format!("{what} does not fit in memory")))
    }
    fn f32s(&mut self, what: &str) -> Result<Vec<f32>> {
        let n = self.size(what)?;
        let bytes = self.take(
            n.checked_mul(4)
                .ok_or_else(|| Error::Checkpoint(format!("{what} is too large")))?,
            what,
        )?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect())
    }
}

/// Parses a checkpoint.
pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::Checkpoint(
            "not a librnn checkpoint (bad magic bytes)".into(),
        ));
    }
    if bytes.len() < MAGIC.len() + 4 + 8 {
        return Err(Error::Checkpoint("truncated checkpoint".into()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let mut r = Reader {
        bytes: &body[MAGIC.len()..],
    };
    let version = r.u32("version")?;
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(Error::Checkpoint(format!(
            "unsupported checkpoint version {version} (this librnn reads {OLDEST_VERSION} to {VERSION})"
        )));
    }
    if fnv1a(body) != u64::from_le_bytes(sum.try_into().unwrap()) {
        return Err(Error::Checkpoint(
            "corrupt checkpoint: checksum mismatch".into(),
        ));
    }
    let mut code = [0u32; 6];
    for (i, c) in code.iter_mut().enumerate() {
        *c = r.u32(
            [
                "cell",
                "activation",
                "direction",
                "gru variant",
                "layout",
                "peepholes",
            ][i],
        )?;
    }
    fn pick<T: Coded>(what: &str, code: u32) -> Result<T> {
        T::from_code(code).ok_or_else(|| Error::Checkpoint(format!("invalid {what} code {code}")))
    }
    let (input, hidden, proj, layers) = (
        r.size("input size")?,
        r.size("hidden size")?,
        r.size("projection size")?,
        r.size("layers")?,
    );
    let mut f32_field =
        |what| -> Result<f32> { Ok(f32::from_le_bytes(r.take(4, what)?.try_into().unwrap())) };
    let clip = f32_field("cell clip")?;
    let (gate_clip, input_forget) = if version >= 2 {
        (f32_field("gate clip")?, r.u32("input_forget")?)
    } else {
        (0.0, 0)
    };
    for (what, flag) in [("peepholes", code[5]), ("input_forget", input_forget)] {
        if flag > 1 {
            return Err(Error::Checkpoint(format!("invalid {what} code {flag}")));
        }
    }
    let cell = pick::<CellKind>("cell", code[0])?;
    let mut builder = Config::builder(cell, input, hidden);
    if version >= 3 {
        let empty = pick("empty-sequence state", r.u32("empty-sequence state")?)?;
        let mut fns = Vec::new();
        for _direction in 0..2 {
            for role in 0..3 {
                let kind = pick("activation", r.u32("activation")?)?;
                let mut f32_field = |what| -> Result<f32> {
                    Ok(f32::from_le_bytes(r.take(4, what)?.try_into().unwrap()))
                };
                let (alpha, beta) = (
                    f32_field("activation alpha")?,
                    f32_field("activation beta")?,
                );
                if role < cell.default_activations().len() {
                    fns.push(crate::config::ActivationFunction::with(kind, alpha, beta));
                }
            }
        }
        let dirs = pick::<crate::config::Direction>("direction", code[2])?.count();
        fns.truncate(cell.default_activations().len() * dirs);
        builder = builder.empty_sequence_state(empty).activations(&fns);
    } else {
        builder = builder.activation(pick("activation", code[1])?);
    }
    let config = builder
        .direction(pick("direction", code[2])?)
        .gru_variant(pick("gru variant", code[3])?)
        .layout(pick("layout", code[4])?)
        .peepholes(code[5] == 1)
        .proj_size(proj)
        .num_layers(layers)
        .cell_clip((clip != 0.0).then_some(clip))
        .gate_clip(match version {
            // Version 3 stores ONNX's clip = 0 as 0 and no clip as NaN.
            3.. => (!gate_clip.is_nan()).then_some(gate_clip),
            _ => (gate_clip != 0.0).then_some(gate_clip),
        })
        .input_forget(input_forget == 1)
        .build()
        .map_err(|e| Error::Checkpoint(format!("the stored configuration is invalid: {e}")))?;
    let params = r.f32s("parameters")?;
    if params.len() != config.num_params() {
        return Err(Error::Checkpoint(format!(
            "mismatched checkpoint: {} parameters stored, the configuration needs {}",
            params.len(),
            config.num_params()
        )));
    }
    let model = Model::from_params(config, params)?;
    let count = r.u32("extra tensor count")?;
    let mut extras = Vec::new();
    for _ in 0..count {
        let len = r.u32("extra tensor name")? as usize;
        let name = String::from_utf8(r.take(len, "extra tensor name")?.to_vec())
            .map_err(|_| Error::Checkpoint("an extra tensor name is not UTF-8".into()))?;
        let values = r.f32s(&name)?;
        extras.push((name, values));
    }
    if !r.bytes.is_empty() {
        return Err(Error::Checkpoint(format!(
            "{} unexpected bytes after the last tensor",
            r.bytes.len()
        )));
    }
    Ok(Checkpoint { model, extras })
}
