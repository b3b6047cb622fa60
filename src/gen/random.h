#pragma once
// Deterministic pseudo-random numbers for synthetic weights. Only the engine's raw output is used (its sequence
// is fixed by the C++ standard); the normal transform is our own, so a seed gives the same weights everywhere.
#include <cstdint>
#include <random>
#include <string_view>

namespace mlx2gguf::gen {

// Seed of one tensor's stream: depends on the model seed and the tensor name only, so adding or reordering
// tensors never changes the values of the others (a quantized and a float model of one seed share weights).
uint64_t tensor_seed(uint64_t model_seed, std::string_view tensor_name);

class NormalStream {
 public:
  explicit NormalStream(uint64_t seed) : engine_(seed) {}

  // Standard normal sample (Box–Muller; the second value of each pair is kept for the next call).
  double next();
  // Uniform sample in (0, 1].
  double uniform();

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace mlx2gguf::gen
