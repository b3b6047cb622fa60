#include "plan/permutations.h"

#include "util/error.h"

namespace mlx2gguf {

IndexMap rope_halves_to_pairs(int64_t n_heads, int64_t head_dim) {
  if (head_dim % 2 != 0) fail("head dimension {} is odd: rotary pairs cannot be formed", head_dim);
  IndexMap map(static_cast<size_t>(n_heads * head_dim));
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t j = 0; j < half; ++j) {
      for (int64_t k = 0; k < 2; ++k) map[h * head_dim + 2 * j + k] = h * head_dim + k * half + j;
    }
  }
  return map;
}

IndexMap grouped_to_tiled_heads(int64_t n_key_heads, int64_t n_value_heads, int64_t head_size) {
  if (n_key_heads <= 0 || n_value_heads % n_key_heads != 0)
    fail("{} value heads cannot be grouped over {} key heads", n_value_heads, n_key_heads);
  const int64_t per_key = n_value_heads / n_key_heads;
  IndexMap map(static_cast<size_t>(n_value_heads * head_size));
  for (int64_t v = 0; v < per_key; ++v) {
    for (int64_t k = 0; k < n_key_heads; ++k) {
      const int64_t new_head = v * n_key_heads + k;
      const int64_t old_head = k * per_key + v;
      for (int64_t i = 0; i < head_size; ++i) map[new_head * head_size + i] = old_head * head_size + i;
    }
  }
  return map;
}

IndexMap with_identity_prefix(int64_t prefix, const IndexMap& tail) {
  IndexMap map(static_cast<size_t>(prefix) + tail.size());
  for (int64_t i = 0; i < prefix; ++i) map[i] = i;
  for (size_t i = 0; i < tail.size(); ++i) map[prefix + i] = prefix + tail[i];
  return map;
}

IndexMap compose(const IndexMap& outer, const IndexMap& inner) {
  IndexMap map(outer.size());
  for (size_t i = 0; i < outer.size(); ++i) map[i] = inner.at(static_cast<size_t>(outer[i]));
  return map;
}

bool is_identity(const IndexMap& map) {
  for (size_t i = 0; i < map.size(); ++i) {
    if (map[i] != static_cast<int64_t>(i)) return false;
  }
  return true;
}

}  // namespace mlx2gguf
