#pragma once
// The hot loop of the lossless 4-bit repack: MLX packs 4-bit codes in element order (element 2k in the low nibble
// of byte k, element 2k + 1 in the high one); ggml's 4-bit blocks pair element j with element j + half in one byte
// (low nibble, high nibble). Moving codes between the two orders is a fixed shuffle of nibbles, done here with the
// CPU's vector instructions when it has them; every version writes the same bytes.
#include <cstdint>

#include "util/isa.h"

namespace mlx2gguf {

enum class NibblePairing {
  Half16,  // blocks of 32 codes (Q4_1, MXFP4): 16 bytes in, 16 bytes out, element j with j + 16
  Half8,   // blocks of 64 codes (NVFP4): 32 bytes in, 32 bytes out, four sub-blocks pairing j with j + 8
};

// Re-pairs `blocks` consecutive blocks: block b reads packed + b * in_bytes and writes out + b * out_stride, where
// in_bytes is 16 (Half16) or 32 (Half8).
void repair_nibbles(Isa isa, NibblePairing pairing, const uint8_t* packed, int64_t blocks, uint8_t* out,
                    int64_t out_stride);

}  // namespace mlx2gguf
