#pragma once
// The sub-block searches of the K-quant encoders (the part of K-quant encoding where the time goes), in versions
// for the vector units of the CPU. Each search gives every sub-block its own float scale (and minimum) and codes;
// k_quants.cpp and weighted_quants.cpp then store the scales as small integer codes and re-round the elements.
//
// Every version runs the sub-blocks side by side, one per SIMD lane, and performs in each lane exactly the float
// operations of ggml's scalar search for that sub-block, in the same order (no fused multiply-add, no
// reassociation), so all versions write the same bytes, which are ggml's.
//
// `n` is a multiple of the sub-block size; outputs are indexed by sub-block (scales) or element (codes).
#include <cstdint>

#include "util/isa.h"

namespace mlx2gguf {

// The asymmetric search (ggml's make_qkx2_quants): codes l in [0, nmax], value = scale·l + min with min <= 0.
// Starting from the plain min/max mapping, it tries inverse scales (nmax + rmin + rdelta·step)/(max - min) for
// step = 0..nstep, refits scale and min by weighted least squares and keeps a candidate whose weighted error is
// strictly lower.
struct AsymmetricSearch {
  int nmax;
  float rmin;
  float rdelta;
  int nstep;
};

// Sub-blocks of `sub_block` (16 or 32) elements under weights w. With `absolute_error` the candidates are
// compared by Σw·|error| (Q2_K), otherwise by Σw·error². Writes each sub-block's scale and -min (>= 0), and
// how to get the winning candidate's codes with asymmetric_codes (the encoders re-round most sub-blocks against
// their stored scale, so these codes are rarely needed).
void fit_scales_and_mins(Isa isa, const float* x, const float* w, int64_t n, int sub_block, bool absolute_error,
                         const AsymmetricSearch& search, float* code_inverse, float* code_shift, float* scale,
                         float* negated_min);

// The codes of one sub-block of `count` elements from fit_scales_and_mins's inverse and shift: the rounding of
// inverse·(x - shift) to [0, nmax]; all 0 for a negative inverse (a sub-block with nothing to search).
void asymmetric_codes(const float* x, int count, float inverse, float shift, int nmax, uint8_t* codes);

// The symmetric search (ggml's make_qx_quants): sub-blocks of 16, codes l in [-nmax, nmax-1] offset by nmax,
// value = scale·l. Tries the inverse scales -(nmax + k/10)/max (k = 0, then -9..9) and keeps the one explaining
// the most weighted energy. w == nullptr weighs each element by x² (what the quantizers without an importance
// matrix use). Sub-blocks whose largest magnitude is below 1e-15 get scale 0 and codes 0 (offset nmax is not
// added there, as in ggml).
void fit_symmetric_scales(Isa isa, const float* x, const float* w, int64_t n, int nmax, uint8_t* codes, float* scale);

// The Q3_K search (ggml's make_q3_quants with its coordinate descent): sub-blocks of 16, codes as above, weights
// x²; at most 5 sweeps moving one code at a time.
void fit_symmetric_scales_by_descent(Isa isa, const float* x, int64_t n, int nmax, uint8_t* codes, float* scale);

}  // namespace mlx2gguf
