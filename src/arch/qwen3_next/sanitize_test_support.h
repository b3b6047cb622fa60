#pragma once
// For the qwen3_next tests: the folder `mlx_lm.convert` (unquantized) makes of a Hugging Face checkpoint, by
// mlx-lm's qwen3_next sanitize written out here independently of the generator: drop every "mtp." tensor (and a tied
// lm_head), stack the per-expert tensors into mlp.switch_mlp.* [E, out, in], move conv1d [C, 1, K] to [C, K, 1], and
// store 1 + w for the zero-centred norms (added in float32, rounded to the stored dtype as MLX adds a Python float).
// The generator draws a checkpoint's experts from streams of their own, so this is how tests get one model in both
// layouts.
#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gen/safetensors_writer.h"
#include "read/model_folder.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf::qwen3_next_test {

inline bool is_zero_centred_norm(const std::string& name) {
  for (const char* suffix : {".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight",
                             ".q_norm.weight", ".k_norm.weight"})
    if (name.ends_with(suffix)) return true;
  return false;
}

// Writes into `out` the sanitized weights of the checkpoint `hf_dir` as one model.safetensors tagged "mlx", with every
// other file (config.json, tokenizer, index, ...) copied from `mlx_dir`, an mlx-lm folder of the same configuration.
inline void write_sanitized_folder(const std::filesystem::path& hf_dir, const std::filesystem::path& mlx_dir,
                                   const std::filesystem::path& out) {
  namespace fs = std::filesystem;
  const ModelFolder hf = ModelFolder::open(hf_dir);
  const nlohmann::json& config = hf.config();
  const int64_t layers = config.at("num_hidden_layers").get<int64_t>();
  const int64_t experts = config.at("num_experts").get<int64_t>();
  const bool tied = config.value("tie_word_embeddings", false);

  std::vector<gen::GenTensor> tensors;
  for (const auto& [name, stored] : hf.tensors()) {
    if (name.find("mtp.") != std::string::npos || (tied && name == "lm_head.weight")) continue;
    if (name.find(".mlp.experts.") != std::string::npos) continue;  // stacked below
    gen::GenTensor tensor{name, stored.dtype, stored.shape, {stored.bytes.begin(), stored.bytes.end()}};
    if (name.find("conv1d.weight") != std::string::npos && stored.shape.back() != 1)
      tensor.shape = {stored.shape[0], stored.shape[2], stored.shape[1]};
    if (is_zero_centred_norm(name) && stored.shape.size() == 1) {
      for (int64_t i = 0; i < stored.element_count(); ++i) {
        if (stored.dtype == DType::F32) {
          float v;
          std::memcpy(&v, tensor.data.data() + 4 * i, 4);
          v = 1.0f + v;
          std::memcpy(tensor.data.data() + 4 * i, &v, 4);
        } else {
          uint16_t h;
          std::memcpy(&h, tensor.data.data() + 2 * i, 2);
          h = stored.dtype == DType::BF16 ? f32_to_bf16(1.0f + bf16_to_f32(h)) : f32_to_f16(1.0f + f16_to_f32(h));
          std::memcpy(tensor.data.data() + 2 * i, &h, 2);
        }
      }
    }
    tensors.push_back(std::move(tensor));
  }
  for (int64_t l = 0; l < layers; ++l)
    for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
      gen::GenTensor stacked;
      stacked.name = fmt::format("model.layers.{}.mlp.switch_mlp.{}.weight", l, proj);
      for (int64_t e = 0; e < experts; ++e) {
        const StoredTensor& expert = hf.require(fmt::format("model.layers.{}.mlp.experts.{}.{}.weight", l, e, proj));
        if (e == 0) {
          stacked.dtype = expert.dtype;
          stacked.shape = {experts, expert.shape[0], expert.shape[1]};
        }
        stacked.data.insert(stacked.data.end(), expert.bytes.begin(), expert.bytes.end());
      }
      tensors.push_back(std::move(stacked));
    }

  fs::create_directories(out);
  for (const auto& entry : fs::directory_iterator(mlx_dir))
    if (entry.path().extension() != ".safetensors") fs::copy_file(entry.path(), out / entry.path().filename());
  gen::write_safetensors(out / "model.safetensors", tensors, nlohmann::json{{"format", "mlx"}});
}

}  // namespace mlx2gguf::qwen3_next_test
