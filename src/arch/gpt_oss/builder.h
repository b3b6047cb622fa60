#pragma once
// What mlx_lm.convert makes of OpenAI's gpt-oss checkpoints, as quantization recipes for the tiny-model generator.
#include "gen/tiny_model.h"

namespace mlx2gguf::gen {

// gpt-oss is published natively MXFP4: mlx-lm loads its experts as mxfp4 (group 32) and writes the top-level
// `quantization` entry {"group_size": 32, "bits": 4, "mode": "mxfp4"} for them. `mlx_lm.convert` without -q leaves
// every other module in float (rest_bits 0); with `-q --q-bits B --q-group-size G` (affine) the model counts as
// already quantized, so each newly quantized module (embeddings, attention projections, lm_head) gets its own entry
// {"group_size": G, "bits": B, "mode": "affine"}, and the routers gpt_oss.py's quant_predicate's {"group_size": 64,
// "bits": 8} (mlx-community's gpt-oss-*-MXFP4-Q8 folders: B = 8, G = 64).
QuantRecipe gpt_oss_native_mxfp4_recipe(int rest_bits, int rest_group_size = 64);

}  // namespace mlx2gguf::gen
