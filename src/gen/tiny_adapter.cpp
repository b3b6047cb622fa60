#include "gen/tiny_adapter.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "read/dequant.h"
#include "read/mlx_quantize.h"
#include "gen/random.h"
#include "read/quant_config.h"
#include "read/safetensors.h"
#include "util/error.h"

namespace mlx2gguf::gen {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

// Relative size of the generated updates: a LoRA/DoRA update's RMS, and the noise a full fine-tune adds, as a share
// of the base tensor's RMS. Large enough to move every fused value (and most quantization codes), small enough to
// keep the model as tame as its base (the generator scales residual projections small on purpose).
constexpr double kLoraUpdateShare = 0.15;
constexpr double kFullUpdateShare = 0.05;
constexpr double kMagnitudeSpread = 0.1;  // DoRA m: row norm × (1 + this × N(0,1))

// ---------------------------------------------------------------------------------------------------------------
// Which modules a fine-tune trains (mlx_lm/tuner/utils.py linear_to_lora_layers, mlx_lm/lora.py train_model)

// Where a tensor or module sits among the decoder blocks: "model.layers.3.self_attn.q_proj" is block 3, relative
// path "self_attn.q_proj"; anything outside the blocks has block -1 and its full path.
struct BlockPath {
  int64_t block = -1;
  std::string relative;
};

BlockPath block_path(const std::string& name) {
  for (const std::string prefix : {"model.layers.", "language_model.model.layers."}) {
    if (!name.starts_with(prefix)) continue;
    const size_t dot = name.find('.', prefix.size());
    if (dot == std::string::npos) break;
    return {std::stoll(name.substr(prefix.size(), dot - prefix.size())), name.substr(dot + 1)};
  }
  return {-1, name};
}

std::string parent_path(const std::string& name) { return name.substr(0, name.rfind('.')); }

// A module mlx-lm's LoRA can wrap, with the shape of its (logical) weight.
struct Module {
  std::string path;  // e.g. "model.layers.1.self_attn.q_proj"
  TinyModuleKind kind = TinyModuleKind::None;
  std::vector<int64_t> shape;  // [out, in], [E, out, in] or [vocab, dims]
  DType dtype = DType::BF16;   // float dtype of the values (affine scales' dtype when quantized)
  std::optional<QuantSpec> quant;
  BlockPath where;

  int64_t experts() const { return kind == TinyModuleKind::SwitchLinear ? shape[0] : 1; }
  int64_t rows() const { return shape[shape.size() - 2]; }  // per expert: out, or vocab
  int64_t cols() const { return shape.back(); }              // in, or dims
  // The update's inner dimension that lora_a's uniform bound comes from: in (vocab for embeddings).
  int64_t fan() const { return kind == TinyModuleKind::Embedding ? rows() : cols(); }
  int64_t other() const { return kind == TinyModuleKind::Embedding ? cols() : rows(); }
  const char* class_name() const {
    switch (kind) {
      case TinyModuleKind::SwitchLinear: return quant ? "QuantizedSwitchLinear" : "SwitchLinear";
      case TinyModuleKind::Embedding: return quant ? "QuantizedEmbedding" : "Embedding";
      default: return quant ? "QuantizedLinear" : "Linear";
    }
  }
};

std::vector<Module> wrappable_modules(const std::vector<TinyTensorInfo>& infos) {
  std::vector<Module> modules;
  for (const TinyTensorInfo& info : infos) {
    if (info.module_kind == TinyModuleKind::None) continue;
    const std::string path = parent_path(info.name);
    modules.push_back({path, info.module_kind, info.shape, info.dtype, info.quant, block_path(path)});
  }
  return modules;
}

int64_t block_count(const std::vector<TinyTensorInfo>& infos) {
  int64_t count = 0;
  for (const TinyTensorInfo& info : infos) count = std::max(count, block_path(info.name).block + 1);
  return count;
}

// The first block trained. Current mlx-lm takes model.layers[-max(num_layers, 0):], so -1 and 0 both mean all;
// the legacy code took layers[n - lora_layers:] after mapping negative counts to n, so 0 meant none.
int64_t first_trained_block(const TinyAdapterSpec& adapter, int64_t blocks) {
  if (adapter.num_layers > blocks)
    fail("cannot train {} layers: the model only has {} (mlx-lm refuses this too)", adapter.num_layers, blocks);
  if (adapter.legacy_config) return adapter.num_layers < 0 ? 0 : blocks - adapter.num_layers;
  return adapter.num_layers > 0 ? blocks - adapter.num_layers : 0;
}

// Before v0.28.2 mlx-lm had no generic default: a table per model type, q and v projections for these families.
std::set<std::string> legacy_default_keys(const std::string& model_type) {
  if (model_type == "llama" || model_type == "mistral") return {"self_attn.q_proj", "self_attn.v_proj"};
  if (model_type == "mixtral") return {"self_attn.q_proj", "self_attn.v_proj", "block_sparse_moe.gate"};
  fail("the mlx-lm of legacy configs had no default LoRA keys for {} (it raised 'Lora does not support {}'); give keys",
       model_type, model_type);
}

std::set<std::string> lora_keys(const TinyModelSpec& base, const TinyAdapterSpec& adapter,
                                const std::vector<Module>& modules) {
  if (!adapter.keys.empty()) {
    // mlx-lm ignores keys that match nothing; a generator catches the typo instead.
    for (const std::string& key : adapter.keys) {
      const bool found = std::any_of(modules.begin(), modules.end(), [&](const Module& m) {
        return m.path == key || (m.where.block >= 0 && m.where.relative == key);
      });
      if (!found)
        fail("key '{}' names no Linear, SwitchLinear or Embedding module of this {} model (keys are block-relative "
             "paths like self_attn.q_proj, or full paths like lm_head)",
             key, base.model_type);
    }
    return {adapter.keys.begin(), adapter.keys.end()};
  }
  if (adapter.legacy_config) return legacy_default_keys(base.model_type);
  // Current default: the block-relative path of every wrappable module in any block.
  std::set<std::string> keys;
  for (const Module& m : modules)
    if (m.where.block >= 0) keys.insert(m.where.relative);
  return keys;
}

void check_dora(const Module& m) {
  if (m.kind == TinyModuleKind::SwitchLinear)
    fail("{} doesn't support DoRA (mlx-lm raises this too): '{}'; give keys without the experts", m.class_name(), m.path);
  if (m.kind == TinyModuleKind::Embedding && m.quant)
    fail("DoRA on a quantized embedding ('{}') is not supported: mlx-lm's DoRAEmbedding reads the packed codes as "
         "weights",
         m.path);
}

// LoRA/DoRA: mlx-lm wraps the matching modules of the last blocks (block-relative keys), then any module whose
// full path is a key.
std::vector<Module> adapted_modules(const TinyModelSpec& base, const TinyAdapterSpec& adapter,
                                    const std::vector<TinyTensorInfo>& infos) {
  const std::vector<Module> modules = wrappable_modules(infos);
  const int64_t first = first_trained_block(adapter, block_count(infos));
  const std::set<std::string> keys = lora_keys(base, adapter, modules);
  std::vector<Module> selected;
  for (const Module& m : modules) {
    const bool by_block = m.where.block >= 0 && m.where.block >= first && keys.count(m.where.relative);
    const bool by_path = keys.count(m.path) > 0;
    if (by_block && by_path)
      fail("'{}' is named by a block-relative and a full-path key: mlx-lm would wrap it twice and fail", m.path);
    if (!by_block && !by_path) continue;
    if (adapter.fine_tune_type == "dora") check_dora(m);
    selected.push_back(m);
  }
  if (selected.empty()) fail("the fine-tune adapts no module (num_layers {}, {} keys)", adapter.num_layers, keys.size());
  return selected;
}

// ---------------------------------------------------------------------------------------------------------------
// Values

double rms(const std::vector<float>& values) {
  double sum = 0.0;
  for (float v : values) sum += static_cast<double>(v) * v;
  return values.empty() ? 0.0 : std::sqrt(sum / static_cast<double>(values.size()));
}

std::vector<float> uniform_values(uint64_t seed, const std::string& stream_name, int64_t count, double bound) {
  NormalStream stream(tensor_seed(seed, stream_name));
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = static_cast<float>(bound * (2.0 * stream.uniform() - 1.0));
  return values;
}

std::vector<float> normal_values(uint64_t seed, const std::string& stream_name, int64_t count, double stddev) {
  NormalStream stream(tensor_seed(seed, stream_name));
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = static_cast<float>(stddev * stream.next());
  return values;
}


int64_t product(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

// The compute dtype T of a quantized module: MLX's dequantize returns the scales' dtype, bfloat16 for the fp modes
// (whose scales are U8 codes).
DType dequantized_dtype(const QuantSpec& quant, DType scale_dtype) {
  return quant.mode == QuantMode::Affine ? scale_dtype : DType::BF16;
}

// Quantized rows as MLX's dequantize returns them: dequantize_row's float32 values rounded to T.
std::vector<float> dequantize_rows(const QuantSpec& quant, const uint8_t* packed, const uint8_t* scales,
                                   const uint8_t* biases, DType scale_dtype, int64_t rows, int64_t cols) {
  const DType dtype = dequantized_dtype(quant, scale_dtype);
  const int64_t packed_row = cols * quant.bits / 8;
  const int64_t scale_row = cols / quant.group_size * static_cast<int64_t>(dtype_size(scale_dtype));
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    float* out = values.data() + r * cols;
    dequantize_row(quant, packed + r * packed_row, scales + r * scale_row, biases ? biases + r * scale_row : nullptr,
                   scale_dtype, cols, out);
    for (int64_t c = 0; c < cols; ++c) out[c] = round_to_dtype(out[c], dtype);
  }
  return values;
}

QuantizedRows quantize_rows(const std::vector<float>& values, int64_t cols, const QuantSpec& quant, DType dtype) {
  const int64_t rows = static_cast<int64_t>(values.size()) / cols;
  return quant.mode == QuantMode::Affine ? quantize_affine(values.data(), rows, cols, quant.bits, quant.group_size, dtype)
                                         : quantize_fp(values.data(), rows, cols, quant.mode);
}

// What the base folder stores for a module's weight, dequantized: write_tiny_model's quantizer run on the float
// weights gives exactly the stored codes.
std::vector<float> stored_weight(const Module& m, const std::vector<float>& floats) {
  if (!m.quant) return floats;
  const QuantizedRows q = quantize_rows(floats, m.cols(), *m.quant, m.dtype);
  const int64_t rows = static_cast<int64_t>(floats.size()) / m.cols();
  return dequantize_rows(*m.quant, reinterpret_cast<const uint8_t*>(q.packed.data()), q.scales.data(),
                         q.biases.empty() ? nullptr : q.biases.data(), q.scale_dtype, rows, m.cols());
}

// One adapted module's trained factors, as stored.
struct Factors {
  Module module;
  int64_t rank = 0;
  std::vector<float> a, b;  // lora_a, lora_b (F32)
  std::vector<float> m;     // DoRA magnitude, values of m_dtype; empty for LoRA
  DType m_dtype = DType::F32;

  std::vector<int64_t> a_shape(bool legacy_switch) const {
    const Module& md = module;
    if (md.kind == TinyModuleKind::SwitchLinear)
      return legacy_switch ? std::vector<int64_t>{md.experts() * rank, md.cols()}
                           : std::vector<int64_t>{md.experts(), rank, md.cols()};
    if (md.kind == TinyModuleKind::Embedding) return {md.rows(), rank};
    return {md.cols(), rank};
  }
  std::vector<int64_t> b_shape() const {
    const Module& md = module;
    if (md.kind == TinyModuleKind::SwitchLinear) return {md.experts(), md.rows(), rank};
    if (md.kind == TinyModuleKind::Embedding) return {rank, md.cols()};
    return {rank, md.rows()};
  }
};

// lora_a as mlx-lm initializes it; lora_b, which mlx-lm starts at zero, as training might leave it: Gaussian, with
// Var(update) = s²·r·Var(lora_a)·σ² and Var(lora_a) = 1/(3·fan), σ makes the update's RMS a fixed share of the base's.
Factors make_factors(const Module& m, const std::vector<float>& base_floats, const TinyAdapterSpec& adapter) {
  Factors f;
  f.module = m;
  f.rank = adapter.rank;
  const double r = adapter.rank, fan = static_cast<double>(m.fan());
  f.a = uniform_values(adapter.seed, m.path + ".lora_a", m.experts() * m.fan() * adapter.rank, 1.0 / std::sqrt(fan));
  const double s = std::fabs(adapter.scale);
  const double sigma = s == 0.0 ? 0.0 : kLoraUpdateShare * rms(base_floats) / (s * std::sqrt(r / (3.0 * fan)));
  f.b = normal_values(adapter.seed, m.path + ".lora_b", m.experts() * m.other() * adapter.rank, sigma);
  if (adapter.fine_tune_type != "dora") return f;
  // DoRALinear takes the norm of the float32 cast of the (dequantized) weight; DoRAEmbedding of the weight itself,
  // so its m keeps the embedding's dtype (and Adam keeps it there).
  f.m_dtype = m.kind == TinyModuleKind::Embedding ? m.dtype : DType::F32;
  const std::vector<float> stored = stored_weight(m, base_floats);
  const std::vector<float> noise = normal_values(adapter.seed, m.path + ".m", m.rows(), 1.0);
  for (int64_t row = 0; row < m.rows(); ++row) {
    double sum = 0.0;
    for (int64_t c = 0; c < m.cols(); ++c) sum += static_cast<double>(stored[row * m.cols() + c]) * stored[row * m.cols() + c];
    f.m.push_back(round_to_dtype(static_cast<float>(std::sqrt(sum) * (1.0 + kMagnitudeSpread * noise[row])), f.m_dtype));
  }
  return f;
}

// A full fine-tune's trainable parameters: `l.unfreeze()` on the last blocks, where quantized modules re-freeze
// everything they own (weight, scales, biases and bias).
std::vector<TinyTensorInfo> full_parameters(const TinyAdapterSpec& adapter, const std::vector<TinyTensorInfo>& infos) {
  const int64_t first = first_trained_block(adapter, block_count(infos));
  std::set<std::string> quantized_modules;
  for (const TinyTensorInfo& info : infos)
    if (info.quant) quantized_modules.insert(parent_path(info.name));
  std::vector<TinyTensorInfo> params;
  for (const TinyTensorInfo& info : infos) {
    const int64_t block = block_path(info.name).block;
    if (block < 0 || block < first || quantized_modules.count(parent_path(info.name))) continue;
    params.push_back(info);
  }
  if (params.empty()) fail("the full fine-tune trains no parameter (num_layers {})", adapter.num_layers);
  return params;
}

std::vector<GenTensor> full_tensors(const TinyModelSpec& base, const TinyAdapterSpec& adapter,
                                    const std::vector<TinyTensorInfo>& infos) {
  const std::vector<TinyTensorInfo> params = full_parameters(adapter, infos);
  std::vector<std::string> names;
  for (const TinyTensorInfo& info : params) names.push_back(info.name);
  const auto floats = tiny_model_float_weights(base, names);
  std::vector<GenTensor> tensors;
  for (const TinyTensorInfo& info : params) {
    std::vector<float> values = floats.at(info.name);
    const std::vector<float> noise = normal_values(adapter.seed, info.name + "#full", product(info.shape), 1.0);
    const double step = kFullUpdateShare * rms(values);
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = round_to_dtype(static_cast<float>(values[i] + step * noise[i]), info.dtype);
    tensors.push_back({info.name, info.dtype, info.shape, float_bytes(values, info.dtype)});
  }
  return tensors;
}

void check_spec(const TinyModelSpec& base, const TinyAdapterSpec& adapter) {
  if (base.layout != "mlx") fail("fine-tunes are of mlx-lm folders (layout mlx), not of the {} layout", base.layout);
  const std::string& type = adapter.fine_tune_type;
  if (type != "lora" && type != "dora" && type != "full")
    fail("unknown fine-tune type '{}' (expected lora, dora or full)", type);
  if (type != "full" && adapter.rank <= 0) fail("LoRA rank must be positive, got {}", adapter.rank);
  if (type == "full" && !adapter.keys.empty())
    fail("keys have no meaning for a full fine-tune (mlx-lm sets lora_parameters to null)");
  if (type == "full" && adapter.legacy_config) fail("the legacy config predates full fine-tuning");
  if (adapter.checkpoint_iteration < 0) fail("checkpoint iteration must be positive, got {}", adapter.checkpoint_iteration);
}

// The whole fine-tune: factors of the adapted modules (LoRA, DoRA) or the trained parameters (full).
struct Adapter {
  std::vector<Factors> modules;
  std::vector<GenTensor> full;
};

Adapter build_adapter(const TinyModelSpec& base, const TinyAdapterSpec& adapter) {
  check_spec(base, adapter);
  const std::vector<TinyTensorInfo> infos = tiny_model_tensors(base);
  Adapter result;
  if (adapter.fine_tune_type == "full") {
    result.full = full_tensors(base, adapter, infos);
    return result;
  }
  const std::vector<Module> modules = adapted_modules(base, adapter, infos);
  std::vector<std::string> names;
  for (const Module& m : modules) names.push_back(m.path + ".weight");
  const auto floats = tiny_model_float_weights(base, names);
  result.modules.resize(modules.size());
  tbb::parallel_for(size_t{0}, modules.size(), [&](size_t i) {
    result.modules[i] = make_factors(modules[i], floats.at(modules[i].path + ".weight"), adapter);
  });
  return result;
}

// mlx-lm's parameter order: DoRA layers set `m` (with the wrapped layer) before lora_a and lora_b. (Real files hold
// the data in the order of MLX's unordered_map instead; readers go by the sorted header.)
std::vector<GenTensor> adapter_file_tensors(const Adapter& content, const TinyAdapterSpec& adapter) {
  if (!content.full.empty()) return content.full;
  std::vector<GenTensor> tensors;
  for (const Factors& f : content.modules) {
    const std::string& path = f.module.path;
    if (!f.m.empty()) tensors.push_back({path + ".m", f.m_dtype, {f.module.rows()}, float_bytes(f.m, f.m_dtype)});
    tensors.push_back({path + ".lora_a", DType::F32, f.a_shape(adapter.legacy_switch_shape), float_bytes(f.a, DType::F32)});
    tensors.push_back({path + ".lora_b", DType::F32, f.b_shape(), float_bytes(f.b, DType::F32)});
  }
  return tensors;
}

// ---------------------------------------------------------------------------------------------------------------
// adapter_config.json: json.dump(vars(args), indent=4) with sorted top-level keys.

// Python writes whole numbers given as ints without a fraction.
ordered_json number(double value) {
  if (value == std::floor(value) && std::fabs(value) < 0x1p53) return static_cast<int64_t>(value);
  return value;
}

// Keys can only come from a YAML config: its entries keep the order of mlx-lm's example lora_config.yaml. Otherwise
// the order of CONFIG_DEFAULTS (legacy: with alpha after rank).
ordered_json lora_parameters(const TinyAdapterSpec& adapter) {
  ordered_json params = ordered_json::object();
  const bool alpha = adapter.legacy_config && adapter.legacy_alpha != 0;
  if (!adapter.keys.empty()) params["keys"] = adapter.keys;
  params["rank"] = adapter.rank;
  if (alpha) params["alpha"] = number(adapter.legacy_alpha);
  if (adapter.keys.empty()) params["dropout"] = 0.0;
  params["scale"] = adapter.scale;
  if (!adapter.keys.empty()) params["dropout"] = 0.0;
  return params;
}

// Checkpoints are saved every save_every iterations up to iters.
std::pair<int, int> iterations(const TinyAdapterSpec& adapter) {
  const int checkpoint = adapter.checkpoint_iteration;
  return {std::max(1000, checkpoint), checkpoint > 0 && checkpoint % 100 != 0 ? checkpoint : 100};
}

// mlx-lm v0.32: the parser's options and CONFIG_DEFAULTS.
std::map<std::string, ordered_json> current_config(const TinyAdapterSpec& adapter, const fs::path& out_dir) {
  const auto [iters, save_every] = iterations(adapter);
  const bool full = adapter.fine_tune_type == "full";
  return {{"adapter_path", out_dir.string()},
          {"batch_size", 4},
          {"clear_cache_threshold", 0},
          {"config", adapter.keys.empty() ? ordered_json(nullptr) : ordered_json("lora_config.yaml")},
          {"data", "data"},
          {"fine_tune_type", adapter.fine_tune_type},
          {"grad_accumulation_steps", 1},
          {"grad_checkpoint", false},
          {"iters", iters},
          {"learning_rate", 1e-5},
          {"lora_parameters", full ? ordered_json(nullptr) : lora_parameters(adapter)},
          {"lr_schedule", nullptr},
          {"mask_prompt", false},
          {"max_seq_length", 2048},
          {"model", adapter.model},
          {"num_layers", adapter.num_layers},
          {"optimizer", "adam"},
          {"optimizer_config",
           ordered_json{{"adam", ordered_json::object()},
                        {"adamw", ordered_json::object()},
                        {"muon", ordered_json::object()},
                        {"sgd", ordered_json::object()},
                        {"adafactor", ordered_json::object()}}},
          {"project_name", nullptr},
          {"report_to", nullptr},
          {"resume_adapter_file", nullptr},
          {"save_every", save_every},
          {"seed", 0},
          {"steps_per_eval", 200},
          {"steps_per_report", 10},
          {"test", false},
          {"test_batches", 500},
          {"train", true},
          {"trust_remote_code", false},
          {"val_batches", 25}};
}

// mlx-lm before September 2024 (13bb6dca^): lora_layers, use_dora, no fine_tune_type; grad_checkpoint had no default
// and stays null unless given.
std::map<std::string, ordered_json> legacy_config(const TinyAdapterSpec& adapter, const fs::path& out_dir) {
  const auto [iters, save_every] = iterations(adapter);
  return {{"adapter_path", out_dir.string()},
          {"batch_size", 4},
          {"config", adapter.keys.empty() ? ordered_json(nullptr) : ordered_json("lora_config.yaml")},
          {"data", "data/"},
          {"grad_checkpoint", nullptr},
          {"iters", iters},
          {"learning_rate", 1e-5},
          {"lora_layers", adapter.num_layers},
          {"lora_parameters", lora_parameters(adapter)},
          {"lr_schedule", nullptr},
          {"max_seq_length", 2048},
          {"model", adapter.model},
          {"resume_adapter_file", nullptr},
          {"save_every", save_every},
          {"seed", 0},
          {"steps_per_eval", 200},
          {"steps_per_report", 10},
          {"test", false},
          {"test_batches", 500},
          {"train", true},
          {"use_dora", adapter.fine_tune_type == "dora"},
          {"val_batches", 25}};
}

std::string adapter_config_text(const TinyAdapterSpec& adapter, const fs::path& out_dir) {
  const auto top = adapter.legacy_config ? legacy_config(adapter, out_dir) : current_config(adapter, out_dir);
  ordered_json config = ordered_json::object();
  for (const auto& [key, value] : top) config[key] = value;  // std::map: sorted, as save_config sorts
  return config.dump(4);
}

// ---------------------------------------------------------------------------------------------------------------
// Files

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create '{}'", path.string());
  out << text;
  if (!out.flush()) fail("cannot write '{}'", path.string());
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '{}'", path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void prepare_out_dir(const fs::path& out_dir) {
  if (fs::exists(out_dir) && !fs::is_empty(out_dir)) fail("'{}' already exists and is not empty", out_dir.string());
  fs::create_directories(out_dir);
}

// ---------------------------------------------------------------------------------------------------------------
// The base folder as written: its tensors in stored order, its config and index.

struct BaseFolder {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::vector<const StoredTensor*> order;  // shard by shard, in data order: the order mlx-lm saves parameters in
  std::map<std::string, const StoredTensor*> tensors;
  json config;
  json index;

  const StoredTensor* find(const std::string& name) const {
    const auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : it->second;
  }
  const StoredTensor& at(const std::string& name) const {
    if (const StoredTensor* tensor = find(name)) return *tensor;
    fail("the base folder has no tensor '{}': it does not hold the model of this spec", name);
  }
};

BaseFolder read_base(const fs::path& dir) {
  BaseFolder base;
  base.config = json::parse(read_text(dir / "config.json"));
  base.index = json::parse(read_text(dir / "model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : base.index.at("weight_map").items()) shards.insert(shard.get<std::string>());
  for (const std::string& shard : shards) {  // model-0000N-of-0000M: name order is shard order
    base.files.push_back(SafetensorsFile::open(dir / shard));
    std::vector<const StoredTensor*> in_file;
    for (const auto& [name, tensor] : base.files.back()->tensors()) {
      in_file.push_back(&tensor);
      base.tensors[name] = &tensor;
    }
    std::sort(in_file.begin(), in_file.end(),
              [](const StoredTensor* x, const StoredTensor* y) { return x->bytes.data() < y->bytes.data(); });
    base.order.insert(base.order.end(), in_file.begin(), in_file.end());
  }
  return base;
}

std::vector<float> stored_floats(const StoredTensor& tensor) {
  std::vector<float> values(static_cast<size_t>(tensor.element_count()));
  load_floats(tensor.bytes.data(), tensor.dtype, tensor.element_count(), values.data());
  return values;
}

// A weight as the fused arithmetic starts from it: W_T and T, and how the base stores it.
struct BaseWeight {
  std::vector<float> values;
  DType dtype;
  std::optional<QuantSpec> quant;
  std::vector<int64_t> shape;  // logical
};

BaseWeight base_weight(const BaseFolder& base, const std::string& module) {
  const StoredTensor& weight = base.at(module + ".weight");
  const StoredTensor* scales = base.find(module + ".scales");
  if (!scales) return {stored_floats(weight), weight.dtype, std::nullopt, weight.shape};
  const auto quant = QuantConfig::from_config(base.config).for_module(module, true);
  if (!quant) fail("'{}' has scales but the base config does not quantize it", module);
  const StoredTensor* biases = base.find(module + ".biases");
  std::vector<int64_t> shape = weight.shape;
  shape.back() = shape.back() * 32 / quant->bits;
  const std::vector<float> values =
      dequantize_rows(*quant, weight.bytes.data(), scales->bytes.data(), biases ? biases->bytes.data() : nullptr,
                      scales->dtype, product(shape) / shape.back(), shape.back());
  return {values, dequantized_dtype(*quant, scales->dtype), quant, shape};
}

// ---------------------------------------------------------------------------------------------------------------
// The fused arithmetic (see the header): one summation order and rounding sequence, fixed so that a converter
// merging the same adapter can reproduce the values bit for bit.

// up(row, k) for all k: the row's coefficients (rows counted over all experts).
std::vector<float> up_factors(const Factors& f, int64_t row) {
  std::vector<float> up(static_cast<size_t>(f.rank));
  for (int64_t k = 0; k < f.rank; ++k) {
    switch (f.module.kind) {
      case TinyModuleKind::SwitchLinear: up[k] = f.b[row * f.rank + k]; break;  // lora_b[e][o][k]
      case TinyModuleKind::Embedding: up[k] = f.a[row * f.rank + k]; break;     // lora_a[v][k]
      default: up[k] = f.b[k * f.module.rows() + row];                          // lora_b[k][o]
    }
  }
  return up;
}

// down(expert, k, c) as a [rank][cols] matrix.
std::vector<float> down_factors(const Factors& f, int64_t expert) {
  const int64_t cols = f.module.cols();
  std::vector<float> down(static_cast<size_t>(f.rank * cols));
  for (int64_t k = 0; k < f.rank; ++k) {
    for (int64_t c = 0; c < cols; ++c) {
      switch (f.module.kind) {
        case TinyModuleKind::SwitchLinear: down[k * cols + c] = f.a[(expert * f.rank + k) * cols + c]; break;
        case TinyModuleKind::Embedding: down[k * cols + c] = f.b[k * cols + c]; break;  // lora_b[k][d]
        default: down[k * cols + c] = f.a[c * f.rank + k];                              // lora_a[i][k]
      }
    }
  }
  return down;
}

// delta[c] = Σ_k (s·up[k])·down[k][c]: ascending k, float32 from 0, each product rounded on its own (the project
// builds with -ffp-contract=off, so nothing here becomes an FMA).
void row_delta(const std::vector<float>& up, const std::vector<float>& down, float scale, int64_t cols, float* delta) {
  std::fill(delta, delta + cols, 0.0f);
  for (size_t k = 0; k < up.size(); ++k) {
    const float coefficient = scale * up[k];
    const float* d = down.data() + k * cols;
    for (int64_t c = 0; c < cols; ++c) delta[c] += coefficient * d[c];
  }
}

struct FusedRows {
  std::vector<float> values;
  DType dtype;
};

// One row of a DoRA module: W + delta, rescaled to the learned magnitude. An F32 m (DoRALinear) promotes the
// rescale to float32; an m in T (DoRAEmbedding) keeps every step in T.
void dora_row(float* row, int64_t cols, float magnitude, DType dtype, DType m_dtype) {
  float sum = 0.0f;
  for (int64_t c = 0; c < cols; ++c) sum += round_to_dtype(row[c] * row[c], dtype);
  const float norm = round_to_dtype(std::sqrt(sum), dtype);
  if (m_dtype == DType::F32) {
    const float factor = magnitude / norm;
    for (int64_t c = 0; c < cols; ++c) row[c] = factor * row[c];
  } else {
    const float factor = round_to_dtype(magnitude / norm, dtype);
    for (int64_t c = 0; c < cols; ++c) row[c] = round_to_dtype(factor * row[c], dtype);
  }
}

FusedRows fuse_module(const Factors& f, const BaseWeight& w, double scale) {
  const Module& m = f.module;
  if (w.shape != m.shape)
    fail("'{}' has shape [{}] in the base folder, the spec says [{}]", m.path, fmt::join(w.shape, ", "),
         fmt::join(m.shape, ", "));
  const DType dtype = w.dtype;
  const int64_t cols = m.cols();
  FusedRows fused{w.values, f.m.empty() ? dtype : (f.m_dtype == DType::F32 ? DType::F32 : dtype)};
  std::vector<float> delta(static_cast<size_t>(cols));
  for (int64_t e = 0; e < m.experts(); ++e) {
    const std::vector<float> down = down_factors(f, e);
    for (int64_t r = 0; r < m.rows(); ++r) {
      const int64_t row = e * m.rows() + r;
      row_delta(up_factors(f, row), down, static_cast<float>(scale), cols, delta.data());
      float* out = fused.values.data() + row * cols;
      for (int64_t c = 0; c < cols; ++c) out[c] = round_to_dtype(out[c] + round_to_dtype(delta[c], dtype), dtype);
      if (!f.m.empty()) dora_row(out, cols, f.m[row], dtype, f.m_dtype);
    }
  }
  return fused;
}

// A float or re-quantized module as the fused folder stores it, in the base's tensor names and packed shapes.
std::map<std::string, std::optional<GenTensor>> stored_module(const std::string& module, const FusedRows& fused,
                                                              const BaseWeight& w, const BaseFolder& base,
                                                              bool dequantize) {
  std::map<std::string, std::optional<GenTensor>> out;
  if (!w.quant || dequantize) {
    out[module + ".weight"] = GenTensor{module + ".weight", fused.dtype, w.shape, float_bytes(fused.values, fused.dtype)};
    if (w.quant) {
      out[module + ".scales"] = std::nullopt;
      if (base.find(module + ".biases")) out[module + ".biases"] = std::nullopt;
    }
    return out;
  }
  QuantizedRows q = quantize_rows(fused.values, w.shape.back(), *w.quant, fused.dtype);
  const StoredTensor& weight = base.at(module + ".weight");
  const StoredTensor& scales = base.at(module + ".scales");
  out[module + ".weight"] = GenTensor{module + ".weight", DType::U32, weight.shape, word_bytes(q.packed)};
  out[module + ".scales"] = GenTensor{module + ".scales", q.scale_dtype, scales.shape, std::move(q.scales)};
  if (w.quant->mode == QuantMode::Affine)
    out[module + ".biases"] = GenTensor{module + ".biases", q.scale_dtype, scales.shape, std::move(q.biases)};
  return out;
}

using Replacements = std::map<std::string, std::optional<GenTensor>>;  // nullopt: tensor dropped

void fuse_adapted(const Adapter& content, const TinyAdapterSpec& adapter, const BaseFolder& base, bool dequantize,
                  Replacements& replacements) {
  std::vector<Replacements> per_module(content.modules.size());
  tbb::parallel_for(size_t{0}, content.modules.size(), [&](size_t i) {
    const Factors& f = content.modules[i];
    const BaseWeight w = base_weight(base, f.module.path);
    per_module[i] = stored_module(f.module.path, fuse_module(f, w, adapter.scale), w, base, dequantize);
  });
  for (Replacements& module : per_module) replacements.merge(module);
}

void replace_full(const Adapter& content, const BaseFolder& base, Replacements& replacements) {
  for (const GenTensor& tensor : content.full) {
    const StoredTensor& stored = base.at(tensor.name);
    if (stored.shape != tensor.shape || stored.dtype != tensor.dtype)
      fail("'{}' is stored as {} [{}] in the base folder, the fine-tune trained it as {} [{}]", tensor.name,
           dtype_name(stored.dtype), fmt::join(stored.shape, ", "), dtype_name(tensor.dtype), fmt::join(tensor.shape, ", "));
    replacements[tensor.name] = tensor;
  }
}

// mlx_lm.fuse --dequantize: every quantized module left becomes float T (dequantize_model).
void dequantize_rest(const BaseFolder& base, Replacements& replacements) {
  for (const StoredTensor* tensor : base.order) {
    if (!tensor->name.ends_with(".scales")) continue;
    const std::string module = parent_path(tensor->name);
    if (replacements.count(module + ".weight")) continue;
    const BaseWeight w = base_weight(base, module);
    replacements.merge(stored_module(module, {w.values, w.dtype}, w, base, true));
  }
}

// save_model: shards filled in parameter order (a tensor that would overflow the current one starts the next), the
// index with its metadata and sorted weight map.
std::vector<fs::path> write_weights(const fs::path& out_dir, std::vector<GenTensor> tensors, uint64_t max_shard_bytes,
                                    const json& total_parameters) {
  std::vector<std::vector<size_t>> shards(1);
  uint64_t shard_size = 0, total_size = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (shard_size + tensors[i].data.size() > max_shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shards.back().push_back(i);
    shard_size += tensors[i].data.size();
    total_size += tensors[i].data.size();
  }
  std::vector<fs::path> files;
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shards.size() == 1 ? "model.safetensors"
                                                : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    std::vector<GenTensor> shard;
    for (size_t index : shards[i]) {
      weight_map[tensors[index].name] = name;
      shard.push_back(std::move(tensors[index]));
    }
    write_safetensors(out_dir / name, shard, json{{"format", "mlx"}});
    files.push_back(out_dir / name);
  }
  ordered_json index = {{"metadata", {{"total_size", total_size}, {"total_parameters", total_parameters}}},
                        {"weight_map", ordered_json::object()}};
  for (const auto& [tensor, shard] : weight_map) index["weight_map"][tensor] = shard;
  write_text(out_dir / "model.safetensors.index.json", index.dump(4));
  files.push_back(out_dir / "model.safetensors.index.json");
  return files;
}

// config.json as save_config writes the loaded config back: unchanged, or without the quantization sections.
std::string fused_config(const fs::path& base_dir, bool dequantize) {
  const std::string text = read_text(base_dir / "config.json");
  if (!dequantize) return text;
  ordered_json config = ordered_json::parse(text);
  config.erase("quantization");
  config.erase("quantization_config");
  return config.dump(4);
}

// Everything else of the base folder (tokenizer files, chat template, generation_config.json, model card).
std::vector<fs::path> copy_other_files(const fs::path& base_dir, const fs::path& out_dir) {
  std::vector<fs::path> sources;
  for (const auto& entry : fs::directory_iterator(base_dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name == "config.json" || name == "model.safetensors.index.json" ||
        name.ends_with(".safetensors"))
      continue;
    sources.push_back(entry.path());
  }
  std::sort(sources.begin(), sources.end());
  std::vector<fs::path> files;
  for (const fs::path& source : sources) {
    fs::copy_file(source, out_dir / source.filename());
    files.push_back(out_dir / source.filename());
  }
  return files;
}

}  // namespace

std::vector<GenTensor> tiny_adapter_tensors(const TinyModelSpec& base, const TinyAdapterSpec& adapter) {
  return adapter_file_tensors(build_adapter(base, adapter), adapter);
}

TinyAdapterSummary write_tiny_adapter(const TinyModelSpec& base, const TinyAdapterSpec& adapter, const fs::path& out_dir) {
  const Adapter content = build_adapter(base, adapter);
  const std::vector<GenTensor> tensors = adapter_file_tensors(content, adapter);
  prepare_out_dir(out_dir);
  TinyAdapterSummary summary;
  // mlx-lm writes the config before training, checkpoints during it and adapters.safetensors at checkpoints and at
  // the end (all with the same trainable parameters).
  write_text(out_dir / "adapter_config.json", adapter_config_text(adapter, out_dir));
  summary.files.push_back(out_dir / "adapter_config.json");
  if (adapter.checkpoint_iteration > 0) {
    const fs::path checkpoint = out_dir / fmt::format("{:07d}_adapters.safetensors", adapter.checkpoint_iteration);
    write_safetensors(checkpoint, tensors, json(nullptr));
    summary.files.push_back(checkpoint);
  }
  write_safetensors(out_dir / "adapters.safetensors", tensors, json(nullptr));
  summary.files.push_back(out_dir / "adapters.safetensors");
  for (const Factors& f : content.modules) summary.modules.push_back(f.module.path);
  for (const GenTensor& tensor : tensors) summary.tensors.push_back(tensor.name);
  return summary;
}

TinyFusedSummary write_fused_model(const TinyModelSpec& base_spec, const fs::path& base_dir,
                                   const TinyAdapterSpec& adapter, const fs::path& out_dir, bool dequantize) {
  const Adapter content = build_adapter(base_spec, adapter);
  const BaseFolder base = read_base(base_dir);
  Replacements replacements;
  fuse_adapted(content, adapter, base, dequantize, replacements);
  replace_full(content, base, replacements);
  std::set<std::string> adapted;
  for (const auto& [name, tensor] : replacements)
    if (tensor && name.ends_with(".weight")) adapted.insert(name);
  for (const GenTensor& tensor : content.full) adapted.insert(tensor.name);
  if (dequantize) dequantize_rest(base, replacements);

  TinyFusedSummary summary;
  std::vector<GenTensor> tensors;
  for (const StoredTensor* stored : base.order) {
    if (adapted.count(stored->name)) summary.replaced.push_back(stored->name);
    const auto it = replacements.find(stored->name);
    if (it == replacements.end())
      tensors.push_back({stored->name, stored->dtype, stored->shape, {stored->bytes.begin(), stored->bytes.end()}});
    else if (it->second)
      tensors.push_back(*it->second);
  }
  summary.tensor_count = static_cast<int64_t>(tensors.size());

  prepare_out_dir(out_dir);
  summary.files = write_weights(out_dir, std::move(tensors), base_spec.max_shard_bytes,
                                base.index.at("metadata").at("total_parameters"));
  write_text(out_dir / "config.json", fused_config(base_dir, dequantize));
  summary.files.push_back(out_dir / "config.json");
  for (const fs::path& file : copy_other_files(base_dir, out_dir)) summary.files.push_back(file);
  return summary;
}

}  // namespace mlx2gguf::gen
