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

namespace {

// One group of codes of a width that never straddles a byte (2, 4 or 8 bits): a shift and a mask per element, in a
// loop the compiler vectorises. Groups start on a byte (they hold 32, 64 or 128 codes).
template <int Bits>
void dequantize_affine_group(const uint8_t* packed, int64_t first, int64_t count, float scale, float bias, float* out) {
  constexpr int kPerByte = 8 / Bits;
  constexpr uint32_t kMask = (1u << Bits) - 1u;
  const uint8_t* bytes = packed + first / kPerByte;
  for (int64_t j = 0; j < count; ++j) {
    const uint32_t code = (static_cast<uint32_t>(bytes[j / kPerByte]) >> ((j % kPerByte) * Bits)) & kMask;
    out[j] = scale * static_cast<float>(code) + bias;
  }
}

}  // namespace

void dequantize_row(const QuantSpec& spec, const uint8_t* packed, const uint8_t* scales, const uint8_t* biases,
                    DType scale_dtype, int64_t length, float* out) {
  const int64_t groups = length / spec.group_size;
  switch (spec.mode) {
    case QuantMode::Affine:
      for (int64_t g = 0; g < groups; ++g) {
        const float scale = load_float(scales, scale_dtype, g);
        const float bias = load_float(biases, scale_dtype, g);
        const int64_t first = g * spec.group_size;
        switch (spec.bits) {
          case 2: dequantize_affine_group<2>(packed, first, spec.group_size, scale, bias, out + first); break;
          case 4: dequantize_affine_group<4>(packed, first, spec.group_size, scale, bias, out + first); break;
          case 8: dequantize_affine_group<8>(packed, first, spec.group_size, scale, bias, out + first); break;
          default:
            for (int64_t j = 0; j < spec.group_size; ++j)
              out[first + j] = scale * static_cast<float>(unpack_code(packed, first + j, spec.bits)) + bias;
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
