#pragma once
// Float32 rows → bytes of a GGUF tensor type.
#include <cstdint>

#include "write/gguf_types.h"

namespace mlx2gguf {

// Encodes `rows` rows of `row_length` floats into `out` (ggml_row_bytes(type, row_length) bytes per row).
void encode_rows(GgmlType type, const float* in, int64_t rows, int64_t row_length, uint8_t* out);

bool can_encode(GgmlType type);

// Q8_0 block: fp16 scale d = amax / 127, then 32 int8 codes round(x / d) (half away from zero).
void quantize_q8_0_block(const float* x, uint8_t* block);

}  // namespace mlx2gguf
