// The K-quant searches on 8 lanes; the build compiles this file alone with AVX2 enabled (CMakeLists.txt), and
// k_quant_kernels.cpp calls it only on CPUs that have AVX2.
#if defined(__x86_64__)
#include "encode/k_quant_search.h"

namespace mlx2gguf {

KQuantSearchFunctions k_quant_searches_avx2() { return KQuantSearches<8>::functions(); }

}  // namespace mlx2gguf
#endif
