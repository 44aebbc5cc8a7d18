//! Generates include/librnn.h from src/ffi with cbindgen. The header is
//! committed; it is rewritten only when its content changes, so builds do not
//! dirty the tree needlessly.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable and valid");
    let header = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen can parse the crate");
    let mut text = Vec::new();
    header.write(&mut text);
    let path = crate_dir.join("include").join("librnn.h");
    write_if_changed(&path, &text);
    write_pkg_config(&crate_dir);
}

fn write_if_changed(path: &std::path::Path, text: &[u8]) {
    if std::fs::read(path).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("{} is not writable: {e}", path.display()));
    }
}

/// target/<profile>/librnn.pc, pointing at this checkout's include/ and at
/// target/<profile>, where the libraries land:
/// `PKG_CONFIG_PATH=target/release pkg-config --cflags --libs librnn`.
fn write_pkg_config(crate_dir: &std::path::Path) {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return;
    };
    let pc = format!(
        "prefix={prefix}\nincludedir=${{prefix}}/include\nlibdir={libdir}\n\n\
         Name: librnn\nDescription: {description}\nVersion: {version}\n\
         Cflags: -I${{includedir}}\nLibs: -L${{libdir}} -lrnn\nLibs.private: -lm -lpthread -ldl\n",
        prefix = crate_dir.display(),
        libdir = profile_dir.display(),
        description = std::env::var("CARGO_PKG_DESCRIPTION").unwrap_or_default(),
        version = std::env::var("CARGO_PKG_VERSION").unwrap(),
    );
    write_if_changed(&profile_dir.join("librnn.pc"), pc.as_bytes());
}
