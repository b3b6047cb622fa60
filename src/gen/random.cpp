#include "gen/random.h"

#include <cmath>
#include <numbers>

namespace mlx2gguf::gen {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t tensor_seed(uint64_t model_seed, std::string_view tensor_name) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : tensor_name) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return splitmix64(splitmix64(model_seed) ^ hash);
}

double NormalStream::uniform() {
  // 53 random bits → one of 2^53 equally spaced values in (0, 1]; never 0, so log() below is finite.
  return static_cast<double>((engine_() >> 11) + 1) * 0x1p-53;
}

double NormalStream::next() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  const double radius = std::sqrt(-2.0 * std::log(uniform()));
  const double angle = 2.0 * std::numbers::pi * uniform();
  spare_ = radius * std::sin(angle);
  has_spare_ = true;
  return radius * std::cos(angle);
}

}  // namespace mlx2gguf::gen
