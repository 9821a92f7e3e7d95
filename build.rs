//! Embeds the libtorch library directory as an rpath so that the binary and
//! the test executables run without `LD_LIBRARY_PATH`, exports MKL's vendor
//! test from the binaries and integration tests that define it
//! (src/mkl.rs), so that libtorch's MKL calls their definition
//! (`--export-dynamic-symbol` needs GNU ld 2.35 or later), and compiles
//! src/native/ops.cpp, the libtorch operations tch does not reach, against
//! the same libtorch's headers, with src/native/int8.cpp, fp32.cpp and
//! attention.cpp (int8 and few-row fp32 linear layers, a decoding step's
//! attention, on helper threads of crew.h), window_attention.cpp (an
//! encoder's attention in bf16) and beam.cpp (a beam search step's
//! candidates).
use std::path::{Path, PathBuf};

fn main() {
    for targets in ["bins", "tests"] {
        println!(
            "cargo:rustc-link-arg-{targets}=-Wl,--export-dynamic-symbol=mkl_serv_intel_cpu_true"
        );
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/native/ops.cpp");
    println!("cargo:rerun-if-changed=src/native/int8.cpp");
    println!("cargo:rerun-if-changed=src/native/fp32.cpp");
    println!("cargo:rerun-if-changed=src/native/attention.cpp");
    println!("cargo:rerun-if-changed=src/native/window_attention.cpp");
    println!("cargo:rerun-if-changed=src/native/beam.cpp");
    println!("cargo:rerun-if-changed=src/native/crew.h");
    println!("cargo:rerun-if-changed=src/native/boundary.h");
    println!("cargo:rerun-if-changed=src/native/simd.h");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB)");
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let root = Path::new(&lib)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(&lib));
    let include = root.join("include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .opt_level(3)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-fno-math-errno")
        .flag("-fopenmp")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi(&root)))
        .file("src/native/ops.cpp")
        .file("src/native/int8.cpp")
        .file("src/native/fp32.cpp")
        .file("src/native/attention.cpp")
        .file("src/native/window_attention.cpp")
        .file("src/native/beam.cpp")
        .compile("nlp_native");
    link_openmp(Path::new(&lib));
}

/// libtorch's own OpenMP runtime, for the parallel loops of the C++ above:
/// compiled with `-fopenmp`, `at::parallel_for` runs on the same thread
/// pool as libtorch's operations (without it, it runs on the calling thread
/// only). The wheels ship it under a hashed name (`libgomp-<hash>.so.1`);
/// elsewhere libtorch uses the system's.
fn link_openmp(lib: &Path) {
    let shipped = std::fs::read_dir(lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .find(|name| name.starts_with("libgomp") && name.contains(".so"))
    });
    match shipped {
        Some(name) => println!("cargo:rustc-link-lib=dylib:+verbatim={name}"),
        None => println!("cargo:rustc-link-lib=dylib=gomp"),
    }
}

/// The C++ ABI libtorch was built with, as its CMake config records it
/// (`TORCH_CXX_FLAGS`): 0 for the PyPI wheels, 1 for the cxx11 libtorch
/// archives. Mixing them breaks every symbol that takes a std::string.
fn cxx11_abi(root: &Path) -> u8 {
    let config = root.join("share/cmake/Torch/TorchConfig.cmake");
    println!("cargo:rerun-if-changed={}", config.display());
    match std::fs::read_to_string(&config) {
        Ok(text) if text.contains("_GLIBCXX_USE_CXX11_ABI=0") => 0,
        Ok(_) => 1,
        Err(error) => panic!("cannot read {}: {error}", config.display()),
    }
}
