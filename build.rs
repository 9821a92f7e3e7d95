//! Embeds the libtorch library directory as an rpath so that the binary and
//! the test executables run without `LD_LIBRARY_PATH`, and exports MKL's
//! vendor test from the binaries and integration tests that define it
//! (src/mkl.rs), so that libtorch's MKL calls their definition
//! (`--export-dynamic-symbol` needs GNU ld 2.35 or later).
fn main() {
    for targets in ["bins", "tests"] {
        println!(
            "cargo:rustc-link-arg-{targets}=-Wl,--export-dynamic-symbol=mkl_serv_intel_cpu_true"
        );
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
