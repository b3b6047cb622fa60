#include "inputs.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "convert.h"
#include "gguf/gguf_types.h"
#include "plan/adapter_plan.h"
#include "plan/planner.h"
#include "plan/tokenizer_metadata.h"
#include "plan/general_metadata.h"
#include "read/adapter.h"
#include "read/imatrix.h"
#include "read/safetensors.h"
#include "read/source_model.h"
#include "support.h"
#include "write/gguf_file.h"
#include "write/gguf_split.h"

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

namespace {

// What `inspect` renders of a file's metadata, as text and as JSON (every value, abbreviated and in full).
size_t render_metadata(const GgufMetadata& metadata, nlohmann::json& listing) {
  size_t rendered = 0;
  listing["metadata"] = nlohmann::json::object();
  for (const auto& entry : metadata.entries()) {
    rendered += entry.value.to_string(false).size() + entry.value.to_string(true).size();
    rendered += std::string(gguf_type_name(entry.value.is_array() ? entry.value.element_type : entry.value.type)).size();
    listing["metadata"][entry.key] = entry.value.strings;
  }
  return rendered;
}

// A tensor as `inspect` lists it, after checking the reader's promise that its data lies inside its file.
void list_tensor(const GgufTensorInfo& tensor, uint64_t file_offset, const GgufFile& file, nlohmann::json& listing) {
  const uint64_t data_bytes = file.file_size > file.data_start ? file.file_size - file.data_start : 0;
  const uint64_t bytes = tensor.size_bytes();
  promise(bytes == 0 || (tensor.offset <= data_bytes && bytes <= data_bytes - tensor.offset),
          "every tensor lies inside its file");
  listing["tensors"].push_back({{"name", tensor.name}, {"type", ggml_type_info(tensor.type).name}, {"ne", tensor.ne},
                                {"offset", file_offset}, {"bytes", bytes}});
}

void consume(size_t rendered, const nlohmann::json& listing) {
  volatile size_t sink = rendered + listing.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).size();
  (void)sink;
}

}  // namespace

void run_gguf(std::string_view input) {
  const fs::path path = scratch_dir() / "model.gguf";
  write_file(path, input);
  const GgufFile file = GgufFile::read(path);
  nlohmann::json listing = {{"tensors", nlohmann::json::array()}};
  const size_t rendered = render_metadata(file.metadata, listing);
  for (const auto& tensor : file.tensors) list_tensor(tensor, file.data_start + tensor.offset, file, listing);
  consume(rendered, listing);
}

void run_gguf_split(std::string_view input) {
  if (input.empty()) return;
  const std::vector<std::string>& parts = generated_split_set();
  const size_t replaced = static_cast<uint8_t>(input[0]) % parts.size();
  const fs::path dir = scratch_dir() / "split";
  fs::create_directories(dir);
  for (size_t i = 0; i < parts.size(); ++i)
    write_file(split_part_path(dir / "model.gguf", i, parts.size()), i == replaced ? input.substr(1) : parts[i]);

  const GgufSplitSet set = GgufSplitSet::open(split_part_path(dir / "model.gguf", 0, parts.size()));
  promise(!set.parts.empty() && set.parts.size() == set.paths.size(), "a set has its parts and their paths");
  nlohmann::json listing = {{"tensors", nlohmann::json::array()}};
  const size_t rendered = render_metadata(set.metadata(), listing);
  for (const auto& [tensor, part, file_offset] : set.tensors) {
    promise(part < set.parts.size(), "every tensor belongs to a part of the set");
    list_tensor(tensor, file_offset, set.parts[part], listing);
  }
  consume(rendered + static_cast<size_t>(set.total_bytes() % 7), listing);
}

void run_imatrix(std::string_view input) {
  const fs::path path = scratch_dir() / "imatrix.gguf";
  write_file(path, input);
  const ImportanceMatrix matrix = read_imatrix(path);
  for (const auto& [name, weights] : matrix.entries)
    for (const float weight : weights) promise(std::isfinite(weight), "every importance weight is finite");
}

void run_metadata(std::string_view input) {
  const auto pieces = split_pieces(input, 4);
  const fs::path& dir = generated_model("metadata-llama", config_base_spec("llama", false));
  const fs::path overrides = scratch_dir() / "metadata-overrides.json";
  const auto place = [](const fs::path& path, const std::optional<std::string_view>& piece) {
    if (piece)
      write_file(path, *piece);
    else
      fs::remove(path);
  };
  place(dir / "README.md", pieces[0]);
  place(dir / "generation_config.json", pieces[1]);
  place(overrides, pieces[2]);

  const SourceModel model = SourceModel::open(dir);
  PlanOptions options;
  if (pieces[2]) options.metadata_file = overrides;
  if (pieces[3]) options.source_name = std::string(*pieces[3]);
  const ConversionPlan plan = make_plan(model, options);
  const std::string name = default_output_name(plan.metadata);
  promise(name.size() > 5 && name.ends_with(".gguf") && name.find('/') == std::string::npos,
          "the default output name is a file name ending in .gguf");
}

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"config", run_config},   {"safetensors", run_safetensors}, {"tokenizer_json", run_tokenizer_json},
      {"sentencepiece", run_sentencepiece}, {"adapter", run_adapter}, {"gguf", run_gguf},
      {"gguf_split", run_gguf_split}, {"imatrix", run_imatrix}, {"metadata", run_metadata},
  };
  return all;
}

}  // namespace mlx2gguf::fuzz
