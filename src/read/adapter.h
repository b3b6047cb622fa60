#pragma once
// An mlx-lm fine-tune: the adapter folder `mlx_lm.lora` writes (adapter_config.json + adapters.safetensors, or a
// checkpoint such as 0000100_adapters.safetensors), read and checked against the base model it was trained on.
//
// Which modules carry adapters comes from the tensor names in the weights file, never from `keys` / `num_layers`
// in the config (their defaults changed across mlx-lm versions). The config only gives the fine-tune type and the
// LoRA scale.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "read/safetensors.h"

namespace mlx2gguf {

class SourceModel;

enum class FineTuneType { Lora, Dora, Full };
const char* fine_tune_type_name(FineTuneType type);

// mlx-lm's adapter classes, told apart by the base module they wrap. Shapes are row-major as stored:
//   Linear     LoRALinear / DoRALinear          base [out, in]      lora_a [in, r]     lora_b [r, out]
//   Switch     LoRASwitchLinear (experts)       base [E, out, in]   lora_a [E, r, in]  lora_b [E, out, r]
//              (files from before October 2025 hold lora_a as [E·r, in]; it is read as [E, r, in])
//   Embedding  LoRAEmbedding / DoRAEmbedding    base [vocab, dims]  lora_a [vocab, r]  lora_b [r, dims]
// DoRA modules (Linear and Embedding only) also hold the magnitude `m` [out] / [vocab].
enum class AdapterKind { Linear, Switch, Embedding };
const char* adapter_kind_name(AdapterKind kind);

// One adapted module of a LoRA or DoRA fine-tune, bound to its base tensor.
//
// Whatever the kind, the update it makes to row `row` of the base tensor (rows counted over the whole tensor:
// E·out rows for Switch) is
//     delta[row][c] = scale · Σ_k up(row, k) · down(expert(row), k, c)
// with, in terms of the stored factors:
//     Linear     up(o, k) = lora_b[k][o]        down(0, k, i) = lora_a[i][k]
//     Switch     up(e·out + o, k) = lora_b[e][o][k]   down(e, k, i) = lora_a[e][k][i]
//     Embedding  up(v, k) = lora_a[v][k]        down(0, k, d) = lora_b[k][d]
// LoRA adds the update; DoRA then rescales each row to its learned magnitude:
//     W'[row] = m[row] / ‖W[row] + delta[row]‖₂ · (W[row] + delta[row]).
class AdapterModule {
 public:
  AdapterModule(std::string module, AdapterKind kind, const StoredTensor& a, const StoredTensor& b,
                const StoredTensor* magnitude, int64_t experts, int64_t rank, int64_t rows, int64_t cols, float scale);

  const std::string& module() const { return module_; }      // e.g. "model.layers.3.self_attn.q_proj"
  std::string weight_name() const { return module_ + ".weight"; }  // the base tensor it updates
  AdapterKind kind() const { return kind_; }
  bool is_dora() const { return magnitude_ != nullptr; }
  float scale() const { return scale_; }

  int64_t experts() const { return experts_; }  // 1 unless Switch
  int64_t rank() const { return rank_; }
  int64_t rows() const { return rows_; }        // rows per expert: out (Linear, Switch) or vocab (Embedding)
  int64_t cols() const { return cols_; }        // in (Linear, Switch) or dims (Embedding)
  int64_t total_rows() const { return experts_ * rows_; }
  int64_t expert_of(int64_t row) const { return row / rows_; }

  // The factors as stored (float32, float16 or bfloat16), in the layouts listed above.
  const StoredTensor& lora_a() const { return *a_; }
  const StoredTensor& lora_b() const { return *b_; }
  const StoredTensor* magnitude_tensor() const { return magnitude_; }

  // up(row, 0..rank) into out[rank].
  void read_up(int64_t row, float* out) const;
  // down(expert, k, c) for all k, c into out[rank][cols].
  void read_down(int64_t expert, float* out) const;
  // m[row] (DoRA only).
  float magnitude(int64_t row) const;

 private:
  std::string module_;
  AdapterKind kind_;
  const StoredTensor* a_;
  const StoredTensor* b_;
  const StoredTensor* magnitude_;
  int64_t experts_, rank_, rows_, cols_;
  float scale_;
};

// Where to find an adapter: --adapter-path (a folder, or a weights file inside one) and --adapter-file.
struct AdapterLocation {
  std::filesystem::path path;                        // folder with adapter_config.json, or a .safetensors file
  std::optional<std::filesystem::path> weights_file;  // weights file to use instead of adapters.safetensors
};

class Adapter {
 public:
  // Reads adapter_config.json and the weights, and binds every adapter tensor to the base model: each LoRA/DoRA
  // module must exist in `base` with a shape its factors fit, each full fine-tune tensor must replace a base
  // tensor of the same shape. Fails with one message naming the file, the tensor and what is wrong.
  static std::unique_ptr<Adapter> open(const AdapterLocation& location, const SourceModel& base);

  FineTuneType type() const { return type_; }
  float scale() const { return scale_; }  // lora_parameters.scale (LoRA / DoRA)
  int64_t rank() const { return rank_; }  // largest rank over the modules (0 for full)
  const std::filesystem::path& config_path() const { return config_path_; }
  const std::filesystem::path& weights_path() const { return weights_->path(); }
  // Facts about how the config was read that a user should see (legacy keys, ignored parameters).
  const std::vector<std::string>& notes() const { return notes_; }

  // LoRA / DoRA: the adapted modules, in name order; the module updating base tensor `weight_name`, or null.
  const std::vector<AdapterModule>& modules() const { return modules_; }
  const AdapterModule* find(const std::string& weight_name) const;

  // Full fine-tunes: the tensors that replace base tensors of the same name.
  const std::map<std::string, StoredTensor>& replacements() const { return replacements_; }

 private:
  Adapter() = default;
  FineTuneType type_ = FineTuneType::Lora;
  float scale_ = 0;
  int64_t rank_ = 0;
  std::filesystem::path config_path_;
  std::unique_ptr<SafetensorsFile> weights_;
  std::vector<std::string> notes_;
  std::vector<AdapterModule> modules_;
  std::map<std::string, size_t> by_weight_;
  std::map<std::string, StoredTensor> replacements_;
};

}  // namespace mlx2gguf
