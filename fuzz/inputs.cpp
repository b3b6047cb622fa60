#include "inputs.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <numeric>

#include "convert.h"
#include "gguf/gguf_types.h"
#include "plan/adapter_plan.h"
#include "plan/planner.h"
#include "plan/tokenizer_metadata.h"
#include "read/adapter.h"
#include "read/safetensors.h"
#include "read/source_model.h"
#include "support.h"
#include "write/gguf_file.h"

namespace mlx2gguf::fuzz {

namespace fs = std::filesystem;

namespace {

// A check of the reader's own promises (what a file it accepted must satisfy); breaking one is a finding.
void promise(bool kept, const char* what) {
  if (!kept) {
    std::fprintf(stderr, "reader broke its promise: %s\n", what);
    std::abort();
  }
}

// The generated folder a config input belongs to: the one of its model_type, else the llama one; 4-bit when the
// config has a quantization section.
const fs::path& folder_for_config(std::string_view text) {
  static const std::vector<std::string> types = gen::tiny_model_types();
  const nlohmann::json config = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  std::string model_type = "llama";
  bool quantized = false;
  if (config.is_object()) {
    const auto type = config.find("model_type");
    if (type != config.end() && type->is_string() && std::find(types.begin(), types.end(), *type) != types.end())
      model_type = type->get<std::string>();
    quantized = config.contains("quantization");
  }
  return generated_model(model_type + (quantized ? "-q4" : "-float"), config_base_spec(model_type, quantized));
}

// The first and last rows of an output tensor, as the writer reads them (repacked or as floats).
void read_edge_rows(const TensorRecipe& recipe) {
  const int64_t rows = recipe.row_count();
  if (rows <= 0) return;
  for (const int64_t row : {int64_t{0}, rows - 1}) {
    if (recipe.repack) {
      std::vector<uint8_t> packed(static_cast<size_t>(ggml_row_bytes(recipe.type, recipe.row_length())));
      repack_recipe_rows(recipe, row, 1, packed.data());
    } else {
      std::vector<float> values(static_cast<size_t>(recipe.row_length()));
      read_recipe_rows(recipe, row, 1, values.data());
    }
  }
}

void add_tokenizer_metadata_of(const fs::path& dir) {
  GgufMetadata metadata;
  add_tokenizer_metadata(dir, nlohmann::json::object(), 0, TokenizerOptions{}, metadata);
}

}  // namespace

void run_config(std::string_view input) {
  const fs::path& dir = folder_for_config(input);
  write_file(dir / "config.json", input);
  const SourceModel model = SourceModel::open(dir);
  const ConversionPlan plan = make_plan(model, PlanOptions{});
  for (const auto& recipe : plan.tensors) read_edge_rows(recipe);
}

void run_safetensors(std::string_view input) {
  const fs::path path = scratch_dir() / "model.safetensors";
  write_file(path, input);
  const auto file = SafetensorsFile::open(path);
  for (const auto& [name, tensor] : file->tensors()) {
    promise(static_cast<uint64_t>(tensor.element_count()) * dtype_size(tensor.dtype) == tensor.bytes.size(),
            "a tensor's bytes match its shape and dtype");
    volatile uint8_t sum = std::accumulate(tensor.bytes.begin(), tensor.bytes.end(), uint8_t{0});
    (void)sum;
  }
}

void run_tokenizer_json(std::string_view input) {
  const fs::path dir = scratch_dir() / "tokenizer-json";
  fs::create_directories(dir);
  const TwoParts parts = split_at_nul(input);
  write_file(dir / "tokenizer.json", parts.first);
  if (parts.has_second)
    write_file(dir / "tokenizer_config.json", parts.second);
  else
    fs::remove(dir / "tokenizer_config.json");
  add_tokenizer_metadata_of(dir);
}

void run_sentencepiece(std::string_view input) {
  const fs::path dir = scratch_dir() / "sentencepiece";
  fs::create_directories(dir);
  write_file(dir / "tokenizer.model", input);
  add_tokenizer_metadata_of(dir);
}

void run_adapter(std::string_view input) {
  const TwoParts parts = split_at_nul(input);
  // Expert adapters name the stacked experts of the mixture-of-experts base.
  const bool experts = parts.second.find("switch_mlp") != std::string_view::npos;
  const fs::path& base_dir =
      generated_model(experts ? "adapter-base-moe" : "adapter-base-dense", adapter_base_spec(experts));
  const fs::path dir = scratch_dir() / "adapter";
  fs::create_directories(dir);
  write_file(dir / "adapter_config.json", parts.first);
  write_file(dir / "adapters.safetensors", parts.second);

  SourceModel model = SourceModel::open(base_dir);
  const auto adapter = Adapter::open(AdapterLocation{dir, std::nullopt}, model);
  try {
    make_adapter_plan(model, *adapter, AdapterPlanOptions{});
  } catch (const Error&) {
    // Not every fine-tune is a GGUF LoRA (DoRA, full); it can still be merged below.
  }
  model.apply_adapter(*adapter, MergeRule::Float32);
  for (const auto& module : adapter->modules()) {
    const SourceTensor& merged = model.require(module.weight_name());
    std::vector<float> row(static_cast<size_t>(merged.row_length()));
    merged.read_rows(0, 1, row.data());
    merged.read_rows(merged.row_count() - 1, 1, row.data());
  }
}

void run_gguf(std::string_view input) {
  const fs::path path = scratch_dir() / "model.gguf";
  write_file(path, input);
  const GgufFile file = GgufFile::read(path);
  // What `inspect` prints, and what `inspect --json` prints.
  size_t rendered = 0;
  nlohmann::json listing = {{"metadata", nlohmann::json::object()}, {"tensors", nlohmann::json::array()}};
  for (const auto& entry : file.metadata.entries()) {
    rendered += entry.value.to_string(false).size() + entry.value.to_string(true).size();
    rendered += std::string(gguf_type_name(entry.value.is_array() ? entry.value.element_type : entry.value.type)).size();
    listing["metadata"][entry.key] = entry.value.strings;
  }
  const uint64_t data_bytes = file.file_size > file.data_start ? file.file_size - file.data_start : 0;
  for (const auto& tensor : file.tensors) {
    const uint64_t bytes = tensor.size_bytes();
    promise(bytes == 0 || (tensor.offset <= data_bytes && bytes <= data_bytes - tensor.offset),
            "every tensor lies inside the file");
    listing["tensors"].push_back({{"name", tensor.name}, {"type", ggml_type_info(tensor.type).name}, {"ne", tensor.ne},
                                  {"offset", file.data_start + tensor.offset}, {"bytes", bytes}});
  }
  rendered += listing.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).size();
  volatile size_t sink = rendered;
  (void)sink;
}

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"config", run_config},   {"safetensors", run_safetensors}, {"tokenizer_json", run_tokenizer_json},
      {"sentencepiece", run_sentencepiece}, {"adapter", run_adapter}, {"gguf", run_gguf},
  };
  return all;
}

}  // namespace mlx2gguf::fuzz
