// An int8 linear layer for AVX2 whose cost is reading its weights: fp32
// activations quantised per row to uint8, multiplied by int8 weights packed
// in blocks of 16 output rows with 4 inputs interleaved, accumulated in
// 32 bits and written as fp32 with the row scales, zero points and bias
// applied in the same pass. One call, no packing of the activations, no
// second pass over the output: on a decoding step's few rows libtorch's
// fbgemm path spends more on those than on the product.
//
// Weights must hold at most 7 bits of magnitude (|w| <= 64): vpmaddubsw
// adds each pair of uint8 x int8 products in 16 bits, and 255 * 64 * 2
// still fits.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "boundary.h"
#include "crew.h"
#include "simd.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

// Output rows per packed block (two AVX2 registers of int32 sums) and
// inputs interleaved per row (one vpmaddubsw quad).
constexpr int64_t BLOCK = 16;
constexpr int64_t QUAD = 4;

struct RowLevels {
  float scale;
  int32_t zero_point;
};

// The levels of a row whose values lie in [low, high] (0 included): 255
// equal steps, zero at a whole level.
RowLevels levels_over(float low, float high) {
  const float scale = std::max(high - low, 1e-12f) / 255.f;
  const int32_t zero_point = static_cast<int32_t>(
      std::min(std::max(std::nearbyint(-low / scale), 0.f), 255.f));
  return {scale, zero_point};
}

// Values [from, count) of a row as levels, rounded to nearest even.
void to_levels(const float *x, int64_t from, int64_t count, RowLevels levels, uint8_t *out) {
  const float inverse = 1.f / levels.scale;
  for (int64_t i = from; i < count; ++i) {
    float level = std::nearbyint(x[i] * inverse) + static_cast<float>(levels.zero_point);
    out[i] = static_cast<uint8_t>(std::min(std::max(level, 0.f), 255.f));
  }
}

// Levels of one row over its range widened to take in 0.
RowLevels levels_plain(const float *x, int64_t count, uint8_t *out) {
  float low = 0.f, high = 0.f;
  for (int64_t i = 0; i < count; ++i) {
    low = std::min(low, x[i]);
    high = std::max(high, x[i]);
  }
  const RowLevels levels = levels_over(low, high);
  to_levels(x, 0, count, levels, out);
  return levels;
}

__attribute__((target("avx2,fma"))) float reduce_min(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma"))) float reduce_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma"))) inline __m256i level_avx2(const float *x, __m256 times,
                                                              __m256i shift) {
  return _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), times)), shift);
}

// The same levels as `levels_plain`, 32 values at a time.
__attribute__((target("avx2,fma"))) RowLevels
levels_avx2(const float *x, int64_t count, uint8_t *out) {
  __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    low = _mm256_min_ps(low, v);
    high = _mm256_max_ps(high, v);
  }
  float lo = reduce_min(low), hi = reduce_max(high);
  for (; i < count; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const RowLevels levels = levels_over(lo, hi);
  const float inverse = 1.f / levels.scale;
  const int32_t zero_point = levels.zero_point;
  const __m256 times = _mm256_set1_ps(inverse);
  const __m256i shift = _mm256_set1_epi32(zero_point);
  // packs interleave the two 128-bit lanes; this puts the bytes back.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  i = 0;
  for (; i + 32 <= count; i += 32) {
    // Saturating packs clamp to 0..255 on the way.
    const __m256i words01 = _mm256_packs_epi32(level_avx2(x + i, times, shift),
                                               level_avx2(x + i + 8, times, shift));
    const __m256i words23 = _mm256_packs_epi32(level_avx2(x + i + 16, times, shift),
                                               level_avx2(x + i + 24, times, shift));
    const __m256i bytes = _mm256_packus_epi16(words01, words23);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + i),
                        _mm256_permutevar8x32_epi32(bytes, order));
  }
  to_levels(x, i, count, levels, out);
  return levels;
}

bool has_avx2() {
  static const bool has =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

struct Problem {
  const uint8_t *levels;  // [rows, quads * 4]
  const RowLevels *row_levels;
  const int8_t *packed;   // [blocks, quads, 16, 4]
  const int32_t *sums;    // [blocks * 16] weight row sums
  const float *scales;    // [blocks * 16]
  const float *bias;      // [blocks * 16]
  float *out;             // [rows, outputs]
  int64_t rows, quads, outputs;
  bool add;               // out += the product instead of out = it
};

// One output: the int32 sum corrected for the zero point, scaled, biased.
inline float finish(const Problem &p, int64_t row, int64_t column, int32_t sum) {
  const RowLevels levels = p.row_levels[row];
  const int32_t exact = sum - levels.zero_point * p.sums[column];
  return static_cast<float>(exact) * (levels.scale * p.scales[column]) +
         p.bias[column];
}

// The plain loop for CPUs without AVX2 (and the reference in tests).
void blocks_plain(const Problem &p, int64_t first, int64_t last) {
  const int64_t width = p.quads * QUAD;
  for (int64_t block = first; block < last; ++block) {
    const int8_t *weights = p.packed + block * p.quads * BLOCK * QUAD;
    for (int64_t row = 0; row < p.rows; ++row) {
      const uint8_t *x = p.levels + row * width;
      for (int64_t lane = 0; lane < BLOCK; ++lane) {
        const int64_t column = block * BLOCK + lane;
        if (column >= p.outputs) {
          break;
        }
        int32_t sum = 0;
        for (int64_t quad = 0; quad < p.quads; ++quad) {
          for (int64_t i = 0; i < QUAD; ++i) {
            sum += static_cast<int32_t>(x[quad * QUAD + i]) *
                   weights[(quad * BLOCK + lane) * QUAD + i];
          }
        }
        float &target = p.out[row * p.outputs + column];
        target = finish(p, row, column, sum) + (p.add ? target : 0.f);
      }
    }
  }
}

// ROWS x 16 outputs (two registers of 8), accumulated over every input
// quad: each 64-byte load of weights serves ROWS rows.
template <int ROWS>
__attribute__((target("avx2,fma"))) inline void
tile_avx2(const Problem &p, int64_t row, int64_t block) {
  constexpr int HALVES = BLOCK / 8;
  const int64_t width = p.quads * QUAD;
  const int8_t *weights = p.packed + block * p.quads * BLOCK * QUAD;
  const uint8_t *x = p.levels + row * width;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[ROWS][HALVES];
  for (int r = 0; r < ROWS; ++r) {
    for (int h = 0; h < HALVES; ++h) {
      acc[r][h] = _mm256_setzero_si256();
    }
  }
  for (int64_t quad = 0; quad < p.quads; ++quad) {
    __m256i w[HALVES];
    for (int h = 0; h < HALVES; ++h) {
      w[h] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i *>(weights + (quad * BLOCK + h * 8) * QUAD));
    }
    for (int r = 0; r < ROWS; ++r) {
      int32_t four;
      std::memcpy(&four, x + r * width + quad * QUAD, sizeof four);
      const __m256i xs = _mm256_set1_epi32(four);
      for (int h = 0; h < HALVES; ++h) {
        acc[r][h] = _mm256_add_epi32(
            acc[r][h], _mm256_madd_epi16(_mm256_maddubs_epi16(xs, w[h]), ones));
      }
    }
  }
  for (int h = 0; h < HALVES; ++h) {
    const int64_t column = block * BLOCK + h * 8;
    const int64_t valid = std::min<int64_t>(8, p.outputs - column);
    if (valid <= 0) {
      break;
    }
    const __m256i sums = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p.sums + column));
    const __m256 scales = _mm256_loadu_ps(p.scales + column);
    const __m256 bias = _mm256_loadu_ps(p.bias + column);
    for (int r = 0; r < ROWS; ++r) {
      const RowLevels levels = p.row_levels[row + r];
      const __m256i exact = _mm256_sub_epi32(
          acc[r][h], _mm256_mullo_epi32(sums, _mm256_set1_epi32(levels.zero_point)));
      __m256 value = _mm256_fmadd_ps(
          _mm256_cvtepi32_ps(exact),
          _mm256_mul_ps(scales, _mm256_set1_ps(levels.scale)), bias);
      float *target = p.out + (row + r) * p.outputs + column;
      alignas(32) float staged[8] = {};
      if (p.add) {
        std::memcpy(staged, target, valid * sizeof(float));
        value = _mm256_add_ps(value, _mm256_load_ps(staged));
      }
      if (valid == 8) {
        _mm256_storeu_ps(target, value);
      } else {
        _mm256_store_ps(staged, value);
        std::memcpy(target, staged, valid * sizeof(float));
      }
    }
  }
}

// Blocks [first, last), every row of each block while its weights are in
// cache.
__attribute__((target("avx2,fma"))) void blocks_avx2(const Problem &p, int64_t first,
                                                     int64_t last) {
  for (int64_t block = first; block < last; ++block) {
    nlp::in_fours(p.rows, [&](auto rows, int64_t row) {
      tile_avx2<decltype(rows)::value>(p, row, block);
    });
  }
}

// The column terms of one packed block's 16 outputs, for writing rows of
// them: weight sums, scales, bias, and which of the 16 exist.
struct OutputBlock {
  int64_t column;
  __mmask16 mask;
  __m512i sums;
  __m512 scales, bias;
};

// Block `block`'s terms; false past the last output.
__attribute__((target("avx512f"))) inline bool output_block(const Problem &p, int64_t block,
                                                           OutputBlock &out) {
  const int64_t column = block * BLOCK;
  const int64_t valid = std::min<int64_t>(BLOCK, p.outputs - column);
  if (valid <= 0) {
    return false;
  }
  out = OutputBlock{column, static_cast<__mmask16>((1u << valid) - 1u),
                    _mm512_loadu_si512(p.sums + column), _mm512_loadu_ps(p.scales + column),
                    _mm512_loadu_ps(p.bias + column)};
  return true;
}

// Row `row`'s outputs of block `o` from their int32 sums: corrected for the
// zero point, scaled, biased, and written (or added, `p.add`).
__attribute__((target("avx512f"))) inline void finish_row(const Problem &p, const OutputBlock &o,
                                                         int64_t row, __m512i sum) {
  const RowLevels levels = p.row_levels[row];
  const __m512i exact =
      _mm512_sub_epi32(sum, _mm512_mullo_epi32(o.sums, _mm512_set1_epi32(levels.zero_point)));
  __m512 value = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact),
                                 _mm512_mul_ps(o.scales, _mm512_set1_ps(levels.scale)), o.bias);
  float *target = p.out + row * p.outputs + o.column;
  if (p.add) {
    value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(o.mask, target));
  }
  _mm512_mask_storeu_ps(target, o.mask, value);
}

// ROWS x (16 * BLOCKS) outputs, one AVX-512 register of sums per row and
// block, each input quad one vpdpbusd per register (the four products added
// in 32 bits): per quad, BLOCKS loads of weights and ROWS broadcasts of
// activations feed ROWS * BLOCKS products.
template <int ROWS, int BLOCKS>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline void
tile_vnni(const Problem &p, int64_t row, int64_t block) {
  const int64_t width = p.quads * QUAD;
  const int64_t stride = p.quads * BLOCK * QUAD;
  const int8_t *weights = p.packed + block * stride;
  const uint8_t *x = p.levels + row * width;
  __m512i acc[ROWS][BLOCKS];
  for (int r = 0; r < ROWS; ++r) {
    for (int b = 0; b < BLOCKS; ++b) {
      acc[r][b] = _mm512_setzero_si512();
    }
  }
  // Two quads per iteration: 5-8% more products per second on 768-input
  // layers of a 690-row share than one (2-vCPU Zen 4).
#pragma GCC unroll 2
  for (int64_t quad = 0; quad < p.quads; ++quad) {
    __m512i w[BLOCKS];
    for (int b = 0; b < BLOCKS; ++b) {
      w[b] = _mm512_loadu_si512(weights + b * stride + quad * BLOCK * QUAD);
    }
    for (int r = 0; r < ROWS; ++r) {
      int32_t four;
      std::memcpy(&four, x + r * width + quad * QUAD, sizeof four);
      const __m512i xs = _mm512_set1_epi32(four);
      for (int b = 0; b < BLOCKS; ++b) {
        acc[r][b] = _mm512_dpbusd_epi32(acc[r][b], xs, w[b]);
      }
    }
  }
  for (int b = 0; b < BLOCKS; ++b) {
    OutputBlock o;
    if (!output_block(p, block + b, o)) {
      break;
    }
    for (int r = 0; r < ROWS; ++r) {
      finish_row(p, o, row + r, acc[r][b]);
    }
  }
}

// Every row of BLOCKS blocks.
template <int BLOCKS>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void
rows_vnni(const Problem &p, int64_t block) {
  nlp::in_fours(p.rows, [&](auto rows, int64_t row) {
    tile_vnni<decltype(rows)::value, BLOCKS>(p, row, block);
  });
}

// Blocks [first, last), four at a time while the weights of those four
// serve every row from cache.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void
blocks_vnni(const Problem &p, int64_t first, int64_t last) {
  int64_t block = first;
  for (; block + 4 <= last; block += 4) {
    rows_vnni<4>(p, block);
  }
  for (; block < last; ++block) {
    rows_vnni<1>(p, block);
  }
}

bool has_vnni() {
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vnni");
  return has;
}

// AMX: from `AMX_FROM_ROWS` rows, on CPUs with AMX-INT8, whole tiles of 16
// rows x 16 outputs x 64 inputs per instruction (tdpbusd), eight times
// VNNI's products per cycle. The packed blocks are already the B tiles'
// layout (16 quads of 16 outputs x 4 inputs, 64 bytes each), and the
// levels the A tiles' (rows of 64 inputs, `width` apart); sums are exact
// in 32 bits, so the output is VNNI's to the bit. Layers whose inputs are
// not a multiple of 64, and fewer rows, stay on VNNI.
constexpr int64_t TILE = 16;           // rows, outputs and quads of a tile
constexpr int64_t AMX_FROM_ROWS = 16;  // see the measurements in int8.rs

// Whether this process may run AMX-INT8 tiles: the CPU has them and Linux
// granted the tile state (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA).
bool amx_ready() {
  static const bool ready = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 25))) {
      return false;
    }
    constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
  }();
  return ready;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-3 sums (row group r, block b at 2r + b), 4-5 levels (row groups),
// 6-7 weights (blocks): every tile 16 rows of 64 bytes.
__attribute__((target("amx-tile,amx-int8"))) void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = TILE;
  }
  _tile_loadconfig(&config);
}

// Sums of one 16-row x 16-output tile, finished as `tile_vnni` finishes
// its registers (rows past the problem's skipped).
__attribute__((target("avx512f"))) void finish_tile(const Problem &p, const int32_t *sums,
                                                   int64_t row, int64_t block) {
  OutputBlock o;
  if (!output_block(p, block, o)) {
    return;
  }
  const int64_t last = std::min<int64_t>(TILE, p.rows - row);
  for (int64_t r = 0; r < last; ++r) {
    finish_row(p, o, row + r, _mm512_loadu_si512(sums + r * TILE));
  }
}

// GROUPS row groups of 16 from `row` times BLOCKS blocks from `block`.
// The levels hold whole row groups (zero rows past the problem's).
template <int GROUPS, int BLOCKS>
__attribute__((target("amx-tile,amx-int8,avx512f"))) void tile_amx(const Problem &p, int64_t row,
                                                                  int64_t block) {
  const int64_t width = p.quads * QUAD;
  const int64_t stride = p.quads * BLOCK * QUAD;
  const int8_t *weights = p.packed + block * stride;
  const uint8_t *x = p.levels + row * width;
  // Tile numbers are immediates: each (group, block) pair spelled out.
  _tile_zero(0);
  if (BLOCKS > 1) _tile_zero(1);
  if (GROUPS > 1) _tile_zero(2);
  if (GROUPS > 1 && BLOCKS > 1) _tile_zero(3);
  for (int64_t quad = 0; quad < p.quads; quad += TILE) {
    _tile_loadd(4, x + quad * QUAD, width);
    if (GROUPS > 1) _tile_loadd(5, x + TILE * width + quad * QUAD, width);
    _tile_loadd(6, weights + quad * BLOCK * QUAD, BLOCK * QUAD);
    if (BLOCKS > 1) _tile_loadd(7, weights + stride + quad * BLOCK * QUAD, BLOCK * QUAD);
    _tile_dpbusd(0, 4, 6);
    if (BLOCKS > 1) _tile_dpbusd(1, 4, 7);
    if (GROUPS > 1) _tile_dpbusd(2, 5, 6);
    if (GROUPS > 1 && BLOCKS > 1) _tile_dpbusd(3, 5, 7);
  }
  alignas(64) int32_t sums[TILE * TILE];
  _tile_stored(0, sums, TILE * 4);
  finish_tile(p, sums, row, block);
  if (BLOCKS > 1) {
    _tile_stored(1, sums, TILE * 4);
    finish_tile(p, sums, row, block + 1);
  }
  if (GROUPS > 1) {
    _tile_stored(2, sums, TILE * 4);
    finish_tile(p, sums, row + TILE, block);
  }
  if (GROUPS > 1 && BLOCKS > 1) {
    _tile_stored(3, sums, TILE * 4);
    finish_tile(p, sums, row + TILE, block + 1);
  }
}

// Blocks [first, last), two at a time, over every row group, two at a time.
__attribute__((target("amx-tile,amx-int8,avx512f"))) void blocks_amx(const Problem &p,
                                                                    int64_t first,
                                                                    int64_t last) {
  configure_tiles();
  const int64_t groups = (p.rows + TILE - 1) / TILE;
  for (int64_t block = first; block < last; block += 2) {
    const bool pair = block + 1 < last;
    int64_t group = 0;
    for (; group + 2 <= groups; group += 2) {
      pair ? tile_amx<2, 2>(p, group * TILE, block) : tile_amx<2, 1>(p, group * TILE, block);
    }
    if (group < groups) {
      pair ? tile_amx<1, 2>(p, group * TILE, block) : tile_amx<1, 1>(p, group * TILE, block);
    }
  }
  _tile_release();
}

}  // namespace

// `input` [..., in] (fp32 or any kind it converts from) times the packed
// weights `packed` ([blocks, quads, 16, 4] int8, see the Rust side), with the
// weight rows' sums, scales and bias ([blocks * 16] each), giving
// [..., outputs] fp32; `in` must be `inputs`. `kernel` 0 picks the fastest
// this CPU runs (AMX from `AMX_FROM_ROWS` rows, else AVX-512 VNNI, else
// AVX2, else plain loops); 1 forces AVX2, 2 the plain loops, 3 VNNI (tests
// compare them). The product runs on `threads`
// threads: the caller and a crew of helpers of its own. Where `into` is
// defined (contiguous fp32, as many elements as the output), the output is
// written there and returned in the input's shape, sharing its storage;
// with `add` nonzero it is added to what `into` holds (a residual sum in
// the same pass, one read and write of the output fewer).
extern "C" tensor nlp_int8_linear(tensor input, tensor packed, tensor sums,
                                  tensor scales, tensor bias, int64_t inputs,
                                  int64_t outputs, int64_t threads, int kernel,
                                  tensor into, int add) {
  GUARD({
    const at::Tensor x = input->to(at::kFloat).contiguous();
    const int64_t in = x.size(-1);
    const int64_t blocks = packed->size(0), quads = packed->size(1);
    TORCH_CHECK(in == inputs, "int8 layer takes ", inputs, " inputs, given ", in);
    TORCH_CHECK(quads * QUAD >= in && quads * QUAD < in + QUAD, "int8 layer packed wrongly");
    TORCH_CHECK(blocks * BLOCK >= outputs, "int8 layer has too few blocks");
    const int64_t rows = in == 0 ? 0 : x.numel() / in;
    const bool vector = kernel != 2 && has_avx2();
    const bool vnni = (kernel == 0 || kernel == 3) && has_vnni();
    const bool amx = kernel == 0 && vnni && rows >= AMX_FROM_ROWS && quads % TILE == 0 &&
                     amx_ready();
    const int64_t width = quads * QUAD;
    // Padding inputs meet zero weights: their levels do not matter. AMX
    // reads whole row groups: the rows past the last are zeros.
    const int64_t padded = amx ? (rows + TILE - 1) / TILE * TILE : rows;
    std::vector<uint8_t> levels(padded * width, 0);
    std::vector<RowLevels> row_levels(rows);
    const float *values = x.const_data_ptr<float>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(in, 1)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t r = begin; r < end; ++r) {
                         const float *row = values + r * in;
                         uint8_t *to = levels.data() + r * width;
                         row_levels[r] =
                             vector ? levels_avx2(row, in, to) : levels_plain(row, in, to);
                       }
                     });
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = outputs;
    at::Tensor out;
    if (into && into->defined()) {
      TORCH_CHECK(into->scalar_type() == at::kFloat && into->is_contiguous() &&
                      into->device().is_cpu() && into->numel() == rows * outputs,
                  "int8 layer's output buffer does not fit its output");
      out = into->view(shape);
    } else {
      TORCH_CHECK(add == 0, "int8 layer adds into a buffer it is not given");
      out = at::empty(shape, x.options());
    }
    const Problem problem{levels.data(),
                          row_levels.data(),
                          packed->const_data_ptr<int8_t>(),
                          sums->const_data_ptr<int32_t>(),
                          scales->const_data_ptr<float>(),
                          bias->const_data_ptr<float>(),
                          out.data_ptr<float>(),
                          rows,
                          quads,
                          outputs,
                          add != 0};
    const auto blocks_in = [&](int64_t first, int64_t last) {
      if (amx) {
        blocks_amx(problem, first, last);
      } else if (vnni) {
        blocks_vnni(problem, first, last);
      } else if (vector) {
        blocks_avx2(problem, first, last);
      } else {
        blocks_plain(problem, first, last);
      }
    };
    // Chunks of whole groups of four blocks (the VNNI loop's), about four
    // per thread.
    const int64_t per_chunk =
        std::max<int64_t>(4, (blocks / (4 * std::max<int64_t>(threads, 1)) + 3) / 4 * 4);
    const int64_t chunks = (blocks + per_chunk - 1) / per_chunk;
    nlp::share(threads, chunks, [&](int64_t chunk) {
      blocks_in(chunk * per_chunk, std::min(blocks, (chunk + 1) * per_chunk));
    });
    return new at::Tensor(out);
  })
}
