//! Inputs shared by the fuzz targets (included with `#[path]`).

use libfuzzer_sys::arbitrary::{Result, Unstructured};

/// A float that is often special: NaN, ±inf, the largest float, a denormal.
pub fn value(u: &mut Unstructured) -> Result<f32> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => f32::NEG_INFINITY,
        3 => f32::MAX,
        4 => f32::MIN_POSITIVE / 4.0, // denormal
        _ => u.int_in_range(-2000..=2000i32)? as f32 / 500.0,
    })
}
