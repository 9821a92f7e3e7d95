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
#include "simd.h"

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
  // [batch, length]: the row of `keys` and `values` that holds each row's
  // column, or null for the row itself (a beam search's deferred reorder,
  // kv_cache.rs).
  const int64_t *sources;
  // bias [batch, 1, queries, length], contiguous: strides of b and q.
  const float *bias;
  int64_t bias_b, bias_q;
  float *out;  // [batch, queries, heads * dim]
  int64_t batch, heads, queries, length, dim;
  float scale;
};

using nlp::sum8;

__attribute__((target("avx2,fma"))) inline float dot(const float *a, const float *b,
                                                     int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  }
  float sum = sum8(acc);
  for (; i < n; ++i) {
    sum += a[i] * b[i];
  }
  return sum;
}

// The dot products of `query` with the four keys at `key` (`dim` floats
// each), their horizontal sums done together.
__attribute__((target("avx2,fma"))) inline __m128 dot4(const float *query,
                                                       const float *const *key, int64_t dim) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
         a3 = _mm256_setzero_ps();
  const int64_t whole = dim / 8 * 8;
  for (int64_t d = 0; d < whole; d += 8) {
    const __m256 q = _mm256_loadu_ps(query + d);
    a0 = _mm256_fmadd_ps(q, _mm256_loadu_ps(key[0] + d), a0);
    a1 = _mm256_fmadd_ps(q, _mm256_loadu_ps(key[1] + d), a1);
    a2 = _mm256_fmadd_ps(q, _mm256_loadu_ps(key[2] + d), a2);
    a3 = _mm256_fmadd_ps(q, _mm256_loadu_ps(key[3] + d), a3);
  }
  // [a0 a1 a2 a3] summed lane-wise: two horizontal adds, then the halves.
  const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  __m128 sums = _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1));
  if (whole < dim) {
    float tails[4] = {0.f, 0.f, 0.f, 0.f};
    for (int j = 0; j < 4; ++j) {
      for (int64_t d = whole; d < dim; ++d) {
        tails[j] += query[d] * key[j][d];
      }
    }
    sums = _mm_add_ps(sums, _mm_loadu_ps(tails));
  }
  return sums;
}

// out[0, 8 N) = scale * the sum over k of weights[k] * (values[k] +
// offset)[0, 8 N), the sums kept in registers.
template <int N>
__attribute__((target("avx2,fma"))) inline void weighted_sum(const float *weights,
                                                             const float *const *values,
                                                             int64_t offset, int64_t length,
                                                             float scale, float *out) {
  __m256 acc[N];
  for (int j = 0; j < N; ++j) {
    acc[j] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < length; ++k) {
    if (weights[k] == 0.f) {
      continue;
    }
    const __m256 w = _mm256_set1_ps(weights[k]);
    const float *v = values[k] + offset;
    for (int j = 0; j < N; ++j) {
      acc[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8 * j), acc[j]);
    }
  }
  const __m256 s = _mm256_set1_ps(scale);
  for (int j = 0; j < N; ++j) {
    _mm256_storeu_ps(out + 8 * j, _mm256_mul_ps(acc[j], s));
  }
}

// Where each of a pair's keys and values is: `length` pointers each.
struct Columns {
  std::vector<float> scores;
  std::vector<const float *> keys, values;

  explicit Columns(int64_t length) : scores(length), keys(length), values(length) {}
};

// Every query of row `b`, head `h`.
__attribute__((target("avx2,fma"))) void attend_pair(const Problem &p, int64_t b, int64_t h,
                                                     Columns &columns) {
  const float negative_infinity = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < p.length; ++k) {
    const int64_t row = p.sources ? p.sources[b * p.length + k] : b;
    columns.keys[k] = p.keys.at(row, h, k);
    columns.values[k] = p.values.at(row, h, k);
  }
  float *scores = columns.scores.data();
  const float *const *keys = columns.keys.data();
  const float *const *values = columns.values.data();
  for (int64_t q = 0; q < p.queries; ++q) {
    const float *query = p.query.at(b, h, q);
    const float *bias = p.bias + b * p.bias_b + q * p.bias_q;
    int64_t k = 0;
    for (; k + 4 <= p.length; k += 4) {
      _mm_storeu_ps(scores + k, dot4(query, keys + k, p.dim));
    }
    for (; k < p.length; ++k) {
      scores[k] = dot(query, keys[k], p.dim);
    }
    float highest = negative_infinity;
    for (k = 0; k < p.length; ++k) {
      // -inf stays -inf (a masked key), whatever its product.
      scores[k] = bias[k] == negative_infinity ? negative_infinity : scores[k] * p.scale + bias[k];
      highest = std::max(highest, scores[k]);
    }
    float *out = p.out + (b * p.queries + q) * p.heads * p.dim + h * p.dim;
    if (highest == negative_infinity) {
      std::fill(out, out + p.dim, 0.f);  // nothing visible: zeros
      continue;
    }
    float total = 0.f;
    for (k = 0; k < p.length; ++k) {
      const float weight = std::exp(scores[k] - highest);
      scores[k] = weight;
      total += weight;
    }
    const float inverse = 1.f / total;
    int64_t d = 0;
    for (; d + 64 <= p.dim; d += 64) {
      weighted_sum<8>(scores, values, d, p.length, inverse, out + d);
    }
    for (; d + 8 <= p.dim; d += 8) {
      weighted_sum<1>(scores, values, d, p.length, inverse, out + d);
    }
    for (; d < p.dim; ++d) {
      float sum = 0.f;
      for (k = 0; k < p.length; ++k) {
        sum += scores[k] * values[k][d];
      }
      out[d] = sum * inverse;
    }
  }
}

View4 view(const at::Tensor &t) {
  return View4{t.const_data_ptr<float>(), t.stride(0), t.stride(1), t.stride(2)};
}

}  // namespace

// softmax(query keys^T * scale + bias) values, for query [batch, heads,
// queries, dim], keys and values [rows, heads, length, dim] (each with its
// last dimension contiguous) and an additive bias [batch, 1, queries or 1,
// length], all fp32: [batch, queries, heads * dim], heads merged. Row b's
// column k is in row `sources[b][k]` of the keys and values (int64 [batch,
// length]), or in row b where `sources` is undefined. On `threads` threads
// (the caller and its crew); needs AVX2 and FMA (`nlp_fp32_linear_available`).
extern "C" tensor nlp_decode_attention(tensor query, tensor keys, tensor values, tensor bias,
                                       tensor sources, double scale, int64_t threads) {
  GUARD({
    const at::Tensor &q = *query, &k = *keys, &v = *values;
    for (const at::Tensor *t : {&q, &k, &v, static_cast<const at::Tensor *>(bias)}) {
      TORCH_CHECK(t->scalar_type() == at::kFloat && t->dim() == 4 && t->device().is_cpu(),
                  "attention takes 4-D fp32 CPU tensors");
    }
    const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), dim = q.size(3);
    const int64_t length = k.size(2);
    TORCH_CHECK(k.sizes() == v.sizes() && k.size(1) == heads && k.size(3) == dim,
                "attention given keys and values of another shape");
    const bool indirect = sources && sources->defined();
    at::Tensor rows;
    if (indirect) {
      rows = sources->to(at::kLong).contiguous();
      TORCH_CHECK(rows.dim() == 2 && rows.size(0) == batch && rows.size(1) == length,
                  "attention's sources have the wrong shape");
      TORCH_CHECK(rows.numel() == 0 ||
                      (rows.min().item<int64_t>() >= 0 && rows.max().item<int64_t>() < k.size(0)),
                  "attention's sources name a row out of range");
    } else {
      TORCH_CHECK(k.size(0) == batch, "attention given keys and values of another shape");
    }
    TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1,
                "attention needs contiguous heads");
    const at::Tensor b = bias->expand({batch, 1, queries, length}).contiguous();
    at::Tensor out = at::empty({batch, queries, heads * dim}, q.options());
    const Problem problem{view(q),
                          view(k),
                          view(v),
                          indirect ? rows.const_data_ptr<int64_t>() : nullptr,
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
      Columns columns(length);
      const int64_t last = std::min(pairs, (chunk + 1) * per_chunk);
      for (int64_t pair = chunk * per_chunk; pair < last; ++pair) {
        attend_pair(problem, pair / heads, pair % heads, columns);
      }
    });
    return new at::Tensor(out);
  })
}
