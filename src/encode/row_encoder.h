#pragma once
// Float32 rows ↔ bytes of a GGUF tensor type: one entry point over every type mlx2gguf writes.
#include <cstdint>

#include "gguf/gguf_types.h"

namespace mlx2gguf {

bool can_encode(GgmlType type);

// Encodes `rows` rows of `row_length` floats into `out` (ggml_row_bytes(type, row_length) bytes per row).
void encode_rows(GgmlType type, const float* in, int64_t rows, int64_t row_length, uint8_t* out);

// The values llama.cpp computes with for rows written by encode_rows (or repacked).
void decode_rows(GgmlType type, const uint8_t* in, int64_t rows, int64_t row_length, float* out);

}  // namespace mlx2gguf
