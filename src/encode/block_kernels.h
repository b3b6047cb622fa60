#pragma once
// The per-element work of the 32-element block quantizers (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), in versions for the
// vector units of the CPU. Each function computes exactly what the scalar loop it replaces computes, element by
// element in float32 (no fused multiply-add, no reassociation), so every version writes the same bytes as ggml.
// Inputs must be finite: the callers send blocks with NaN or infinity to the scalar loops.
#include <cstdint>

#include "util/isa.h"

namespace mlx2gguf {

// Largest |x_j| of the 32 values (the same value whatever the order: max is exact).
float block_absmax(Isa isa, const float* x);
// Smallest and largest value; a zero result may have either sign (the caller decides which zero the scalar loop
// keeps).
void block_min_max(Isa isa, const float* x, float& min, float& max);
// Q8_0 codes: x_j * scale rounded half away from zero (C's roundf), as int8.
void block_round_codes(Isa isa, const float* x, float scale, int8_t* codes);
// Q4/Q5 codes: min(cap, int((x_j - offset) * scale + add)), truncating toward zero.
void block_trunc_codes(Isa isa, const float* x, float offset, float scale, float add, int cap, uint8_t* codes);
// Whether all 32 values are finite.
bool block_finite(const float* x);

}  // namespace mlx2gguf
