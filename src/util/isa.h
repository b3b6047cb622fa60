#pragma once
// The instruction sets the vectorized kernels are written for, chosen at run time. Every kernel also has a
// portable scalar version, and all versions produce the same bytes; tests run each one the machine supports.
#include <vector>

namespace mlx2gguf {

enum class Isa { Scalar, Avx2, Avx512, Neon };

const char* isa_name(Isa isa);
// Every instruction set this build has kernels for and this CPU runs, Scalar first.
const std::vector<Isa>& supported_isas();
// The fastest of them: what the converter uses.
Isa best_isa();

}  // namespace mlx2gguf
