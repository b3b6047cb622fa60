#include "support.h"

#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>
#include <memory>

#include "convert.h"

namespace mlx2gguf::fuzz {

namespace fs = std::filesystem;

namespace {

struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "mlx2gguf-fuzz-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

}  // namespace

const fs::path& scratch_dir() {
  static ScratchDir dir;
  return dir.path;
}

void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::abort();
  }
}

TwoParts split_at_nul(std::string_view input) {
  const size_t nul = input.find('\0');
  if (nul == std::string_view::npos) return {input, {}, false};
  return {input.substr(0, nul), input.substr(nul + 1), true};
}

std::vector<std::optional<std::string_view>> split_pieces(std::string_view input, size_t count) {
  std::vector<std::optional<std::string_view>> pieces(count);
  for (size_t i = 0; i < count; ++i) {
    const size_t nul = i + 1 < count ? input.find('\0') : std::string_view::npos;
    pieces[i] = input.substr(0, nul);
    if (nul == std::string_view::npos) break;
    input.remove_prefix(nul + 1);
  }
  return pieces;
}

// Small enough that a conversion plan and a few rows take well under a millisecond, large enough that every
// quantization mode's group sizes divide the widths.
gen::TinyModelSpec config_base_spec(const std::string& model_type, bool quantized) {
  gen::TinyModelSpec spec;
  spec.model_type = model_type;
  spec.hidden = 64;
  spec.intermediate = 64;
  spec.heads = 2;
  spec.kv_heads = 1;
  spec.head_dim = 32;
  const bool moe = model_type == "mixtral" || model_type == "gpt_oss" || model_type == "qwen3_next" ||
                   model_type.find("moe") != std::string::npos;
  if (moe) {
    spec.experts = 2;
    spec.experts_per_tok = 1;
  }
  spec.moe_intermediate = 64;
  spec.shared_expert_intermediate = 64;
  spec.linear_num_key_heads = 1;
  spec.linear_num_value_heads = 2;
  spec.sliding_window = 16;
  if (quantized) spec.quant = gen::QuantRecipe::parse("affine:4:32");
  return spec;
}

gen::TinyModelSpec adapter_base_spec(bool experts) {
  gen::TinyModelSpec spec = config_base_spec(experts ? "mixtral" : "llama", false);
  spec.head_dim = 0;
  return spec;
}

const fs::path& generated_model(const std::string& key, const gen::TinyModelSpec& spec) {
  static std::map<std::string, fs::path> folders;
  auto it = folders.find(key);
  if (it != folders.end()) return it->second;
  const fs::path dir = scratch_dir() / ("model-" + key);
  gen::write_tiny_model(spec, dir);
  return folders.emplace(key, dir).first->second;
}

const std::vector<std::string>& generated_split_set() {
  static const std::vector<std::string> parts = [] {
    gen::TinyModelSpec spec = config_base_spec("llama", true);
    spec.layers = 1;
    ConvertOptions options;
    options.model_dir = generated_model("split-llama-q4", spec);
    options.outfile = scratch_dir() / "split-source" / "model.gguf";
    options.split.max_tensors = 5;
    fs::create_directories(options.outfile.parent_path());
    const ConvertSummary summary = convert(options);
    std::vector<std::string> bytes;
    for (const fs::path& file : summary.files) {
      std::ifstream in(file, std::ios::binary);
      bytes.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    if (bytes.size() != 3) {
      std::fprintf(stderr, "the generated split set has %zu files, not 3\n", bytes.size());
      std::abort();
    }
    return bytes;
  }();
  return parts;
}

}  // namespace mlx2gguf::fuzz
