#include "encode/row_encoder.h"

#include <cstring>

#include "encode/block_quants.h"
#include "encode/k_quants.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf {

namespace {

void encode_f32(const float* x, int64_t n, uint8_t* out) { std::memcpy(out, x, static_cast<size_t>(n) * 4); }
void decode_f32(const uint8_t* in, int64_t n, float* out) { std::memcpy(out, in, static_cast<size_t>(n) * 4); }

template <uint16_t (*to_half)(float)>
void encode_half(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = to_half(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

template <float (*from_half)(uint16_t)>
void decode_half(const uint8_t* in, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    out[i] = from_half(h);
  }
}

struct RowCodec {
  GgmlType type;
  void (*encode)(const float*, int64_t, uint8_t*);
  void (*decode)(const uint8_t*, int64_t, float*);
};

constexpr RowCodec kCodecs[] = {
    {GgmlType::F32, encode_f32, decode_f32},
    {GgmlType::F16, encode_half<f32_to_f16>, decode_half<f16_to_f32>},
    {GgmlType::BF16, encode_half<f32_to_bf16>, decode_half<bf16_to_f32>},
    {GgmlType::Q8_0, quantize_row_q8_0, dequantize_row_q8_0},
    {GgmlType::Q4_0, quantize_row_q4_0, dequantize_row_q4_0},
    {GgmlType::Q4_1, quantize_row_q4_1, dequantize_row_q4_1},
    {GgmlType::Q5_0, quantize_row_q5_0, dequantize_row_q5_0},
    {GgmlType::Q5_1, quantize_row_q5_1, dequantize_row_q5_1},
    {GgmlType::MXFP4, quantize_row_mxfp4, dequantize_row_mxfp4},
    {GgmlType::NVFP4, quantize_row_nvfp4, dequantize_row_nvfp4},
    {GgmlType::Q2_K, quantize_row_q2_k, dequantize_row_q2_k},
    {GgmlType::Q3_K, quantize_row_q3_k, dequantize_row_q3_k},
    {GgmlType::Q4_K, quantize_row_q4_k, dequantize_row_q4_k},
    {GgmlType::Q5_K, quantize_row_q5_k, dequantize_row_q5_k},
    {GgmlType::Q6_K, quantize_row_q6_k, dequantize_row_q6_k},
};

const RowCodec& codec(GgmlType type) {
  for (const auto& entry : kCodecs)
    if (entry.type == type) return entry;
  fail("internal error: no encoder for {}", ggml_type_info(type).name);
}

}  // namespace

bool can_encode(GgmlType type) {
  for (const auto& entry : kCodecs)
    if (entry.type == type) return true;
  return false;
}

void encode_rows(GgmlType type, const float* in, int64_t rows, int64_t row_length, uint8_t* out) {
  const RowCodec& c = codec(type);
  const int64_t row_bytes = ggml_row_bytes(type, row_length);
  for (int64_t r = 0; r < rows; ++r) c.encode(in + r * row_length, row_length, out + r * row_bytes);
}

void decode_rows(GgmlType type, const uint8_t* in, int64_t rows, int64_t row_length, float* out) {
  const RowCodec& c = codec(type);
  const int64_t row_bytes = ggml_row_bytes(type, row_length);
  for (int64_t r = 0; r < rows; ++r) c.decode(in + r * row_bytes, row_length, out + r * row_length);
}

}  // namespace mlx2gguf
