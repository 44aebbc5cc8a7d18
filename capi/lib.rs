//! librnn's C library. Its functions are the `#[no_mangle]` ones of the
//! `librnn` crate's `ffi` module (feature `capi`), which a shared or static
//! library exports from its dependencies; this crate only gives them the
//! library types C links against, so that a Rust dependent of `librnn`
//! builds neither (see the README, "Using it from C and C++").

pub use engine::ffi;
