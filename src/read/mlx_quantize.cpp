#include "read/mlx_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf {

void store_float(float value, DType dtype, uint8_t* out) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, &value, 4); return;
    case DType::F16: {
      const uint16_t h = f32_to_f16(value);
      std::memcpy(out, &h, 2);
      return;
    }
    case DType::BF16: {
      const uint16_t h = f32_to_bf16(value);
      std::memcpy(out, &h, 2);
      return;
    }
    default: fail("internal error: store_float to {}", dtype_name(dtype));
  }
}

void pack_codes(const uint32_t* codes, int64_t count, int bits, uint32_t* words) {
  for (int64_t i = 0; i < count; ++i) {
    const int64_t bit = i * bits;
    const int shift = static_cast<int>(bit % 32);
    const uint64_t spread = static_cast<uint64_t>(codes[i]) << shift;  // may cross into the next word
    words[bit / 32] |= static_cast<uint32_t>(spread);
    if (shift + bits > 32) words[bit / 32 + 1] |= static_cast<uint32_t>(spread >> 32);
  }
}

namespace {

void check_shape(int64_t cols, int bits, int group_size) {
  if (cols % group_size != 0) fail("cannot quantize rows of {} values in groups of {}", cols, group_size);
  if ((cols * bits) % 32 != 0) fail("rows of {} {}-bit codes do not fill whole uint32 words", cols, bits);
}

}  // namespace

QuantizedRows quantize_affine(const float* w, int64_t rows, int64_t cols, int bits, int group_size, DType scale_dtype) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 5 && bits != 6 && bits != 8)
    fail("affine quantization supports 2, 3, 4, 5, 6 or 8 bits, not {}", bits);
  if (group_size != 32 && group_size != 64 && group_size != 128)
    fail("affine quantization supports group sizes 32, 64 or 128, not {}", group_size);
  check_shape(cols, bits, group_size);
  const size_t value_size = dtype_size(scale_dtype);
  const int64_t groups = cols / group_size;
  const int64_t words_per_row = cols * bits / 32;
  const float n_bins = static_cast<float>((1 << bits) - 1);

  QuantizedRows out;
  out.scale_dtype = scale_dtype;
  out.packed.assign(static_cast<size_t>(rows * words_per_row), 0u);
  out.scales.resize(static_cast<size_t>(rows * groups) * value_size);
  out.biases.resize(out.scales.size());
  std::vector<uint32_t> codes(static_cast<size_t>(cols));

  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    for (int64_t g = 0; g < groups; ++g) {
      const float* group = row + g * group_size;
      const auto [min_it, max_it] = std::minmax_element(group, group + group_size);
      const float w_min = *min_it, w_max = *max_it;
      const bool min_is_edge = std::fabs(w_min) > std::fabs(w_max);
      float scale = std::max((w_max - w_min) / n_bins, 1e-7f);
      if (!min_is_edge) scale = -scale;
      const float edge = min_is_edge ? w_min : w_max;
      const float q0 = round_half_even(edge / scale);
      float bias = 0.0f;
      if (q0 != 0.0f) {
        scale = edge / q0;
        bias = edge;
      }
      for (int64_t j = 0; j < group_size; ++j) {
        const float q = round_half_even((group[j] - bias) / scale);
        codes[static_cast<size_t>(g * group_size + j)] = static_cast<uint32_t>(std::clamp(q, 0.0f, n_bins));
      }
      const size_t at = static_cast<size_t>(r * groups + g) * value_size;
      store_float(scale, scale_dtype, out.scales.data() + at);
      store_float(bias, scale_dtype, out.biases.data() + at);
    }
    pack_codes(codes.data(), cols, bits, out.packed.data() + r * words_per_row);
  }
  return out;
}

uint8_t f32_to_e2m1(float value) {
  const uint8_t sign = std::signbit(value) ? 8 : 0;
  if (std::isnan(value)) return 7;
  const float a = std::fabs(value);
  // Midpoints between the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6; a value exactly on one goes to the even code.
  uint8_t code;
  if (a <= 0.25f) code = 0;
  else if (a < 0.75f) code = 1;
  else if (a <= 1.25f) code = 2;
  else if (a < 1.75f) code = 3;
  else if (a <= 2.5f) code = 4;
  else if (a < 3.5f) code = 5;
  else if (a <= 5.0f) code = 6;
  else code = 7;
  return sign | code;
}

uint8_t f32_to_e4m3(float value) {
  if (std::isnan(value)) return 0x7f;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  const float a = std::fabs(value);
  if (a >= 448.0f) return sign | 0x7e;
  if (a < 0x1p-6f) {
    // Subnormal range: multiples of 2^-9; rounding up to 8·2^-9 gives the smallest normal's code, 0x08.
    return sign | static_cast<uint8_t>(std::nearbyint(std::ldexp(a, 9)));
  }
  int exponent;
  std::frexp(a, &exponent);  // a = f · 2^exponent, f in [0.5, 1)
  exponent -= 1;             // a = m · 2^exponent, m in [1, 2)
  // Scaling by a power of two and subtracting 8 from a value in [8, 16) are exact, so this rounds once.
  int mantissa = static_cast<int>(std::nearbyint(std::ldexp(a, 3 - exponent) - 8.0f));
  if (mantissa == 8) {
    mantissa = 0;
    ++exponent;
  }
  const int field = exponent + 7;
  if (field > 15 || (field == 15 && mantissa == 7)) return sign | 0x7e;
  return sign | static_cast<uint8_t>(field << 3 | mantissa);
}

QuantizedRows quantize_fp(const float* w, int64_t rows, int64_t cols, QuantMode mode) {
  int group_size = 32, bits = 4;
  float max_element = 6.0f;  // largest E2M1 magnitude
  switch (mode) {
    case QuantMode::MXFP4: break;
    case QuantMode::NVFP4: group_size = 16; break;
    case QuantMode::MXFP8: bits = 8; max_element = 448.0f; break;
    case QuantMode::Affine: fail("internal error: quantize_fp called for affine mode");
  }
  check_shape(cols, bits, group_size);
  const int64_t groups = cols / group_size;
  const int64_t words_per_row = cols * bits / 32;

  QuantizedRows out;
  out.scale_dtype = DType::U8;
  out.packed.assign(static_cast<size_t>(rows * words_per_row), 0u);
  out.scales.resize(static_cast<size_t>(rows * groups));
  std::vector<uint32_t> codes(static_cast<size_t>(cols));

  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    for (int64_t g = 0; g < groups; ++g) {
      const float* group = row + g * group_size;
      float amax = 0.0f;
      for (int64_t j = 0; j < group_size; ++j) amax = std::max(amax, std::fabs(group[j]));
      const float ideal_scale = amax / max_element;
      float divisor;
      uint8_t scale_code;
      if (mode == QuantMode::NVFP4) {
        scale_code = f32_to_e4m3(ideal_scale);
        // Elements are divided by the scale as stored, so that decoding multiplies by the same value.
        const uint8_t exponent = (scale_code >> 3) & 0xf, mantissa = scale_code & 7;
        divisor = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                : std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
      } else {
        // E8M0: the power of two nearest to the ideal scale (in the log domain); elements may then exceed the
        // element format's range and saturate, as MLX's quantizer lets them.
        int exponent = ideal_scale == 0.0f ? 0 : static_cast<int>(std::nearbyint(std::log2(ideal_scale)));
        exponent = std::clamp(exponent, -127, 127);
        scale_code = static_cast<uint8_t>(exponent + 127);
        divisor = std::ldexp(1.0f, exponent);
      }
      out.scales[static_cast<size_t>(r * groups + g)] = scale_code;
      for (int64_t j = 0; j < group_size; ++j) {
        const float x = divisor == 0.0f ? 0.0f : group[j] / divisor;
        codes[static_cast<size_t>(g * group_size + j)] = bits == 4 ? f32_to_e2m1(x) : f32_to_e4m3(x);
      }
    }
    pack_codes(codes.data(), cols, bits, out.packed.data() + r * words_per_row);
  }
  return out;
}

}  // namespace mlx2gguf
