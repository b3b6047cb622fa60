#include "encode/block_kernels.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#define MLX2GGUF_X86_KERNELS 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace mlx2gguf {

namespace {

// ---- scalar: the loops of the reference quantizers ----

float absmax_scalar(const float* x) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

void min_max_scalar(const float* x, float& min, float& max) {
  min = FLT_MAX;  // NaN never wins a comparison, so it is skipped as the reference skips it
  max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
}

// Float to int32 by truncation. Values outside int32's range (infinities, NaN) have no C++ meaning; they give
// INT32_MIN, as the x86 conversion instruction the reference quantizers compile to does, so a block holding a
// non-finite value (only encoded when the user allows non-finite weights) gets defined bytes on every machine.
int32_t truncate_to_int32(float v) {
  constexpr float kTwoTo31 = 2147483648.0f;
  if (!(v >= -kTwoTo31 && v < kTwoTo31)) return INT32_MIN;
  return static_cast<int32_t>(v);
}

void round_codes_scalar(const float* x, float scale, int8_t* codes) {
  for (int j = 0; j < 32; ++j) codes[j] = static_cast<int8_t>(truncate_to_int32(std::round(x[j] * scale)));
}

void trunc_codes_scalar(const float* x, float offset, float scale, float add, int cap, uint8_t* codes) {
  for (int j = 0; j < 32; ++j)
    codes[j] = static_cast<uint8_t>(std::min(cap, truncate_to_int32((x[j] - offset) * scale + add)));
}

#ifdef MLX2GGUF_X86_KERNELS

#define MLX2GGUF_AVX2 __attribute__((target("avx2")))

MLX2GGUF_AVX2 float horizontal_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

MLX2GGUF_AVX2 float horizontal_min(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

MLX2GGUF_AVX2 float absmax_avx2(const float* x) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_and_ps(_mm256_loadu_ps(x), abs_mask);
  for (int k = 8; k < 32; k += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + k), abs_mask));
  return horizontal_max(m);
}

MLX2GGUF_AVX2 void min_max_avx2(const float* x, float& min, float& max) {
  __m256 lo = _mm256_loadu_ps(x), hi = lo;
  for (int k = 8; k < 32; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
  }
  min = horizontal_min(lo);
  max = horizontal_max(hi);
}

// 32 int32 (four vectors of 8, in order) → 32 bytes in order, saturating (the values always fit).
MLX2GGUF_AVX2 void store_bytes(__m256i a, __m256i b, __m256i c, __m256i d, void* out) {
  const __m256i ab = _mm256_packs_epi32(a, b);  // per lane: a0..3 b0..3 | a4..7 b4..7
  const __m256i cd = _mm256_packs_epi32(c, d);
  const __m256i bytes = _mm256_packs_epi16(ab, cd);  // per lane: a0..3 b0..3 c0..3 d0..3 | a4..7 b4..7 c4..7 d4..7
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  _mm256_storeu_si256(static_cast<__m256i*>(out), _mm256_permutevar8x32_epi32(bytes, order));
}

// roundf: truncate, then step away from zero when the (exact) remainder is at least one half.
MLX2GGUF_AVX2 __m256i round_half_away(__m256 v) {
  const __m256 truncated = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 sign = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u))));
  const __m256 abs_rest = _mm256_andnot_ps(sign, _mm256_sub_ps(v, truncated));
  const __m256 step = _mm256_and_ps(_mm256_cmp_ps(abs_rest, _mm256_set1_ps(0.5f), _CMP_GE_OQ),
                                    _mm256_or_ps(_mm256_set1_ps(1.0f), sign));
  return _mm256_cvttps_epi32(_mm256_add_ps(truncated, step));
}

MLX2GGUF_AVX2 void round_codes_avx2(const float* x, float scale, int8_t* codes) {
  const __m256 s = _mm256_set1_ps(scale);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) q[k] = round_half_away(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), s));
  store_bytes(q[0], q[1], q[2], q[3], codes);
}

MLX2GGUF_AVX2 void trunc_codes_avx2(const float* x, float offset, float scale, float add, int cap, uint8_t* codes) {
  const __m256 o = _mm256_set1_ps(offset), s = _mm256_set1_ps(scale), a = _mm256_set1_ps(add);
  const __m256i c = _mm256_set1_epi32(cap);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) {
    const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + 8 * k), o), s), a);
    q[k] = _mm256_min_epi32(_mm256_cvttps_epi32(v), c);
  }
  store_bytes(q[0], q[1], q[2], q[3], codes);
}

#endif  // MLX2GGUF_X86_KERNELS

#if defined(__aarch64__)

float absmax_neon(const float* x) {
  float32x4_t m = vabsq_f32(vld1q_f32(x));
  for (int k = 4; k < 32; k += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + k)));
  return vmaxvq_f32(m);
}

void min_max_neon(const float* x, float& min, float& max) {
  float32x4_t lo = vld1q_f32(x), hi = lo;
  for (int k = 4; k < 32; k += 4) {
    const float32x4_t v = vld1q_f32(x + k);
    lo = vminq_f32(lo, v);
    hi = vmaxq_f32(hi, v);
  }
  min = vminvq_f32(lo);
  max = vmaxvq_f32(hi);
}

// 32 int32 (eight vectors of 4, in order) → 32 bytes, saturating (the values always fit).
void store_bytes_neon(const int32x4_t* q, bool to_signed, void* out) {
  for (int half = 0; half < 2; ++half) {
    const int16x8_t a = vcombine_s16(vqmovn_s32(q[4 * half]), vqmovn_s32(q[4 * half + 1]));
    const int16x8_t b = vcombine_s16(vqmovn_s32(q[4 * half + 2]), vqmovn_s32(q[4 * half + 3]));
    uint8_t* to = static_cast<uint8_t*>(out) + 16 * half;
    if (to_signed)
      vst1q_s8(reinterpret_cast<int8_t*>(to), vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
    else
      vst1q_u8(to, vcombine_u8(vqmovun_s16(a), vqmovun_s16(b)));
  }
}

void round_codes_neon(const float* x, float scale, int8_t* codes) {
  const float32x4_t s = vdupq_n_f32(scale);
  int32x4_t q[8];
  for (int k = 0; k < 8; ++k) q[k] = vcvtaq_s32_f32(vmulq_f32(vld1q_f32(x + 4 * k), s));  // ties away from zero
  store_bytes_neon(q, true, codes);
}

void trunc_codes_neon(const float* x, float offset, float scale, float add, int cap, uint8_t* codes) {
  const float32x4_t o = vdupq_n_f32(offset), s = vdupq_n_f32(scale), a = vdupq_n_f32(add);
  const int32x4_t c = vdupq_n_s32(cap);
  int32x4_t q[8];
  for (int k = 0; k < 8; ++k) {
    const float32x4_t v = vaddq_f32(vmulq_f32(vsubq_f32(vld1q_f32(x + 4 * k), o), s), a);
    q[k] = vminq_s32(vcvtq_s32_f32(v), c);
  }
  store_bytes_neon(q, false, codes);
}

#endif  // __aarch64__

}  // namespace

bool block_finite(const float* x) {
  uint32_t non_finite = 0;
  for (int j = 0; j < 32; ++j) {
    uint32_t bits;
    std::memcpy(&bits, x + j, 4);
    non_finite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return non_finite == 0;
}

float block_absmax(Isa isa, const float* x) {
  switch (isa) {
#ifdef MLX2GGUF_X86_KERNELS
    case Isa::Avx2:
    case Isa::Avx512: return absmax_avx2(x);
#endif
#if defined(__aarch64__)
    case Isa::Neon: return absmax_neon(x);
#endif
    default: return absmax_scalar(x);
  }
}

void block_min_max(Isa isa, const float* x, float& min, float& max) {
  switch (isa) {
#ifdef MLX2GGUF_X86_KERNELS
    case Isa::Avx2:
    case Isa::Avx512: return min_max_avx2(x, min, max);
#endif
#if defined(__aarch64__)
    case Isa::Neon: return min_max_neon(x, min, max);
#endif
    default: return min_max_scalar(x, min, max);
  }
}

void block_round_codes(Isa isa, const float* x, float scale, int8_t* codes) {
  switch (isa) {
#ifdef MLX2GGUF_X86_KERNELS
    case Isa::Avx2:
    case Isa::Avx512: return round_codes_avx2(x, scale, codes);
#endif
#if defined(__aarch64__)
    case Isa::Neon: return round_codes_neon(x, scale, codes);
#endif
    default: return round_codes_scalar(x, scale, codes);
  }
}

void block_trunc_codes(Isa isa, const float* x, float offset, float scale, float add, int cap, uint8_t* codes) {
  switch (isa) {
#ifdef MLX2GGUF_X86_KERNELS
    case Isa::Avx2:
    case Isa::Avx512: return trunc_codes_avx2(x, offset, scale, add, cap, codes);
#endif
#if defined(__aarch64__)
    case Isa::Neon: return trunc_codes_neon(x, offset, scale, add, cap, codes);
#endif
    default: return trunc_codes_scalar(x, offset, scale, add, cap, codes);
  }
}

}  // namespace mlx2gguf
