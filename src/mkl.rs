//! MKL's fast code paths on every x86-64 CPU, not only Intel's.
//!
//! libtorch's fp32 matrix products are MKL's. MKL picks its kernels by the
//! CPU's features only when the vendor is Intel; on an AMD CPU it falls back
//! to slower generic ones. The vendor test is one function,
//! `mkl_serv_intel_cpu_true`, which libtorch's statically linked MKL calls
//! through the dynamic linker, and an executable's own definition of a
//! symbol comes before any library's. So each binary that links this module
//! (and exports the symbol, see build.rs) answers "Intel", and MKL then
//! chooses among its AVX2 or AVX-512 kernels by what the CPU reports, as it
//! does on Intel. On an Intel CPU nothing changes.
//!
//! Measured on a 2-vCPU AMD EPYC (AVX2), best of 40 fp32 products, 2 threads:
//! [1 x 768] x [768 x 50,257] (distilgpt2's output projection) 11.0 -> 5.5
//! ms; [4 x 512] x [512 x 58,101] (opus-mt's, a beam-4 step) 24.0 -> 8.3 ms;
//! [345 x 768] x [768 x 3,072] (a QA window's MLP) 12.0 -> 10.4 ms.
//!
//! `NLP_SERVE_MKL_VENDOR_CHECK=1` in the environment keeps MKL's own test.

use std::sync::OnceLock;

const VARIABLE: &str = "NLP_SERVE_MKL_VENDOR_CHECK";

/// MKL's vendor test, answered here: 1 ("Intel") unless the environment
/// asks for MKL's own test, which is then answered from CPUID's vendor
/// string.
#[no_mangle]
pub extern "C" fn mkl_serv_intel_cpu_true() -> libc::c_int {
    static ANSWER: OnceLock<libc::c_int> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        if std::env::var_os(VARIABLE).is_some_and(|value| value == "1") {
            libc::c_int::from(cpu_is_intel())
        } else {
            1
        }
    })
}

/// Whether CPUID's vendor string is "GenuineIntel".
fn cpu_is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaf 0 exists on every x86-64 CPU.
        let leaf = std::arch::x86_64::__cpuid(0);
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&leaf.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&leaf.ecx.to_le_bytes());
        &vendor == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Keeps the override in the calling binary (a library's item is linked
/// into an executable only when referenced) and settles its answer before
/// MKL's threads exist: call it once from `main`.
pub fn keep_linked() {
    std::hint::black_box(mkl_serv_intel_cpu_true as extern "C" fn() -> libc::c_int);
    mkl_serv_intel_cpu_true();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendor_string_is_read_from_cpuid() {
        let intel = std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| info.contains("GenuineIntel"))
            .unwrap_or(false);
        if std::path::Path::new("/proc/cpuinfo").exists() {
            assert_eq!(cpu_is_intel(), intel);
        }
    }
}
