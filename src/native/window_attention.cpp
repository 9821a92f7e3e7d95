// Bidirectional self-attention over an encoder's padded windows, in
// bfloat16 products with fp32 sums (AVX-512 BF16: vdpbf16ps), straight from
// the fused query/key/value projection's fp32 output to the merged-heads
// fp32 output. Per (window, head): the keys and values are converted once
// into the layouts vdpbf16ps reads (pairs of dimensions for the scores,
// pairs of keys for the weighted sum), then each block of four queries gets
// its scores, softmax and weighted sum while they are in cache. Keys past a
// window's last visible one are not read at all.
//
// libtorch's fused kernel does the same products on MKL (which packs its
// operands on every call), needs its inputs converted to bf16 and its
// output converted back and transposed, and spends as long on its exp as
// on a product; its output here differs only by the rounding of the last
// step (this one writes fp32 directly).
#include <ATen/ATen.h>

#include "boundary.h"
#include "crew.h"
#include "simd.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// Queries per block; key blocks (of 16) or value blocks (of 16 dimensions)
// go four to a register tile (nlp::in_fours): 4 x 4 sums in registers.
constexpr int QUERIES = 4;
constexpr int64_t LANES = 16;

struct Problem {
  const float *qkv;     // [batch, tokens, 3 * width]
  const uint8_t *mask;  // [batch, tokens], nonzero where a key is visible
  float *out;           // [batch, tokens, width]
  int64_t batch, tokens, heads, dim;
  float scale;
};

// One (window, head)'s operands in vdpbf16ps's layouts, and the scores of
// one block of queries.
struct Scratch {
  std::vector<uint32_t> keys;    // [key blocks][dim / 2][16]: pairs of dimensions
  std::vector<uint32_t> values;  // [padded / 2][dim / 16][16]: pairs of keys
  std::vector<uint16_t> queries; // [tokens][dim]
  std::vector<float> bias;       // [padded]: 0, or -inf for a hidden key
  std::vector<float> scores;     // [QUERIES][padded]
  std::vector<uint16_t> weights; // [QUERIES][padded]
};

// `count` floats as bf16, `count` a multiple of 16.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void
to_bf16(const float *from, uint16_t *to, int64_t count) {
  for (int64_t i = 0; i < count; i += LANES) {
    const __m256bh converted = _mm512_cvtneps_pbh(_mm512_loadu_ps(from + i));
    std::memcpy(to + i, &converted, sizeof converted);
  }
}

// Tokens ahead that the packing loops ask the cache for: a token's part of
// one head is `dim` floats a whole row (3 * width floats) from the next
// one's, a stride the hardware prefetchers do not follow; waiting for each
// line from L3 made the packing a sixth of the attention's time.
constexpr int64_t AHEAD = 8;

// The cache lines of `count` floats at `from`.
inline void prefetch(const float *from, int64_t count) {
  for (int64_t i = 0; i < count; i += LANES) {
    _mm_prefetch(reinterpret_cast<const char *>(from + i), _MM_HINT_T0);
  }
}

// e^x for x <= 0 (scores less their row's maximum), 0 below about -87
// (hidden keys' -inf included): Cody-Waite reduction to |r| <= ln 2 / 2, a
// degree-6 polynomial, the power of two applied by vscalefps.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline __m512 exp_below_zero(__m512 x) {
  const __m512 low = _mm512_set1_ps(-87.0f);
  const __mmask16 finite = _mm512_cmp_ps_mask(x, low, _CMP_GE_OQ);
  x = _mm512_max_ps(x, low);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.f / 720.f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_maskz_mov_ps(finite, _mm512_scalef_ps(p, n));
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline __m512bh pair_of(const uint16_t *at) {
  uint32_t two;
  std::memcpy(&two, at, sizeof two);
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(two));
}

// Scores of ROWS queries against KB blocks of 16 keys from `block` on:
// scale * (q . k) + bias, into `scores` (row stride `padded`).
template <int ROWS, int KB>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void
score_tile(const Scratch &s, const uint16_t *queries, int64_t dim, int64_t padded,
           int64_t block, float scale, float *scores) {
  const int64_t pairs = dim / 2;
  __m512 acc[ROWS][KB];
  for (int r = 0; r < ROWS; ++r) {
    for (int b = 0; b < KB; ++b) {
      acc[r][b] = _mm512_setzero_ps();
    }
  }
  const uint32_t *keys = s.keys.data() + block * pairs * LANES;
  for (int64_t pair = 0; pair < pairs; ++pair) {
    __m512bh k[KB];
    for (int b = 0; b < KB; ++b) {
      k[b] = (__m512bh)_mm512_loadu_si512(keys + (b * pairs + pair) * LANES);
    }
    for (int r = 0; r < ROWS; ++r) {
      const __m512bh q = pair_of(queries + r * dim + 2 * pair);
      for (int b = 0; b < KB; ++b) {
        acc[r][b] = _mm512_dpbf16_ps(acc[r][b], q, k[b]);
      }
    }
  }
  const __m512 times = _mm512_set1_ps(scale);
  for (int b = 0; b < KB; ++b) {
    const int64_t column = (block + b) * LANES;
    const __m512 bias = _mm512_loadu_ps(s.bias.data() + column);
    for (int r = 0; r < ROWS; ++r) {
      _mm512_storeu_ps(scores + r * padded + column, _mm512_fmadd_ps(acc[r][b], times, bias));
    }
  }
}

// Weighted sums of ROWS queries over DB blocks of 16 dimensions from
// `block` on, divided by the rows' weight sums, into the output rows.
template <int ROWS, int DB>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void
value_tile(const Scratch &s, int64_t padded, int64_t dim, int64_t block, const float *inverse,
           float *out, int64_t out_stride) {
  const int64_t blocks = dim / LANES;
  __m512 acc[ROWS][DB];
  for (int r = 0; r < ROWS; ++r) {
    for (int b = 0; b < DB; ++b) {
      acc[r][b] = _mm512_setzero_ps();
    }
  }
  for (int64_t pair = 0; pair < padded / 2; ++pair) {
    __m512bh v[DB];
    for (int b = 0; b < DB; ++b) {
      v[b] = (__m512bh)_mm512_loadu_si512(s.values.data() + (pair * blocks + block + b) * LANES);
    }
    for (int r = 0; r < ROWS; ++r) {
      const __m512bh w = pair_of(s.weights.data() + r * padded + 2 * pair);
      for (int b = 0; b < DB; ++b) {
        acc[r][b] = _mm512_dpbf16_ps(acc[r][b], w, v[b]);
      }
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    const __m512 times = _mm512_set1_ps(inverse[r]);
    for (int b = 0; b < DB; ++b) {
      _mm512_storeu_ps(out + r * out_stride + (block + b) * LANES,
                       _mm512_mul_ps(acc[r][b], times));
    }
  }
}

// Keys and values of one (window, head) from its rows of `qkv` into the
// scratch layouts; returns the padded key count (0: no key visible).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) int64_t
pack_head(const Problem &p, int64_t window, int64_t head, Scratch &s) {
  const uint8_t *mask = p.mask + window * p.tokens;
  int64_t length = p.tokens;
  while (length > 0 && mask[length - 1] == 0) {
    --length;
  }
  if (length == 0) {
    return 0;
  }
  const int64_t dim = p.dim, width = p.heads * dim, pairs = dim / 2, blocks = dim / LANES;
  const int64_t padded = (length + LANES - 1) / LANES * LANES;
  const float *rows = p.qkv + window * p.tokens * 3 * width + head * dim;
  s.bias.assign(padded, -std::numeric_limits<float>::infinity());
  for (int64_t k = 0; k < length; ++k) {
    if (mask[k] != 0) {
      s.bias[k] = 0.f;
    }
  }
  // Scores: key k's dimensions 2i and 2i+1 at [k / 16][i][k % 16].
  s.keys.assign(padded * pairs, 0);
  std::vector<uint16_t> row(dim);
  for (int64_t k = 0; k < length; ++k) {
    if (k + AHEAD < length) {
      prefetch(rows + (k + AHEAD) * 3 * width + width, dim);
    }
    to_bf16(rows + k * 3 * width + width, row.data(), dim);
    uint32_t *to = s.keys.data() + (k / LANES) * pairs * LANES + k % LANES;
    for (int64_t i = 0; i < pairs; ++i) {
      uint32_t two;
      std::memcpy(&two, row.data() + 2 * i, sizeof two);
      to[i * LANES] = two;
    }
  }
  // Weighted sums: keys 2j and 2j+1 at dimension d interleaved in
  // [j][d / 16][d % 16]; a key past `length` is zero.
  s.values.resize(padded / 2 * blocks * LANES);
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                              25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                                              18, 2, 17, 1, 16, 0);
  for (int64_t j = 0; j < padded / 2; ++j) {
    const int64_t first = 2 * j, second = 2 * j + 1;
    if (first + AHEAD + 1 < length) {
      prefetch(rows + (first + AHEAD) * 3 * width + 2 * width, dim);
      prefetch(rows + (first + AHEAD + 1) * 3 * width + 2 * width, dim);
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const __m512 a = first < length
                           ? _mm512_loadu_ps(rows + first * 3 * width + 2 * width + b * LANES)
                           : _mm512_setzero_ps();
      const __m512 c = second < length
                           ? _mm512_loadu_ps(rows + second * 3 * width + 2 * width + b * LANES)
                           : _mm512_setzero_ps();
      // Words 0-15 from `a`, 16-31 from `c`, then interleaved.
      const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(c, a);
      _mm512_storeu_si512(s.values.data() + (j * blocks + b) * LANES,
                          _mm512_permutexvar_epi16(interleave, both));
    }
  }
  // Queries, every token's (padding too: its output is defined).
  s.queries.resize(p.tokens * dim);
  for (int64_t t = 0; t < p.tokens; ++t) {
    if (t + AHEAD < p.tokens) {
      prefetch(rows + (t + AHEAD) * 3 * width, dim);
    }
    to_bf16(rows + t * 3 * width, s.queries.data() + t * dim, dim);
  }
  return padded;
}

// Softmax of ROWS score rows into bf16 weights; the rows' 1 / sum.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void
softmax_rows(Scratch &s, int rows, int64_t padded, float *inverse) {
  for (int r = 0; r < rows; ++r) {
    float *scores = s.scores.data() + r * padded;
    __m512 most = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < padded; i += LANES) {
      most = _mm512_max_ps(most, _mm512_loadu_ps(scores + i));
    }
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(most));
    __m512 sum = _mm512_setzero_ps();
    uint16_t *weights = s.weights.data() + r * padded;
    for (int64_t i = 0; i < padded; i += LANES) {
      const __m512 e = exp_below_zero(_mm512_sub_ps(_mm512_loadu_ps(scores + i), top));
      sum = _mm512_add_ps(sum, e);
      const __m256bh converted = _mm512_cvtneps_pbh(e);
      std::memcpy(weights + i, &converted, sizeof converted);
    }
    inverse[r] = 1.f / _mm512_reduce_add_ps(sum);
  }
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) void
attend_head(const Problem &p, int64_t window, int64_t head, Scratch &s) {
  const int64_t dim = p.dim, width = p.heads * dim;
  float *out = p.out + window * p.tokens * width + head * dim;
  const int64_t padded = pack_head(p, window, head, s);
  if (padded == 0) {
    for (int64_t t = 0; t < p.tokens; ++t) {
      std::fill(out + t * width, out + t * width + dim, 0.f);
    }
    return;
  }
  s.scores.resize(QUERIES * padded);
  s.weights.resize(QUERIES * padded);
  const int64_t key_blocks = padded / LANES, value_blocks = dim / LANES;
  for (int64_t first = 0; first < p.tokens; first += QUERIES) {
    const int rows = static_cast<int>(std::min<int64_t>(QUERIES, p.tokens - first));
    const uint16_t *queries = s.queries.data() + first * dim;
    float inverse[QUERIES];
    float *target = out + first * width;
    const auto block = [&](auto queries_in_block) {
      constexpr int ROWS = decltype(queries_in_block)::value;
      nlp::in_fours(key_blocks, [&](auto kb, int64_t block) {
        score_tile<ROWS, decltype(kb)::value>(s, queries, dim, padded, block, p.scale,
                                              s.scores.data());
      });
      softmax_rows(s, ROWS, padded, inverse);
      nlp::in_fours(value_blocks, [&](auto db, int64_t block) {
        value_tile<ROWS, decltype(db)::value>(s, padded, dim, block, inverse, target, width);
      });
    };
    switch (rows) {
    case 4:
      block(std::integral_constant<int, 4>{});
      break;
    case 3:
      block(std::integral_constant<int, 3>{});
      break;
    case 2:
      block(std::integral_constant<int, 2>{});
      break;
    default:
      block(std::integral_constant<int, 1>{});
      break;
    }
  }
}

}  // namespace

// Whether this CPU runs the kernel: AVX-512 with BF16.
extern "C" int nlp_window_attention_available() {
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512bf16");
  return has ? 1 : 0;
}

// softmax(q k^T * scale, hidden keys -inf) v for every head of `qkv`
// ([windows, tokens, 3 * heads * dim] fp32 CPU, contiguous: queries, keys
// and values side by side, as the fused projection gives them), with
// `visible` ([windows, tokens], nonzero where a key may be attended to):
// [windows, tokens, heads * dim] fp32, heads merged. `dim` must be a
// multiple of 16. A window with no visible key gets zeros. On `threads`
// threads (the caller and its crew).
extern "C" tensor nlp_window_attention(tensor qkv, tensor visible, int64_t heads, double scale,
                                       int64_t threads) {
  GUARD({
    TORCH_CHECK(nlp_window_attention_available() == 1, "window attention needs AVX-512 BF16");
    const at::Tensor x = qkv->contiguous();
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 3 && x.device().is_cpu(),
                "window attention takes [windows, tokens, 3 * width] fp32 on the CPU");
    TORCH_CHECK(heads > 0 && x.size(2) % (3 * heads) == 0,
                "window attention's width is not three times a multiple of the heads");
    const int64_t width = x.size(2) / 3, dim = width / heads;
    TORCH_CHECK(dim % LANES == 0, "window attention needs a head size that is a multiple of 16");
    const at::Tensor mask = visible->to(at::kByte).contiguous();
    TORCH_CHECK(mask.dim() == 2 && mask.size(0) == x.size(0) && mask.size(1) == x.size(1),
                "window attention's mask is not [windows, tokens]");
    at::Tensor out = at::empty({x.size(0), x.size(1), width}, x.options());
    const Problem problem{x.const_data_ptr<float>(),
                          mask.const_data_ptr<uint8_t>(),
                          out.data_ptr<float>(),
                          x.size(0),
                          x.size(1),
                          heads,
                          dim,
                          static_cast<float>(scale)};
    nlp::share(threads, problem.batch * heads, [&](int64_t pair) {
      static thread_local Scratch scratch;
      attend_head(problem, pair / heads, pair % heads, scratch);
    });
    return new at::Tensor(out);
  })
}
