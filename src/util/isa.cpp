#include "util/isa.h"

namespace mlx2gguf {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Neon: return "neon";
  }
  return "?";
}

const std::vector<Isa>& supported_isas() {
  static const std::vector<Isa> isas = [] {
    std::vector<Isa> found{Isa::Scalar};
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) found.push_back(Isa::Avx2);
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) found.push_back(Isa::Avx512);
#elif defined(__aarch64__)
    found.push_back(Isa::Neon);  // part of every AArch64 CPU
#endif
    return found;
  }();
  return isas;
}

Isa best_isa() {
  static const Isa best = supported_isas().back();
  return best;
}

}  // namespace mlx2gguf
