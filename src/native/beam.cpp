// A beam search step's candidates, read from its logits in one kernel
// (src/generation/candidates.rs): for each row, its `k` largest logits with
// their columns and the terms of its log-softmax, so that the caller scores
// those few continuations without writing the row's log-probabilities.
// libtorch's log_softmax over a 16-client step (64 rows of opus-mt's 58,101
// words, 15 MB) ran on one thread and wrote them all, and a second pass
// over them picked the best: a sixth of the step. Rows are split between
// the model thread and its crew (crew.h).

#include "boundary.h"
#include "crew.h"

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace {

// e^x in every lane, as accurate as libtorch's (Cephes' polynomial, about
// one unit in the last place); 0 below -87.3, where fp32 underflows.
__attribute__((target("avx512f"))) inline __m512 exp16(__m512 x) {
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // x - n ln 2, with ln 2 in two parts so that the first product is exact.
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y =
      _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), _mm512_scalef_ps(y, n));
}

// The row's `k` largest values, largest first and the earlier column first
// among equals, kept sorted as they are found.
struct Best {
  float *values;
  int64_t *columns;
  int64_t k;
  int64_t count = 0;

  bool full() const { return count == k; }
  float threshold() const { return values[k - 1]; }

  void offer(float value, int64_t column) {
    if (full() && !(value > threshold())) {
      return;
    }
    // The last place when full (its value leaves), else the first free one.
    int64_t at = full() ? k - 1 : count;
    // After every kept value at least as large: an equal one came earlier.
    while (at > 0 && values[at - 1] < value) {
      values[at] = values[at - 1];
      columns[at] = columns[at - 1];
      --at;
    }
    values[at] = value;
    columns[at] = column;
    count = count < k ? count + 1 : k;
  }
};

// Values a block skips at once when none of them passes the threshold.
constexpr int64_t BLOCK = 64;

// One row: its maximum and the `k` best in one pass, then the sum of
// e^(x - max) in libtorch's order (sixteen lanes, each adding every
// sixteenth value, the last partial vector into its first lanes, the lanes
// in a tree), so that log-probabilities come out as log_softmax's:
// (x - max) - log(sum).
__attribute__((target("avx512f"))) void row_candidates(const float *row, int64_t vocab, Best &best,
                                                     float &maximum, float &log_sum) {
  __m512 top = _mm512_set1_ps(-INFINITY);
  int64_t c = 0;
  for (; c + BLOCK <= vocab; c += BLOCK) {
    const __m512 block = _mm512_max_ps(
        _mm512_max_ps(_mm512_loadu_ps(row + c), _mm512_loadu_ps(row + c + 16)),
        _mm512_max_ps(_mm512_loadu_ps(row + c + 32), _mm512_loadu_ps(row + c + 48)));
    top = _mm512_max_ps(top, block);
    if (best.full() &&
        _mm512_cmp_ps_mask(block, _mm512_set1_ps(best.threshold()), _CMP_GT_OQ) == 0) {
      continue;
    }
    for (int64_t i = c; i < c + BLOCK; ++i) {
      best.offer(row[i], i);
    }
  }
  float most = _mm512_reduce_max_ps(top);
  for (; c < vocab; ++c) {
    most = std::max(most, row[c]);
    best.offer(row[c], c);
  }
  maximum = most;

  const __m512 shift = _mm512_set1_ps(most);
  float sum = 0.0f;
  if (vocab < 16) {
    for (int64_t i = 0; i < vocab; ++i) {
      sum += std::exp(row[i] - most);
    }
  } else {
    __m512 lanes = exp16(_mm512_sub_ps(_mm512_loadu_ps(row), shift));
    int64_t i = 16;
    for (; i + 16 <= vocab; i += 16) {
      lanes = _mm512_add_ps(lanes, exp16(_mm512_sub_ps(_mm512_loadu_ps(row + i), shift)));
    }
    if (i < vocab) {
      const __mmask16 rest = static_cast<__mmask16>((1u << (vocab - i)) - 1);
      const __m512 tail = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(rest, row + i), shift));
      lanes = _mm512_mask_add_ps(lanes, rest, lanes, tail);
    }
    alignas(64) float lane[16];
    _mm512_store_ps(lane, lanes);
    for (int width = 8; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) {
        lane[j] += lane[j + width];
      }
    }
    sum = lane[0];
  }
  log_sum = std::log(sum);
}

}  // namespace

extern "C" int nlp_beam_candidates_available() { return __builtin_cpu_supports("avx512f"); }

// For each row of `logits` ([rows, vocab] contiguous fp32 on the CPU): its
// `k` largest logits, largest first (the earlier column first among equals)
// into `values` and their columns into `columns` ([rows, k] each), and its
// maximum and log(sum of e^(x - max)) into `terms` ([rows, 2]): column c's
// log-probability is (x[c] - max) - log_sum. On `threads` threads (the
// caller and its crew); needs AVX-512 (`nlp_beam_candidates_available`).
// Returns 0, or -1 with the reason in `nlp_last_error`.
extern "C" int nlp_beam_candidates(tensor logits, int64_t k, float *values, int64_t *columns,
                                   float *terms, int64_t threads) {
  try {
    const at::Tensor &x = *logits;
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.device().is_cpu() &&
                    x.is_contiguous(),
                "beam candidates take contiguous 2-D fp32 CPU logits");
    const int64_t rows = x.size(0), vocab = x.size(1);
    TORCH_CHECK(k >= 1 && k <= vocab, "beam candidates: k out of range");
    const float *data = x.const_data_ptr<float>();
    nlp::share(threads, rows, [&](int64_t row) {
      Best best{values + row * k, columns + row * k, k};
      row_candidates(data + row * vocab, vocab, best, terms[2 * row], terms[2 * row + 1]);
    });
    return 0;
  } catch (const std::exception &error) {
    nlp_set_last_error(error.what());
  } catch (...) {
    nlp_set_last_error("unknown C++ exception");
  }
  return -1;
}
