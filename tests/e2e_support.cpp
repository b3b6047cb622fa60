#include "e2e_support.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <functional>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "oracle/llama_oracle.h"
#include "plan/quant_mix.h"
#include "read/mapped_file.h"
#include "write/gguf_file.h"
#include "test_paths.h"

namespace e2e {

namespace fs = std::filesystem;

namespace {

// Writes a folder once (atomically, so concurrent test processes can share it).
fs::path cached_folder(const std::string& kind, const std::string& key, const std::function<void(const fs::path&)>& write) {
  const fs::path dir = work_dir() / kind / key;
  if (fs::exists(dir)) return dir;
  fs::create_directories(dir.parent_path());
  const fs::path temp = dir.parent_path() / fmt::format(".{}.{}", key, ::getpid());
  fs::remove_all(temp);
  write(temp);
  std::error_code ec;
  fs::rename(temp, dir, ec);
  if (ec) fs::remove_all(temp);
  return dir;
}

}  // namespace

fs::path work_dir() {
  fs::path dir = test_paths::test_work_dir();
  fs::create_directories(dir);
  return dir;
}

fs::path cached_model(const std::string& key, const mlx2gguf::gen::TinyModelSpec& spec) {
  return cached_folder("models", key, [&](const fs::path& dir) { mlx2gguf::gen::write_tiny_model(spec, dir); });
}

mlx2gguf::gen::TinyModelSpec model_spec(const std::string& model) {
  using mlx2gguf::gen::TinyModelSpec;
  // MoE models route each token to most of their experts. Real MoEs route a token to several of many (Qwen3.5: 8 of
  // 256), so the expert at the top-k boundary, where activation rounding can flip a near-tie, carries a small share
  // of the routed weight and a flip moves the output little. At 2 of 4 the boundary expert carries ~35% (median):
  // one flip moved a position's logits by ~17% (NMSE 3e-2 there, 2e-3 over 16 positions). At 3 of 4 it carries
  // ~16%, at 6 of 8 ~6%; the 4-layer Qwen3.5 MoE, with twice the routing decisions and a recurrent state carrying a
  // flip's effect on, takes the latter (the Mixtral keeps 4 experts: "mixtral-8x" is the 8-expert variant).
  TinyModelSpec s;
  if (model == "llama") {
    s.model_type = "llama";
    s.tokenizer_dir = oracle::real_tokenizer_dir("llama3");
    s.rope_theta = 500000;
    s.rope_scaling = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                      {"original_max_position_embeddings", 64}};
    s.seed = 11;
  } else if (model == "mistral") {
    s.model_type = "mistral";
    s.tokenizer_dir = oracle::real_tokenizer_dir("llama2");
    s.head_dim = 64;
    s.tie_embeddings = true;
    s.attention_bias = true;
    s.rope_scaling = {{"type", "linear"}, {"factor", 2.0}};
    s.seed = 12;
  } else if (model == "mixtral") {
    s.model_type = "mixtral";
    s.tokenizer_dir = oracle::real_tokenizer_dir("llama2");
    s.experts = 4;
    s.experts_per_tok = 3;
    s.rope_theta = 1e6;
    s.seed = 13;
  } else if (model == "qwen35moe" || model == "qwen35moe-hf") {
    s.model_type = "qwen3_5_moe";
    s.tokenizer_dir = oracle::real_tokenizer_dir("qwen3");
    s.experts = 8;
    s.experts_per_tok = 6;
    s.seed = 21;
  } else if (model == "qwen3next") {
    s.model_type = "qwen3_next";
    s.tokenizer_dir = oracle::real_tokenizer_dir("qwen3");
    s.experts = 8;
    s.experts_per_tok = 6;
    s.seed = 31;
  } else if (model == "qwen35") {
    s.model_type = "qwen3_5";
    s.tokenizer_dir = oracle::real_tokenizer_dir("qwen3");
    s.seed = 22;
  } else if (model == "gemma3") {
    s.model_type = "gemma3_text";
    s.layers = 3;
    s.tie_embeddings = true;
    s.sliding_window = 8;
    s.extra_config = {{"sliding_window_pattern", 3}};
    s.seed = 23;
  } else if (model == "qwen36-widths" || model == "qwen36-widths-hf") {
    s = mlx2gguf::gen::qwen36_like_spec();
  } else {
    throw std::runtime_error("unknown test model " + model);
  }
  if (model.ends_with("-hf")) {
    s.layout = "hf";
    s.hf_extra_tensors = true;
  }
  return s;
}

namespace {

mlx2gguf::gen::TinyModelSpec spec_of(const std::string& model, const std::string& variant) {
  mlx2gguf::gen::TinyModelSpec spec = model_spec(model);
  int bits = 0, group_size = 0;
  if (variant == "mxfp4" || variant == "nvfp4" || variant == "mxfp8") {
    spec.quant = mlx2gguf::gen::QuantRecipe::parse(variant);
  } else if (std::sscanf(variant.c_str(), "q%dg%d", &bits, &group_size) == 2) {
    spec.quant = mlx2gguf::gen::QuantRecipe::parse(fmt::format("affine:{}:{}", bits, group_size));
  } else if (variant != "bf16") {
    throw std::runtime_error("unknown test model variant " + variant);
  }
  if (spec.quant && spec.layout == "hf") throw std::runtime_error("Hugging Face layouts are never quantized");
  return spec;
}

}  // namespace

fs::path model_folder(const std::string& model, const std::string& variant) {
  return cached_model(model + "-" + variant, spec_of(model, variant));
}

fs::path adapter_folder(const std::string& model, const std::string& variant, const std::string& key,
                        const mlx2gguf::gen::TinyAdapterSpec& adapter) {
  return cached_folder("adapters", fmt::format("{}-{}-{}", model, variant, key), [&](const fs::path& dir) {
    mlx2gguf::gen::write_tiny_adapter(spec_of(model, variant), adapter, dir);
  });
}

fs::path fused_folder(const std::string& model, const std::string& variant, const std::string& key,
                      const mlx2gguf::gen::TinyAdapterSpec& adapter) {
  const fs::path base = model_folder(model, variant);
  return cached_folder("fused", fmt::format("{}-{}-{}", model, variant, key), [&](const fs::path& dir) {
    mlx2gguf::gen::write_fused_model(spec_of(model, variant), base, adapter, dir, false);
  });
}

CommandResult run_mlx2gguf(const std::vector<std::string>& args, const fs::path& cwd) {
  auto quote = [](const std::string& text) {
    std::string inner;
    for (char c : text) inner += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return fmt::format("'{}'", inner);
  };
  std::string command = cwd.empty() ? quote(test_paths::binary().string()) : fmt::format("cd {} && {}", quote(cwd.string()), quote(test_paths::binary().string()));
  for (const auto& arg : args) command += " " + quote(arg);
  command += " 2>&1";
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size() || want.empty()) return INFINITY;
  double error = 0, energy = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    error += d * d;
    energy += static_cast<double>(want[i]) * want[i];
  }
  return error / energy;
}

Top1Comparison compare_top1(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab,
                            double min_relative_margin) {
  Top1Comparison result;
  for (size_t row = 0; (row + 1) * vocab <= want.size(); ++row) {
    const float* g = got.data() + row * vocab;
    const float* w = want.data() + row * vocab;
    ++result.positions;
    const int64_t best = std::max_element(w, w + vocab) - w;
    double second = -INFINITY, energy = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      energy += static_cast<double>(w[v]) * w[v];
      if (v != best) second = std::max(second, static_cast<double>(w[v]));
    }
    const double rms = std::sqrt(energy / static_cast<double>(vocab));
    if (w[best] - second < min_relative_margin * rms) continue;
    ++result.decidable;
    if (std::max_element(g, g + vocab) - g != best) ++result.mismatches;
  }
  return result;
}

NpyArray read_npy_f32(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  char magic[8];
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "\x93NUMPY\x01\x00", 8) != 0) throw std::runtime_error(path.string() + ": not an .npy v1 file");
  uint8_t length_bytes[2];
  in.read(reinterpret_cast<char*>(length_bytes), 2);
  std::string header(static_cast<size_t>(length_bytes[0] | length_bytes[1] << 8), '\0');
  in.read(header.data(), static_cast<std::streamsize>(header.size()));
  if (header.find("'descr': '<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path.string() + ": expected a C-order little-endian float32 array, header " + header);
  std::smatch match;
  if (!std::regex_search(header, match, std::regex("'shape': \\(([0-9, ]*)\\)")))
    throw std::runtime_error(path.string() + ": no shape in header " + header);
  NpyArray array;
  int64_t count = 1;
  const std::string dims = match[1];
  const std::regex number("[0-9]+");
  for (std::sregex_iterator it(dims.begin(), dims.end(), number), end; it != end; ++it) {
    array.shape.push_back(std::stoll(it->str()));
    count *= array.shape.back();
  }
  array.values.resize(static_cast<size_t>(count));
  in.read(reinterpret_cast<char*>(array.values.data()), static_cast<std::streamsize>(count * 4));
  if (!in) throw std::runtime_error(path.string() + ": truncated data");
  return array;
}

OracleFixture oracle_fixture(const std::string& name) {
  OracleFixture fixture;
  fixture.name = name;
  fixture.dir = test_paths::source_dir() / "tests" / "data" / "fixtures" / name;
  fixture.model = fixture.dir / "mlx";
  std::ifstream tokens(fixture.dir / "tokens.json");
  if (!tokens) throw std::runtime_error("missing fixture " + fixture.dir.string());
  fixture.tokens = nlohmann::json::parse(tokens).get<std::vector<int32_t>>();
  fixture.logits = read_npy_f32(fixture.dir / "oracle_logits.npy");
  if (fixture.logits.shape.size() != 2 || fixture.logits.shape[0] != static_cast<int64_t>(fixture.tokens.size()))
    throw std::runtime_error(fixture.dir.string() + ": oracle logits do not match tokens.json");
  return fixture;
}

fs::path OracleFixture::convert(const std::vector<std::string>& extra, const std::string& label) const {
  const fs::path gguf = work_dir() / fmt::format("fixture-{}-{}-{}.gguf", name, label, ::getpid());
  std::vector<std::string> args = {"convert", model.string(), "--outfile", gguf.string(), "-q"};
  args.insert(args.end(), extra.begin(), extra.end());
  const auto result = run_mlx2gguf(args);
  if (result.exit_code != 0) throw std::runtime_error(result.output);
  EXPECT_EQ(oracle::gguf_check_file(gguf.string()), "");
  return gguf;
}

double OracleFixture::llama_nmse(const fs::path& gguf, const std::string& label) const {
  const double error = fixture_nmse(oracle::LlamaModel::load(gguf.string())->logits(tokens), logits);
  std::printf("[ NMSE     ] fixture %s %s vs llama.cpp's oracle = %.3e\n", name.c_str(), label.c_str(), error);
  return error;
}

double fixture_nmse(const std::vector<float>& got, const NpyArray& oracle) {
  if (got.size() != oracle.values.size() || oracle.shape.size() != 2) return INFINITY;
  const int64_t vocab = oracle.shape[1];
  double error = 0, energy = 0;
  for (int64_t row = 0; row < oracle.shape[0]; ++row) {
    const float* want = oracle.values.data() + row * vocab;
    double mean = 0;
    for (int64_t v = 0; v < vocab; ++v) mean += want[v];
    mean /= static_cast<double>(vocab);
    for (int64_t v = 0; v < vocab; ++v) {
      const double d = static_cast<double>(got[static_cast<size_t>(row * vocab + v)]) - want[v];
      error += d * d;
      energy += (want[v] - mean) * (want[v] - mean);
    }
  }
  return error / energy;
}

std::vector<int32_t> probe_tokens(int64_t vocab, int count, int32_t first) {
  std::mt19937 rng(1234);
  std::vector<int32_t> tokens{first};
  while (static_cast<int>(tokens.size()) < count) tokens.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
  return tokens;
}

fs::path converted_once(const fs::path& folder, const std::string& outtype) {
  const fs::path path = work_dir() / fmt::format("once-{}-{}.gguf", folder.filename().string(), outtype);
  if (fs::exists(path)) return path;
  const fs::path temp = fmt::format("{}.{}", path.string(), ::getpid());
  const CommandResult result = run_mlx2gguf({"convert", folder.string(), "-o", temp.string(), "--outtype", outtype, "-q"});
  if (result.exit_code != 0) throw std::runtime_error(result.output);
  fs::rename(temp, path);
  return path;
}

void llama_quantize_of(const fs::path& folder, const std::string& outtype, const fs::path& path) {
  // llama_ftype numbers of the 16-bit types; the others are llama-quantize's mixes.
  int ftype = outtype == "f16" ? 1 : outtype == "bf16" ? 32 : -1;
  if (ftype < 0) {
    const mlx2gguf::QuantMix* mix = mlx2gguf::find_quant_mix(outtype);
    if (mix == nullptr) throw std::runtime_error("llama-quantize has no type " + outtype);
    ftype = static_cast<int>(mix->llama_ftype);
  }
  oracle::llama_quantize_file(converted_once(folder, "f32").string(), path.string(), ftype);
}

int64_t TensorBytes::elements() const {
  int64_t n = 1;
  for (const int64_t d : ne) n *= d;
  return n;
}

std::map<std::string, TensorBytes> tensors_in(const fs::path& gguf) {
  const auto file = mlx2gguf::GgufFile::read(gguf);
  const mlx2gguf::MappedFile mapped(gguf);
  std::map<std::string, TensorBytes> tensors;
  for (const auto& t : file.tensors) {
    const uint8_t* data = mapped.bytes().data() + file.data_start + t.offset;
    tensors[t.name] = {t.type, t.ne, std::vector<uint8_t>(data, data + t.size_bytes())};
  }
  return tensors;
}

std::string tensor_table_and_data(const fs::path& gguf) {
  const auto file = mlx2gguf::GgufFile::read(gguf);
  const mlx2gguf::MappedFile mapped(gguf);
  std::string out;
  for (const auto& t : file.tensors)
    out += fmt::format("{} {} {} {}\n", t.name, static_cast<int>(t.type), fmt::join(t.ne, "x"), t.offset);
  const auto bytes = mapped.bytes();
  return out.append(reinterpret_cast<const char*>(bytes.data()) + file.data_start, bytes.size() - file.data_start);
}

}  // namespace e2e
