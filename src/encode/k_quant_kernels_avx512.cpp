// The K-quant searches on 16 lanes; the build compiles this file alone with AVX-512 (F, BW, VL, DQ) enabled
// (CMakeLists.txt), and k_quant_kernels.cpp calls it only on CPUs that have AVX-512F and AVX-512BW.
#if defined(__x86_64__)
#include "encode/k_quant_search.h"

namespace mlx2gguf {

KQuantSearchFunctions k_quant_searches_avx512() { return KQuantSearches<16>::functions(); }

}  // namespace mlx2gguf
#endif
