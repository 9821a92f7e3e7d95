//! `[qa] precision`: a weight precision, or "auto" (the default), which
//! takes the fastest one measured for this CPU (config/default.toml has the
//! numbers): int8 on oneDNN's kernels where the CPU has AMX, else int8 on
//! our kernel where it has AVX-512 VNNI, else bf16 where it multiplies
//! bfloat16 natively, else int8 on fbgemm's kernels where they run, else
//! fp32; fp32 on a GPU.

use serde::Deserialize;
use tch::Device;

use crate::generation::linear::Precision;

/// What this CPU runs fast, as "auto" weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuKernels {
    /// oneDNN's int8 kernels on AMX (`onednn_int8_available`).
    pub onednn_int8: bool,
    /// src/native/int8.cpp's AVX-512 VNNI kernel (`Blocks::preferred`).
    pub vnni_int8: bool,
    /// bfloat16 products in hardware (`native_bf16`).
    pub native_bf16: bool,
    /// fbgemm's fp16 and int8 kernels (`fbgemm_available`).
    pub fbgemm: bool,
}

/// The named variants repeat `Precision`'s rather than wrapping it in an
/// untagged variant: serde's error for a wrong value would then no longer
/// name the value ("data did not match any variant").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QaPrecision {
    Auto,
    Fp32,
    Fp16,
    Int8,
    Bf16,
}

impl QaPrecision {
    pub fn name(self) -> &'static str {
        self.named().map_or("auto", Precision::name)
    }

    /// The precision to load at, given the device and what this CPU runs.
    pub fn resolve(self, device: Device, cpu: CpuKernels) -> Precision {
        self.named().unwrap_or(match device {
            Device::Cpu if cpu.onednn_int8 || cpu.vnni_int8 => Precision::Int8,
            Device::Cpu if cpu.native_bf16 => Precision::Bf16,
            Device::Cpu if cpu.fbgemm => Precision::Int8,
            _ => Precision::Fp32,
        })
    }

    /// The precision named, None for "auto".
    fn named(self) -> Option<Precision> {
        match self {
            QaPrecision::Auto => None,
            QaPrecision::Fp32 => Some(Precision::Fp32),
            QaPrecision::Fp16 => Some(Precision::Fp16),
            QaPrecision::Int8 => Some(Precision::Int8),
            QaPrecision::Bf16 => Some(Precision::Bf16),
        }
    }
}

impl From<Precision> for QaPrecision {
    fn from(precision: Precision) -> QaPrecision {
        match precision {
            Precision::Fp32 => QaPrecision::Fp32,
            Precision::Fp16 => QaPrecision::Fp16,
            Precision::Int8 => QaPrecision::Int8,
            Precision::Bf16 => QaPrecision::Bf16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(onednn_int8: bool, native_bf16: bool, fbgemm: bool) -> CpuKernels {
        CpuKernels {
            onednn_int8,
            vnni_int8: false,
            native_bf16,
            fbgemm,
        }
    }

    #[test]
    fn auto_takes_amx_int8_then_vnni_int8_then_bf16_then_int8_then_fp32() {
        let auto = QaPrecision::Auto;
        // AMD Zen 4: AVX-512 VNNI and BF16, no AMX.
        let zen4 = CpuKernels {
            vnni_int8: true,
            ..cpu(false, true, true)
        };
        assert_eq!(auto.resolve(Device::Cpu, zen4), Precision::Int8);
        assert_eq!(auto.resolve(Device::Cuda(0), zen4), Precision::Fp32);
        assert_eq!(
            auto.resolve(Device::Cpu, cpu(true, true, true)),
            Precision::Int8
        );
        assert_eq!(
            auto.resolve(Device::Cpu, cpu(false, true, true)),
            Precision::Bf16
        );
        assert_eq!(
            auto.resolve(Device::Cpu, cpu(false, false, true)),
            Precision::Int8
        );
        assert_eq!(
            auto.resolve(Device::Cpu, cpu(false, false, false)),
            Precision::Fp32
        );
        assert_eq!(
            auto.resolve(Device::Cuda(0), cpu(true, true, true)),
            Precision::Fp32
        );
    }

    #[test]
    fn a_named_precision_is_kept_whatever_the_cpu() {
        for precision in [
            Precision::Fp32,
            Precision::Fp16,
            Precision::Int8,
            Precision::Bf16,
        ] {
            let named = QaPrecision::from(precision);
            assert_eq!(
                named.resolve(Device::Cpu, cpu(false, false, false)),
                precision
            );
            assert_eq!(named.resolve(Device::Cpu, cpu(true, true, true)), precision);
            assert_eq!(named.name(), precision.name());
        }
        assert_eq!(QaPrecision::Auto.name(), "auto");
    }
}
