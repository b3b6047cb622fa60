#pragma once
// Layout fixes as index maps. A map m of length n means: output index i takes input index m[i].
// The same maps serve rows of float or packed quantized tensors, bias vectors, and adapter factors.
#include <cstdint>
#include <vector>

namespace mlx2gguf {

using IndexMap = std::vector<int64_t>;

// Hugging Face / MLX keep each attention head's rotary pairs half-split (i, i + d/2); llama.cpp's "llama"
// architecture rotates adjacent pairs (2i, 2i + 1). Within each head of `head_dim` rows, output row 2j + k
// takes input row k * head_dim/2 + j.
IndexMap rope_halves_to_pairs(int64_t n_heads, int64_t head_dim);

// V heads grouped per key head [k0: v0..v(r-1), k1: ...] → tiled order (position v * n_k + k holds old head
// k * r + v), over heads of `head_size` consecutive indices.
IndexMap grouped_to_tiled_heads(int64_t n_key_heads, int64_t n_value_heads, int64_t head_size);

// Identity on [0, prefix) followed by `tail` shifted by `prefix`: reorders only the tail part of an axis.
IndexMap with_identity_prefix(int64_t prefix, const IndexMap& tail);

// Composition: apply `inner` to the row index first, i.e. result[i] = inner[outer[i]].
IndexMap compose(const IndexMap& outer, const IndexMap& inner);

bool is_identity(const IndexMap& map);

}  // namespace mlx2gguf
