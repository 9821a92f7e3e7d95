// libtorch operations that tch 0.17 does not reach: oneDNN's int8 linear
// layer (registered by libtorch as `onednn::qlinear_*`, called here through
// the dispatcher) and a one-pass dynamic quantisation of its input. Every
// function catches C++ exceptions and reports them through
// `nlp_last_error`: nothing unwinds into Rust.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

typedef at::Tensor *tensor;

static thread_local std::string last_error;

extern "C" const char *nlp_last_error() { return last_error.c_str(); }

#define GUARD(body)                                                            \
  try {                                                                        \
    body                                                                       \
  } catch (const std::exception &error) {                                      \
    last_error = error.what();                                                 \
  } catch (...) {                                                              \
    last_error = "unknown C++ exception";                                      \
  }                                                                            \
  return nullptr;

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

// Loops over contiguous values, compiled for AVX-512 where the CPU has it
// (every CPU with AMX does) and for the baseline otherwise.
template <typename T>
static inline float largest_magnitude(const T *values, int64_t count) {
  float largest = 0.f;
  for (int64_t i = 0; i < count; ++i) {
    largest = std::max(largest, std::fabs(static_cast<float>(values[i])));
  }
  return largest;
}

template <typename T>
static inline void to_levels(const T *values, uint8_t *out, int64_t count,
                             float inverse) {
  for (int64_t i = 0; i < count; ++i) {
    float level = std::nearbyint(static_cast<float>(values[i]) * inverse);
    level = std::min(std::max(level, -127.f), 127.f);
    out[i] = static_cast<uint8_t>(static_cast<int32_t>(level) + 128);
  }
}

// The same two loops with AVX-512 for bf16, 16 values at a time: widen to
// fp32 (a bf16 is the top half of an fp32), then |x| max, or x * inverse
// rounded to nearest even (as nearbyint), clamped, shifted and narrowed.
__attribute__((target("avx512f,avx512bw,avx512vl"))) static float
largest_bf16_avx512(const c10::BFloat16 *values, int64_t count) {
  __m512 largest = _mm512_setzero_ps();
  const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(values + i));
    __m512i wide = _mm512_and_si512(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16), magnitude);
    largest = _mm512_max_ps(largest, _mm512_castsi512_ps(wide));
  }
  float found = _mm512_reduce_max_ps(largest);
  return std::max(found, largest_magnitude(values + i, count - i));
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
levels_bf16_avx512(const c10::BFloat16 *values, uint8_t *out, int64_t count,
                   float inverse) {
  const __m512 scale = _mm512_set1_ps(inverse);
  const __m512i low = _mm512_set1_epi32(-127), high = _mm512_set1_epi32(127),
                zero_point = _mm512_set1_epi32(128);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(values + i));
    __m512 x = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
    __m512i level = _mm512_cvtps_epi32(_mm512_mul_ps(x, scale));
    level = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(level, low), high), zero_point);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(out + i), _mm512_cvtepi32_epi8(level));
  }
  to_levels(values + i, out + i, count - i, inverse);
}

static bool has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

// Symmetric dynamic quantisation of a contiguous bf16 or fp32 tensor to
// uint8 with zero point 128: scale = largest magnitude / 127. Writes the
// scale to `scale_out`.
extern "C" tensor nlp_quantize_u8(tensor input, double *scale_out) {
  GUARD({
    at::Tensor x = input->contiguous();
    const int64_t count = x.numel();
    const int64_t grain = 1 << 16;
    float largest = 0.f;
    at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kByte));
    uint8_t *levels = out.data_ptr<uint8_t>();
    if (x.scalar_type() == at::kBFloat16) {
      const auto *values = x.const_data_ptr<c10::BFloat16>();
      const bool wide = has_avx512();
      largest = at::parallel_reduce(
          0, count, grain, 0.f,
          [&](int64_t begin, int64_t end, float partial) {
            float found = wide ? largest_bf16_avx512(values + begin, end - begin)
                               : largest_magnitude(values + begin, end - begin);
            return std::max(partial, found);
          },
          [](float a, float b) { return std::max(a, b); });
      const float scale = std::max(largest, 1e-12f) / 127.f;
      const float inverse = 1.f / scale;
      at::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
        if (wide) {
          levels_bf16_avx512(values + begin, levels + begin, end - begin, inverse);
        } else {
          to_levels(values + begin, levels + begin, end - begin, inverse);
        }
      });
      *scale_out = scale;
    } else {
      at::Tensor f = x.to(at::kFloat);
      const float *values = f.const_data_ptr<float>();
      largest = at::parallel_reduce(
          0, count, grain, 0.f,
          [&](int64_t begin, int64_t end, float partial) {
            return std::max(partial, largest_magnitude(values + begin, end - begin));
          },
          [](float a, float b) { return std::max(a, b); });
      const float scale = std::max(largest, 1e-12f) / 127.f;
      const float inverse = 1.f / scale;
      at::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
        to_levels(values + begin, levels + begin, end - begin, inverse);
      });
      *scale_out = scale;
    }
    return new at::Tensor(out);
  })
}

// oneDNN's int8 linear layer: uint8 activations (zero point 128, `scale`)
// times packed int8 weights with per-row `weight_scales`, plus `bias`
// (may be null), dequantised to `out_kind` (a c10::ScalarType), then `post`
// ("none" or "gelu", exact), then `residual` added (may be null; same shape
// and kind as the output).
extern "C" tensor nlp_qlinear(tensor levels, double scale, tensor packed,
                              tensor weight_scales, tensor weight_zero_points,
                              tensor bias, int out_kind, const char *post,
                              tensor residual) {
  GUARD({
    const auto kind = static_cast<c10::ScalarType>(out_kind);
    const std::string post_op(post);
    torch::jit::Stack stack;
    if (residual == nullptr) {
      static auto op = c10::Dispatcher::singleton().findSchemaOrThrow(
          "onednn::qlinear_pointwise", "");
      stack.emplace_back(*levels);
      stack.emplace_back(scale);
      stack.emplace_back(static_cast<int64_t>(128));
      stack.emplace_back(*packed);
      stack.emplace_back(*weight_scales);
      stack.emplace_back(*weight_zero_points);
      stack.emplace_back(bias ? c10::IValue(*bias) : c10::IValue());
      stack.emplace_back(1.0);
      stack.emplace_back(static_cast<int64_t>(0));
      stack.emplace_back(kind);
      stack.emplace_back(post_op);
      stack.emplace_back(c10::List<std::optional<at::Scalar>>());
      stack.emplace_back(std::string(post_op == "gelu" ? "none" : ""));
      op.callBoxed(&stack);
    } else {
      static auto op = c10::Dispatcher::singleton().findSchemaOrThrow(
          "onednn::qlinear_pointwise", "binary");
      stack.emplace_back(*levels);
      stack.emplace_back(scale);
      stack.emplace_back(static_cast<int64_t>(128));
      stack.emplace_back(*packed);
      stack.emplace_back(*weight_scales);
      stack.emplace_back(*weight_zero_points);
      stack.emplace_back(bias ? c10::IValue(*bias) : c10::IValue());
      stack.emplace_back(1.0);
      stack.emplace_back(static_cast<int64_t>(0));
      stack.emplace_back(kind);
      stack.emplace_back(*residual);
      stack.emplace_back(1.0);
      stack.emplace_back(static_cast<int64_t>(0));
      stack.emplace_back(std::string("add"));
      stack.emplace_back(1.0);
      stack.emplace_back(post_op);
      stack.emplace_back(c10::List<std::optional<at::Scalar>>());
      stack.emplace_back(std::string(post_op == "gelu" ? "none" : ""));
      op.callBoxed(&stack);
    }
    return new at::Tensor(stack.back().toTensor());
  })
}
