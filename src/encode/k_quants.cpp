#include "encode/k_quants.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "encode/k_quant_kernels.h"
#include "util/half.h"

// How to read this file. Each super-block of 256 floats is cut into sub-blocks (16 of 16 elements, or 8 of 32).
// A search routine first gives every sub-block its own float scale (and, for the asymmetric types, a float
// minimum); the super-block then stores those values as small integer codes times one fp16 factor, and finally
// every element is re-rounded against the scale that was actually stored.
//
// The arithmetic deliberately repeats the reference quantizer's float operations in the same order (the build
// uses -ffp-contract=off for the same reason): this is what makes our bytes identical to ggml's. The searches
// are where the time goes; they live in k_quant_kernels.h, in versions for each instruction set, and run on a
// whole chunk of the row at a time so that the wide versions can fill their lanes.

namespace mlx2gguf {
namespace {

constexpr int kSuperBlock = static_cast<int>(kKQuantSuperBlock);
// Super-blocks searched per kernel call: enough to fill the widest lanes, small enough for the stack.
constexpr int64_t kChunkBlocks = 16;
constexpr int64_t kChunk = kChunkBlocks * kSuperBlock;

// What the searches found for a chunk, per element (codes) and per sub-block (16 or 32 elements).
struct ChunkSearch {
  uint8_t codes[kChunk];  // the symmetric searches' codes (the asymmetric ones give inverse and shift instead)
  float scale[kChunk / 16];
  float negated_min[kChunk / 16];
  float inverse[kChunk / 16];
  float shift[kChunk / 16];
};

// A sub-block whose largest magnitude is below this counts as all zero (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// Round half to even. Adding 1.5·2^23 pushes the fraction out of the mantissa, so the FPU's own rounding does
// the work and the integer sits in the low mantissa bits. Meaningless beyond ±2^22, where callers clamp anyway.
inline int32_t nearest_int(float v) {
  const float shifted = v + 12582912.0f;
  return static_cast<int32_t>(std::bit_cast<uint32_t>(shifted) & 0x007fffffu) - 0x00400000;
}

inline int clamped_nearest(float v, int lo, int hi) { return std::clamp(nearest_int(v), lo, hi); }

inline void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// ---------------------------------------------------------------------------------------------------------------
// Bit packing shared by several types.

// Q2_K and Q3_K low bits: each 128-element half uses 32 bytes; byte l holds elements l, l+32, l+64, l+96 of
// that half at bit offsets 0, 2, 4, 6.
void pack_2bit(const uint8_t* codes, uint8_t* qs) {
  for (int half = 0; half < kSuperBlock / 128; ++half) {
    const uint8_t* c = codes + 128 * half;
    for (int l = 0; l < 32; ++l) {
      qs[32 * half + l] =
          static_cast<uint8_t>((c[l] & 3) | (c[l + 32] & 3) << 2 | (c[l + 64] & 3) << 4 | (c[l + 96] & 3) << 6);
    }
  }
}

inline int unpack_2bit(const uint8_t* qs, int e) {
  const int r = e % 128;
  return (qs[32 * (e / 128) + r % 32] >> (2 * (r / 32))) & 3;
}

// Q3_K sub-block scales: 16 six-bit codes (scale + 32); low nibbles in bytes 0..7 (sub-blocks 8..15 in the high
// nibble), the two high bits of sub-block j in byte 8 + j%4 at bit offset 2·(j/4).
void pack_q3_k_scales(const int* biased_codes, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < 16; ++j) {
    const int code = biased_codes[j];
    scales[j % 8] |= static_cast<uint8_t>((code & 0xF) << (j < 8 ? 0 : 4));
    scales[8 + j % 4] |= static_cast<uint8_t>((code >> 4) << (2 * (j / 4)));
  }
}

inline int q3_k_scale(const uint8_t* scales, int j) {
  const int low = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
  const int high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | high << 4) - 32;
}

// Q4_K/Q5_K: 8 six-bit scale codes and 8 six-bit min codes in 12 bytes. Sub-blocks 0..3 use the low 6 bits of
// bytes 0..3 (scale) and 4..7 (min); sub-blocks 4..7 keep their low nibbles in bytes 8..11 and park their two
// high bits in the spare top bits of bytes 0..3 (scale) and 4..7 (min).
void pack_q4_k_scales(const uint8_t* scale_codes, const uint8_t* min_codes, uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = scale_codes[j];
    scales[j + 4] = min_codes[j];
  }
  for (int j = 4; j < 8; ++j) {
    scales[j + 4] = static_cast<uint8_t>((scale_codes[j] & 0xF) | (min_codes[j] & 0xF) << 4);
    scales[j - 4] |= static_cast<uint8_t>((scale_codes[j] >> 4) << 6);
    scales[j] |= static_cast<uint8_t>((min_codes[j] >> 4) << 6);
  }
}

struct ScaleAndMinCodes {
  int scale;
  int min;
};

inline ScaleAndMinCodes q4_k_scale_and_min(const uint8_t* scales, int j) {
  if (j < 4) return {scales[j] & 63, scales[j + 4] & 63};
  return {(scales[j + 4] & 0xF) | (scales[j - 4] >> 6) << 4, (scales[j + 4] >> 4) | (scales[j] >> 6) << 4};
}

// ---------------------------------------------------------------------------------------------------------------
// Q2_K: 16 sub-blocks of 16, codes 0..3, y = d·sc·q - dmin·m with 4-bit sc and m.
// Layout: scales[16] (sc | m << 4), qs[64], fp16 d, fp16 dmin.

// The search: |x| weights (with the absolute-error search, large elements weigh most).
void search_q2_k(Isa isa, const float* x, int64_t n, ChunkSearch& r) {
  float weight[kChunk];
  for (int64_t e = 0; e < n; ++e) weight[e] = std::fabs(x[e]);
  fit_scales_and_mins(isa, x, weight, n, 16, true, {3, -0.5f, 0.1f, 15}, r.inverse, r.shift, r.scale,
                      r.negated_min);
}

// Super-block b of the chunk from its search results.
void finish_q2_k_block(const float* x, ChunkSearch& r, int64_t b, uint8_t* out) {
  const float* sub_scale = r.scale + 16 * b;
  const float* sub_min = r.negated_min + 16 * b;
  uint8_t codes[kSuperBlock];
  uint8_t* scales = out;
  uint8_t* qs = out + 16;
  float max_scale = 0.0f;
  float max_min = 0.0f;
  for (int j = 0; j < 16; ++j) {
    max_scale = std::max(max_scale, sub_scale[j]);
    max_min = std::max(max_min, sub_min[j]);
  }
  std::memset(scales, 0, 16);
  float d = 0.0f;
  float dmin = 0.0f;
  if (max_scale > 0) {
    const float to_code = 15.0f / max_scale;
    for (int j = 0; j < 16; ++j) scales[j] = static_cast<uint8_t>(nearest_int(to_code * sub_scale[j]));
    d = max_scale / 15.0f;
  }
  if (max_min > 0) {
    const float to_code = 15.0f / max_min;
    for (int j = 0; j < 16; ++j) scales[j] |= static_cast<uint8_t>(nearest_int(to_code * sub_min[j]) << 4);
    dmin = max_min / 15.0f;
  }
  store_f16(out + 80, d);
  store_f16(out + 82, dmin);
  const float stored_d = load_f16(out + 80);
  const float stored_dmin = load_f16(out + 82);
  for (int j = 0; j < 16; ++j) {
    const float step = stored_d * static_cast<float>(scales[j] & 0xF);
    if (step == 0) {  // nothing to re-round against: the search's codes
      asymmetric_codes(x + 16 * j, 16, r.inverse[16 * b + j], r.shift[16 * b + j], 3, codes + 16 * j);
      continue;
    }
    const float offset = stored_dmin * static_cast<float>(scales[j] >> 4);
    for (int i = 0; i < 16; ++i) {
      codes[16 * j + i] = static_cast<uint8_t>(clamped_nearest((x[16 * j + i] + offset) / step, 0, 3));
    }
  }
  pack_2bit(codes, qs);
}

void dequantize_q2_k_block(const uint8_t* in, float* y) {
  const uint8_t* scales = in;
  const uint8_t* qs = in + 16;
  const float d = load_f16(in + 80);
  const float dmin = load_f16(in + 82);
  for (int j = 0; j < 16; ++j) {
    const float step = d * static_cast<float>(scales[j] & 0xF);
    const float offset = dmin * static_cast<float>(scales[j] >> 4);
    for (int i = 0; i < 16; ++i) y[16 * j + i] = step * static_cast<float>(unpack_2bit(qs, 16 * j + i)) - offset;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Q3_K: 16 sub-blocks of 16, codes -4..3, y = d·sc·q with signed 6-bit sc.
// Layout: hmask[32] (bit e/32 of byte e%32 = third bit of code+4), qs[64] (low two bits), scales[12], fp16 d.

void search_q3_k(Isa isa, const float* x, int64_t n, ChunkSearch& r) {
  fit_symmetric_scales_by_descent(isa, x, n, 4, r.codes, r.scale);
}

void finish_q3_k_block(const float* x, ChunkSearch& r, int64_t b, uint8_t* out) {
  uint8_t* codes = r.codes + kSuperBlock * b;  // code + 4, 0..7
  const float* sub_scale = r.scale + 16 * b;
  uint8_t* hmask = out;
  uint8_t* qs = out + 32;
  uint8_t* scales = out + 96;
  float max_scale = 0.0f;  // the signed sub-block scale of largest magnitude
  for (int j = 0; j < 16; ++j) {
    if (std::fabs(sub_scale[j]) > std::fabs(max_scale)) max_scale = sub_scale[j];
  }
  int biased_codes[16] = {};
  float d = 0.0f;
  if (max_scale != 0.0f) {
    // Negative factor: the largest scale maps to code -32, which uses the full signed range.
    const float to_code = -32.0f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int8_t code = static_cast<int8_t>(nearest_int(to_code * sub_scale[j]));
      biased_codes[j] = std::clamp<int>(code, -32, 31) + 32;
    }
    d = 1 / to_code;
  }
  pack_q3_k_scales(biased_codes, scales);
  store_f16(out + 108, d);
  const float stored_d = load_f16(out + 108);
  for (int j = 0; j < 16; ++j) {
    const float step = stored_d * static_cast<float>(q3_k_scale(scales, j));
    if (step == 0) continue;
    for (int i = 0; i < 16; ++i) {
      codes[16 * j + i] = static_cast<uint8_t>(clamped_nearest(x[16 * j + i] / step, -4, 3) + 4);
    }
  }
  // The third bit of code+4 goes to hmask; pack_2bit keeps the low two.
  for (int l = 0; l < 32; ++l) {
    int bits = 0;
    for (int k = 0; k < 8; ++k) bits |= (codes[32 * k + l] >> 2) << k;
    hmask[l] = static_cast<uint8_t>(bits);
  }
  pack_2bit(codes, qs);
}

void dequantize_q3_k_block(const uint8_t* in, float* y) {
  const uint8_t* hmask = in;
  const uint8_t* qs = in + 32;
  const uint8_t* scales = in + 96;
  const float d = load_f16(in + 108);
  for (int j = 0; j < 16; ++j) {
    const float step = d * static_cast<float>(q3_k_scale(scales, j));
    for (int i = 0; i < 16; ++i) {
      const int e = 16 * j + i;
      const int high = (hmask[e % 32] >> (e / 32)) & 1;
      y[e] = step * static_cast<float>(unpack_2bit(qs, e) - (high ? 0 : 4));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Q4_K and Q5_K: 8 sub-blocks of 32, codes 0..nmax, y = d·sc·q - dmin·m with 6-bit sc and m.
// Shared header: fp16 d, fp16 dmin, scales[12]; fills `codes` with the final per-element codes.

void search_q4_k_sub_blocks(Isa isa, const float* x, int64_t n, const AsymmetricSearch& search, ChunkSearch& r) {
  float weight[kChunk];
  for (int64_t j = 0; j < n / 32; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0.0f;
    for (int i = 0; i < 32; ++i) sum_x2 += xs[i] * xs[i];
    // The sub-block's RMS plus |x|: large elements count more, without small ones being ignored.
    const float rms = std::sqrt(sum_x2 / 32);
    for (int i = 0; i < 32; ++i) weight[32 * j + i] = rms + std::fabs(xs[i]);
  }
  fit_scales_and_mins(isa, x, weight, n, 32, false, search, r.inverse, r.shift, r.scale, r.negated_min);
}

constexpr AsymmetricSearch kQ4KSearch{15, -1.0f, 0.1f, 20};
constexpr AsymmetricSearch kQ5KSearch{31, -0.5f, 0.1f, 15};

void search_q4_k(Isa isa, const float* x, int64_t n, ChunkSearch& r) {
  search_q4_k_sub_blocks(isa, x, n, kQ4KSearch, r);
}
void search_q5_k(Isa isa, const float* x, int64_t n, ChunkSearch& r) {
  search_q4_k_sub_blocks(isa, x, n, kQ5KSearch, r);
}

// Writes the header of super-block b of the chunk and its final codes.
void finish_q4_k_header(const float* x, int nmax, const ChunkSearch& r, int64_t b, uint8_t* header,
                        uint8_t* codes) {
  const float* sub_scale = r.scale + 8 * b;
  const float* sub_min = r.negated_min + 8 * b;
  float max_scale = 0.0f;
  float max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    max_scale = std::max(max_scale, sub_scale[j]);
    max_min = std::max(max_min, sub_min[j]);
  }
  const float scale_to_code = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float min_to_code = max_min > 0 ? 63.0f / max_min : 0.0f;
  uint8_t scale_codes[8];
  uint8_t min_codes[8];
  for (int j = 0; j < 8; ++j) {
    // Truncated to a byte before the clamp, as the reference does.
    scale_codes[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(scale_to_code * sub_scale[j])));
    min_codes[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(min_to_code * sub_min[j])));
  }
  pack_q4_k_scales(scale_codes, min_codes, header + 4);
  store_f16(header, max_scale / 63.0f);
  store_f16(header + 2, max_min / 63.0f);
  const float stored_d = load_f16(header);
  const float stored_dmin = load_f16(header + 2);
  for (int j = 0; j < 8; ++j) {
    const float step = stored_d * static_cast<float>(scale_codes[j]);
    if (step == 0) {  // nothing to re-round against: the search's codes
      asymmetric_codes(x + 32 * j, 32, r.inverse[8 * b + j], r.shift[8 * b + j], nmax, codes + 32 * j);
      continue;
    }
    const float offset = stored_dmin * static_cast<float>(min_codes[j]);
    for (int i = 0; i < 32; ++i) {
      codes[32 * j + i] =
          static_cast<uint8_t>(clamped_nearest((x[32 * j + i] + offset) / step, 0, nmax));
    }
  }
}

// Scale (d·sc) and offset (dmin·m) of every sub-block, rounded exactly as ggml's decoder rounds them.
void q4_k_steps(const uint8_t* header, float* step, float* offset) {
  const float d = load_f16(header);
  const float dmin = load_f16(header + 2);
  for (int j = 0; j < 8; ++j) {
    const ScaleAndMinCodes c = q4_k_scale_and_min(header + 4, j);
    step[j] = d * static_cast<float>(c.scale);
    offset[j] = dmin * static_cast<float>(c.min);
  }
}

// Q4_K layout: header (16 bytes), qs[128]: sub-blocks 2k and 2k+1 share bytes 32k..32k+31 (low/high nibble).
void finish_q4_k_block(const float* x, ChunkSearch& r, int64_t b, uint8_t* out) {
  uint8_t codes[kSuperBlock];
  finish_q4_k_header(x, kQ4KSearch.nmax, r, b, out, codes);
  uint8_t* qs = out + 16;
  for (int pair = 0; pair < 4; ++pair) {
    for (int i = 0; i < 32; ++i) {
      qs[32 * pair + i] = static_cast<uint8_t>(codes[64 * pair + i] | codes[64 * pair + 32 + i] << 4);
    }
  }
}

void dequantize_q4_k_block(const uint8_t* in, float* y) {
  float step[8];
  float offset[8];
  q4_k_steps(in, step, offset);
  const uint8_t* qs = in + 16;
  for (int j = 0; j < 8; ++j) {
    const int shift = 4 * (j % 2);
    for (int i = 0; i < 32; ++i) {
      y[32 * j + i] = step[j] * static_cast<float>((qs[32 * (j / 2) + i] >> shift) & 0xF) - offset[j];
    }
  }
}

// Q5_K layout: header (16 bytes), qh[32] (bit j of byte i = fifth bit of element i of sub-block j), qs[128] as
// Q4_K.
void finish_q5_k_block(const float* x, ChunkSearch& r, int64_t b, uint8_t* out) {
  uint8_t codes[kSuperBlock];
  finish_q4_k_header(x, kQ5KSearch.nmax, r, b, out, codes);
  uint8_t* qh = out + 16;
  uint8_t* qs = out + 48;
  std::memset(qh, 0, 32);
  for (int j = 0; j < 8; ++j) {
    for (int i = 0; i < 32; ++i) qh[i] |= static_cast<uint8_t>((codes[32 * j + i] >> 4) << j);
  }
  for (int pair = 0; pair < 4; ++pair) {
    for (int i = 0; i < 32; ++i) {
      qs[32 * pair + i] = static_cast<uint8_t>((codes[64 * pair + i] & 0xF) | (codes[64 * pair + 32 + i] & 0xF) << 4);
    }
  }
}

void dequantize_q5_k_block(const uint8_t* in, float* y) {
  float step[8];
  float offset[8];
  q4_k_steps(in, step, offset);
  const uint8_t* qh = in + 16;
  const uint8_t* qs = in + 48;
  for (int j = 0; j < 8; ++j) {
    const int shift = 4 * (j % 2);
    for (int i = 0; i < 32; ++i) {
      const int q = ((qs[32 * (j / 2) + i] >> shift) & 0xF) | ((qh[i] >> j) & 1) << 4;
      y[32 * j + i] = step[j] * static_cast<float>(q) - offset[j];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Q6_K: 16 sub-blocks of 16, codes -32..31, y = d·sc·q with int8 sc.
// Layout: ql[128], qh[64], int8 scales[16], fp16 d. Element e (half c = e/128, r = e%128, quarter k = r/32,
// l = r%32): low 4 bits in ql[64c + l + 32·(k&1)] (low nibble for k < 2, high for k >= 2), high 2 bits at bit
// 2k of qh[32c + l].

void pack_q6_k_codes(const uint8_t* codes, uint8_t* ql, uint8_t* qh) {
  for (int half = 0; half < 2; ++half) {
    const uint8_t* c = codes + 128 * half;
    for (int l = 0; l < 32; ++l) {
      ql[64 * half + l] = static_cast<uint8_t>((c[l] & 0xF) | (c[l + 64] & 0xF) << 4);
      ql[64 * half + l + 32] = static_cast<uint8_t>((c[l + 32] & 0xF) | (c[l + 96] & 0xF) << 4);
      qh[32 * half + l] =
          static_cast<uint8_t>(c[l] >> 4 | (c[l + 32] >> 4) << 2 | (c[l + 64] >> 4) << 4 | (c[l + 96] >> 4) << 6);
    }
  }
}

void search_q6_k(Isa isa, const float* x, int64_t n, ChunkSearch& r) {
  fit_symmetric_scales(isa, x, nullptr, n, 32, r.codes, r.scale);
}

void finish_q6_k_block(const float* x, ChunkSearch& r, int64_t b, uint8_t* out) {
  uint8_t* codes = r.codes + kSuperBlock * b;  // code + 32, 0..63
  const float* sub_scale = r.scale + 16 * b;
  uint8_t* ql = out;
  uint8_t* qh = out + 128;
  int8_t* scales = reinterpret_cast<int8_t*>(out + 192);
  float max_scale = 0.0f;  // the signed sub-block scale of largest magnitude
  for (int j = 0; j < 16; ++j) {
    if (std::fabs(sub_scale[j]) > std::fabs(max_scale)) max_scale = sub_scale[j];
  }
  if (std::fabs(max_scale) < kGroupMaxEps) {
    std::memset(out, 0, kQ6KBlockBytes);
    return;
  }
  // Negative factor: the largest scale maps to code -128, which uses the full int8 range.
  const float to_code = -128.0f / max_scale;
  store_f16(out + 208, 1 / to_code);
  for (int j = 0; j < 16; ++j) scales[j] = static_cast<int8_t>(std::min(127, nearest_int(to_code * sub_scale[j])));
  const float stored_d = load_f16(out + 208);
  for (int j = 0; j < 16; ++j) {
    const float step = stored_d * static_cast<float>(scales[j]);
    if (step == 0) continue;
    for (int i = 0; i < 16; ++i) {
      codes[16 * j + i] = static_cast<uint8_t>(clamped_nearest(x[16 * j + i] / step, -32, 31) + 32);
    }
  }
  pack_q6_k_codes(codes, ql, qh);
}

void dequantize_q6_k_block(const uint8_t* in, float* y) {
  const uint8_t* ql = in;
  const uint8_t* qh = in + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(in + 192);
  const float d = load_f16(in + 208);
  for (int e = 0; e < kSuperBlock; ++e) {
    const int half = e / 128;
    const int quarter = (e % 128) / 32;
    const int l = e % 32;
    const int low = (ql[64 * half + l + 32 * (quarter & 1)] >> (quarter < 2 ? 0 : 4)) & 0xF;
    const int high = (qh[32 * half + l] >> (2 * quarter)) & 3;
    y[e] = d * static_cast<float>(scales[e / 16]) * static_cast<float>((low | high << 4) - 32);
  }
}

// ---------------------------------------------------------------------------------------------------------------

using Search = void (*)(Isa, const float*, int64_t, ChunkSearch&);
using Finish = void (*)(const float*, ChunkSearch&, int64_t, uint8_t*);

// A chunk of super-blocks is searched in one kernel call, then each super-block is finished.
template <Search kSearch, Finish kFinish, int64_t kBlockBytes>
void quantize_row(const float* x, int64_t n, uint8_t* out, Isa isa) {
  ChunkSearch r;
  for (int64_t first = 0; first < n; first += kChunk) {
    const int64_t m = std::min(kChunk, n - first);
    kSearch(isa, x + first, m, r);
    for (int64_t b = 0; b < m / kSuperBlock; ++b)
      kFinish(x + first + b * kSuperBlock, r, b, out + (first / kSuperBlock + b) * kBlockBytes);
  }
}

template <void (*kDecodeBlock)(const uint8_t*, float*), int64_t kBlockBytes>
void dequantize_row(const uint8_t* in, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kSuperBlock; ++b) kDecodeBlock(in + b * kBlockBytes, out + b * kSuperBlock);
}

}  // namespace

void quantize_row_q2_k(const float* x, int64_t n, uint8_t* out) { quantize_row_q2_k(x, n, out, best_isa()); }
void quantize_row_q2_k(const float* x, int64_t n, uint8_t* out, Isa isa) {
  quantize_row<search_q2_k, finish_q2_k_block, kQ2KBlockBytes>(x, n, out, isa);
}
void quantize_row_q3_k(const float* x, int64_t n, uint8_t* out) { quantize_row_q3_k(x, n, out, best_isa()); }
void quantize_row_q3_k(const float* x, int64_t n, uint8_t* out, Isa isa) {
  quantize_row<search_q3_k, finish_q3_k_block, kQ3KBlockBytes>(x, n, out, isa);
}
void quantize_row_q4_k(const float* x, int64_t n, uint8_t* out) { quantize_row_q4_k(x, n, out, best_isa()); }
void quantize_row_q4_k(const float* x, int64_t n, uint8_t* out, Isa isa) {
  quantize_row<search_q4_k, finish_q4_k_block, kQ4KBlockBytes>(x, n, out, isa);
}
void quantize_row_q5_k(const float* x, int64_t n, uint8_t* out) { quantize_row_q5_k(x, n, out, best_isa()); }
void quantize_row_q5_k(const float* x, int64_t n, uint8_t* out, Isa isa) {
  quantize_row<search_q5_k, finish_q5_k_block, kQ5KBlockBytes>(x, n, out, isa);
}
void quantize_row_q6_k(const float* x, int64_t n, uint8_t* out) { quantize_row_q6_k(x, n, out, best_isa()); }
void quantize_row_q6_k(const float* x, int64_t n, uint8_t* out, Isa isa) {
  quantize_row<search_q6_k, finish_q6_k_block, kQ6KBlockBytes>(x, n, out, isa);
}

void dequantize_row_q2_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q2_k_block, kQ2KBlockBytes>(in, n, out);
}
void dequantize_row_q3_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q3_k_block, kQ3KBlockBytes>(in, n, out);
}
void dequantize_row_q4_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q4_k_block, kQ4KBlockBytes>(in, n, out);
}
void dequantize_row_q5_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q5_k_block, kQ5KBlockBytes>(in, n, out);
}
void dequantize_row_q6_k(const uint8_t* in, int64_t n, float* out) {
  dequantize_row<dequantize_q6_k_block, kQ6KBlockBytes>(in, n, out);
}

}  // namespace mlx2gguf
