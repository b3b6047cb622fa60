#pragma once
// Tiny random mlx-lm model folders, written exactly as `mlx_lm.convert` saves a model: the sanitized MLX tensor
// names and shapes, optional quantization (affine or fp modes, with per-module overrides), config.json,
// model.safetensors.index.json, generation_config.json, the tokenizer files and a model card. Qwen3.5 models can
// also be written as the raw Hugging Face checkpoint such a folder is converted from (TinyModelSpec::layout).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "read/quant_config.h"
#include "read/safetensors.h"

namespace mlx2gguf::gen {

// A per-module exception to the recipe, as mlx-lm's model quant predicates produce (e.g. MoE routers at 8 bits).
struct QuantOverride {
  std::string module_suffix;  // applies to every quantizable module whose path ends with this, e.g. "mlp.gate"
  int bits = 8;               // 0 leaves the matching modules in float (no config entry, as mlx-lm does)
  int group_size = 64;
  std::string mode;  // empty: entry written without "mode" (meaning affine), as the model predicates write it
};

// What `mlx_lm.convert -q --q-mode MODE --q-bits BITS --q-group-size GS` does. The model's own quant predicate is
// applied after `overrides`, as mlx-lm does: for qwen3_5_moe, `mlp.gate` and `shared_expert_gate` at 8 bits,
// group size 64 (explicit per-module entries without "mode").
struct QuantRecipe {
  std::string mode = "affine";  // affine | mxfp4 | nvfp4 | mxfp8
  int bits = 0;                 // 0: the mode's default (affine 4, mxfp4 4, nvfp4 4, mxfp8 8)
  int group_size = 0;           // 0: the mode's default (affine 64, mxfp4 32, nvfp4 16, mxfp8 32)
  std::vector<QuantOverride> overrides;
  bool write_mode = true;  // false: top-level entry without "mode", as folders from before the fp modes have

  // "MODE[:BITS[:GROUP_SIZE]]", e.g. "affine:4:64", "affine:3", "mxfp4".
  static QuantRecipe parse(const std::string& text);
  int resolved_bits() const;
  int resolved_group_size() const;
};

struct TinyModelSpec {
  // llama | mistral | mixtral | qwen3_5 | qwen3_5_moe (see tiny_model_types()). qwen3_5 is the dense Qwen3.5,
  // qwen3_5_moe the Qwen3.5 / Qwen3.6 MoE (e.g. Qwen3.6-35B-A3B): hybrid decoders where layer i is Gated DeltaNet
  // linear attention unless (i + 1) % full_attention_interval == 0, which is gated full attention.
  std::string model_type = "llama";

  // How the folder is saved:
  //  "mlx": as mlx_lm.convert saves it (sanitized MLX names and layouts, optional quantization). For qwen3_5 types:
  //         `language_model.model.*` / `language_model.lm_head.weight`, conv1d [C, K, 1], stacked experts under
  //         `mlp.switch_mlp`, and the zero-centred norms (input/post-attention/final/q/k) stored as 1 + w.
  //  "hf":  as the Hugging Face checkpoint it would have been converted from (qwen3_5 types only; never
  //         quantized): `model.language_model.*` / `lm_head.weight`, conv1d [C, 1, K], fused experts
  //         `mlp.experts.gate_up_proj` [E, 2*Im, H] (per expert: gate rows, then up rows) and
  //         `mlp.experts.down_proj` [E, H, Im] (both without a `.weight` suffix), zero-centred norms stored as w.
  // In both, `linear_attn.A_log` is float32 whatever the dtype, and config.json nests the language model in
  // `text_config` (model_type qwen3_5_text / qwen3_5_moe_text) under a top-level model_type qwen3_5 / qwen3_5_moe;
  // the hf config also has a `vision_config`, which mlx-lm drops, adding a top-level eos_token_id.
  // For one seed both layouts hold the same model: every MLX tensor equals its Hugging Face counterpart after
  // mlx-lm's sanitize, the shifted norms exactly (MLX value = (1 + HF value) rounded to the storage dtype).
  std::string layout = "mlx";

  int hidden = 128;
  int layers = 0;  // 0: 2, or 4 for qwen3_5 types (three linear-attention layers, then one full-attention one)
  int heads = 4, kv_heads = 2;
  int head_dim = 0;  // 0: hidden / heads (mixtral always uses that), 64 for qwen3_5 types
  int intermediate = 256;  // dense MLP width (per-expert width of mixtral); qwen3_5_moe uses moe_intermediate
  int vocab = 0;     // 0: the tokenizer's size (max token id + 1)
  int experts = 0, experts_per_tok = 0;  // 0: 4 experts, 2 per token for MoE types
  bool tie_embeddings = false, attention_bias = false, mlp_bias = false;
  nlohmann::json rope_scaling;  // null, {"type": "linear", "factor": 2.0}, {"rope_type": "llama3", ...}
  double rope_theta = 0;        // 0: 10000, or 1e7 for qwen3_5 types (written inside rope_parameters there)
  double rms_norm_eps = 0;      // 0: 1e-5, or 1e-6 for qwen3_5 types
  int max_position_embeddings = 2048;

  // qwen3_5 / qwen3_5_moe only. Linear-attention widths: Kd = linear_num_key_heads * linear_key_head_dim,
  // Vd = linear_num_value_heads * linear_value_head_dim; value head j reads key head j / (value heads / key heads).
  int linear_num_key_heads = 2, linear_num_value_heads = 4;
  int linear_key_head_dim = 32, linear_value_head_dim = 32;
  int linear_conv_kernel_dim = 4;
  int full_attention_interval = 4;
  double partial_rotary_factor = 0.25;  // RoPE covers the first head_dim * factor dims of each head
  std::vector<int> mrope_section;       // empty: [11, 11, 10] scaled to sum to the rotated dims / 2
  int moe_intermediate = 0;             // 0: 64; per routed expert
  int shared_expert_intermediate = 0;   // 0: 64
  // Unset: no "norm_topk_prob" key, as Qwen's own configs (mlx-lm then defaults to true, Hugging Face always
  // renormalizes the top-k weights).
  std::optional<bool> norm_topk_prob;
  // "hf" layout: also store a few `mtp.*` (multi-token prediction head) and `model.visual.*` (vision tower)
  // tensors, as real checkpoints have; a text-model converter must drop them.
  bool hf_extra_tensors = false;

  std::string dtype = "bfloat16";    // float storage: bfloat16 | float16 | float32
  std::optional<QuantRecipe> quant;  // mlx_lm.convert -q ("mlx" layout only)
  uint64_t seed = 1;
  std::string tokenizer_dir;  // folder with tokenizer.json (+ tokenizer_config.json, ...); empty: built-in tiny tokenizer
  uint64_t max_shard_bytes = 5ull << 30;  // a new model-0000N-of-0000M shard starts past this size

  // Families with sliding-window layers (gpt_oss, ...): the attention window of the sliding layers (0: the
  // family's default, gpt-oss's 128) and each layer's attention type, "sliding_attention" or "full_attention"
  // (empty: the family's own pattern; gpt-oss alternates, layer 0 sliding), written as config.json sliding_window
  // and layer_types. (gpt_oss reads rope_scaling null as gpt-oss's own YaRN, factor 32 over 4096 positions; an
  // empty object writes no scaling.)
  int sliding_window = 0;
  std::vector<std::string> layer_types;

  // Family-specific config.json keys without a field above (e.g. soft-capping values, partial rotary factors):
  // merged over the builder's config last, so a test can set any key, or null to write it as null. Builders
  // that read a key's value for the weights they write read it from here too.
  nlohmann::json extra_config = nlohmann::json::object();
};

struct TinyModelSummary {
  std::vector<std::filesystem::path> files;  // every file written, in writing order
  std::vector<std::string> shards;           // weight file names
  int64_t tensor_count = 0;
  int64_t quantized_modules = 0;
  uint64_t total_size = 0;        // bytes of tensor data, as in the index
  uint64_t total_parameters = 0;  // logical parameter count, as in the index
  int64_t vocab_size = 0;
};

// Model types the generator knows.
std::vector<std::string> tiny_model_types();

// Qwen3.6-35B-A3B's real widths (hidden 2048; 16 query and 2 key/value heads of 256; linear attention with 16 key
// heads and 32 value heads of 128; routed experts and shared expert of 512) on a model small enough for tests:
// 2 layers (full_attention_interval 2: one linear-attention layer, then one full-attention layer), 4 experts with
// 3 per token, and the built-in tiny tokenizer. 94M parameters: 178 MiB of weights in bf16, 50 MiB at 4 bits.
// layers = 4 with full_attention_interval = 4 restores the real layer pattern at twice the size.
TinyModelSpec qwen36_like_spec();

// Named specs for the tool: "qwen3.6-35b-a3b-widths" (qwen36_like_spec()).
std::vector<std::string> tiny_model_presets();
TinyModelSpec tiny_model_preset(const std::string& name);

// Writes the folder; `out_dir` must not exist or be empty (mlx_lm.convert refuses existing paths too).
TinyModelSummary write_tiny_model(const TinyModelSpec& spec, const std::filesystem::path& out_dir);

// The float values of tensor `name` (a name of the spec's layout) before any quantization: what a float model of
// the same spec and seed stores, rounded to the storage dtype. Lets tests compare dequantized weights with their
// source.
std::vector<float> tiny_model_float_weights(const TinyModelSpec& spec, const std::string& name);
// The same for several tensors at once (the layout is built once).
std::map<std::string, std::vector<float>> tiny_model_float_weights(const TinyModelSpec& spec,
                                                                   const std::vector<std::string>& names);

// The mlx-lm module class a weight belongs to, as far as fine-tuning cares: the classes mlx-lm's LoRA can wrap.
enum class TinyModuleKind {
  None,          // not the weight of such a module: norms, biases, conv1d, A_log, dt_bias, ...
  Linear,        // nn.Linear / nn.QuantizedLinear: [out, in]
  SwitchLinear,  // SwitchLinear / QuantizedSwitchLinear (stacked experts): [experts, out, in]
  Embedding,     // nn.Embedding / nn.QuantizedEmbedding: [vocab, dims]
};

// One logical tensor of a spec's model, in the order the folder stores them (mlx-lm's parameter order).
struct TinyTensorInfo {
  std::string name;                // as stored, e.g. "model.layers.0.mlp.gate_proj.weight"
  std::vector<int64_t> shape;      // logical shape: for a quantized weight the unpacked one
  DType dtype = DType::BF16;       // float dtype of the values (before quantization, also the affine scales' dtype)
  TinyModuleKind module_kind = TinyModuleKind::None;
  std::optional<QuantSpec> quant;  // set when the folder stores it quantized (weight + scales [+ biases])
};

// Every logical tensor of the spec's model (quantized weights once, without their scales and biases).
std::vector<TinyTensorInfo> tiny_model_tensors(const TinyModelSpec& spec);

}  // namespace mlx2gguf::gen
