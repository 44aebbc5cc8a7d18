#!/usr/bin/env bash
# Installs librnn for C and C++ users under PREFIX (default /usr/local):
#   PREFIX/lib/librnn.so.0.1.0 (SONAME librnn.so.0, stripped), the
#   librnn.so.0 and librnn.so links, PREFIX/lib/librnn.a, PREFIX/include/
#   librnn.h and librnn.hpp, and PREFIX/lib/pkgconfig/librnn.pc, which is
#   relocatable (its prefix is found from its own place).
# Usage: scripts/install.sh [PREFIX]    (DESTDIR is honoured, as make does)
# The libraries come from the `dist` profile: optimised like `release`,
# without debug info and stripped; `cargo build --release` keeps line
# tables for profilers.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-/usr/local}"
root="${DESTDIR:-}${prefix}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
major="${version%%.*}"
# The C library is the librnn-capi package (capi/). The SONAME only on the
# shared library's link line (cargo rustc passes the flag to that crate
# alone, so dependencies are built as usual).
cargo rustc --quiet -p librnn-capi --profile dist --lib -- -C "link-arg=-Wl,-soname,librnn.so.${major}"
out=target/dist
install -d "$root/lib/pkgconfig" "$root/include"
install -m 755 "$out/librnn.so" "$root/lib/librnn.so.${version}"
ln -sf "librnn.so.${version}" "$root/lib/librnn.so.${major}"
ln -sf "librnn.so.${major}" "$root/lib/librnn.so"
install -m 644 "$out/librnn.a" "$root/lib/librnn.a"
# The Rust standard library's objects in the archive carry debug info.
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$root/lib/librnn.a"; fi
install -m 644 include/librnn.h include/librnn.hpp "$root/include/"
cat > "$root/lib/pkgconfig/librnn.pc" <<PC
prefix=\${pcfiledir}/../..
includedir=\${prefix}/include
libdir=\${prefix}/lib

Name: librnn
Description: SIMD CPU kernels for recurrent neural networks (RNN, LSTM, GRU), usable from Rust and C
Version: ${version}
Cflags: -I\${includedir}
Libs: -L\${libdir} -lrnn
Libs.private: -lm -lpthread -ldl
PC
echo "installed librnn ${version} under ${root}:"
ls -l "$root/lib" | sed 1d
