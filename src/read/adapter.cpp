#include "read/adapter.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "read/dequant.h"
#include "read/json_input.h"
#include "read/model_folder.h"
#include "read/source_model.h"
#include "util/error.h"

namespace mlx2gguf {

namespace fs = std::filesystem;

const char* fine_tune_type_name(FineTuneType type) {
  switch (type) {
    case FineTuneType::Lora: return "lora";
    case FineTuneType::Dora: return "dora";
    case FineTuneType::Full: return "full";
  }
  return "?";
}

const char* adapter_kind_name(AdapterKind kind) {
  switch (kind) {
    case AdapterKind::Linear: return "Linear";
    case AdapterKind::Switch: return "SwitchLinear";
    case AdapterKind::Embedding: return "Embedding";
  }
  return "?";
}

AdapterModule::AdapterModule(std::string module, AdapterKind kind, const StoredTensor& a, const StoredTensor& b,
                             const StoredTensor* magnitude, int64_t experts, int64_t rank, int64_t rows, int64_t cols,
                             float scale)
    : module_(std::move(module)), kind_(kind), a_(&a), b_(&b), magnitude_(magnitude), experts_(experts), rank_(rank),
      rows_(rows), cols_(cols), scale_(scale) {}

void AdapterModule::read_up(int64_t row, float* out) const {
  switch (kind_) {
    case AdapterKind::Linear:  // lora_b [r, out]: column `row`
      for (int64_t k = 0; k < rank_; ++k) out[k] = load_float(b_->bytes.data(), b_->dtype, k * rows_ + row);
      return;
    case AdapterKind::Switch:  // lora_b [E, out, r]: row `row` of the flattened [E·out, r]
      load_floats(b_->bytes.data() + static_cast<size_t>(row * rank_) * dtype_size(b_->dtype), b_->dtype, rank_, out);
      return;
    case AdapterKind::Embedding:  // lora_a [vocab, r]: row `row`
      load_floats(a_->bytes.data() + static_cast<size_t>(row * rank_) * dtype_size(a_->dtype), a_->dtype, rank_, out);
      return;
  }
}

void AdapterModule::read_down(int64_t expert, float* out) const {
  switch (kind_) {
    case AdapterKind::Linear:  // lora_a [in, r], transposed
      for (int64_t i = 0; i < cols_; ++i)
        for (int64_t k = 0; k < rank_; ++k) out[k * cols_ + i] = load_float(a_->bytes.data(), a_->dtype, i * rank_ + k);
      return;
    case AdapterKind::Switch:  // lora_a [E, r, in] (or [E·r, in]: the same bytes)
      load_floats(a_->bytes.data() + static_cast<size_t>(expert * rank_ * cols_) * dtype_size(a_->dtype), a_->dtype,
                  rank_ * cols_, out);
      return;
    case AdapterKind::Embedding:  // lora_b [r, dims]
      load_floats(b_->bytes.data(), b_->dtype, rank_ * cols_, out);
      return;
  }
}

float AdapterModule::magnitude(int64_t row) const {
  if (magnitude_ == nullptr) fail("internal error: magnitude of LoRA module '{}'", module_);
  return load_float(magnitude_->bytes.data(), magnitude_->dtype, row);
}

namespace {

struct AdapterFiles {
  fs::path config, weights;
};

std::string checkpoint_list(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with("_adapters.safetensors")) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  if (names.empty()) return "";
  return fmt::format(" (checkpoints there: {}; choose one with --adapter-file)", fmt::join(names, ", "));
}

AdapterFiles locate(const AdapterLocation& location) {
  const fs::path& path = location.path;
  if (!fs::exists(path)) fail("adapter path '{}' does not exist", path.string());
  AdapterFiles files;
  fs::path dir = path;
  if (fs::is_regular_file(path)) {
    if (location.weights_file)
      fail("--adapter-file '{}' given, but --adapter-path '{}' is already a weights file", location.weights_file->string(),
           path.string());
    dir = path.parent_path();
    files.weights = path;
  } else if (location.weights_file) {
    const fs::path& wanted = *location.weights_file;
    files.weights = wanted.is_absolute() || fs::exists(wanted) ? wanted : dir / wanted;
    if (!fs::is_regular_file(files.weights)) fail("adapter weights file '{}' does not exist", files.weights.string());
  } else {
    files.weights = dir / "adapters.safetensors";
    if (!fs::is_regular_file(files.weights))
      fail("adapter folder '{}' has no adapters.safetensors{}", dir.string(), checkpoint_list(dir));
  }
  files.config = dir / "adapter_config.json";
  if (!fs::is_regular_file(files.config))
    fail("'{}' is missing: an mlx-lm adapter folder holds adapter_config.json next to its weights", files.config.string());
  return files;
}

std::string shape_text(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

bool is_float(DType dtype) { return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16; }

// mlx-lm wraps nn.Embedding modules in LoRAEmbedding; every model it ships names them one of these.
bool is_embedding_module(const std::string& module) {
  const std::string leaf = module.substr(module.rfind('.') + 1);
  return leaf == "embed_tokens" || leaf == "wte" || leaf == "tok_embeddings" || leaf == "word_embeddings" ||
         leaf == "embedding";
}

// Reads the parts of adapter_config.json that change what the model computes.
class AdapterConfigReader {
 public:
  AdapterConfigReader(const fs::path& path, std::vector<std::string>& notes) : path_(path), notes_(notes) {
    config_ = read_json_file(path);
    if (!config_.is_object()) fail("'{}' is not a JSON object", path.string());
  }

  FineTuneType type() const {
    if (config_.contains("fine_tune_type")) {
      const auto& value = config_["fine_tune_type"];
      const std::string name = value.is_string() ? value.get<std::string>() : value.dump();
      if (name == "lora") return FineTuneType::Lora;
      if (name == "dora") return FineTuneType::Dora;
      if (name == "full") return FineTuneType::Full;
      fail("'{}': fine_tune_type '{}' is not one mlx-lm writes (lora, dora or full)", path_.string(), name);
    }
    // Before fine_tune_type existed (mlx-lm up to September 2024), DoRA was a boolean.
    if (config_.contains("use_dora") && config_["use_dora"].is_boolean()) {
      const bool dora = config_["use_dora"].get<bool>();
      notes_.push_back(fmt::format("{}: no fine_tune_type, read use_dora: {} as fine_tune_type {}", path_.string(),
                                   dora, dora ? "dora" : "lora"));
      return dora ? FineTuneType::Dora : FineTuneType::Lora;
    }
    notes_.push_back(fmt::format("{}: no fine_tune_type, read as lora (mlx-lm's default)", path_.string()));
    return FineTuneType::Lora;
  }

  float scale() const {
    const auto& params = config_.contains("lora_parameters") ? config_["lora_parameters"] : nlohmann::json();
    if (!params.is_object() || !params.contains("scale") || !params["scale"].is_number())
      fail("'{}' has no numeric lora_parameters.scale: the LoRA scale is needed to apply the adapter", path_.string());
    const double scale = params["scale"].get<double>();
    if (params.contains("alpha") && params["alpha"].is_number())
      notes_.push_back(fmt::format(
          "{}: lora_parameters.alpha = {} is ignored, as mlx-lm has done since June 2024 (scale {} applies); "
          "adapters trained with mlx-lm between January and June 2024 were run with scale·alpha/rank instead",
          path_.string(), params["alpha"].dump(), scale));
    return static_cast<float>(scale);
  }

  std::optional<int64_t> rank() const {
    const auto& params = config_.contains("lora_parameters") ? config_["lora_parameters"] : nlohmann::json();
    if (params.is_object() && params.contains("rank") && params["rank"].is_number_integer()) return params["rank"].get<int64_t>();
    return std::nullopt;
  }

 private:
  fs::path path_;
  std::vector<std::string>& notes_;
  nlohmann::json config_;
};

struct ModuleTensors {
  const StoredTensor* a = nullptr;
  const StoredTensor* b = nullptr;
  const StoredTensor* m = nullptr;
};

// Checks the factors of `module` against its base tensor and works out which mlx-lm class made them.
AdapterModule bind_module(const std::string& module, const ModuleTensors& t, const SourceTensor& base, float scale,
                          const fs::path& file) {
  const auto where = [&](const StoredTensor& tensor) { return fmt::format("'{}' in '{}'", tensor.name, file.string()); };
  const auto& a = t.a->shape;
  const auto& b = t.b->shape;
  const auto& w = base.shape();
  auto mismatch = [&](const char* expected) -> AdapterModule {
    fail("adapter module '{}' in '{}': lora_a {} and lora_b {} do not fit its base tensor '{}' {} (expected {})", module,
         file.string(), shape_text(a), shape_text(b), base.name(), shape_text(w), expected);
  };
  AdapterKind kind;
  int64_t experts = 1, rank = 0, rows = 0, cols = 0;
  if (w.size() == 3) {
    kind = AdapterKind::Switch;
    experts = w[0], rows = w[1], cols = w[2];
    if (b.size() != 3 || b[0] != experts || b[1] != rows) return mismatch("lora_a [E, r, in], lora_b [E, out, r]");
    rank = b[2];
    const bool stacked = a.size() == 3 && a[0] == experts && a[2] == cols;
    const bool legacy = a.size() == 2 && a[1] == cols && a[0] == experts * rank;  // [E·r, in], before October 2025
    if (!stacked && !legacy) return mismatch("lora_a [E, r, in], lora_b [E, out, r]");
    if (stacked && a[1] != rank)
      fail("adapter module '{}' in '{}': lora_a has rank {} but lora_b rank {}", module, file.string(), a[1], rank);
  } else if (w.size() == 2) {
    kind = is_embedding_module(module) ? AdapterKind::Embedding : AdapterKind::Linear;
    rows = w[0], cols = w[1];
    if (a.size() != 2 || b.size() != 2)
      return mismatch(kind == AdapterKind::Linear ? "lora_a [in, r], lora_b [r, out]" : "lora_a [vocab, r], lora_b [r, dims]");
    if (kind == AdapterKind::Linear && (a[0] != cols || b[1] != rows)) return mismatch("lora_a [in, r], lora_b [r, out]");
    if (kind == AdapterKind::Embedding && (a[0] != rows || b[1] != cols)) return mismatch("lora_a [vocab, r], lora_b [r, dims]");
    rank = a[1];
    if (b[0] != rank)
      fail("adapter module '{}' in '{}': lora_a has rank {} but lora_b rank {}", module, file.string(), rank, b[0]);
  } else {
    fail("adapter module '{}' in '{}': its base tensor '{}' {} is neither a matrix nor stacked experts", module,
         file.string(), base.name(), shape_text(w));
  }
  if (rank <= 0) fail("adapter module '{}' in '{}' has rank 0", module, file.string());
  if (t.m != nullptr) {
    if (kind == AdapterKind::Switch)
      fail("{}: DoRA magnitudes on stacked experts, which mlx-lm's DoRA does not support", where(*t.m));
    if (t.m->shape != std::vector<int64_t>{rows})
      fail("{} has shape {}, but DoRA needs one magnitude per row of '{}' {}: [{}]", where(*t.m), shape_text(t.m->shape),
           base.name(), shape_text(w), rows);
  }
  return AdapterModule(module, kind, *t.a, *t.b, t.m, experts, rank, rows, cols, scale);
}

}  // namespace

std::unique_ptr<Adapter> Adapter::open(const AdapterLocation& location, const SourceModel& base) {
  const AdapterFiles files = locate(location);
  std::unique_ptr<Adapter> adapter(new Adapter());
  adapter->config_path_ = files.config;
  const AdapterConfigReader config(files.config, adapter->notes_);
  adapter->type_ = config.type();
  adapter->weights_ = SafetensorsFile::open(files.weights);
  const fs::path& file = files.weights;
  if (adapter->weights_->tensors().empty()) fail("adapter weights '{}' hold no tensors", file.string());
  for (const auto& [name, tensor] : adapter->weights_->tensors()) {
    if (!is_float(tensor.dtype))
      fail("'{}' in '{}' is {}: adapter weights must be float32, float16 or bfloat16", name, file.string(),
           dtype_name(tensor.dtype));
  }

  if (adapter->type_ == FineTuneType::Full) {
    for (const auto& [name, tensor] : adapter->weights_->tensors()) {
      if (name.ends_with(".scales") || name.ends_with(".biases"))
        fail("'{}' in '{}': a full fine-tune that changes quantization scales or zero points is not supported", name,
             file.string());
      const SourceTensor* target = base.find(name);
      if (target == nullptr)
        fail("'{}' in '{}' (fine_tune_type full) replaces no tensor of the base model in '{}': was the adapter trained "
             "on another model?",
             name, file.string(), base.folder().dir().string());
      if (target->shape() != tensor.shape)
        fail("'{}' in '{}' has shape {}, but the base model's tensor has shape {}", name, file.string(),
             shape_text(tensor.shape), shape_text(target->shape()));
      adapter->replacements_.emplace(name, tensor);
    }
    return adapter;
  }

  adapter->scale_ = config.scale();
  std::map<std::string, ModuleTensors> by_module;
  for (const auto& [name, tensor] : adapter->weights_->tensors()) {
    const size_t dot = name.rfind('.');
    const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
    const std::string module = dot == std::string::npos ? "" : name.substr(0, dot);
    ModuleTensors& entry = by_module[module];
    if (leaf == "lora_a") entry.a = &tensor;
    else if (leaf == "lora_b") entry.b = &tensor;
    else if (leaf == "m") entry.m = &tensor;
    else
      fail("'{}' in '{}' is not a {} parameter (names end in .lora_a, .lora_b{}); is fine_tune_type right?", name,
           file.string(), fine_tune_type_name(adapter->type_), adapter->type_ == FineTuneType::Dora ? " or .m" : "");
  }
  for (const auto& [module, tensors] : by_module) {
    if (tensors.a == nullptr || tensors.b == nullptr)
      fail("adapter module '{}' in '{}' has {} but no {}", module, file.string(), tensors.a ? "lora_a" : "lora_b",
           tensors.a ? "lora_b" : "lora_a");
    if (adapter->type_ == FineTuneType::Lora && tensors.m != nullptr)
      fail("'{}.m' in '{}' is a DoRA magnitude, but '{}' says fine_tune_type lora", module, file.string(),
           files.config.string());
    if (adapter->type_ == FineTuneType::Dora && tensors.m == nullptr)
      fail("adapter module '{}' in '{}' has no DoRA magnitude '{}.m' (fine_tune_type dora)", module, file.string(), module);
    const SourceTensor* target = base.find(module + ".weight");
    if (target == nullptr)
      fail("adapter module '{}' in '{}' has no base tensor '{}.weight' in '{}': was the adapter trained on another "
           "model? (Adapter names are mlx-lm module paths: for a Hugging Face folder whose names mlx-lm rewrites when "
           "it loads it, such as stacked experts or Qwen3.5's language_model prefix, give the folder mlx_lm.convert "
           "makes of it.)",
           module, file.string(), module, base.folder().dir().string());
    adapter->modules_.push_back(bind_module(module, tensors, *target, adapter->scale_, file));
  }
  if (const auto rank = config.rank()) {
    for (const AdapterModule& m : adapter->modules_) {
      if (m.rank() != *rank)
        fail("adapter module '{}' in '{}' has rank {}, but '{}' says lora_parameters.rank {}", m.module(), file.string(),
             m.rank(), files.config.string(), *rank);
    }
  }
  for (size_t i = 0; i < adapter->modules_.size(); ++i) {
    adapter->by_weight_[adapter->modules_[i].weight_name()] = i;
    adapter->rank_ = std::max(adapter->rank_, adapter->modules_[i].rank());
  }
  return adapter;
}

const AdapterModule* Adapter::find(const std::string& weight_name) const {
  const auto it = by_weight_.find(weight_name);
  return it == by_weight_.end() ? nullptr : &modules_[it->second];
}

}  // namespace mlx2gguf
