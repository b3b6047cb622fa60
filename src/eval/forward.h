#pragma once
// Per-architecture forward passes behind reference_logits, and the pieces they share.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "eval/ops.h"
#include "read/source_model.h"

namespace mlx2gguf::ref {

// llama, mistral (llama.py) and mixtral (mixtral.py). Returns logits [n_tokens][vocab].
std::vector<float> llama_family_logits(const SourceModel& model, std::span<const int32_t> tokens);

// qwen3_5 and qwen3_5_moe (mlx-lm qwen3_5.py / qwen3_5_moe.py): gated full attention every
// full_attention_interval-th layer, Gated DeltaNet linear attention elsewhere, dense or shared-expert MoE MLPs.
std::vector<float> qwen3_5_logits(const SourceModel& model, std::span<const int32_t> tokens);
// The rope of qwen3_5's full-attention layers from its text_config: rope_parameters (mlx-lm's default when
// absent: theta 100000, partial_rotary_factor 0.25), or the top-level keys when rope_parameters is null/empty.
Rope qwen3_5_rope(const nlohmann::json& text_config, int64_t head_dim);

// The output projection: `lm_head` when the weights hold it, else the tied embedding table.
Activations output_logits(const SourceModel& model, const Activations& x, const std::string& lm_head_name,
                          const std::string& embed_name);

// A 1-D parameter, checked to hold `size` values.
std::vector<float> read_vector(const SourceModel& model, const std::string& name, int64_t size);

// A projection bias: read (and checked to hold `size` values) when config.json enables it. A bias tensor present
// while config.json disables it is an error, as mlx-lm would refuse to load it.
std::vector<float> read_bias(const SourceModel& model, const std::string& name, int64_t size, bool enabled,
                             const char* config_key);

inline const float* data_or_null(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

}  // namespace mlx2gguf::ref
