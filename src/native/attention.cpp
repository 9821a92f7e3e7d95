// Attention for a decoding step's few queries per row: each (row, head)
// reads its keys and values once, in place, and writes its share of the
// merged-heads output. libtorch's fused kernel handles such a step with
// one MKL matrix-vector product per row, head and operand, and in a step
// of many rows opens a parallel region per layer on threads that sleep in
// between; this one splits the (row, head) pairs between the model thread
// and its crew (crew.h), which poll between products.
#include <ATen/ATen.h>

#include "boundary.h"
#include "crew.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

// Strided views of the operands: element [b][h][t][d] of a 4-D tensor
// whose last dimension is contiguous.
struct View4 {
  const float *data;
  int64_t b, h, t;  // strides

  const float *at(int64_t bi, int64_t hi, int64_t ti) const {
    return data + bi * b + hi * h + ti * t;
  }
};

struct Problem {
  View4 query, keys, values;
  // bias [b, 1, q or 1, keys]: strides of b and q (0 where broadcast).
  const float *bias;
  int64_t bias_b, bias_q;
  float *out;  // [batch, queries, heads * dim]
  int64_t batch, heads, queries, length, dim;
  float scale;
};

__attribute__((target("avx2,fma"))) inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) inline float dot(const float *a, const float *b,
                                                     int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  float sum = sum8(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) {
    sum += a[i] * b[i];
  }
  return sum;
}

// y += a * x over n values.
__attribute__((target("avx2,fma"))) inline void axpy(float a, const float *x, float *y,
                                                     int64_t n) {
  const __m256 as = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(as, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) {
    y[i] += a * x[i];
  }
}

// Every query of row `b`, head `h`; `scores` holds `length` floats.
__attribute__((target("avx2,fma"))) void attend_pair(const Problem &p, int64_t b, int64_t h,
                                                     float *scores) {
  const float negative_infinity = -std::numeric_limits<float>::infinity();
  for (int64_t q = 0; q < p.queries; ++q) {
    const float *query = p.query.at(b, h, q);
    const float *bias = p.bias + b * p.bias_b + q * p.bias_q;
    float highest = negative_infinity;
    for (int64_t k = 0; k < p.length; ++k) {
      const float score = bias[k] == negative_infinity
                              ? negative_infinity
                              : dot(query, p.keys.at(b, h, k), p.dim) * p.scale + bias[k];
      scores[k] = score;
      highest = std::max(highest, score);
    }
    float *out = p.out + (b * p.queries + q) * p.heads * p.dim + h * p.dim;
    std::fill(out, out + p.dim, 0.f);
    if (highest == negative_infinity) {
      continue;  // nothing visible: zeros
    }
    float total = 0.f;
    for (int64_t k = 0; k < p.length; ++k) {
      const float weight = std::exp(scores[k] - highest);
      scores[k] = weight;
      total += weight;
    }
    for (int64_t k = 0; k < p.length; ++k) {
      if (scores[k] != 0.f) {
        axpy(scores[k], p.values.at(b, h, k), out, p.dim);
      }
    }
    const float inverse = 1.f / total;
    for (int64_t d = 0; d < p.dim; ++d) {
      out[d] *= inverse;
    }
  }
}

View4 view(const at::Tensor &t) {
  return View4{t.const_data_ptr<float>(), t.stride(0), t.stride(1), t.stride(2)};
}

}  // namespace

// softmax(query keys^T * scale + bias) values, for query [batch, heads,
// queries, dim], keys and values [batch, heads, length, dim] (each with its
// last dimension contiguous) and an additive bias [batch, 1, queries or 1,
// length], all fp32: [batch, queries, heads * dim], heads merged. On
// `threads` threads (the caller and its crew); needs AVX2 and FMA
// (`nlp_fp32_linear_available`).
extern "C" tensor nlp_decode_attention(tensor query, tensor keys, tensor values, tensor bias,
                                       double scale, int64_t threads) {
  GUARD({
    const at::Tensor &q = *query, &k = *keys, &v = *values;
    for (const at::Tensor *t : {&q, &k, &v, static_cast<const at::Tensor *>(bias)}) {
      TORCH_CHECK(t->scalar_type() == at::kFloat && t->dim() == 4 && t->device().is_cpu(),
                  "attention takes 4-D fp32 CPU tensors");
    }
    const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), dim = q.size(3);
    const int64_t length = k.size(2);
    TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == batch && k.size(1) == heads &&
                    k.size(3) == dim,
                "attention given keys and values of another shape");
    TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1,
                "attention needs contiguous heads");
    const at::Tensor b = bias->expand({batch, 1, queries, length}).contiguous();
    at::Tensor out = at::empty({batch, queries, heads * dim}, q.options());
    const Problem problem{view(q),
                          view(k),
                          view(v),
                          b.const_data_ptr<float>(),
                          queries * length,
                          length,
                          out.data_ptr<float>(),
                          batch,
                          heads,
                          queries,
                          length,
                          dim,
                          static_cast<float>(scale)};
    const int64_t pairs = batch * heads;
    // About four chunks per thread, whole pairs each.
    const int64_t per_chunk =
        std::max<int64_t>(1, pairs / (4 * std::max<int64_t>(threads, 1)));
    nlp::share(threads, (pairs + per_chunk - 1) / per_chunk, [&](int64_t chunk) {
      std::vector<float> scores(std::max<int64_t>(length, 1));
      const int64_t last = std::min(pairs, (chunk + 1) * per_chunk);
      for (int64_t pair = chunk * per_chunk; pair < last; ++pair) {
        attend_pair(problem, pair / heads, pair % heads, scores.data());
      }
    });
    return new at::Tensor(out);
  })
}
