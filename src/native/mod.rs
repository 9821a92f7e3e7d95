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

use tch::{Kind, Tensor};

#[allow(non_camel_case_types)]
type tensor = *mut torch_sys::C_tensor;

extern "C" {
    fn nlp_last_error() -> *const c_char;
    fn nlp_has_onednn_qlinear() -> c_int;
    fn nlp_qlinear_prepack(weight: tensor) -> tensor;
    fn nlp_quantize_u8(input: tensor, scale: *mut c_double) -> tensor;
    fn nlp_qlinear(
        levels: tensor,
        scale: c_double,
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
fn returned(pointer: tensor) -> Result<Tensor, String> {
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

/// uint8 levels of a bf16 or fp32 tensor around the zero point 128, with
/// its scale (largest magnitude / 127).
pub fn quantize_u8(input: &Tensor) -> Result<(Tensor, f64), String> {
    let mut scale = 0.0;
    // SAFETY: `input` is live; `scale` is written before the call returns.
    let levels = returned(unsafe { nlp_quantize_u8(input.as_ptr() as tensor, &mut scale) })?;
    Ok((levels, scale))
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
    /// `levels` quantised activations times the weights, dequantised to
    /// `out_kind`, with the bias and `post`. With `residual` (the output's
    /// shape and kind) the product is added to it in place and it is returned.
    pub fn forward(
        &self,
        levels: &Tensor,
        scale: f64,
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
                levels.as_ptr() as tensor,
                scale,
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
        let (levels, scale) = quantize_u8(&input.view([-1, width]))?;
        let kind = match input.kind() {
            Kind::BFloat16 => Kind::BFloat16,
            _ => Kind::Float,
        };
        let residual = residual.map(|r| {
            let out = r.size().last().copied().unwrap_or(1);
            r.to_kind(kind).contiguous().view([-1, out])
        });
        let output = self.forward(&levels, scale, kind, post, residual.as_ref())?;
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
