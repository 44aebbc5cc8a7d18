//! The C ABI. Thin by design: validate, forward to the Rust API, convert
//! errors. `build.rs` turns this module into `include/librnn.h`.

use std::os::raw::c_char;

/// Version of the C ABI described by this header. It changes whenever a
/// signature or struct layout changes incompatibly.
pub const RNN_ABI_VERSION: u32 = 1;

/// The library version as a NUL-terminated string, e.g. "0.1.0". The pointer
/// is static: never free it.
#[no_mangle]
pub extern "C" fn rnn_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version the library was built with; compare with RNN_ABI_VERSION.
#[no_mangle]
pub extern "C" fn rnn_abi_version() -> u32 {
    RNN_ABI_VERSION
}
