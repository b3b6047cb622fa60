#pragma once
// Fine-tunes of tiny models, written exactly as mlx-lm writes them: the adapter folder `mlx_lm.lora` saves for a
// LoRA, DoRA or full fine-tune of a tiny base model (adapter_config.json, adapters.safetensors and optionally a
// checkpoint), and the folder `mlx_lm.fuse` makes from the base folder and that adapter (with or without
// --dequantize).
//
// Adapter folder (mlx_lm/lora.py, mlx_lm/tuner/{utils,lora,dora,trainer}.py):
//  * adapter_config.json: every training argument (json.dump(vars(args), indent=4), top-level keys sorted, nested
//    objects in insertion order). `keys`, when given, sits inside lora_parameters (they can only come from a YAML
//    config, so "config" then names one). Full fine-tunes have "lora_parameters": null. The legacy config (mlx-lm
//    before the full fine-tune, September 2024) has lora_layers and use_dora instead of num_layers and
//    fine_tune_type, and lora_parameters {rank, alpha, dropout, scale}.
//  * adapters.safetensors: the trainable parameters, header "__metadata__": null (sorted, unpadded, as MLX writes
//    it). The data follows mlx-lm's parameter order here; real files follow MLX's unordered_map instead, so readers
//    must go by the header.
//    Which modules: without `keys`, every Linear / SwitchLinear / Embedding (quantized or not) inside the last
//    num_layers blocks (-1 or 0: all); with `keys`, those whose block-relative path (e.g. "self_attn.q_proj") is a
//    key, in the last num_layers blocks, plus any module whose full path is a key ("lm_head", "model.embed_tokens",
//    "language_model.lm_head" for qwen3_5 types) wherever it is. A legacy config without keys uses the per-model
//    table of mlx-lm before v0.28.2: self_attn.q_proj and self_attn.v_proj (+ block_sparse_moe.gate for mixtral).
//    Tensors per module (F32; s = scale):
//      Linear     LoRALinear        lora_a [in, r]     lora_b [r, out]      delta W = (s·lora_bᵀ) @ lora_aᵀ
//      Switch     LoRASwitchLinear  lora_a [E, r, in]  lora_b [E, out, r]   delta W[e] = (s·lora_b[e]) @ lora_a[e]
//      Embedding  LoRAEmbedding     lora_a [vocab, r]  lora_b [r, dims]     delta W = (s·lora_a) @ lora_b
//    DoRA adds `m` (written before lora_a, as mlx-lm's parameter order has it): [out] F32 for DoRALinear, [vocab]
//    in the embedding's dtype for DoRAEmbedding (mlx-lm takes its norm without casting). DoRA on experts is refused,
//    as mlx-lm refuses it, and so is DoRA on a quantized embedding (mlx-lm's DoRAEmbedding mishandles it).
//    Full fine-tunes store the unfrozen parameters of the last num_layers blocks under their own names and dtypes:
//    every parameter for a float base; for a quantized base only those outside quantized modules (QuantizedLinear
//    and QuantizedSwitchLinear keep weight, scales, biases and bias frozen through unfreeze()).
//  Values look trained rather than initialized: lora_a ~ U(±1/sqrt(in)) (U(±1/sqrt(vocab)) for embeddings) as
//  mlx-lm draws it, lora_b Gaussian with a standard deviation making the update's RMS 0.15 × the base tensor's RMS
//  (instead of mlx-lm's zeros), m = the base's row norm × (1 + 0.1·N(0,1)), full fine-tune parameters = base +
//  0.05 × RMS × N(0,1). Everything is a deterministic function of (base spec, adapter spec).
//
// Fused folder (mlx_lm/fuse.py): the base folder with every adapted module replaced by its fused version (full
// fine-tunes: every adapter tensor replacing the base's), all other tensors byte-identical, config.json unchanged
// (--dequantize drops "quantization" and "quantization_config"), the other files copied. With T the module's
// compute dtype (float base: its dtype; affine-quantized: the scales' dtype; mxfp4/nvfp4/mxfp8: bfloat16) and
// round_T round-to-nearest-even of a float32 to T, each fused row is computed exactly as follows:
//  1. W_T[c] = round_T(stored value), quantized values as dequantize_row gives them in float32.
//  2. delta[c] = Σ_{k ascending} (s_f32·U[row][k])·D[k][c] in float32 from 0.0f, each product rounded (no FMA),
//     where Linear U[o][k] = lora_b[k][o], D[k][i] = lora_a[i][k]; Switch U[e,o][k] = lora_b[e][o][k],
//     D = lora_a[e]; Embedding U[v][k] = lora_a[v][k], D[k][d] = lora_b[k][d].
//  3. LoRA: fused[c] = round_T(W_T[c] + round_T(delta[c])), dtype T.
//  4. DoRA: Wa[c] = round_T(W_T[c] + round_T(delta[c])); ss = Σ_c round_T(Wa[c]·Wa[c]) in float32, ascending;
//     norm = round_T(sqrtf(ss)). With an F32 m (DoRALinear): fused[c] = (m[row] / norm)·Wa[c] in float32, dtype F32.
//     With an m of dtype T (DoRAEmbedding): fused[c] = round_T(round_T(m[row] / norm)·Wa[c]), dtype T.
//  5. A module quantized in the base is re-quantized (unless --dequantize) with its own mode, bits and group size:
//     quantize_affine(fused, ..., scale dtype = the fused dtype) or quantize_fp. With --dequantize, fused modules
//     stay float and every other quantized module is stored as its step-1 values in T.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gen/safetensors_writer.h"
#include "gen/tiny_model.h"

namespace mlx2gguf::gen {

struct TinyAdapterSpec {
  std::string fine_tune_type = "lora";  // lora | dora | full
  int rank = 8;                         // lora_parameters.rank
  double scale = 20.0;                  // lora_parameters.scale: the update's multiplier (not alpha / rank)
  int num_layers = -1;                  // the last N blocks; -1 or 0: all (legacy config: 0 is none)
  // lora_parameters.keys: block-relative module paths ("self_attn.q_proj") and/or full module paths ("lm_head",
  // "model.embed_tokens"). Empty: mlx-lm's default (see above). Not allowed for full fine-tunes.
  std::vector<std::string> keys;
  uint64_t seed = 7;
  std::string model = "mlx_model";  // "model" in adapter_config.json: the base model path given to mlx_lm.lora
  bool legacy_config = false;       // the config mlx-lm wrote before September 2024 (lora and dora only)
  double legacy_alpha = 16;         // lora_parameters.alpha of the legacy config (ignored by mlx-lm); 0: no key
  // lora_a of experts as mlx-lm stored it before October 2025: [E·r, in] (the same bytes as [E, r, in]).
  bool legacy_switch_shape = false;
  int checkpoint_iteration = 0;  // > 0: also write {iteration:07d}_adapters.safetensors (same content)
};

struct TinyAdapterSummary {
  std::vector<std::filesystem::path> files;  // every file written
  std::vector<std::string> modules;          // LoRA/DoRA: the adapted modules in model order (full: empty)
  std::vector<std::string> tensors;          // the tensors of adapters.safetensors, in data order
};

// The tensors of adapters.safetensors, in data order (what write_tiny_adapter stores).
std::vector<GenTensor> tiny_adapter_tensors(const TinyModelSpec& base, const TinyAdapterSpec& adapter);

// Writes the adapter folder of a fine-tune of `base` (an mlx-layout spec); `out_dir` must not exist or be empty.
TinyAdapterSummary write_tiny_adapter(const TinyModelSpec& base, const TinyAdapterSpec& adapter,
                                      const std::filesystem::path& out_dir);

struct TinyFusedSummary {
  std::vector<std::filesystem::path> files;  // every file written
  std::vector<std::string> replaced;         // base tensors whose values changed (fused or replaced), in order
  int64_t tensor_count = 0;
};

// Writes what `mlx_lm.fuse --model base_dir --adapter-path <the adapter of (base, adapter)> --save-path out_dir
// [--dequantize]` writes. `base_dir` must hold the folder write_tiny_model wrote for `base`; the fused values are
// computed from the tensors stored there. `out_dir` must not exist or be empty.
TinyFusedSummary write_fused_model(const TinyModelSpec& base, const std::filesystem::path& base_dir,
                                   const TinyAdapterSpec& adapter, const std::filesystem::path& out_dir,
                                   bool dequantize);

}  // namespace mlx2gguf::gen
