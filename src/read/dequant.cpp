#include "read/dequant.h"

#include <cmath>
#include <cstring>

#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf {

float load_float(const uint8_t* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::F32: {
      float value;
      std::memcpy(&value, data + 4 * i, 4);
      return value;
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, data + 2 * i, 2);
      return f16_to_f32(h);
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, data + 2 * i, 2);
      return bf16_to_f32(h);
    }
    default: fail("internal error: load_float on a {} tensor", dtype_name(dtype));
  }
}

void load_floats(const uint8_t* data, DType dtype, int64_t count, float* out) {
  if (dtype == DType::F32) {
    std::memcpy(out, data, static_cast<size_t>(count) * 4);
    return;
  }
  // One loop per type (the switch of load_float inside the loop keeps the compiler from vectorizing it).
  if (dtype == DType::BF16) {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t h;
      std::memcpy(&h, data + 2 * i, 2);
      out[i] = bf16_to_f32(h);
    }
    return;
  }
  for (int64_t i = 0; i < count; ++i) out[i] = load_float(data, dtype, i);
}

float e8m0_to_f32(uint8_t e) {
  if (e == 0) return std::ldexp(1.0f, -127);
  return std::ldexp(1.0f, static_cast<int>(e) - 127);
}

float e4m3_to_f32(uint8_t code) {
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  const int exponent = (code >> 3) & 0xf;
  const int mantissa = code & 0x7;
  if (exponent == 0xf && mantissa == 0x7) return std::nanf("");
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);
  return sign * std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
}

float e2m1_to_f32(uint8_t code) {
  static const float values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float magnitude = values[code & 7];
  return (code & 8) ? -magnitude : magnitude;
}

void dequantize_row(const QuantSpec& spec, const uint8_t* packed, const uint8_t* scales, const uint8_t* biases,
                    DType scale_dtype, int64_t length, float* out) {
  const int64_t groups = length / spec.group_size;
  switch (spec.mode) {
    case QuantMode::Affine:
      for (int64_t g = 0; g < groups; ++g) {
        const float scale = load_float(scales, scale_dtype, g);
        const float bias = load_float(biases, scale_dtype, g);
        for (int64_t j = 0; j < spec.group_size; ++j) {
          const int64_t i = g * spec.group_size + j;
          out[i] = scale * static_cast<float>(unpack_code(packed, i, spec.bits)) + bias;
        }
      }
      return;
    case QuantMode::MXFP4:
    case QuantMode::NVFP4:
      for (int64_t g = 0; g < groups; ++g) {
        const float scale = spec.mode == QuantMode::MXFP4 ? e8m0_to_f32(scales[g]) : e4m3_to_f32(scales[g]);
        for (int64_t j = 0; j < spec.group_size; ++j) {
          const int64_t i = g * spec.group_size + j;
          out[i] = e2m1_to_f32(static_cast<uint8_t>(unpack_code(packed, i, 4))) * scale;
        }
      }
      return;
    case QuantMode::MXFP8:
      for (int64_t g = 0; g < groups; ++g) {
        const float scale = e8m0_to_f32(scales[g]);
        for (int64_t j = 0; j < spec.group_size; ++j) {
          const int64_t i = g * spec.group_size + j;
          out[i] = e4m3_to_f32(packed[i]) * scale;
        }
      }
      return;
  }
}

}  // namespace mlx2gguf
