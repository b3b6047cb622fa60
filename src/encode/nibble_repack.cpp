#include "encode/nibble_repack.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define MLX2GGUF_X86_KERNELS 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace mlx2gguf {

namespace {

// ---- scalar: the definition every vector version must match ----

uint8_t code_at(const uint8_t* packed, int i) {
  const uint8_t byte = packed[i >> 1];
  return (i & 1) ? byte >> 4 : byte & 0x0f;
}

// One group of 2 * half codes (half bytes) into ggml's pairing.
void repair_group(const uint8_t* packed, int half, uint8_t* out) {
  for (int j = 0; j < half; ++j) out[j] = static_cast<uint8_t>(code_at(packed, j) | (code_at(packed, j + half) << 4));
}

void repair_block(NibblePairing pairing, const uint8_t* packed, uint8_t* out) {
  if (pairing == NibblePairing::Half16) {
    repair_group(packed, 16, out);
    return;
  }
  for (int s = 0; s < 4; ++s) repair_group(packed + 8 * s, 8, out + 8 * s);
}

int64_t in_bytes(NibblePairing pairing) { return pairing == NibblePairing::Half16 ? 16 : 32; }

void repair_scalar(NibblePairing pairing, const uint8_t* packed, int64_t first, int64_t blocks, uint8_t* out,
                   int64_t out_stride) {
  for (int64_t b = first; b < blocks; ++b) repair_block(pairing, packed + b * in_bytes(pairing), out + b * out_stride);
}

#ifdef MLX2GGUF_X86_KERNELS

// Per 128-bit lane, x holds 32 codes in MLX order. unpacklo/unpackhi of (low nibbles, high nibbles) give codes
// 0..15 and 16..31 as bytes; the same steps are written for 256 and 512 bits below.
__attribute__((target("avx2"))) void repair_avx2(NibblePairing pairing, const uint8_t* packed, int64_t blocks,
                                                 uint8_t* out, int64_t out_stride) {
  const __m256i mask = _mm256_set1_epi8(0x0f);
  int64_t b = 0;
  if (pairing == NibblePairing::Half16) {
    for (; b + 2 <= blocks; b += 2) {  // two blocks, one per lane
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + 16 * b));
      const __m256i lo = _mm256_and_si256(x, mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), mask);
      const __m256i first = _mm256_unpacklo_epi8(lo, hi);
      const __m256i second = _mm256_unpackhi_epi8(lo, hi);
      const __m256i y = _mm256_or_si256(first, _mm256_slli_epi16(second, 4));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + b * out_stride), _mm256_castsi256_si128(y));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (b + 1) * out_stride), _mm256_extracti128_si256(y, 1));
    }
  } else {
    for (; b < blocks; ++b) {  // one block of four sub-blocks, two per lane
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + 32 * b));
      const __m256i lo = _mm256_and_si256(x, mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), mask);
      const __m256i sub0 = _mm256_unpacklo_epi8(lo, hi);  // per lane: the first sub-block's 16 codes
      const __m256i sub1 = _mm256_unpackhi_epi8(lo, hi);  // per lane: the second's
      const __m256i pair0 = _mm256_or_si256(sub0, _mm256_slli_epi16(_mm256_srli_si256(sub0, 8), 4));
      const __m256i pair1 = _mm256_or_si256(sub1, _mm256_slli_epi16(_mm256_srli_si256(sub1, 8), 4));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b * out_stride), _mm256_unpacklo_epi64(pair0, pair1));
    }
  }
  repair_scalar(pairing, packed, b, blocks, out, out_stride);
}

__attribute__((target("avx512f,avx512bw"))) void repair_avx512(NibblePairing pairing, const uint8_t* packed,
                                                               int64_t blocks, uint8_t* out, int64_t out_stride) {
  const __m512i mask = _mm512_set1_epi8(0x0f);
  int64_t b = 0;
  if (pairing == NibblePairing::Half16) {
    for (; b + 4 <= blocks; b += 4) {
      const __m512i x = _mm512_loadu_si512(packed + 16 * b);
      const __m512i lo = _mm512_and_si512(x, mask);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), mask);
      const __m512i y = _mm512_or_si512(_mm512_unpacklo_epi8(lo, hi), _mm512_slli_epi16(_mm512_unpackhi_epi8(lo, hi), 4));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + b * out_stride), _mm512_extracti32x4_epi32(y, 0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (b + 1) * out_stride), _mm512_extracti32x4_epi32(y, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (b + 2) * out_stride), _mm512_extracti32x4_epi32(y, 2));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (b + 3) * out_stride), _mm512_extracti32x4_epi32(y, 3));
    }
  } else {
    for (; b + 2 <= blocks; b += 2) {
      const __m512i x = _mm512_loadu_si512(packed + 32 * b);
      const __m512i lo = _mm512_and_si512(x, mask);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), mask);
      const __m512i sub0 = _mm512_unpacklo_epi8(lo, hi);
      const __m512i sub1 = _mm512_unpackhi_epi8(lo, hi);
      const __m512i pair0 = _mm512_or_si512(sub0, _mm512_slli_epi16(_mm512_bsrli_epi128(sub0, 8), 4));
      const __m512i pair1 = _mm512_or_si512(sub1, _mm512_slli_epi16(_mm512_bsrli_epi128(sub1, 8), 4));
      const __m512i y = _mm512_unpacklo_epi64(pair0, pair1);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b * out_stride), _mm512_extracti64x4_epi64(y, 0));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (b + 1) * out_stride), _mm512_extracti64x4_epi64(y, 1));
    }
  }
  repair_scalar(pairing, packed, b, blocks, out, out_stride);
}

#endif  // MLX2GGUF_X86_KERNELS

#if defined(__aarch64__)

void repair_neon(NibblePairing pairing, const uint8_t* packed, int64_t blocks, uint8_t* out, int64_t out_stride) {
  const uint8x16_t mask = vdupq_n_u8(0x0f);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t unit = 0; unit < in_bytes(pairing) / 16; ++unit) {
      const uint8x16_t x = vld1q_u8(packed + b * in_bytes(pairing) + 16 * unit);
      const uint8x16_t lo = vandq_u8(x, mask);
      const uint8x16_t hi = vshrq_n_u8(x, 4);
      const uint8x16_t first = vzip1q_u8(lo, hi);   // codes 0..15 of the 16 bytes
      const uint8x16_t second = vzip2q_u8(lo, hi);  // codes 16..31
      uint8x16_t y;
      if (pairing == NibblePairing::Half16) {
        y = vorrq_u8(first, vshlq_n_u8(second, 4));
      } else {  // two sub-blocks of 16 codes
        const uint8x8_t pair0 = vorr_u8(vget_low_u8(first), vshl_n_u8(vget_high_u8(first), 4));
        const uint8x8_t pair1 = vorr_u8(vget_low_u8(second), vshl_n_u8(vget_high_u8(second), 4));
        y = vcombine_u8(pair0, pair1);
      }
      vst1q_u8(out + b * out_stride + 16 * unit, y);
    }
  }
}

#endif  // __aarch64__

}  // namespace

void repair_nibbles(Isa isa, NibblePairing pairing, const uint8_t* packed, int64_t blocks, uint8_t* out,
                    int64_t out_stride) {
  switch (isa) {
#ifdef MLX2GGUF_X86_KERNELS
    case Isa::Avx2: repair_avx2(pairing, packed, blocks, out, out_stride); return;
    case Isa::Avx512: repair_avx512(pairing, packed, blocks, out, out_stride); return;
#endif
#if defined(__aarch64__)
    case Isa::Neon: repair_neon(pairing, packed, blocks, out, out_stride); return;
#endif
    default: repair_scalar(pairing, packed, 0, blocks, out, out_stride); return;
  }
}

}  // namespace mlx2gguf
