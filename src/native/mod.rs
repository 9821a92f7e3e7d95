//! Safe wrappers over src/native/ops.cpp: libtorch operations that tch 0.17
//! has no binding for, compiled against the same libtorch by build.rs.
//!
//! oneDNN's int8 linear layer (`onednn::qlinear_pointwise`, registered by
//! libtorch for its x86 quantisation backend) multiplies uint8 activations
//! by int8 weights on AMX or AVX-512 VNNI and writes its output already
//! dequantised, with the bias, an exact GELU or a residual sum fused in.
//! tch's operations cannot quantise a bf16 tensor in fewer than six passes;
//! `quantize_u8` does it in two.

use std::ffi::{c_char, c_double, c_int, CStr};

pub mod attention;
pub mod beam;
pub mod fp32;
pub mod int8;
pub mod window_attention;

use tch::{Kind, Tensor};

#[allow(non_camel_case_types)]
pub(crate) type tensor = *mut torch_sys::C_tensor;

extern "C" {
    fn nlp_last_error() -> *const c_char;
    fn nlp_has_onednn_qlinear() -> c_int;
    fn nlp_qlinear_prepack(weight: tensor) -> tensor;
    fn nlp_quantize_u8(input: tensor, scale: *mut c_double, zero_point: *mut i64) -> tensor;
    fn nlp_qlinear(
        levels: tensor,
        scale: c_double,
        zero_point: i64,
        packed: tensor,
        weight_scales: tensor,
        weight_zero_points: tensor,
        bias: tensor,
        out_kind: c_int,
        post: *const c_char,
        residual: tensor,
    ) -> tensor;
}

/// The tensor a C++ call returned, or its exception's message.
pub(crate) fn returned(pointer: tensor) -> Result<Tensor, String> {
    if pointer.is_null() {
        // SAFETY: ops.cpp sets the thread's message before returning null;
        // the pointer stays valid until the next failing call on this thread.
        let message = unsafe { CStr::from_ptr(nlp_last_error()) };
        return Err(message.to_string_lossy().into_owned());
    }
    // SAFETY: a non-null result is a fresh heap `at::Tensor` that this
    // handle now owns (tch frees it with the same `delete`).
    Ok(unsafe { Tensor::from_ptr(pointer) })
}

/// Whether this libtorch registers oneDNN's int8 linear layer.
pub fn has_onednn_int8_linear() -> bool {
    // SAFETY: no arguments; looks an operator up by name.
    unsafe { nlp_has_onednn_qlinear() == 1 }
}

/// Whether this CPU adds int8 products in 32 bits (AMX, AVX-512 VNNI or
/// AVX-VNNI). Without them x86 kernels multiply uint8 by int8 with
/// vpmaddubsw, which adds pairs in 16 bits and saturates when both weights
/// of a pair exceed 64 in magnitude: full 8-bit weights then give results
/// several times less accurate (3.5% relative error on a random layer
/// against 0.9% with 7 bits, on a 2-core AMD EPYC), so weights get 7 bits
/// there.
pub fn int8_sums_in_32_bits() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx_int8()
            || std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// Whether this CPU multiplies int8 on AMX, where oneDNN's int8 layer
/// beats both bf16 and fbgemm's int8 on a window's hundreds of rows.
pub fn amx_int8() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // std's detection does not name AMX: CPUID leaf 7 (EDX bit 25,
        // AMX-INT8), with the OS saving the tile state (XCR0 bits 17-18).
        // SAFETY: cpuid is present on every x86-64 CPU; xgetbv is only
        // read when CPUID says the OS enabled it (OSXSAVE).
        unsafe {
            use std::arch::x86_64::{__cpuid_count, _xgetbv};
            if __cpuid_count(0, 0).eax < 7 {
                return false;
            }
            let amx_int8 = __cpuid_count(7, 0).edx & (1 << 25) != 0;
            let osxsave = __cpuid_count(1, 0).ecx & (1 << 27) != 0;
            amx_int8 && osxsave && _xgetbv(0) & (0b11 << 17) == 0b11 << 17
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [out, in] int8 weights in oneDNN's layout for `qlinear`.
pub fn qlinear_prepack(weight: &Tensor) -> Result<Tensor, String> {
    // SAFETY: `weight` is a live tensor; the call does not keep the pointer.
    returned(unsafe { nlp_qlinear_prepack(weight.as_ptr() as tensor) })
}

/// A tensor quantised to uint8: `value = scale * (level - zero_point)`.
pub struct Levels {
    pub levels: Tensor,
    pub scale: f64,
    pub zero_point: i64,
}

/// uint8 levels of a bf16 or fp32 tensor over its range (taking in 0), in
/// 255 equal steps.
pub fn quantize_u8(input: &Tensor) -> Result<Levels, String> {
    let (mut scale, mut zero_point) = (0.0, 0);
    // SAFETY: `input` is live; both outputs are written before it returns.
    let levels = returned(unsafe {
        nlp_quantize_u8(input.as_ptr() as tensor, &mut scale, &mut zero_point)
    })?;
    Ok(Levels {
        levels,
        scale,
        zero_point,
    })
}

/// What runs on a product's output before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Post {
    None,
    /// Exact (erf) GELU.
    Gelu,
}

impl Post {
    /// The same, as its own operation (for layers that cannot fuse it).
    pub fn apply(self, output: Tensor) -> Tensor {
        match self {
            Post::None => output,
            Post::Gelu => output.gelu("none"),
        }
    }
}

/// c10's number for the two kinds the layer writes (ScalarType::Float and
/// ScalarType::BFloat16).
fn scalar_type(kind: Kind) -> c_int {
    match kind {
        Kind::BFloat16 => 15,
        _ => 6,
    }
}

/// The int8 weights of one layer, packed for oneDNN.
pub struct PackedInt8 {
    pub packed: Tensor,
    /// [out] fp32, one per output row.
    pub scales: Tensor,
    /// [out] zeros (symmetric weights; the kernel wants the tensor).
    pub zero_points: Tensor,
    /// [out] fp32.
    pub bias: Option<Tensor>,
}

impl PackedInt8 {
    /// Quantised activations times the weights, dequantised to `out_kind`,
    /// with the bias and `post`. With `residual` ([rows, out] in `out_kind`)
    /// the product is added to it (libtorch's kernel may write the sum
    /// into its storage).
    pub fn forward(
        &self,
        input: &Levels,
        out_kind: Kind,
        post: Post,
        residual: Option<&Tensor>,
    ) -> Result<Tensor, String> {
        let post = match post {
            Post::None => c"none",
            Post::Gelu => c"gelu",
        };
        let pointer = |t: Option<&Tensor>| t.map_or(std::ptr::null_mut(), |t| t.as_ptr() as tensor);
        // SAFETY: every tensor pointer is live for the call or null where
        // ops.cpp accepts null; `post` is a NUL-terminated literal.
        returned(unsafe {
            nlp_qlinear(
                input.levels.as_ptr() as tensor,
                input.scale,
                input.zero_point,
                self.packed.as_ptr() as tensor,
                self.scales.as_ptr() as tensor,
                self.zero_points.as_ptr() as tensor,
                pointer(self.bias.as_ref()),
                scalar_type(out_kind),
                post.as_ptr(),
                pointer(residual),
            )
        })
    }

    /// The layer on `input` (bf16 or fp32, any leading shape): quantised,
    /// multiplied, and written in `input`'s kind; see `forward`.
    pub fn apply(
        &self,
        input: &Tensor,
        post: Post,
        residual: Option<Tensor>,
    ) -> Result<Tensor, String> {
        // The kernel takes [rows, in] and writes [rows, out].
        let mut shape = input.size();
        let width = shape.last().copied().unwrap_or(1);
        let levels = quantize_u8(&input.view([-1, width]))?;
        let kind = match input.kind() {
            Kind::BFloat16 => Kind::BFloat16,
            _ => Kind::Float,
        };
        let residual = residual.map(|r| {
            let out = r.size().last().copied().unwrap_or(1);
            r.to_kind(kind).contiguous().view([-1, out])
        });
        let output = self.forward(&levels, kind, post, residual.as_ref())?;
        if let Some(last) = shape.last_mut() {
            *last = -1;
        }
        Ok(output.view(shape.as_slice()))
    }

    pub fn shallow_clone(&self) -> PackedInt8 {
        PackedInt8 {
            packed: self.packed.shallow_clone(),
            scales: self.scales.shallow_clone(),
            zero_points: self.zero_points.shallow_clone(),
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::linear::Linear;
    use tch::Device;

    fn levels_of(input: &Tensor) -> (Levels, Tensor) {
        let quantized = quantize_u8(input).expect("quantises");
        let levels = quantized.levels.to_kind(Kind::Float);
        (quantized, levels)
    }

    /// Both kernels (AVX-512 for bf16 where the CPU has it, the plain loop
    /// otherwise and for fp32) give round(x / scale) + zero point over the
    /// range widened to 0, and dequantise to within half a step. (Off by
    /// one only where x / scale is within a rounding of a half level.)
    #[test]
    fn quantisation_spans_the_range_in_255_steps() {
        tch::manual_seed(5);
        // Not a multiple of 16 (the vector tail) and more than one grain.
        let values = Tensor::randn([3, 70_001], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        for input in [values.shallow_clone(), values.to_kind(Kind::BFloat16)] {
            let exact = input.to_kind(Kind::Float);
            let (quantized, levels) = levels_of(&input);
            let (low, high) = (exact.min().double_value(&[]), exact.max().double_value(&[]));
            let scale = quantized.scale;
            assert!(((high - low.min(0.0)) / 255.0 - scale).abs() < 1e-6 * scale.max(1.0));
            let zero_point = quantized.zero_point;
            assert_eq!(zero_point, (-low / scale).round() as i64);
            // As the kernels do: times the fp32 inverse of the scale.
            let inverse = f64::from(1.0 / scale as f32);
            let reference = (&exact * inverse).round() + zero_point as f64;
            let reference = reference.clamp(0.0, 255.0);
            let off = (&levels - &reference).abs();
            assert!(off.max().double_value(&[]) <= 1.0);
            let same = off.eq(0.0).to_kind(Kind::Float).mean(Kind::Float);
            assert!(same.double_value(&[]) > 0.999, "{same:?}");
            let restored = (levels - zero_point as f64) * scale;
            let error = (restored - &exact).abs().max().double_value(&[]);
            assert!(error <= 0.51 * scale, "{error} against a step of {scale}");
        }
    }

    /// A GELU's output is nearly all positive: the levels go to it, with
    /// zero kept at a whole level.
    #[test]
    fn a_one_sided_range_gets_every_level() {
        let input = Tensor::linspace(-0.1, 10.0, 1000, (Kind::Float, Device::Cpu));
        let (quantized, levels) = levels_of(&input);
        assert!((quantized.scale - 10.1 / 255.0).abs() < 1e-6);
        assert_eq!(quantized.zero_point, 3);
        assert_eq!(levels.min().double_value(&[]), 0.0);
        assert_eq!(levels.max().double_value(&[]), 255.0);
        let zeros = Tensor::zeros([4, 8], (Kind::BFloat16, Device::Cpu));
        let (quantized, levels) = levels_of(&zeros);
        assert_eq!(quantized.zero_point, 0);
        assert_eq!(levels.abs().max().double_value(&[]), 0.0);
    }

    fn layer() -> (Linear, Tensor, Tensor, Tensor) {
        tch::manual_seed(6);
        let weight = Tensor::randn([96, 64], (Kind::Float, Device::Cpu)) * 0.1;
        let bias = Tensor::randn([96], (Kind::Float, Device::Cpu));
        let input = Tensor::randn([2, 40, 64], (Kind::Float, Device::Cpu));
        let layer = Linear::int8_onednn(&weight, Some(&bias)).expect("packs");
        (layer, weight, bias, input)
    }

    fn relative(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (a.to_kind(Kind::Float), b.to_kind(Kind::Float));
        (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
    }

    /// oneDNN's int8 layer (any x86-64 libtorch registers it; AMX only
    /// makes it fast) tracks fp32 and gives the kind and shape it is given.
    #[test]
    fn onednn_int8_layers_track_fp32() {
        if !has_onednn_int8_linear() {
            return;
        }
        let (layer, weight, bias, input) = layer();
        let exact = input.linear(&weight, Some(&bias));
        let from_fp32 = layer.forward(&input);
        assert_eq!(from_fp32.size(), [2, 40, 96]);
        assert_eq!(from_fp32.kind(), Kind::Float);
        assert!(
            relative(&from_fp32, &exact) < 2e-2,
            "{}",
            relative(&from_fp32, &exact)
        );
        let from_bf16 = layer.forward(&input.to_kind(Kind::BFloat16));
        assert_eq!(from_bf16.kind(), Kind::BFloat16);
        assert!(relative(&from_bf16, &exact) < 2e-2);
    }

    /// The fused GELU and residual sum give what the separate operations
    /// give.
    #[test]
    fn fused_post_operations_match_separate_ones() {
        if !has_onednn_int8_linear() {
            return;
        }
        let (layer, _, _, input) = layer();
        let plain = layer.forward(&input);
        let gelu = layer.forward_fused(&input, Post::Gelu, None);
        assert!(relative(&gelu, &plain.gelu("none")) < 1e-5);
        let residual = Tensor::randn([2, 40, 96], (Kind::Float, Device::Cpu));
        let expected = &plain + &residual;
        let summed = layer.forward_fused(&input, Post::None, Some(residual.shallow_clone()));
        assert_eq!(summed.size(), [2, 40, 96]);
        assert!(relative(&summed, &expected) < 1e-5);
    }
}
