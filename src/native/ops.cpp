// libtorch operations that tch 0.17 does not reach: oneDNN's int8 linear
// layer (registered by libtorch as `onednn::qlinear_*`, called here through
// the dispatcher) and a one-pass dynamic quantisation of its input. Every
// function catches C++ exceptions and reports them through
// `nlp_last_error` (boundary.h's GUARD): nothing unwinds into Rust.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "boundary.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

static thread_local std::string last_error;

extern "C" const char *nlp_last_error() { return last_error.c_str(); }

extern "C" void nlp_set_last_error(const char *message) { last_error = message; }

extern "C" void nlp_free_tensor(tensor t) { delete t; }

// Whether libtorch was built with the oneDNN int8 linear layer.
extern "C" int nlp_has_onednn_qlinear() {
  try {
    auto op = c10::Dispatcher::singleton().findOp(
        c10::OperatorName("onednn::qlinear_pointwise", ""));
    return op.has_value() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// [out, in] int8 weights in oneDNN's layout for the int8 linear layer.
extern "C" tensor nlp_qlinear_prepack(tensor weight) {
  GUARD({
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow(
        "onednn::qlinear_prepack", "");
    torch::jit::Stack stack;
    stack.emplace_back(*weight);
    stack.emplace_back(c10::IValue());
    op.callBoxed(&stack);
    return new at::Tensor(stack.back().toTensor());
  })
}

// The range of contiguous values and their uint8 levels, compiled for
// AVX-512 where the CPU has it (every CPU with AMX does) and for the
// baseline otherwise.
struct Range {
  float low, high;
};

static inline Range merge(Range a, Range b) {
  return {std::min(a.low, b.low), std::max(a.high, b.high)};
}

template <typename T>
static inline Range range_of(const T *values, int64_t count) {
  Range range{0.f, 0.f};
  for (int64_t i = 0; i < count; ++i) {
    const float value = static_cast<float>(values[i]);
    range.low = std::min(range.low, value);
    range.high = std::max(range.high, value);
  }
  return range;
}

template <typename T>
static inline void to_levels(const T *values, uint8_t *out, int64_t count,
                             float inverse, int32_t zero_point) {
  for (int64_t i = 0; i < count; ++i) {
    float level = std::nearbyint(static_cast<float>(values[i]) * inverse) +
                  static_cast<float>(zero_point);
    level = std::min(std::max(level, 0.f), 255.f);
    out[i] = static_cast<uint8_t>(level);
  }
}

// 16 bf16 values widened to fp32 (a bf16 is the top half of an fp32).
__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline __m512
load_bf16(const c10::BFloat16 *values) {
  __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(values));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static Range
range_bf16_avx512(const c10::BFloat16 *values, int64_t count) {
  __m512 low = _mm512_setzero_ps(), high = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m512 x = load_bf16(values + i);
    low = _mm512_min_ps(low, x);
    high = _mm512_max_ps(high, x);
  }
  Range found{_mm512_reduce_min_ps(low), _mm512_reduce_max_ps(high)};
  return merge(found, range_of(values + i, count - i));
}

// Rounds to nearest even (the default rounding mode), as nearbyint does.
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
levels_bf16_avx512(const c10::BFloat16 *values, uint8_t *out, int64_t count,
                   float inverse, int32_t zero_point) {
  const __m512 scale = _mm512_set1_ps(inverse);
  const __m512i low = _mm512_setzero_si512(), high = _mm512_set1_epi32(255),
                shift = _mm512_set1_epi32(zero_point);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m512i level = _mm512_add_epi32(
        _mm512_cvtps_epi32(_mm512_mul_ps(load_bf16(values + i), scale)), shift);
    level = _mm512_min_epi32(_mm512_max_epi32(level, low), high);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(out + i), _mm512_cvtepi32_epi8(level));
  }
  to_levels(values + i, out + i, count - i, inverse, zero_point);
}

static bool has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

// Quantises `values` over their range, widened to take in 0: 255 steps
// from the lowest to the highest, zero at a whole level.
template <typename T, typename RangeFn, typename LevelsFn>
static void quantize(const T *values, uint8_t *levels, int64_t count,
                     RangeFn range_fn, LevelsFn levels_fn, double *scale_out,
                     int64_t *zero_point_out) {
  const int64_t grain = 1 << 16;
  const Range range = at::parallel_reduce(
      0, count, grain, Range{0.f, 0.f},
      [&](int64_t begin, int64_t end, Range partial) {
        return merge(partial, range_fn(values + begin, end - begin));
      },
      merge);
  const float scale = std::max(range.high - range.low, 1e-12f) / 255.f;
  const int32_t zero_point = static_cast<int32_t>(
      std::min(std::max(std::nearbyint(-range.low / scale), 0.f), 255.f));
  const float inverse = 1.f / scale;
  at::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
    levels_fn(values + begin, levels + begin, end - begin, inverse, zero_point);
  });
  *scale_out = scale;
  *zero_point_out = zero_point;
}

// Dynamic per-tensor quantisation of a bf16 or fp32 tensor to uint8 over
// its range (asymmetric: a GELU's output, nearly all positive, gets all
// 256 levels). Writes the scale and the zero point.
extern "C" tensor nlp_quantize_u8(tensor input, double *scale_out,
                                  int64_t *zero_point_out) {
  GUARD({
    at::Tensor x = input->contiguous();
    if (x.scalar_type() != at::kBFloat16) {
      x = x.to(at::kFloat);
    }
    at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kByte));
    uint8_t *levels = out.data_ptr<uint8_t>();
    const int64_t count = x.numel();
    if (x.scalar_type() == at::kBFloat16 && has_avx512()) {
      quantize(x.const_data_ptr<c10::BFloat16>(), levels, count,
               range_bf16_avx512, levels_bf16_avx512, scale_out,
               zero_point_out);
    } else if (x.scalar_type() == at::kBFloat16) {
      quantize(x.const_data_ptr<c10::BFloat16>(), levels, count,
               range_of<c10::BFloat16>, to_levels<c10::BFloat16>, scale_out,
               zero_point_out);
    } else {
      quantize(x.const_data_ptr<float>(), levels, count, range_of<float>,
               to_levels<float>, scale_out, zero_point_out);
    }
    return new at::Tensor(out);
  })
}

// oneDNN's int8 linear layer: uint8 activations (`scale`, `zero_point`)
// times packed int8 weights with per-row `weight_scales`, plus `bias`
// (may be null), dequantised to `out_kind` (a c10::ScalarType), then `post`
// ("none" or "gelu", exact), then `residual` added (may be null; same shape
// and kind as the output).
extern "C" tensor nlp_qlinear(tensor levels, double scale, int64_t zero_point,
                              tensor packed,
                              tensor weight_scales, tensor weight_zero_points,
                              tensor bias, int out_kind, const char *post,
                              tensor residual) {
  GUARD({
    const auto kind = static_cast<c10::ScalarType>(out_kind);
    const std::string post_op(post);
    torch::jit::Stack stack;
    // Both schemas open with the same arguments: the quantised input, the
    // packed weights, the bias and the output's scale, zero point and kind.
    stack.emplace_back(*levels);
    stack.emplace_back(scale);
    stack.emplace_back(zero_point);
    stack.emplace_back(*packed);
    stack.emplace_back(*weight_scales);
    stack.emplace_back(*weight_zero_points);
    stack.emplace_back(bias ? c10::IValue(*bias) : c10::IValue());
    stack.emplace_back(1.0);
    stack.emplace_back(static_cast<int64_t>(0));
    stack.emplace_back(kind);
    if (residual != nullptr) {
      // "binary": the other operand with its scale and zero point, the
      // operation and its alpha.
      stack.emplace_back(*residual);
      stack.emplace_back(1.0);
      stack.emplace_back(static_cast<int64_t>(0));
      stack.emplace_back(std::string("add"));
      stack.emplace_back(1.0);
    }
    stack.emplace_back(post_op);
    stack.emplace_back(c10::List<std::optional<at::Scalar>>());
    stack.emplace_back(std::string(post_op == "gelu" ? "none" : ""));
    static auto plain = c10::Dispatcher::singleton().findSchemaOrThrow(
        "onednn::qlinear_pointwise", "");
    static auto binary = c10::Dispatcher::singleton().findSchemaOrThrow(
        "onednn::qlinear_pointwise", "binary");
    (residual == nullptr ? plain : binary).callBoxed(&stack);
    return new at::Tensor(stack.back().toTensor());
  })
}
