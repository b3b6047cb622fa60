// Proves the test oracles are real and usable: ggml's GGUF parser and quantizers, llama.cpp loading, tokenizing,
// evaluating and quantizing models, and Hugging Face tokenizers. GGUF files are assembled byte by byte here so
// these tests depend on nothing else in the project.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ggml.h"
#include "gguf.h"
#include "llama_oracle.h"

namespace {

namespace fs = std::filesystem;

// --- a minimal GGUF v3 writer ---

constexpr uint32_t kGgufUint32 = 4, kGgufInt32 = 5, kGgufFloat32 = 6, kGgufBool = 7, kGgufString = 8,
                   kGgufArray = 9;
constexpr uint64_t kAlignment = 32;  // GGUF's default alignment

class GgufBuilder {
 public:
  void u32(const std::string& key, uint32_t value) { put_key(key, kGgufUint32); put(value); }
  void f32(const std::string& key, float value) { put_key(key, kGgufFloat32); put(value); }
  void boolean(const std::string& key, bool value) { put_key(key, kGgufBool); put(static_cast<uint8_t>(value)); }
  void str(const std::string& key, const std::string& value) { put_key(key, kGgufString); put_string(kv_, value); }
  void str_array(const std::string& key, const std::vector<std::string>& values) {
    put_key(key, kGgufArray);
    put(kGgufString);
    put(static_cast<uint64_t>(values.size()));
    for (const std::string& value : values) put_string(kv_, value);
  }
  void i32_array(const std::string& key, const std::vector<int32_t>& values) {
    put_key(key, kGgufArray);
    put(kGgufInt32);
    put(static_cast<uint64_t>(values.size()));
    for (int32_t value : values) put(value);
  }
  // ne[0] is the contiguous dimension.
  void f32_tensor(const std::string& name, std::vector<uint64_t> ne, const std::vector<float>& values) {
    std::string data(values.size() * sizeof(float), '\0');
    std::memcpy(data.data(), values.data(), data.size());
    tensors_.push_back({name, std::move(ne), std::move(data)});
  }

  std::string bytes() const {
    std::string out = "GGUF";
    append(out, uint32_t{3});
    append(out, static_cast<uint64_t>(tensors_.size()));
    append(out, n_kv_);
    out += kv_;
    uint64_t offset = 0;
    for (const Tensor& tensor : tensors_) {
      put_string(out, tensor.name);
      append(out, static_cast<uint32_t>(tensor.ne.size()));
      for (uint64_t n : tensor.ne) append(out, n);
      append(out, uint32_t{0});  // GGML_TYPE_F32
      append(out, offset);
      offset += padded(tensor.data.size());
    }
    out.resize(padded(out.size()), '\0');
    for (const Tensor& tensor : tensors_) {
      out += tensor.data;
      out.resize(padded(out.size()), '\0');
    }
    return out;
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    std::string data;
  };
  static uint64_t padded(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }
  template <typename T>
  static void append(std::string& out, T value) {
    out.append(reinterpret_cast<const char*>(&value), sizeof value);
  }
  static void put_string(std::string& out, const std::string& s) {
    append(out, static_cast<uint64_t>(s.size()));
    out += s;
  }
  template <typename T>
  void put(T value) { append(kv_, value); }
  void put_key(const std::string& key, uint32_t type) {
    put_string(kv_, key);
    put(type);
    ++n_kv_;
  }

  std::string kv_;
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "llama_oracle_test-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// --- a tiny llama model whose output can be computed by hand ---

// GPT-2's byte-level alphabet: byte b is shown as itself when printable, else as code point 256 + k.
std::vector<std::string> byte_level_tokens() {
  auto utf8 = [](uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  std::vector<std::string> tokens;
  uint32_t next_unprintable = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    tokens.push_back(utf8(printable ? b : next_unprintable++));
  }
  return tokens;
}

struct TinyLlama {
  static constexpr int kEmbd = 64, kHeads = 4, kFf = 128, kVocab = 256;
  static constexpr float kEps = 1e-5f;
  // Matrices are row-major [out][in], exactly as GGUF stores a tensor with ne = {in, out}.
  std::vector<float> token_embd, attn_norm, wq, wk, wv, wo, ffn_norm, ffn_gate, ffn_up, ffn_down, output_norm, output;

  TinyLlama() {
    std::mt19937 rng(1234);
    auto random = [&](size_t n, float lo, float hi) {
      std::uniform_real_distribution<float> dist(lo, hi);
      std::vector<float> v(n);
      for (float& x : v) x = dist(rng);
      return v;
    };
    const float e = 1.0f / std::sqrt(float(kEmbd)), f = 1.0f / std::sqrt(float(kFf));
    token_embd = random(size_t(kVocab) * kEmbd, -1, 1);
    attn_norm = random(kEmbd, 0.5f, 1.5f);
    wq = random(size_t(kEmbd) * kEmbd, -e, e);
    wk = random(size_t(kEmbd) * kEmbd, -e, e);
    wv = random(size_t(kEmbd) * kEmbd, -e, e);
    wo = random(size_t(kEmbd) * kEmbd, -e, e);
    ffn_norm = random(kEmbd, 0.5f, 1.5f);
    ffn_gate = random(size_t(kFf) * kEmbd, -e, e);
    ffn_up = random(size_t(kFf) * kEmbd, -e, e);
    ffn_down = random(size_t(kEmbd) * kFf, -f, f);
    output_norm = random(kEmbd, 0.5f, 1.5f);
    output = random(size_t(kVocab) * kEmbd, -2 * e, 2 * e);
  }

  std::string gguf() const {
    GgufBuilder g;
    g.str("general.architecture", "llama");
    g.u32("llama.context_length", 128);
    g.u32("llama.embedding_length", kEmbd);
    g.u32("llama.block_count", 1);
    g.u32("llama.feed_forward_length", kFf);
    g.u32("llama.attention.head_count", kHeads);
    g.u32("llama.attention.head_count_kv", kHeads);
    g.f32("llama.attention.layer_norm_rms_epsilon", kEps);
    g.str("tokenizer.ggml.model", "gpt2");
    g.str("tokenizer.ggml.pre", "default");
    g.str_array("tokenizer.ggml.tokens", byte_level_tokens());
    g.i32_array("tokenizer.ggml.token_type", std::vector<int32_t>(kVocab, 1));
    g.str_array("tokenizer.ggml.merges", {});
    g.u32("tokenizer.ggml.bos_token_id", 'B');
    g.u32("tokenizer.ggml.eos_token_id", 'E');
    g.boolean("tokenizer.ggml.add_bos_token", false);
    const uint64_t e = kEmbd, v = kVocab, ff = kFf;
    g.f32_tensor("token_embd.weight", {e, v}, token_embd);
    g.f32_tensor("blk.0.attn_norm.weight", {e}, attn_norm);
    g.f32_tensor("blk.0.attn_q.weight", {e, e}, wq);
    g.f32_tensor("blk.0.attn_k.weight", {e, e}, wk);
    g.f32_tensor("blk.0.attn_v.weight", {e, e}, wv);
    g.f32_tensor("blk.0.attn_output.weight", {e, e}, wo);
    g.f32_tensor("blk.0.ffn_norm.weight", {e}, ffn_norm);
    g.f32_tensor("blk.0.ffn_gate.weight", {e, ff}, ffn_gate);
    g.f32_tensor("blk.0.ffn_up.weight", {e, ff}, ffn_up);
    g.f32_tensor("blk.0.ffn_down.weight", {ff, e}, ffn_down);
    g.f32_tensor("output_norm.weight", {e}, output_norm);
    g.f32_tensor("output.weight", {e, v}, output);
    return g.bytes();
  }

  // Logits of the FIRST position of a sequence. There, attention sees only the token itself, so the softmax
  // is 1 and the attention output is just its value vector: no RoPE, no scores, all plain algebra.
  std::vector<double> first_position_logits(int token) const {
    auto matvec = [](const std::vector<float>& m, const std::vector<double>& x, size_t out) {
      std::vector<double> y(out, 0.0);
      for (size_t o = 0; o < out; ++o)
        for (size_t i = 0; i < x.size(); ++i) y[o] += double(m[o * x.size() + i]) * x[i];
      return y;
    };
    auto rms_norm = [](const std::vector<double>& x, const std::vector<float>& weight) {
      double sum = 0;
      for (double v : x) sum += v * v;
      const double scale = 1.0 / std::sqrt(sum / double(x.size()) + kEps);
      std::vector<double> y(x.size());
      for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * weight[i];
      return y;
    };
    std::vector<double> x(token_embd.begin() + size_t(token) * kEmbd, token_embd.begin() + size_t(token + 1) * kEmbd);
    const std::vector<double> attn = matvec(wo, matvec(wv, rms_norm(x, attn_norm), kEmbd), kEmbd);
    for (int i = 0; i < kEmbd; ++i) x[i] += attn[i];
    const std::vector<double> n2 = rms_norm(x, ffn_norm);
    const std::vector<double> gate = matvec(ffn_gate, n2, kFf), up = matvec(ffn_up, n2, kFf);
    std::vector<double> act(kFf);
    for (int i = 0; i < kFf; ++i) act[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];  // SiLU(gate) * up
    const std::vector<double> down = matvec(ffn_down, act, kEmbd);
    for (int i = 0; i < kEmbd; ++i) x[i] += down[i];
    return matvec(output, rms_norm(x, output_norm), kVocab);
  }
};

double max_abs_diff(const float* a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t i = 0; i < b.size(); ++i) worst = std::max(worst, std::abs(double(a[i]) - b[i]));
  return worst;
}

double max_abs(const std::vector<double>& v) {
  double worst = 0;
  for (double x : v) worst = std::max(worst, std::abs(x));
  return worst;
}

// --- a vocabulary-only GGUF made from a real Hugging Face tokenizer (Llama 3) ---

std::string llama3_vocab_gguf() {
  const fs::path dir = oracle::real_tokenizer_dir("llama3");
  const nlohmann::json tokenizer = read_json(dir / "tokenizer.json");
  const nlohmann::json config = read_json(dir / "tokenizer_config.json");
  std::map<int, std::pair<std::string, int32_t>> by_id;  // id -> (text, llama token type)
  for (const auto& [text, id] : tokenizer["model"]["vocab"].items()) by_id[id.get<int>()] = {text, 1};
  for (const auto& added : tokenizer["added_tokens"]) {
    by_id[added["id"].get<int>()] = {added["content"].get<std::string>(), added["special"].get<bool>() ? 3 : 4};
  }
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (const auto& [id, entry] : by_id) {
    if (id != static_cast<int>(tokens.size())) throw std::runtime_error("token ids are not contiguous");
    tokens.push_back(entry.first);
    types.push_back(entry.second);
  }
  std::vector<std::string> merges;
  for (const auto& merge : tokenizer["model"]["merges"]) {
    merges.push_back(merge.is_string() ? merge.get<std::string>()
                                       : merge[0].get<std::string>() + " " + merge[1].get<std::string>());
  }
  GgufBuilder g;
  g.str("general.architecture", "llama");
  g.str("general.name", "llama3 vocabulary");
  g.str("tokenizer.ggml.model", "gpt2");
  g.str("tokenizer.ggml.pre", "llama-bpe");
  g.str_array("tokenizer.ggml.tokens", tokens);
  g.i32_array("tokenizer.ggml.token_type", types);
  g.str_array("tokenizer.ggml.merges", merges);
  g.u32("tokenizer.ggml.bos_token_id", 128000);
  g.u32("tokenizer.ggml.eos_token_id", 128001);
  g.boolean("tokenizer.ggml.add_bos_token", true);
  g.str("tokenizer.chat_template", config["chat_template"].get<std::string>());
  return g.bytes();
}

// ============================================================================================================

TEST(LlamaOracle, CpuBackendIsLoaded) {
  const std::string backend = oracle::cpu_backend_name();
  EXPECT_EQ(backend.rfind("libggml-cpu-", 0), 0u) << "loaded: '" << backend << "'";
  std::cout << "[ oracle   ] llama.cpp CPU backend: " << backend << "\n";
}

TEST(LlamaOracle, GgufCheckAcceptsAValidFile) {
  TempDir dir;
  GgufBuilder g;
  g.str("general.architecture", "llama");
  g.u32("answer", 42);
  g.f32_tensor("a", {8, 2}, std::vector<float>(16, 1.5f));
  g.f32_tensor("b", {3}, {1, 2, 3});  // 12 bytes: the next data must be padded
  g.f32_tensor("c", {4}, {4, 5, 6, 7});
  write_file(dir / "ok.gguf", g.bytes());
  EXPECT_EQ(oracle::gguf_check_file((dir / "ok.gguf").string()), "");
}

TEST(LlamaOracle, GgufCheckRejectsBrokenFilesWithAReason) {
  TempDir dir;
  GgufBuilder g;
  g.str("general.architecture", "llama");
  g.f32_tensor("a", {8, 2}, std::vector<float>(16, 1.5f));
  const std::string good = g.bytes();

  write_file(dir / "truncated.gguf", good.substr(0, good.size() - 4));
  const std::string truncated = oracle::gguf_check_file((dir / "truncated.gguf").string());
  EXPECT_NE(truncated, "");

  std::string bad_magic = good;
  bad_magic[0] = 'X';
  write_file(dir / "magic.gguf", bad_magic);
  EXPECT_NE(oracle::gguf_check_file((dir / "magic.gguf").string()), "");

  // Offset 24 is the first key's length: claiming a huge key makes the metadata unreadable.
  std::string bad_key = good;
  bad_key[24 + 7] = 0x7f;
  write_file(dir / "key.gguf", bad_key);
  EXPECT_NE(oracle::gguf_check_file((dir / "key.gguf").string()), "");

  EXPECT_NE(oracle::gguf_check_file((dir / "missing.gguf").string()), "");
  std::cout << "[ oracle   ] truncated file: " << truncated << "\n";
}

TEST(LlamaOracle, Q8_0RoundTripFollowsTheBlockFormat) {
  // Row 0: integers with block maximum 127, so the scale is exactly 1 and every value survives exactly.
  // Row 1: arbitrary values, within half a quantization step (plus the scale's f16 rounding).
  constexpr int64_t kRow = 64;
  std::vector<float> data(2 * kRow);
  for (int64_t i = 0; i < kRow; ++i) data[i] = static_cast<float>((i * 37) % 255 - 127);
  data[0] = 127, data[32] = -127;
  for (int64_t i = 0; i < kRow; ++i) data[kRow + i] = 3.0f * std::sin(0.7f * float(i)) + 0.01f * float(i);

  const std::vector<uint8_t> q = oracle::ggml_quantize(GGML_TYPE_Q8_0, data.data(), 2, kRow);
  ASSERT_EQ(q.size(), 4u * 34u);  // 4 blocks of (f16 scale + 32 int8)
  EXPECT_EQ(q[0] | (q[1] << 8), 0x3C00) << "f16 scale of the first block should be 1.0";
  for (int i = 0; i < 32; ++i) EXPECT_EQ(static_cast<int8_t>(q[2 + i]), static_cast<int>(data[i])) << i;

  const std::vector<float> back = oracle::ggml_dequantize(GGML_TYPE_Q8_0, q.data(), 2 * kRow);
  ASSERT_EQ(back.size(), data.size());
  for (int64_t i = 0; i < kRow; ++i) EXPECT_EQ(back[i], data[i]) << i;
  for (int64_t block = 2; block < 4; ++block) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(data[block * 32 + i]));
    const float step = amax / 127.0f;
    for (int i = 0; i < 32; ++i) {
      const int64_t k = block * 32 + i;
      EXPECT_LE(std::abs(back[k] - data[k]), 0.57f * step) << k;
    }
  }
}

TEST(LlamaOracle, QuantizeRejectsWhatGgmlWouldAbortOn) {
  std::vector<float> data(256, 1.0f);
  EXPECT_THROW(oracle::ggml_quantize(GGML_TYPE_Q8_0, data.data(), 1, 30), std::invalid_argument);
  EXPECT_THROW(oracle::ggml_quantize(GGML_TYPE_Q8_K, data.data(), 1, 256), std::invalid_argument);
  EXPECT_THROW(oracle::ggml_quantize(GGML_TYPE_IQ2_XXS, data.data(), 1, 256), std::invalid_argument);
  EXPECT_THROW(oracle::ggml_quantize(4, data.data(), 1, 256), std::invalid_argument);  // removed Q4_2
  EXPECT_THROW(oracle::ggml_dequantize(GGML_TYPE_Q4_K, nullptr, 100), std::invalid_argument);
  // Types with an importance matrix and K-quants work end to end.
  std::vector<float> imatrix(256, 1.0f);
  EXPECT_EQ(oracle::ggml_quantize(GGML_TYPE_IQ2_XXS, data.data(), 1, 256, imatrix.data()).size(),
            ggml_row_size(GGML_TYPE_IQ2_XXS, 256));
  const std::vector<uint8_t> q4k = oracle::ggml_quantize(GGML_TYPE_Q4_K, data.data(), 1, 256);
  for (float v : oracle::ggml_dequantize(GGML_TYPE_Q4_K, q4k.data(), 256)) EXPECT_NEAR(v, 1.0f, 1e-2f);
}

TEST(LlamaOracle, RealTokenizerFoldersAreInstalled) {
  for (const char* name : {"llama3", "llama2", "qwen3"}) {
    const fs::path dir = oracle::real_tokenizer_dir(name);
    EXPECT_TRUE(fs::is_regular_file(dir / "tokenizer.json")) << dir;
    EXPECT_TRUE(fs::is_regular_file(dir / "tokenizer_config.json")) << dir;
  }
  EXPECT_THROW(oracle::real_tokenizer_dir("gpt5"), std::invalid_argument);
}

TEST(LlamaOracle, HfTokenizeGivesKnownIds) {
  const std::string llama3 = oracle::real_tokenizer_dir("llama3") + "/tokenizer.json";
  const auto ids = oracle::hf_tokenize(llama3, {"Hello world", "", "Hello\nworld 🙂 é"}, false);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], (std::vector<int32_t>{9906, 1917}));
  EXPECT_TRUE(ids[1].empty());
  EXPECT_GE(ids[2].size(), 5u);
  EXPECT_EQ(ids[2][0], 9906);

  // This tokenizer.json's post-processor adds nothing: HF does not prepend <|begin_of_text|> for it.
  EXPECT_EQ(oracle::hf_tokenize(llama3, {"Hello world"}, true)[0], (std::vector<int32_t>{9906, 1917}));
  // Whereas the "llama2" package (a 32000-token SentencePiece BPE vocabulary) prepends <s> = 1.
  const std::string llama2 = oracle::real_tokenizer_dir("llama2") + "/tokenizer.json";
  const auto with_bos = oracle::hf_tokenize(llama2, {"Hello world"}, true)[0];
  const auto without_bos = oracle::hf_tokenize(llama2, {"Hello world"}, false)[0];
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], 1);
  EXPECT_EQ(std::vector<int32_t>(with_bos.begin() + 1, with_bos.end()), without_bos);
  const std::string qwen3 = oracle::real_tokenizer_dir("qwen3") + "/tokenizer.json";
  EXPECT_EQ(oracle::hf_tokenize(qwen3, {"Hello world"}, false)[0], (std::vector<int32_t>{9707, 1879}));

  EXPECT_THROW(oracle::hf_tokenize("/nonexistent/tokenizer.json", {"x"}, false), std::runtime_error);
}

TEST(LlamaOracle, LoadFailureCarriesLlamaCppReason) {
  TempDir dir;
  write_file(dir / "junk.gguf", std::string(64, 'x'));
  try {
    oracle::LlamaModel::load((dir / "junk.gguf").string(), true);
    FAIL() << "llama.cpp accepted a junk file";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("junk.gguf"), std::string::npos) << what;
    EXPECT_EQ(what.find("no reason given"), std::string::npos) << what;
    std::cout << "[ oracle   ] " << what << "\n";
  }
}

TEST(LlamaOracle, VocabOnlyLlama3AgreesWithHfTokenizers) {
  TempDir dir;
  const fs::path path = dir / "llama3-vocab.gguf";
  write_file(path, llama3_vocab_gguf());
  const auto model = oracle::LlamaModel::load(path.string(), /*vocab_only=*/true);
  EXPECT_EQ(model->n_vocab(), 128256);
  EXPECT_EQ(model->meta("general.architecture"), "llama");
  EXPECT_EQ(model->meta("no.such.key"), "");
  EXPECT_EQ(model->token_bos(), 128000);
  EXPECT_EQ(model->token_eos(), 128001);
  EXPECT_TRUE(model->is_eog(128001));
  EXPECT_TRUE(model->is_eog(128009));  // <|eot_id|>, recognised by its text
  EXPECT_FALSE(model->is_eog(9906));
  EXPECT_THROW(model->logits({9906}), std::logic_error);

  EXPECT_EQ(model->tokenize("Hello world", true, false), (std::vector<int32_t>{128000, 9906, 1917}));
  EXPECT_EQ(model->tokenize("<|eot_id|>", false, true), (std::vector<int32_t>{128009}));
  EXPECT_EQ(model->token_to_piece(1917, false), " world");
  EXPECT_EQ(model->token_to_piece(128009, true), "<|eot_id|>");
  EXPECT_EQ(model->token_to_piece(128009, false), "");

  const std::vector<std::string> texts = {
      "Hello world", "  leading spaces and trailing  ", "line one\nline two\r\n\ttabbed",
      "numbers 1234567 3.14159", "emoji 🙂👍🏽 and CJK 你好世界", "Ünïcödé façade naïve", "it's we'll they'd",
      "```cpp\nint main() { return 0; }\n```"};
  const auto expected = oracle::hf_tokenize(oracle::real_tokenizer_dir("llama3") + "/tokenizer.json", texts, false);
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<int32_t> ids = model->tokenize(texts[i], false, false);
    EXPECT_EQ(ids, expected[i]) << texts[i];
    EXPECT_EQ(model->detokenize(ids, false), texts[i]);
  }

  const std::string prompt = model->apply_chat_template({{"system", "Be brief."}, {"user", "Hi"}}, true);
  EXPECT_EQ(prompt,
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(LlamaOracle, TinyModelLogitsMatchAHandComputedForwardPass) {
  TempDir dir;
  const TinyLlama tiny;
  const fs::path path = dir / "tiny.gguf";
  write_file(path, tiny.gguf());
  ASSERT_EQ(oracle::gguf_check_file(path.string()), "");
  const auto model = oracle::LlamaModel::load(path.string());
  ASSERT_EQ(model->n_vocab(), TinyLlama::kVocab);
  EXPECT_EQ(model->tokenize("Hi!", false, false), (std::vector<int32_t>{'H', 'i', '!'}));

  const std::vector<int32_t> tokens = {'H', 'i', '!', ' '};
  const std::vector<float> logits = model->logits(tokens);
  ASSERT_EQ(logits.size(), tokens.size() * TinyLlama::kVocab);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));

  const std::vector<double> expected = tiny.first_position_logits('H');
  const double diff = max_abs_diff(logits.data(), expected);
  // Tolerance covers the f16 KV cache; a wrong layout or a wrong op would be off by the logits' own size.
  EXPECT_LE(diff, 1e-2 * max_abs(expected)) << "max |logit| " << max_abs(expected);
  std::cout << "[ oracle   ] first-position logits: max |llama.cpp - reference| = " << diff << " (max |logit| "
            << max_abs(expected) << ")\n";

  // Causal: position 0 does not depend on what follows; later positions do see earlier tokens.
  const std::vector<float> alone = model->logits({'H'});
  EXPECT_LE(max_abs_diff(alone.data(), expected), 1e-2 * max_abs(expected));
  const std::vector<float> again = model->logits(tokens);
  EXPECT_EQ(again, logits) << "evaluation is not deterministic";
  const std::vector<float> alone_i = model->logits({'i'});
  double differs = 0;
  for (int i = 0; i < TinyLlama::kVocab; ++i) {
    differs = std::max(differs, double(std::abs(alone_i[i] - logits[TinyLlama::kVocab + i])));
  }
  EXPECT_GT(differs, 1e-3) << "position 1 ignores position 0";
}

TEST(LlamaOracle, QuantizeFileProducesQ8_0ThatStillRuns) {
  TempDir dir;
  const TinyLlama tiny;
  const fs::path f32 = dir / "tiny-f32.gguf", q8 = dir / "tiny-q8_0.gguf";
  write_file(f32, tiny.gguf());
  oracle::llama_quantize_file(f32.string(), q8.string(), /*LLAMA_FTYPE_MOSTLY_Q8_0=*/7);
  ASSERT_EQ(oracle::gguf_check_file(q8.string()), "");

  gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
  gguf_context* gguf = gguf_init_from_file(q8.c_str(), params);
  ASSERT_NE(gguf, nullptr);
  const int64_t ffn_down = gguf_find_tensor(gguf, "blk.0.ffn_down.weight");
  const int64_t norm = gguf_find_tensor(gguf, "blk.0.ffn_norm.weight");
  ASSERT_GE(ffn_down, 0);
  ASSERT_GE(norm, 0);
  EXPECT_EQ(gguf_get_tensor_type(gguf, ffn_down), GGML_TYPE_Q8_0);
  EXPECT_EQ(gguf_get_tensor_type(gguf, norm), GGML_TYPE_F32);  // 1-D tensors stay F32
  gguf_free(gguf);

  const std::vector<double> expected = tiny.first_position_logits('H');
  const std::vector<float> logits = oracle::LlamaModel::load(q8.string())->logits({'H'});
  const double diff = max_abs_diff(logits.data(), expected);
  EXPECT_GT(diff, 0.0) << "quantization left the model unchanged";
  EXPECT_LE(diff, 5e-2 * max_abs(expected));

  EXPECT_THROW(oracle::llama_quantize_file((dir / "missing.gguf").string(), (dir / "out.gguf").string(), 7),
               std::runtime_error);
}

}  // namespace
