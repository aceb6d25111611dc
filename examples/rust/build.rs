//! Links libsubsae: the directory holding libsubsae.so comes from the
//! environment variable SUBSAE_LIB_DIR, else ../../build (the source tree's
//! build directory, seen from examples/rust). An rpath to that directory is
//! written into the binaries so that `cargo run` finds the shared library
//! without LD_LIBRARY_PATH.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=SUBSAE_LIB_DIR");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dir = match env::var_os("SUBSAE_LIB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => manifest.join("../../build"),
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| {
        panic!(
            "libsubsae: directory {} not found; run `make` in the source tree or set SUBSAE_LIB_DIR",
            dir.display()
        )
    });
    let lib = dir.join("libsubsae.so");
    if !lib.exists() {
        panic!(
            "libsubsae: {} not found; run `make` in the source tree or set SUBSAE_LIB_DIR",
            lib.display()
        );
    }
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=subsae");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
}
