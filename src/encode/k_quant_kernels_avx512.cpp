// The K-quant searches with AVX-512; the build compiles this file alone with AVX-512 (F, BW, VL, DQ) enabled
// (CMakeLists.txt), and k_quant_kernels.cpp calls it only on CPUs that have AVX-512F and AVX-512BW.
#if defined(__x86_64__)
#include "encode/k_quant_search.h"

namespace mlx2gguf {
namespace {

// The 32-element asymmetric search (Q4_K, Q5_K) measured faster on 8 lanes than on 16 (whose two super-blocks
// per vector cost more in transposing than they save); the 16-element searches gain from 16 lanes.
void fit_scales_and_mins_avx512(const float* x, const float* w, int64_t n, int sub_block, bool absolute_error,
                                const AsymmetricSearch& search, float* code_inverse, float* code_shift, float* scale,
                                float* negated_min) {
  if (sub_block == 32) {
    KQuantSearches<8>::fit_scales_and_mins(x, w, n, sub_block, absolute_error, search, code_inverse, code_shift,
                                           scale, negated_min);
  } else {
    KQuantSearches<16>::fit_scales_and_mins(x, w, n, sub_block, absolute_error, search, code_inverse, code_shift,
                                            scale, negated_min);
  }
}

}  // namespace

KQuantSearchFunctions k_quant_searches_avx512() {
  KQuantSearchFunctions f = KQuantSearches<16>::functions();
  f.fit_scales_and_mins = fit_scales_and_mins_avx512;
  return f;
}

}  // namespace mlx2gguf
#endif
