#include "gen/tiny_adapter.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "read/dequant.h"
#include "read/mlx_quantize.h"
#include "gen/gen_test_support.h"
#include "gen/tiny_model.h"
#include "gen/tiny_tokenizer.h"
#include "read/safetensors.h"
#include "util/error.h"

namespace mlx2gguf::gen {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;
using test_support::read_file;
using test_support::ScratchDir;
using Shape = std::vector<int64_t>;

// ---------------------------------------------------------------------------------------------------------------
// Helpers: the tests read what was written with the plainest code possible.

// The JSON header of a safetensors file, parsed here rather than by the project's reader.
json raw_header(const fs::path& file) {
  const std::string bytes = read_file(file);
  uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  return json::parse(bytes.substr(8, length));
}

// name → shape of every tensor, checking that each is F32 (adapter factors always are).
std::map<std::string, Shape> f32_shapes(const json& header) {
  std::map<std::string, Shape> shapes;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    EXPECT_EQ(entry["dtype"], "F32") << name;
    shapes[name] = entry["shape"].get<Shape>();
  }
  return shapes;
}

// Every tensor of a folder's weight files (or of one file).
struct Weights {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const StoredTensor*> tensors;

  explicit Weights(const fs::path& path) {
    std::vector<fs::path> paths;
    if (fs::is_directory(path)) {
      for (const auto& entry : fs::directory_iterator(path))
        if (entry.path().extension() == ".safetensors") paths.push_back(entry.path());
    } else {
      paths.push_back(path);
    }
    for (const fs::path& file : paths) {
      files.push_back(SafetensorsFile::open(file));
      for (const auto& [name, tensor] : files.back()->tensors()) tensors[name] = &tensor;
    }
  }
  const StoredTensor& at(const std::string& name) const {
    const auto it = tensors.find(name);
    if (it == tensors.end()) throw std::runtime_error("no tensor " + name);
    return *it->second;
  }
  bool has(const std::string& name) const { return tensors.count(name) > 0; }
  std::vector<float> floats(const std::string& name) const {
    const StoredTensor& t = at(name);
    std::vector<float> out(static_cast<size_t>(t.element_count()));
    load_floats(t.bytes.data(), t.dtype, t.element_count(), out.data());
    return out;
  }
  std::vector<uint8_t> bytes(const std::string& name) const {
    const StoredTensor& t = at(name);
    return {t.bytes.begin(), t.bytes.end()};
  }
  // A quantized module's weight as float32, straight from dequantize_row.
  std::vector<float> dequantized(const std::string& module, const QuantSpec& spec, int64_t cols) const {
    const StoredTensor& w = at(module + ".weight");
    const StoredTensor& s = at(module + ".scales");
    const StoredTensor* b = has(module + ".biases") ? &at(module + ".biases") : nullptr;
    const int64_t rows = w.element_count() * 32 / spec.bits / cols;
    const int64_t scale_row = cols / spec.group_size * static_cast<int64_t>(dtype_size(s.dtype));
    std::vector<float> out(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      dequantize_row(spec, w.bytes.data() + r * cols * spec.bits / 8, s.bytes.data() + r * scale_row,
                     b ? b->bytes.data() + r * scale_row : nullptr, s.dtype, cols, out.data() + r * cols);
    return out;
  }
};

double rms(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v * v;
  return std::sqrt(sum / static_cast<double>(values.size()));
}

// A small llama: hidden 64, 4 heads of 16 (2 key/value heads), MLP 128, 2 layers.
TinyModelSpec small_llama() {
  TinyModelSpec spec;
  spec.model_type = "llama";
  spec.hidden = 64;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.intermediate = 128;
  return spec;
}

TinyModelSpec small_mixtral() {
  TinyModelSpec spec = small_llama();
  spec.model_type = "mixtral";
  spec.intermediate = 96;  // per expert
  return spec;
}

TinyModelSpec quantized(TinyModelSpec spec, const std::string& recipe = "affine:4:64") {
  spec.quant = QuantRecipe::parse(recipe);
  return spec;
}

TinyAdapterSpec lora(int rank, int num_layers) {
  TinyAdapterSpec adapter;
  adapter.rank = rank;
  adapter.num_layers = num_layers;
  return adapter;
}

// The LoRA update of a Linear module in double: scale · Σ_k lora_b[k][o] · lora_a[i][k].
std::vector<double> linear_delta(const Weights& adapters, const std::string& module, double scale, int64_t out,
                                 int64_t in) {
  const std::vector<float> a = adapters.floats(module + ".lora_a");  // [in, r]
  const std::vector<float> b = adapters.floats(module + ".lora_b");  // [r, out]
  const int64_t r = static_cast<int64_t>(a.size()) / in;
  std::vector<double> delta(static_cast<size_t>(out * in));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double sum = 0;
      for (int64_t k = 0; k < r; ++k) sum += static_cast<double>(b[k * out + o]) * a[i * r + k];
      delta[o * in + i] = scale * sum;
    }
  return delta;
}

std::set<std::string> names(const std::map<std::string, Shape>& shapes) {
  std::set<std::string> out;
  for (const auto& [name, shape] : shapes) out.insert(name);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Adapter folders

TEST(TinyAdapter, LlamaLoraTensorsAsMlxLmNamesThem) {
  ScratchDir dir;
  const TinyAdapterSummary summary = write_tiny_adapter(small_llama(), lora(4, 1), dir / "adapters");
  const std::string text = read_file(dir / "adapters" / "adapters.safetensors");
  EXPECT_NE(text.find("{\"__metadata__\":null,"), std::string::npos);  // mx.save_safetensors without metadata
  const json header = raw_header(dir / "adapters" / "adapters.safetensors");
  EXPECT_TRUE(header["__metadata__"].is_null());
  const std::map<std::string, Shape> expected = {
      // only the last block (num_layers 1); LoRALinear: lora_a [in, r], lora_b [r, out]
      {"model.layers.1.self_attn.q_proj.lora_a", {64, 4}},   {"model.layers.1.self_attn.q_proj.lora_b", {4, 64}},
      {"model.layers.1.self_attn.k_proj.lora_a", {64, 4}},   {"model.layers.1.self_attn.k_proj.lora_b", {4, 32}},
      {"model.layers.1.self_attn.v_proj.lora_a", {64, 4}},   {"model.layers.1.self_attn.v_proj.lora_b", {4, 32}},
      {"model.layers.1.self_attn.o_proj.lora_a", {64, 4}},   {"model.layers.1.self_attn.o_proj.lora_b", {4, 64}},
      {"model.layers.1.mlp.gate_proj.lora_a", {64, 4}},      {"model.layers.1.mlp.gate_proj.lora_b", {4, 128}},
      {"model.layers.1.mlp.up_proj.lora_a", {64, 4}},        {"model.layers.1.mlp.up_proj.lora_b", {4, 128}},
      {"model.layers.1.mlp.down_proj.lora_a", {128, 4}},     {"model.layers.1.mlp.down_proj.lora_b", {4, 64}},
  };
  EXPECT_EQ(f32_shapes(header), expected);
  EXPECT_EQ(summary.modules.size(), 7u);
  EXPECT_EQ(summary.tensors.size(), 14u);

  // All blocks with -1 and with 0 (mlx-lm slices layers[-max(n, 0):]).
  for (int num_layers : {-1, 0}) {
    const auto tensors = tiny_adapter_tensors(small_llama(), lora(4, num_layers));
    EXPECT_EQ(tensors.size(), 28u) << num_layers;
    EXPECT_EQ(tensors.front().name, "model.layers.0.self_attn.q_proj.lora_a") << num_layers;
  }
}

TEST(TinyAdapter, MixtralLoraCoversRouterAndExperts) {
  ScratchDir dir;
  write_tiny_adapter(small_mixtral(), lora(2, 1), dir / "a");
  const std::string l = "model.layers.1.";
  const std::map<std::string, Shape> expected = {
      {l + "self_attn.q_proj.lora_a", {64, 2}}, {l + "self_attn.q_proj.lora_b", {2, 64}},
      {l + "self_attn.k_proj.lora_a", {64, 2}}, {l + "self_attn.k_proj.lora_b", {2, 32}},
      {l + "self_attn.v_proj.lora_a", {64, 2}}, {l + "self_attn.v_proj.lora_b", {2, 32}},
      {l + "self_attn.o_proj.lora_a", {64, 2}}, {l + "self_attn.o_proj.lora_b", {2, 64}},
      // the router is a plain Linear [4 experts, 64]
      {l + "block_sparse_moe.gate.lora_a", {64, 2}}, {l + "block_sparse_moe.gate.lora_b", {2, 4}},
      // LoRASwitchLinear: lora_a [E, r, in], lora_b [E, out, r]
      {l + "block_sparse_moe.switch_mlp.gate_proj.lora_a", {4, 2, 64}},
      {l + "block_sparse_moe.switch_mlp.gate_proj.lora_b", {4, 96, 2}},
      {l + "block_sparse_moe.switch_mlp.up_proj.lora_a", {4, 2, 64}},
      {l + "block_sparse_moe.switch_mlp.up_proj.lora_b", {4, 96, 2}},
      {l + "block_sparse_moe.switch_mlp.down_proj.lora_a", {4, 2, 96}},
      {l + "block_sparse_moe.switch_mlp.down_proj.lora_b", {4, 64, 2}},
  };
  EXPECT_EQ(f32_shapes(raw_header(dir / "a" / "adapters.safetensors")), expected);

  // Before October 2025 expert lora_a was [E·r, in]: same bytes.
  TinyAdapterSpec old = lora(2, 1);
  old.legacy_switch_shape = true;
  const auto current = tiny_adapter_tensors(small_mixtral(), lora(2, 1));
  const auto legacy = tiny_adapter_tensors(small_mixtral(), old);
  ASSERT_EQ(current.size(), legacy.size());
  for (size_t i = 0; i < current.size(); ++i) {
    EXPECT_EQ(current[i].data, legacy[i].data) << current[i].name;
    if (current[i].name == l + "block_sparse_moe.switch_mlp.down_proj.lora_a") {
      EXPECT_EQ(legacy[i].shape, Shape({8, 96}));
    }
  }
}

TEST(TinyAdapter, Qwen35MoeLoraSkipsConvAndNorms) {
  TinyModelSpec spec;
  spec.model_type = "qwen3_5_moe";  // layers 0-2 linear attention, 3 full attention
  spec.hidden = 64;
  spec.moe_intermediate = 32;
  spec.shared_expert_intermediate = 48;
  ScratchDir dir;
  write_tiny_adapter(spec, lora(2, 2), dir / "a");
  const std::string lin = "language_model.model.layers.2.";
  const std::string att = "language_model.model.layers.3.";
  std::map<std::string, Shape> expected = {
      // Gated DeltaNet: qkv = 2·(2 key heads·32) + 4 value heads·32 = 256 channels; conv1d is not a Linear
      {lin + "linear_attn.in_proj_qkv.lora_a", {64, 2}}, {lin + "linear_attn.in_proj_qkv.lora_b", {2, 256}},
      {lin + "linear_attn.in_proj_z.lora_a", {64, 2}},   {lin + "linear_attn.in_proj_z.lora_b", {2, 128}},
      {lin + "linear_attn.in_proj_b.lora_a", {64, 2}},   {lin + "linear_attn.in_proj_b.lora_b", {2, 4}},
      {lin + "linear_attn.in_proj_a.lora_a", {64, 2}},   {lin + "linear_attn.in_proj_a.lora_b", {2, 4}},
      {lin + "linear_attn.out_proj.lora_a", {128, 2}},   {lin + "linear_attn.out_proj.lora_b", {2, 64}},
      // gated attention: q_proj yields query and gate, 2·4 heads·64
      {att + "self_attn.q_proj.lora_a", {64, 2}},  {att + "self_attn.q_proj.lora_b", {2, 512}},
      {att + "self_attn.k_proj.lora_a", {64, 2}},  {att + "self_attn.k_proj.lora_b", {2, 128}},
      {att + "self_attn.v_proj.lora_a", {64, 2}},  {att + "self_attn.v_proj.lora_b", {2, 128}},
      {att + "self_attn.o_proj.lora_a", {256, 2}}, {att + "self_attn.o_proj.lora_b", {2, 64}},
  };
  for (const std::string& l : {lin, att}) {
    const std::map<std::string, Shape> moe = {
        {l + "mlp.gate.lora_a", {64, 2}}, {l + "mlp.gate.lora_b", {2, 4}},
        {l + "mlp.switch_mlp.gate_proj.lora_a", {4, 2, 64}}, {l + "mlp.switch_mlp.gate_proj.lora_b", {4, 32, 2}},
        {l + "mlp.switch_mlp.up_proj.lora_a", {4, 2, 64}},   {l + "mlp.switch_mlp.up_proj.lora_b", {4, 32, 2}},
        {l + "mlp.switch_mlp.down_proj.lora_a", {4, 2, 32}}, {l + "mlp.switch_mlp.down_proj.lora_b", {4, 64, 2}},
        {l + "mlp.shared_expert.gate_proj.lora_a", {64, 2}}, {l + "mlp.shared_expert.gate_proj.lora_b", {2, 48}},
        {l + "mlp.shared_expert.up_proj.lora_a", {64, 2}},   {l + "mlp.shared_expert.up_proj.lora_b", {2, 48}},
        {l + "mlp.shared_expert.down_proj.lora_a", {48, 2}}, {l + "mlp.shared_expert.down_proj.lora_b", {2, 64}},
        {l + "mlp.shared_expert_gate.lora_a", {64, 2}},      {l + "mlp.shared_expert_gate.lora_b", {2, 1}},
    };
    expected.insert(moe.begin(), moe.end());
  }
  EXPECT_EQ(f32_shapes(raw_header(dir / "a" / "adapters.safetensors")), expected);
}

TEST(TinyAdapter, KeysSelectModulesIncludingEmbeddingAndHead) {
  TinyAdapterSpec adapter = lora(4, 1);
  adapter.keys = {"self_attn.v_proj", "model.embed_tokens", "lm_head"};
  const int64_t V = tiny_tokenizer_facts().vocab_size;
  std::map<std::string, Shape> shapes;
  for (const GenTensor& t : tiny_adapter_tensors(small_llama(), adapter)) shapes[t.name] = t.shape;
  const std::map<std::string, Shape> expected = {
      // LoRAEmbedding: lora_a [vocab, r], lora_b [r, dims]; full-path keys apply outside the last num_layers blocks
      {"model.embed_tokens.lora_a", {V, 4}},
      {"model.embed_tokens.lora_b", {4, 64}},
      {"model.layers.1.self_attn.v_proj.lora_a", {64, 4}},
      {"model.layers.1.self_attn.v_proj.lora_b", {4, 32}},
      {"lm_head.lora_a", {64, 4}},
      {"lm_head.lora_b", {4, V}},
  };
  EXPECT_EQ(shapes, expected);

  TinyModelSpec qwen;
  qwen.model_type = "qwen3_5";
  adapter.keys = {"language_model.lm_head", "mlp.down_proj"};
  shapes.clear();
  for (const GenTensor& t : tiny_adapter_tensors(qwen, adapter)) shapes[t.name] = t.shape;
  EXPECT_EQ(names(shapes), (std::set<std::string>{"language_model.lm_head.lora_a", "language_model.lm_head.lora_b",
                                                  "language_model.model.layers.3.mlp.down_proj.lora_a",
                                                  "language_model.model.layers.3.mlp.down_proj.lora_b"}));
}

TEST(TinyAdapter, ConfigHoldsEveryTrainingArgument) {
  ScratchDir dir;
  write_tiny_adapter(small_llama(), lora(8, -1), dir / "a");
  const std::string text = read_file(dir / "a" / "adapter_config.json");
  // json.dump(indent=4): no final newline, Python's float spelling
  EXPECT_TRUE(text.starts_with("{\n    \"adapter_path\": ")) << text;
  EXPECT_TRUE(text.ends_with("\n}")) << text;
  EXPECT_NE(text.find("\"learning_rate\": 1e-05,"), std::string::npos) << text;
  const ordered_json config = ordered_json::parse(text);
  std::vector<std::string> keys;
  for (const auto& [key, value] : config.items()) keys.push_back(key);
  const std::vector<std::string> expected = {
      "adapter_path",    "batch_size",     "clear_cache_threshold", "config",          "data",
      "fine_tune_type",  "grad_accumulation_steps", "grad_checkpoint", "iters",    "learning_rate",
      "lora_parameters", "lr_schedule",    "mask_prompt",           "max_seq_length",  "model",
      "num_layers",      "optimizer",      "optimizer_config",      "project_name",    "report_to",
      "resume_adapter_file", "save_every", "seed",                  "steps_per_eval",  "steps_per_report",
      "test",            "test_batches",   "train",                 "trust_remote_code", "val_batches"};
  EXPECT_EQ(keys, expected);  // sorted, as save_config sorts
  EXPECT_EQ(config["fine_tune_type"], "lora");
  EXPECT_EQ(config["num_layers"], -1);
  EXPECT_EQ(config["lora_parameters"].dump(), R"({"rank":8,"dropout":0.0,"scale":20.0})");  // CONFIG_DEFAULTS order
  EXPECT_TRUE(config["config"].is_null());

  // keys come from a YAML config, inside lora_parameters
  TinyAdapterSpec with_keys = lora(4, 2);
  with_keys.keys = {"self_attn.q_proj", "self_attn.v_proj"};
  with_keys.scale = 10.0;
  write_tiny_adapter(small_llama(), with_keys, dir / "b");
  const json keyed = json::parse(read_file(dir / "b" / "adapter_config.json"));
  EXPECT_EQ(keyed["lora_parameters"],
            json({{"keys", {"self_attn.q_proj", "self_attn.v_proj"}}, {"rank", 4}, {"scale", 10.0}, {"dropout", 0.0}}));
  EXPECT_EQ(keyed["config"], "lora_config.yaml");
  EXPECT_EQ(keyed["num_layers"], 2);

  TinyAdapterSpec full;
  full.fine_tune_type = "full";
  full.num_layers = 1;
  write_tiny_adapter(small_llama(), full, dir / "c");
  const json full_config = json::parse(read_file(dir / "c" / "adapter_config.json"));
  EXPECT_EQ(full_config["fine_tune_type"], "full");
  EXPECT_TRUE(full_config["lora_parameters"].is_null());
  EXPECT_EQ(full_config.size(), expected.size());
}

TEST(TinyAdapter, LegacyConfigAndDefaults) {
  TinyAdapterSpec adapter = lora(8, 1);
  adapter.legacy_config = true;
  ScratchDir dir;
  const TinyAdapterSummary summary = write_tiny_adapter(small_mixtral(), adapter, dir / "a");
  const ordered_json config = ordered_json::parse(read_file(dir / "a" / "adapter_config.json"));
  EXPECT_EQ(config["lora_layers"], 1);
  EXPECT_EQ(config["use_dora"], false);
  EXPECT_FALSE(config.contains("num_layers"));
  EXPECT_FALSE(config.contains("fine_tune_type"));
  EXPECT_EQ(config["lora_parameters"].dump(), R"({"rank":8,"alpha":16,"dropout":0.0,"scale":20.0})");
  // that mlx-lm's per-type default keys: q and v projections, and the router for mixtral
  EXPECT_EQ(summary.modules, (std::vector<std::string>{"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj",
                                                       "model.layers.1.block_sparse_moe.gate"}));

  adapter.fine_tune_type = "dora";
  adapter.legacy_alpha = 0;
  write_tiny_adapter(small_llama(), adapter, dir / "b");
  const json dora = json::parse(read_file(dir / "b" / "adapter_config.json"));
  EXPECT_EQ(dora["use_dora"], true);
  EXPECT_FALSE(dora["lora_parameters"].contains("alpha"));
}

TEST(TinyAdapter, DoraMagnitudesAreTrainedRowNorms) {
  ScratchDir dir;
  const TinyModelSpec base = small_llama();
  write_tiny_model(base, dir / "base");
  TinyAdapterSpec adapter = lora(4, 1);
  adapter.fine_tune_type = "dora";
  write_tiny_adapter(base, adapter, dir / "a");
  const json header = raw_header(dir / "a" / "adapters.safetensors");
  EXPECT_EQ(header.size(), 1u + 7u * 3u);
  const std::string q = "model.layers.1.self_attn.q_proj";
  EXPECT_EQ(header[q + ".m"]["dtype"], "F32");
  EXPECT_EQ(header[q + ".m"]["shape"], json({64}));
  EXPECT_EQ(header["model.layers.1.self_attn.k_proj.m"]["shape"], json({32}));
  EXPECT_EQ(header["model.layers.1.mlp.down_proj.m"]["shape"], json({64}));
  EXPECT_EQ(header["model.layers.1.mlp.down_proj.lora_a"]["shape"], json({128, 4}));
  // DoRA layers hold m before lora_a in mlx-lm's parameter order
  EXPECT_LT(header[q + ".m"]["data_offsets"][0], header[q + ".lora_a"]["data_offsets"][0]);

  const Weights weights(dir / "base"), adapters(dir / "a" / "adapters.safetensors");
  const std::vector<float> w = weights.floats(q + ".weight"), m = adapters.floats(q + ".m");
  double spread = 0;
  for (int64_t row = 0; row < 64; ++row) {
    double norm = 0;
    for (int64_t c = 0; c < 64; ++c) norm += static_cast<double>(w[row * 64 + c]) * w[row * 64 + c];
    const double ratio = m[row] / std::sqrt(norm);
    EXPECT_GT(ratio, 0.5) << row;
    EXPECT_LT(ratio, 1.5) << row;
    spread += std::fabs(ratio - 1.0);
  }
  EXPECT_GT(spread / 64, 0.02);  // trained: not the initial row norms

  // DoRAEmbedding's m keeps the embedding's dtype (mlx-lm takes the norm without a cast)
  adapter.keys = {"model.embed_tokens"};
  const auto tensors = tiny_adapter_tensors(base, adapter);
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors[0].name, "model.embed_tokens.m");
  EXPECT_EQ(tensors[0].dtype, DType::BF16);
  EXPECT_EQ(tensors[0].shape, Shape({tiny_tokenizer_facts().vocab_size}));
}

TEST(TinyAdapter, DoraRefusesExperts) {
  TinyAdapterSpec adapter = lora(4, 1);
  adapter.fine_tune_type = "dora";
  try {
    tiny_adapter_tensors(small_mixtral(), adapter);  // the default keys include switch_mlp
    FAIL() << "DoRA on SwitchLinear accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("SwitchLinear doesn't support DoRA"), std::string::npos) << e.what();
  }
  adapter.keys = {"self_attn.q_proj", "block_sparse_moe.gate"};
  EXPECT_EQ(tiny_adapter_tensors(small_mixtral(), adapter).size(), 6u);
  adapter.keys = {"model.embed_tokens"};
  EXPECT_THROW(tiny_adapter_tensors(quantized(small_llama()), adapter), Error);  // quantized DoRAEmbedding
}

TEST(TinyAdapter, FullFineTuneOfQuantizedBaseHoldsOnlyFloatParameters) {
  TinyModelSpec base = quantized(small_llama());
  base.attention_bias = true;  // QuantizedLinear keeps its bias frozen too
  TinyAdapterSpec adapter;
  adapter.fine_tune_type = "full";
  adapter.num_layers = 1;
  ScratchDir dir;
  write_tiny_model(base, dir / "base");
  write_tiny_adapter(base, adapter, dir / "a");
  const json header = raw_header(dir / "a" / "adapters.safetensors");
  EXPECT_TRUE(header["__metadata__"].is_null());
  std::map<std::string, std::pair<std::string, Shape>> got;
  for (const auto& [name, entry] : header.items())
    if (name != "__metadata__") got[name] = {entry["dtype"], entry["shape"].get<Shape>()};
  const std::map<std::string, std::pair<std::string, Shape>> expected = {
      {"model.layers.1.input_layernorm.weight", {"BF16", {64}}},
      {"model.layers.1.post_attention_layernorm.weight", {"BF16", {64}}},
  };
  EXPECT_EQ(got, expected);
  const Weights before(dir / "base"), after(dir / "a" / "adapters.safetensors");
  const std::vector<float> x = before.floats("model.layers.1.input_layernorm.weight");
  const std::vector<float> y = after.floats("model.layers.1.input_layernorm.weight");
  int changed = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    changed += x[i] != y[i];
    EXPECT_LT(std::fabs(x[i] - y[i]), 0.3) << i;  // a fine-tune moves norms a little
  }
  EXPECT_GT(changed, 32);

  // A float base trains every parameter of the block, in its dtype.
  base.quant.reset();
  std::set<std::string> trained;
  for (const GenTensor& t : tiny_adapter_tensors(base, adapter)) {
    trained.insert(t.name);
    EXPECT_EQ(t.dtype, DType::BF16) << t.name;
  }
  std::set<std::string> all;
  for (const char* name : {"self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight",
                           "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
                           "self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.gate_proj.weight",
                           "mlp.down_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight",
                           "post_attention_layernorm.weight"})
    all.insert(std::string("model.layers.1.") + name);
  EXPECT_EQ(trained, all);

  // Qwen3.5 at 4 bits: the Gated DeltaNet's float parameters (A_log stays float32), never its projections.
  TinyModelSpec qwen = quantized(TinyModelSpec{});
  qwen.model_type = "qwen3_5";
  std::map<std::string, DType> qwen_trained;
  for (const GenTensor& t : tiny_adapter_tensors(qwen, adapter)) qwen_trained[t.name] = t.dtype;
  const std::string l3 = "language_model.model.layers.3.";  // the full-attention layer
  EXPECT_EQ(qwen_trained, (std::map<std::string, DType>{{l3 + "self_attn.q_norm.weight", DType::BF16},
                                                        {l3 + "self_attn.k_norm.weight", DType::BF16},
                                                        {l3 + "input_layernorm.weight", DType::BF16},
                                                        {l3 + "post_attention_layernorm.weight", DType::BF16}}));
  adapter.num_layers = 2;
  qwen_trained.clear();
  for (const GenTensor& t : tiny_adapter_tensors(qwen, adapter)) qwen_trained[t.name] = t.dtype;
  const std::string l2 = "language_model.model.layers.2.linear_attn.";
  EXPECT_EQ(qwen_trained.at(l2 + "A_log"), DType::F32);
  EXPECT_EQ(qwen_trained.at(l2 + "conv1d.weight"), DType::BF16);
  EXPECT_EQ(qwen_trained.at(l2 + "dt_bias"), DType::BF16);
  EXPECT_EQ(qwen_trained.count(l2 + "in_proj_qkv.weight"), 0u);
}

TEST(TinyAdapter, CheckpointHasTheSameContent) {
  TinyAdapterSpec adapter = lora(4, 1);
  adapter.checkpoint_iteration = 250;
  ScratchDir dir;
  const TinyAdapterSummary summary = write_tiny_adapter(small_llama(), adapter, dir / "a");
  EXPECT_EQ(summary.files.size(), 3u);
  EXPECT_EQ(read_file(dir / "a" / "0000250_adapters.safetensors"), read_file(dir / "a" / "adapters.safetensors"));
  const json config = json::parse(read_file(dir / "a" / "adapter_config.json"));
  EXPECT_EQ(config["save_every"], 250);  // a checkpoint iteration is a multiple of save_every
}

TEST(TinyAdapter, DeterministicAndTrainedLooking) {
  const TinyModelSpec base = small_llama();
  const auto first = tiny_adapter_tensors(base, lora(4, 1));
  const auto again = tiny_adapter_tensors(base, lora(4, 1));
  TinyAdapterSpec other = lora(4, 1);
  other.seed = 8;
  const auto reseeded = tiny_adapter_tensors(base, other);
  ASSERT_EQ(first.size(), again.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].data, again[i].data) << first[i].name;
    EXPECT_NE(first[i].data, reseeded[i].data) << first[i].name;
  }
  // lora_a within mlx-lm's init bound, lora_b non-zero; the update's RMS a modest share of the weight's.
  ScratchDir dir;
  write_tiny_model(base, dir / "base");
  write_tiny_adapter(base, lora(4, 1), dir / "a");
  const Weights weights(dir / "base"), adapters(dir / "a" / "adapters.safetensors");
  for (const std::string module : {"model.layers.1.self_attn.o_proj", "model.layers.1.mlp.down_proj"}) {
    const int64_t in = module.ends_with("down_proj") ? 128 : 64;
    for (float a : adapters.floats(module + ".lora_a")) EXPECT_LE(std::fabs(a), 1.0 / std::sqrt(in)) << module;
    const std::vector<double> delta = linear_delta(adapters, module, 20.0, 64, in);
    const std::vector<float> w = weights.floats(module + ".weight");
    const double share = rms(delta) / rms(std::vector<double>(w.begin(), w.end()));
    EXPECT_GT(share, 0.08) << module;
    EXPECT_LT(share, 0.25) << module;
  }
}

TEST(TinyAdapter, RejectsWhatMlxLmRejects) {
  TinyAdapterSpec adapter = lora(4, 3);
  EXPECT_THROW(tiny_adapter_tensors(small_llama(), adapter), Error);  // more layers than the model has
  adapter = lora(4, 1);
  adapter.keys = {"self_attn.qproj"};
  EXPECT_THROW(tiny_adapter_tensors(small_llama(), adapter), Error);  // a typo
  adapter.keys = {"input_layernorm"};
  EXPECT_THROW(tiny_adapter_tensors(small_llama(), adapter), Error);  // not a Linear
  adapter.keys = {"lm_head"};
  TinyModelSpec tied = small_llama();
  tied.tie_embeddings = true;
  EXPECT_THROW(tiny_adapter_tensors(tied, adapter), Error);  // no lm_head
  adapter.keys.clear();
  adapter.fine_tune_type = "qlora";
  EXPECT_THROW(tiny_adapter_tensors(small_llama(), adapter), Error);
  adapter.fine_tune_type = "full";
  adapter.keys = {"self_attn.q_proj"};
  EXPECT_THROW(tiny_adapter_tensors(small_llama(), adapter), Error);
  TinyModelSpec hf;
  hf.model_type = "qwen3_5";
  hf.layout = "hf";
  EXPECT_THROW(tiny_adapter_tensors(hf, lora(4, 1)), Error);
}

// ---------------------------------------------------------------------------------------------------------------
// Fused folders

// Writes base, adapter and fused folders into `dir`.
void write_all(const ScratchDir& dir, const TinyModelSpec& base, const TinyAdapterSpec& adapter, bool dequantize) {
  write_tiny_model(base, dir / "base");
  write_tiny_adapter(base, adapter, dir / "adapters");
  write_fused_model(base, dir / "base", adapter, dir / "fused", dequantize);
}

// Every tensor the fine-tune does not touch is stored byte for byte as in the base; the others differ.
void expect_untouched_identical(const Weights& base, const Weights& fused, const std::set<std::string>& adapted_modules) {
  for (const auto& [name, tensor] : base.tensors) {
    const std::string module = name.substr(0, name.rfind('.'));
    if (adapted_modules.count(module) && !name.ends_with(".bias")) {
      EXPECT_NE(base.bytes(name), fused.bytes(name)) << name;
      continue;
    }
    EXPECT_EQ(fused.at(name).dtype, tensor->dtype) << name;
    EXPECT_EQ(fused.at(name).shape, tensor->shape) << name;
    EXPECT_EQ(base.bytes(name), fused.bytes(name)) << name;
  }
  EXPECT_EQ(base.tensors.size(), fused.tensors.size());
}

std::set<std::string> layer_modules(const std::string& layer) {
  std::set<std::string> modules;
  for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                        "mlp.up_proj", "mlp.down_proj"})
    modules.insert(layer + m);
  return modules;
}

TEST(TinyAdapterFuse, Bf16LinearIsBasePlusUpdate) {
  ScratchDir dir;
  TinyModelSpec base = small_llama();
  base.attention_bias = true;
  write_all(dir, base, lora(4, 1), false);
  const Weights before(dir / "base"), adapters(dir / "adapters" / "adapters.safetensors"), fused(dir / "fused");
  const std::string q = "model.layers.1.self_attn.q_proj";
  ASSERT_EQ(fused.at(q + ".weight").dtype, DType::BF16);
  const std::vector<float> w = before.floats(q + ".weight"), f = fused.floats(q + ".weight");
  const std::vector<double> delta = linear_delta(adapters, q, 20.0, 64, 64);
  std::vector<double> moved;
  for (size_t i = 0; i < w.size(); ++i) {
    const double expected = w[i] + delta[i];
    // two bf16 roundings (8 significant bits), each within 2^-8 of its value
    EXPECT_NEAR(f[i], expected, 0x1p-7 * (std::fabs(w[i]) + std::fabs(delta[i])) + 1e-7) << i;
    moved.push_back(f[i] - w[i]);
  }
  EXPECT_GT(rms(moved), 0.05 * rms(std::vector<double>(w.begin(), w.end())));

  // The exact rule: float32 sum over k of (s·lora_b[k][o])·lora_a[i][k], rounded to bf16, added in float32, rounded.
  const std::vector<float> a = adapters.floats(q + ".lora_a"), b = adapters.floats(q + ".lora_b");
  for (int64_t o = 0; o < 64; ++o)
    for (int64_t i = 0; i < 64; ++i) {
      float sum = 0.0f;
      for (int64_t k = 0; k < 4; ++k) {
        const float coefficient = 20.0f * b[k * 64 + o];
        const float term = coefficient * a[i * 4 + k];
        sum = sum + term;
      }
      const float exact = round_to_dtype(w[o * 64 + i] + round_to_dtype(sum, DType::BF16), DType::BF16);
      ASSERT_EQ(f[o * 64 + i], exact) << o << "," << i;
    }

  expect_untouched_identical(before, fused, layer_modules("model.layers.1."));
  for (const char* file : {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                           "chat_template.jinja"})
    EXPECT_EQ(read_file(dir / "fused" / file), read_file(dir / "base" / file)) << file;
  const json index = json::parse(read_file(dir / "fused" / "model.safetensors.index.json"));
  const json base_index = json::parse(read_file(dir / "base" / "model.safetensors.index.json"));
  EXPECT_EQ(index, base_index);  // same names, sizes and parameter count
}

TEST(TinyAdapterFuse, QuantizedLinearIsRequantizedInItsOwnLayout) {
  ScratchDir dir;
  const TinyModelSpec base = quantized(small_llama());
  write_all(dir, base, lora(4, 1), false);
  const Weights before(dir / "base"), adapters(dir / "adapters" / "adapters.safetensors"), fused(dir / "fused");
  const QuantSpec spec{QuantMode::Affine, 4, 64};
  const std::string q = "model.layers.1.self_attn.q_proj";
  for (const char* part : {".weight", ".scales", ".biases"}) {
    EXPECT_EQ(fused.at(q + part).dtype, before.at(q + part).dtype) << part;
    EXPECT_EQ(fused.at(q + part).shape, before.at(q + part).shape) << part;
  }
  EXPECT_EQ(fused.at(q + ".weight").dtype, DType::U32);
  EXPECT_EQ(fused.at(q + ".scales").dtype, DType::BF16);

  // Dequantized, the fused module is the base plus the update, up to one re-quantization.
  const std::vector<float> w = before.dequantized(q, spec, 64), f = fused.dequantized(q, spec, 64);
  const std::vector<float> scales = fused.floats(q + ".scales");
  const std::vector<double> delta = linear_delta(adapters, q, 20.0, 64, 64);
  std::vector<double> error, shift;
  for (size_t i = 0; i < w.size(); ++i) {
    const double target = w[i] + delta[i];
    // half a step, or up to a step and a half where MLX's edge-aligned bias clamps the far end of the group
    EXPECT_LE(std::fabs(f[i] - target), 1.5 * std::fabs(scales[i / 64]) + 0x1p-7 * std::fabs(target)) << i;
    error.push_back(f[i] - target);
    shift.push_back(delta[i]);
  }
  EXPECT_LT(rms(error), 0.8 * rms(shift));  // closer to base + update than the base is

  // The exact rule: bf16 of (bf16(dequantized) + bf16(update)), re-quantized with the base's bits and group size.
  const std::vector<float> a = adapters.floats(q + ".lora_a"), b = adapters.floats(q + ".lora_b");
  std::vector<float> exact(w.size());
  for (int64_t o = 0; o < 64; ++o)
    for (int64_t i = 0; i < 64; ++i) {
      float sum = 0.0f;
      for (int64_t k = 0; k < 4; ++k) sum = sum + (20.0f * b[k * 64 + o]) * a[i * 4 + k];
      const float base_value = round_to_dtype(w[o * 64 + i], DType::BF16);
      exact[o * 64 + i] = round_to_dtype(base_value + round_to_dtype(sum, DType::BF16), DType::BF16);
    }
  const QuantizedRows requantized = quantize_affine(exact.data(), 64, 64, 4, 64, DType::BF16);
  const std::vector<uint8_t> packed = fused.bytes(q + ".weight");
  ASSERT_EQ(packed.size(), requantized.packed.size() * 4);
  EXPECT_EQ(std::memcmp(packed.data(), requantized.packed.data(), packed.size()), 0);
  EXPECT_EQ(fused.bytes(q + ".scales"), requantized.scales);
  EXPECT_EQ(fused.bytes(q + ".biases"), requantized.biases);

  expect_untouched_identical(before, fused, layer_modules("model.layers.1."));
  EXPECT_EQ(read_file(dir / "fused" / "config.json"), read_file(dir / "base" / "config.json"));
}

TEST(TinyAdapterFuse, MixedBitsAndFpModesKeepEachModulesLayout) {
  // Qwen3.5 MoE at 4 bits with its 8-bit routers; llama in mxfp4 (no biases, U8 scales).
  TinyModelSpec qwen;
  qwen.model_type = "qwen3_5_moe";
  for (const TinyModelSpec& base : {quantized(qwen), quantized(small_llama(), "mxfp4")}) {
    ScratchDir dir;
    write_all(dir, base, lora(4, 1), false);
    const Weights before(dir / "base"), fused(dir / "fused");
    int changed = 0;
    for (const auto& [name, tensor] : before.tensors) {
      EXPECT_EQ(fused.at(name).dtype, tensor->dtype) << name;
      EXPECT_EQ(fused.at(name).shape, tensor->shape) << name;
      changed += before.bytes(name) != fused.bytes(name);
    }
    EXPECT_EQ(before.tensors.size(), fused.tensors.size());
    EXPECT_GT(changed, 10) << base.model_type;
  }
}

TEST(TinyAdapterFuse, DequantizeStoresEveryModuleAsFloat) {
  ScratchDir dir;
  const TinyModelSpec base = quantized(small_llama());
  write_all(dir, base, lora(4, 1), true);
  const Weights before(dir / "base"), adapters(dir / "adapters" / "adapters.safetensors"), fused(dir / "fused");
  for (const auto& [name, tensor] : fused.tensors) {
    EXPECT_EQ(tensor->dtype, DType::BF16) << name;
    EXPECT_FALSE(name.ends_with(".scales") || name.ends_with(".biases")) << name;
  }
  json config = json::parse(read_file(dir / "fused" / "config.json"));
  EXPECT_FALSE(config.contains("quantization"));
  EXPECT_FALSE(config.contains("quantization_config"));
  json base_config = json::parse(read_file(dir / "base" / "config.json"));
  base_config.erase("quantization");
  base_config.erase("quantization_config");
  EXPECT_EQ(config, base_config);

  const QuantSpec spec{QuantMode::Affine, 4, 64};
  // An untouched module: exactly its dequantized values in bf16.
  const std::string q0 = "model.layers.0.self_attn.q_proj", q1 = "model.layers.1.self_attn.q_proj";
  const std::vector<float> w0 = before.dequantized(q0, spec, 64), f0 = fused.floats(q0 + ".weight");
  EXPECT_EQ(fused.at(q0 + ".weight").shape, Shape({64, 64}));
  for (size_t i = 0; i < w0.size(); ++i) ASSERT_EQ(f0[i], round_to_dtype(w0[i], DType::BF16)) << i;
  // An adapted one: dequantized base plus the update.
  const std::vector<float> w1 = before.dequantized(q1, spec, 64), f1 = fused.floats(q1 + ".weight");
  const std::vector<double> delta = linear_delta(adapters, q1, 20.0, 64, 64);
  for (size_t i = 0; i < w1.size(); ++i)
    EXPECT_NEAR(f1[i], w1[i] + delta[i], 0x1p-7 * (std::fabs(w1[i]) + std::fabs(delta[i])) + 1e-7) << i;
}

TEST(TinyAdapterFuse, DoraRowsTakeTheLearnedMagnitude) {
  ScratchDir dir;
  TinyAdapterSpec adapter = lora(4, 1);
  adapter.fine_tune_type = "dora";
  write_all(dir, small_llama(), adapter, false);
  const Weights before(dir / "base"), adapters(dir / "adapters" / "adapters.safetensors"), fused(dir / "fused");
  const std::string v = "model.layers.1.self_attn.v_proj";  // [32, 64]
  EXPECT_EQ(fused.at(v + ".weight").dtype, DType::F32);   // m is float32, so is m / norm · W
  const std::vector<float> w = before.floats(v + ".weight"), f = fused.floats(v + ".weight");
  const std::vector<float> m = adapters.floats(v + ".m");
  const std::vector<double> delta = linear_delta(adapters, v, 20.0, 32, 64);
  for (int64_t row = 0; row < 32; ++row) {
    double adapted_norm = 0, fused_norm = 0;
    for (int64_t c = 0; c < 64; ++c) {
      const double adapted = w[row * 64 + c] + delta[row * 64 + c];
      adapted_norm += adapted * adapted;
      fused_norm += static_cast<double>(f[row * 64 + c]) * f[row * 64 + c];
    }
    adapted_norm = std::sqrt(adapted_norm);
    fused_norm = std::sqrt(fused_norm);
    EXPECT_NEAR(fused_norm, m[row], 1e-2 * m[row]) << row;
    for (int64_t c = 0; c < 64; ++c) {
      const double direction = (w[row * 64 + c] + delta[row * 64 + c]) / adapted_norm;
      EXPECT_NEAR(f[row * 64 + c] / fused_norm, direction, 1e-2) << row << "," << c;
    }
  }
  expect_untouched_identical(before, fused, layer_modules("model.layers.1."));

  // A quantized base re-quantizes the float32 rows: float32 scales and biases.
  ScratchDir qdir;
  write_all(qdir, quantized(small_llama()), adapter, false);
  const Weights qfused(qdir / "fused");
  EXPECT_EQ(qfused.at(v + ".weight").dtype, DType::U32);
  EXPECT_EQ(qfused.at(v + ".scales").dtype, DType::F32);
  EXPECT_EQ(qfused.at(v + ".biases").dtype, DType::F32);
  EXPECT_EQ(qfused.at("model.layers.0.self_attn.v_proj.scales").dtype, DType::BF16);
}

TEST(TinyAdapterFuse, QuantizedEmbeddingAndFullFineTune) {
  ScratchDir dir;
  const TinyModelSpec base = quantized(small_llama());
  TinyAdapterSpec adapter = lora(4, 1);
  adapter.keys = {"model.embed_tokens"};
  write_all(dir, base, adapter, false);
  const Weights before(dir / "base"), adapters(dir / "adapters" / "adapters.safetensors"), fused(dir / "fused");
  const std::string e = "model.embed_tokens";
  const int64_t V = tiny_tokenizer_facts().vocab_size;
  const QuantSpec spec{QuantMode::Affine, 4, 64};
  for (const char* part : {".weight", ".scales", ".biases"}) EXPECT_EQ(fused.at(e + part).shape, before.at(e + part).shape);
  // LoRAEmbedding: W + s · lora_a @ lora_b
  const std::vector<float> w = before.dequantized(e, spec, 64), f = fused.dequantized(e, spec, 64);
  const std::vector<float> a = adapters.floats(e + ".lora_a"), b = adapters.floats(e + ".lora_b");
  std::vector<double> error, shift;
  for (int64_t v = 0; v < V; ++v)
    for (int64_t d = 0; d < 64; ++d) {
      double sum = 0;
      for (int64_t k = 0; k < 4; ++k) sum += static_cast<double>(a[v * 4 + k]) * b[k * 64 + d];
      error.push_back(f[v * 64 + d] - (w[v * 64 + d] + 20.0 * sum));
      shift.push_back(20.0 * sum);
    }
  EXPECT_LT(rms(error), 0.8 * rms(shift));
  expect_untouched_identical(before, fused, {e});

  // A full fine-tune's tensors replace the base's; quantized weights stay as they were.
  TinyAdapterSpec full;
  full.fine_tune_type = "full";
  full.num_layers = 1;
  ScratchDir fdir;
  write_all(fdir, base, full, false);
  const Weights fbase(fdir / "base"), trained(fdir / "adapters" / "adapters.safetensors"), ffused(fdir / "fused");
  for (const auto& [name, tensor] : fbase.tensors) {
    const Weights& source = trained.has(name) ? trained : fbase;
    EXPECT_EQ(ffused.bytes(name), source.bytes(name)) << name;
  }
  EXPECT_EQ(trained.tensors.size(), 2u);
}

}  // namespace
}  // namespace mlx2gguf::gen
