// Small helpers shared by src/native's vector loops.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <type_traits>

namespace nlp {

// The sum of a vector's eight floats.
__attribute__((target("avx2,fma"))) inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// `tile(std::integral_constant<int, N>{}, first)` over [0, count) four at a
// time, the last one to three together: register tiles of four rows (or
// blocks) whose operands serve as many as their registers hold.
template <typename Tile> inline void in_fours(int64_t count, const Tile &tile) {
  int64_t first = 0;
  for (; first + 4 <= count; first += 4) {
    tile(std::integral_constant<int, 4>{}, first);
  }
  switch (count - first) {
  case 3:
    tile(std::integral_constant<int, 3>{}, first);
    break;
  case 2:
    tile(std::integral_constant<int, 2>{}, first);
    break;
  case 1:
    tile(std::integral_constant<int, 1>{}, first);
    break;
  default:
    break;
  }
}

}  // namespace nlp
