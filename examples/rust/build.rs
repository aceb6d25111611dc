//! Links libsubsae, for this crate and for every crate that depends on it:
//! only `cargo:rustc-link-search` and `cargo:rustc-link-lib` are used, which
//! Cargo passes on to the final link of dependents (`cargo:rustc-link-arg`,
//! an rpath for instance, is not).
//!
//! Where: the directory in SUBSAE_LIB_DIR; else, when pkg-config knows an
//! installed libsubsae, its libdir; else ../../build (the source tree's
//! build directory, seen from examples/rust).
//!
//! How: statically when that directory holds libsubsae.a (the default), so
//! that the programs built run anywhere without libsubsae.so on the loader's
//! path; its own dependencies (OpenBLAS, LAPACKE, Jansson, libgomp, libm)
//! are linked as the system's shared libraries. SUBSAE_LINK=dylib links
//! libsubsae.so instead: then the loader must find it at run time (an
//! installed library, or LD_LIBRARY_PATH; this crate's own binaries also
//! get an rpath).
use std::env;
use std::path::PathBuf;
use std::process::Command;

/// `pkg-config ARGS`, or None when pkg-config or the package is missing.
fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new("pkg-config").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn library_dir() -> PathBuf {
    if let Some(d) = env::var_os("SUBSAE_LIB_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = pkg_config(&["--variable=libdir", "subsae"]).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    manifest.join("../../build")
}

/// The link flags of libsubsae's own dependencies, as `rustc-link-*`.
fn link_dependencies() {
    let flags = pkg_config(&["--libs", "openblas", "lapacke", "jansson"])
        .unwrap_or_else(|| String::from("-lopenblas -llapacke -ljansson"));
    // oneDNN ships no pkg-config file.
    for flag in flags.split_whitespace().chain(["-ldnnl", "-lgomp", "-lm", "-lpthread"]) {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={}", dir);
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={}", lib);
        }
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=SUBSAE_LIB_DIR");
    println!("cargo:rerun-if-env-changed=SUBSAE_LINK");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let dir = library_dir();
    let dir = dir.canonicalize().unwrap_or_else(|_| {
        panic!(
            "libsubsae: directory {} not found; run `make` in the source tree, install the \
             library, or set SUBSAE_LIB_DIR",
            dir.display()
        )
    });
    let dynamic = env::var("SUBSAE_LINK").map(|v| v == "dylib").unwrap_or(false);
    let archive = dir.join("libsubsae.a");
    let shared = dir.join("libsubsae.so");
    let lib = if dynamic || !archive.exists() { &shared } else { &archive };
    if !lib.exists() {
        panic!(
            "libsubsae: {} not found; run `make` in the source tree or set SUBSAE_LIB_DIR",
            lib.display()
        );
    }
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rustc-link-search=native={}", dir.display());
    if lib == &archive {
        println!("cargo:rustc-link-lib=static=subsae");
        link_dependencies();
    } else {
        println!("cargo:rustc-link-lib=dylib=subsae");
        // This crate's own binaries (the example): found without
        // LD_LIBRARY_PATH. Dependents do not get this flag from Cargo.
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", dir.display());
    }
}
