// An fp32 linear layer for a decoding step's few rows, whose cost is
// reading the weights once: on one row libtorch's product (MKL's sgemv or
// sgemm) streams the weights on the calling thread, or on libgomp threads
// that sleep between layers and wake once per product. This one splits the
// weights between the model thread and its crew (crew.h), which poll
// between layers, so both cores stream them.
//
// The weights are read where they were loaded, in either layout: [out, in]
// rows (a PyTorch Linear: each output a dot product of a weight row and an
// input row) or the transpose of [in, out] (GPT-2's Conv1D: each input
// adds a multiple of a weight row to the outputs). Where the CPU has
// AVX-512, a prompt's rows in the [in, out] layout run on register tiles
// instead (`gemm_tile`): libtorch's MKL sgemm copies the whole weight
// matrix into its own layout on every call, as long as its product takes
// for a 32-token prompt.
#include <ATen/ATen.h>

#include "boundary.h"
#include "crew.h"
#include "simd.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Outputs per tile of the [out, in] layout.
constexpr int64_t DOT_OUTPUTS = 4;

struct Layer {
  const float *x;       // [rows, in]
  const float *weight;  // [out, in] (dot) or [in, out] (axpy)
  const float *bias;    // [out] or null
  float *y;             // [rows, out]
  int64_t rows, in, out;
};

using nlp::sum8;

// ROWS rows x 4 outputs [o, o + 4) of the [out, in] layout.
template <int ROWS>
__attribute__((target("avx2,fma"))) void dot_tile(const Layer &l, int64_t row, int64_t o) {
  __m256 acc[ROWS][DOT_OUTPUTS];
  for (int r = 0; r < ROWS; ++r) {
    for (int k = 0; k < DOT_OUTPUTS; ++k) {
      acc[r][k] = _mm256_setzero_ps();
    }
  }
  const float *w = l.weight + o * l.in;
  const float *x = l.x + row * l.in;
  int64_t i = 0;
  for (; i + 8 <= l.in; i += 8) {
    __m256 ws[DOT_OUTPUTS];
    for (int k = 0; k < DOT_OUTPUTS; ++k) {
      ws[k] = _mm256_loadu_ps(w + k * l.in + i);
    }
    for (int r = 0; r < ROWS; ++r) {
      const __m256 xs = _mm256_loadu_ps(x + r * l.in + i);
      for (int k = 0; k < DOT_OUTPUTS; ++k) {
        acc[r][k] = _mm256_fmadd_ps(xs, ws[k], acc[r][k]);
      }
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int k = 0; k < DOT_OUTPUTS; ++k) {
      float sum = sum8(acc[r][k]);
      for (int64_t j = i; j < l.in; ++j) {
        sum += x[r * l.in + j] * w[k * l.in + j];
      }
      l.y[(row + r) * l.out + o + k] = sum + (l.bias ? l.bias[o + k] : 0.f);
    }
  }
}

// Outputs [first, last) of the [out, in] layout, whole tiles of 4 but
// for the last; rows two at a time.
__attribute__((target("avx2,fma"))) void dot_outputs(const Layer &l, int64_t first,
                                                     int64_t last) {
  for (int64_t o = first; o < last; o += DOT_OUTPUTS) {
    if (o + DOT_OUTPUTS > l.out) {
      // The last outputs one at a time.
      for (int64_t k = o; k < l.out; ++k) {
        for (int64_t r = 0; r < l.rows; ++r) {
          float sum = 0.f;
          for (int64_t j = 0; j < l.in; ++j) {
            sum += l.x[r * l.in + j] * l.weight[k * l.in + j];
          }
          l.y[r * l.out + k] = sum + (l.bias ? l.bias[k] : 0.f);
        }
      }
      break;
    }
    int64_t r = 0;
    for (; r + 2 <= l.rows; r += 2) {
      dot_tile<2>(l, r, o);
    }
    if (r < l.rows) {
      dot_tile<1>(l, r, o);
    }
  }
}

// Inputs [first, last) of the [in, out] layout into `partial` ([rows,
// out], zeroed here): each input adds a multiple of its weight row, four
// rows at a time, so that the weights are read in order, once.
__attribute__((target("avx2,fma"))) void axpy_inputs(const Layer &l, int64_t first,
                                                     int64_t last, float *partial) {
  std::memset(partial, 0, sizeof(float) * l.rows * l.out);
  const int64_t whole = l.out / 8 * 8;
  int64_t i = first;
  for (; i + 4 <= last; i += 4) {
    const float *w = l.weight + i * l.out;
    for (int64_t r = 0; r < l.rows; ++r) {
      const float *x = l.x + r * l.in + i;
      const __m256 x0 = _mm256_set1_ps(x[0]), x1 = _mm256_set1_ps(x[1]),
                   x2 = _mm256_set1_ps(x[2]), x3 = _mm256_set1_ps(x[3]);
      float *y = partial + r * l.out;
      for (int64_t c = 0; c < whole; c += 8) {
        __m256 sum = _mm256_loadu_ps(y + c);
        sum = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + c), sum);
        sum = _mm256_fmadd_ps(x1, _mm256_loadu_ps(w + l.out + c), sum);
        sum = _mm256_fmadd_ps(x2, _mm256_loadu_ps(w + 2 * l.out + c), sum);
        sum = _mm256_fmadd_ps(x3, _mm256_loadu_ps(w + 3 * l.out + c), sum);
        _mm256_storeu_ps(y + c, sum);
      }
      for (int64_t c = whole; c < l.out; ++c) {
        y[c] += x[0] * w[c] + x[1] * w[l.out + c] + x[2] * w[2 * l.out + c] +
                x[3] * w[3 * l.out + c];
      }
    }
  }
  for (; i < last; ++i) {
    const float *w = l.weight + i * l.out;
    for (int64_t r = 0; r < l.rows; ++r) {
      const float x = l.x[r * l.in + i];
      float *y = partial + r * l.out;
      for (int64_t c = 0; c < l.out; ++c) {
        y[c] += x * w[c];
      }
    }
  }
}

// Up to this many rows in one tile of the [in, out] layout: two registers
// of outputs per row, 24 accumulators of AVX-512's 32 registers.
constexpr int TILE_ROWS = 12;
// Outputs per tile of the [in, out] layout (two AVX-512 registers).
constexpr int64_t TILE_COLUMNS = 32;

// Rows [row, row + ROWS) x outputs [c, c + 32) of the [in, out] layout over
// every input: each input's two registers of weights times each row's
// input, broadcast. The caller runs every row group of one column slab in
// turn, so the slab ([in, 32]: 96 KB to 384 KB) is read from memory once
// and from L2 after.
template <int ROWS>
__attribute__((target("avx512f"))) void gemm_tile(const Layer &l, int64_t row, int64_t c) {
  const int64_t left = l.out - c;
  const __mmask16 m0 = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
  const __mmask16 m1 =
      left >= 32 ? 0xFFFF : left <= 16 ? 0 : static_cast<__mmask16>((1u << (left - 16)) - 1);
  __m512 a0[ROWS], a1[ROWS];
  const __m512 b0 = l.bias ? _mm512_maskz_loadu_ps(m0, l.bias + c) : _mm512_setzero_ps();
  const __m512 b1 = l.bias ? _mm512_maskz_loadu_ps(m1, l.bias + c + 16) : _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
    a0[r] = b0;
    a1[r] = b1;
  }
  const float *w = l.weight + c;
  const float *x = l.x + row * l.in;
  const int64_t in = l.in, out = l.out;
  for (int64_t i = 0; i < in; ++i) {
    const float *wi = w + i * out;
    // Each input's weights lie a whole row of outputs apart: a stride the
    // hardware prefetchers do not follow across pages. (Prefetches past the
    // matrix do not fault.)
    _mm_prefetch(reinterpret_cast<const char *>(wi + 32 * out), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char *>(wi + 32 * out + 16), _MM_HINT_T0);
    const __m512 w0 = _mm512_maskz_loadu_ps(m0, wi);
    const __m512 w1 = _mm512_maskz_loadu_ps(m1, wi + 16);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      const __m512 xs = _mm512_set1_ps(x[r * in + i]);
      a0[r] = _mm512_fmadd_ps(xs, w0, a0[r]);
      a1[r] = _mm512_fmadd_ps(xs, w1, a1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
    float *y = l.y + (row + r) * out + c;
    _mm512_mask_storeu_ps(y, m0, a0[r]);
    _mm512_mask_storeu_ps(y + 16, m1, a1[r]);
  }
}

template <int ROWS>
void gemm_rows(const Layer &l, int64_t row, int64_t c, int64_t rows) {
  if constexpr (ROWS > 1) {
    if (rows < ROWS) {
      gemm_rows<ROWS - 1>(l, row, c, rows);
      return;
    }
  }
  gemm_tile<ROWS>(l, row, c);
}

// Output slabs [first, last) of 32 of the [in, out] layout, every row.
void gemm_slabs(const Layer &l, int64_t first, int64_t last) {
  for (int64_t slab = first; slab < last; ++slab) {
    for (int64_t row = 0; row < l.rows; row += TILE_ROWS) {
      gemm_rows<TILE_ROWS>(l, row, slab * TILE_COLUMNS, std::min<int64_t>(TILE_ROWS, l.rows - row));
    }
  }
}

}  // namespace

// Whether this CPU runs `nlp_fp32_linear` (AVX2 and FMA).
extern "C" int nlp_fp32_linear_available() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// Whether this CPU runs `nlp_fp32_linear`'s register tiles over many rows
// of the [in, out] layout (AVX-512).
extern "C" int nlp_fp32_tiles_available() { return __builtin_cpu_supports("avx512f"); }

// From this many rows the [in, out] layout runs on register tiles (where
// the CPU has AVX-512) instead of per-input partial sums.
constexpr int64_t TILES_FROM_ROWS = 9;

// `input` [..., in] fp32 times `weight` ([out, in] fp32, its rows or its
// columns contiguous) plus `bias` ([out] or undefined), on `threads` threads
// (the caller and its crew); the caller checks availability.
extern "C" tensor nlp_fp32_linear(tensor input, tensor weight, tensor bias, int64_t threads) {
  GUARD({
    const at::Tensor x = input->contiguous();
    TORCH_CHECK(x.scalar_type() == at::kFloat && weight->scalar_type() == at::kFloat,
                "fp32 layer given another kind");
    const int64_t in = weight->size(1), out = weight->size(0);
    TORCH_CHECK(x.size(-1) == in, "fp32 layer takes ", in, " inputs, given ", x.size(-1));
    const bool rows_contiguous = weight->stride(1) == 1 && weight->stride(0) == in;
    const bool columns_contiguous = weight->stride(0) == 1 && weight->stride(1) == out;
    TORCH_CHECK(rows_contiguous || columns_contiguous, "fp32 layer weights not contiguous");
    const bool has_bias = bias && bias->defined();
    at::Tensor b;
    if (has_bias) {
      b = bias->to(at::kFloat).contiguous();
      TORCH_CHECK(b.numel() == out, "fp32 layer bias has the wrong size");
    }
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out;
    at::Tensor y = at::empty(shape, x.options());
    const Layer layer{x.const_data_ptr<float>(), weight->const_data_ptr<float>(),
                      has_bias ? b.const_data_ptr<float>() : nullptr, y.data_ptr<float>(),
                      in == 0 ? 0 : x.numel() / in, in, out};
    // About two chunks per thread: each a share of the outputs ([out, in]),
    // or a share of the inputs with its own partial sums ([in, out]).
    const int64_t parts = 2 * std::max<int64_t>(threads, 1);
    if (rows_contiguous) {
      const int64_t tiles = (out + DOT_OUTPUTS - 1) / DOT_OUTPUTS;
      const int64_t per_chunk = std::max<int64_t>(1, tiles / parts) * DOT_OUTPUTS;
      nlp::share(threads, (out + per_chunk - 1) / per_chunk, [&](int64_t chunk) {
        dot_outputs(layer, chunk * per_chunk, std::min(out, (chunk + 1) * per_chunk));
      });
    } else if (layer.rows >= TILES_FROM_ROWS && nlp_fp32_tiles_available()) {
      const int64_t slabs = (out + TILE_COLUMNS - 1) / TILE_COLUMNS;
      const int64_t per_chunk = std::max<int64_t>(1, slabs / parts);
      nlp::share(threads, (slabs + per_chunk - 1) / per_chunk, [&](int64_t chunk) {
        gemm_slabs(layer, chunk * per_chunk, std::min(slabs, (chunk + 1) * per_chunk));
      });
    } else {
      const int64_t per_chunk = std::max<int64_t>(4, (in / parts + 3) / 4 * 4);
      const int64_t chunks = std::max<int64_t>(1, (in + per_chunk - 1) / per_chunk);
      const int64_t size = layer.rows * out;
      std::vector<float> partials(chunks * size);
      nlp::share(threads, chunks, [&](int64_t chunk) {
        axpy_inputs(layer, chunk * per_chunk, std::min(in, (chunk + 1) * per_chunk),
                    partials.data() + chunk * size);
      });
      float *target = y.data_ptr<float>();
      for (int64_t k = 0; k < size; ++k) {
        float sum = layer.bias ? layer.bias[k % out] : 0.f;
        for (int64_t chunk = 0; chunk < chunks; ++chunk) {
          sum += partials[chunk * size + k];
        }
        target[k] = sum;
      }
    }
    return new at::Tensor(y);
  })
}
