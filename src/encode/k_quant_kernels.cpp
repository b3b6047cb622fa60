#include "encode/k_quant_kernels.h"

#include "encode/k_quant_search.h"

// The portable version runs 4 lanes (SSE2 on x86-64, NEON on AArch64, plain scalar code where there is no SIMD);
// it is both Isa::Scalar and Isa::Neon. The x86 versions live in files compiled with their own instruction set.

namespace mlx2gguf {
namespace {

const KQuantSearchFunctions& searches(Isa isa) {
  static const KQuantSearchFunctions portable = KQuantSearches<4>::functions();
#if defined(__x86_64__)
  static const KQuantSearchFunctions avx2 = k_quant_searches_avx2();
  static const KQuantSearchFunctions avx512 = k_quant_searches_avx512();
  if (isa == Isa::Avx512) return avx512;
  if (isa == Isa::Avx2) return avx2;
#endif
  (void)isa;
  return portable;
}

}  // namespace

void fit_scales_and_mins(Isa isa, const float* x, const float* w, int64_t n, int sub_block, bool absolute_error,
                         const AsymmetricSearch& search, float* code_inverse, float* code_shift, float* scale,
                         float* negated_min) {
  searches(isa).fit_scales_and_mins(x, w, n, sub_block, absolute_error, search, code_inverse, code_shift, scale,
                                    negated_min);
}

void asymmetric_codes(const float* x, int count, float inverse, float shift, int nmax, uint8_t* codes) {
  for (int i = 0; i < count; ++i)
    codes[i] = inverse < 0 ? 0 : static_cast<uint8_t>(clamped_nearest(inverse * (x[i] - shift), 0, nmax));
}

void fit_symmetric_scales(Isa isa, const float* x, const float* w, int64_t n, int nmax, uint8_t* codes,
                          float* scale) {
  searches(isa).fit_symmetric_scales(x, w, n, nmax, codes, scale);
}

void fit_symmetric_scales_by_descent(Isa isa, const float* x, int64_t n, int nmax, uint8_t* codes, float* scale) {
  searches(isa).fit_symmetric_scales_by_descent(x, n, nmax, codes, scale);
}

}  // namespace mlx2gguf
