#include "encode/row_encoder.h"

#include <cmath>
#include <cstring>

#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf {

void quantize_q8_0_block(const float* x, uint8_t* block) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t d16 = f32_to_f16(d);
  std::memcpy(block, &d16, 2);
  for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * inverse)));
}

bool can_encode(GgmlType type) {
  return type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16 || type == GgmlType::Q8_0;
}

void encode_rows(GgmlType type, const float* in, int64_t rows, int64_t row_length, uint8_t* out) {
  const int64_t n = rows * row_length;
  switch (type) {
    case GgmlType::F32:
      std::memcpy(out, in, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_f16(in[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(in[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case GgmlType::Q8_0:
      for (int64_t b = 0; b < n / 32; ++b) quantize_q8_0_block(in + 32 * b, out + 34 * b);
      return;
    default: fail("internal error: no encoder for {}", ggml_type_info(type).name);
  }
}

}  // namespace mlx2gguf
