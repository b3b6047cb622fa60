// The reference forward pass with an mlx-lm LoRA / DoRA adapter applied unfused (eval/adapter_terms.h):
//  * the ops against the adapter formulas of mlx-lm's modules, written out here in plain loops;
//  * the whole model against llama.cpp's logits of an independently made adapted model (fixture);
//  * unfused against the same model with the adapter merged in float32 (SourceModel::apply_adapter), on bf16 and
//    4-bit bases, for LoRA on linear layers, experts and a tied embedding, and DoRA on linear layers and an
//    embedding.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>

#include "e2e_support.h"
#include "eval/adapter_terms.h"
#include "eval/eval_test_support.h"
#include "eval/ops.h"
#include "eval/reference.h"
#include "gen/gen_test_support.h"
#include "gen/safetensors_writer.h"
#include "gen/tiny_model.h"
#include "read/adapter.h"
#include "read/source_model.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf {
namespace {

namespace fs = std::filesystem;
using gen::test_support::ScratchDir;

// Σ(got − want)² / Σ(want − its row mean)² over rows of `vocab` logits (the fixtures' measure).
double nmse(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab) {
  EXPECT_EQ(got.size(), want.size());
  double error = 0, energy = 0;
  for (size_t row = 0; row * vocab < want.size(); ++row) {
    double mean = 0;
    for (int64_t v = 0; v < vocab; ++v) mean += want[row * vocab + v];
    mean /= static_cast<double>(vocab);
    for (int64_t v = 0; v < vocab; ++v) {
      const double d = static_cast<double>(got[row * vocab + v]) - want[row * vocab + v];
      const double c = want[row * vocab + v] - mean;
      error += d * d;
      energy += c * c;
    }
  }
  return error / energy;
}

// ---- adapter folders written by the test -------------------------------------------------------------------------

// A factor as the test knows it: `values` are exactly what is stored (rounded to `dtype` when written).
struct Factor {
  std::vector<int64_t> shape;
  std::vector<float> values;
  DType dtype = DType::F32;
};

struct ModuleFactors {
  Factor a, b, m;  // m empty for LoRA
};
using AdapterFactors = std::map<std::string, ModuleFactors>;  // by module path

float round_to(float v, DType dtype) {
  if (dtype == DType::BF16) return bf16_to_f32(f32_to_bf16(v));
  if (dtype == DType::F16) return f16_to_f32(f32_to_f16(v));
  return v;
}

gen::GenTensor gen_tensor(const std::string& name, const Factor& f) {
  gen::GenTensor t;
  t.name = name;
  t.dtype = f.dtype;
  t.shape = f.shape;
  for (float v : f.values) {
    uint32_t bits = 0;
    int bytes = 4;
    if (f.dtype == DType::F32) bits = std::bit_cast<uint32_t>(v);
    else if (f.dtype == DType::BF16) bits = f32_to_bf16(v), bytes = 2;
    else bits = f32_to_f16(v), bytes = 2;
    for (int i = 0; i < bytes; ++i) t.data.push_back(static_cast<uint8_t>(bits >> (8 * i)));
  }
  return t;
}

// adapter_config.json (the keys mlx_lm.lora writes that matter) and adapters.safetensors.
void write_adapter(const fs::path& dir, const std::string& type, double scale, int rank,
                   const AdapterFactors& factors) {
  fs::create_directories(dir);
  const nlohmann::json config = {{"fine_tune_type", type},
                                 {"num_layers", -1},
                                 {"lora_parameters", {{"rank", rank}, {"dropout", 0.0}, {"scale", scale}}}};
  std::ofstream(dir / "adapter_config.json") << config.dump(4);
  std::vector<gen::GenTensor> tensors;
  for (const auto& [module, f] : factors) {
    if (!f.m.values.empty()) tensors.push_back(gen_tensor(module + ".m", f.m));
    tensors.push_back(gen_tensor(module + ".lora_a", f.a));
    tensors.push_back(gen_tensor(module + ".lora_b", f.b));
  }
  gen::write_safetensors(dir / "adapters.safetensors", tensors, nullptr);
}

class Random {
 public:
  explicit Random(uint32_t seed) : rng_(seed) {}
  Factor uniform(std::vector<int64_t> shape, double bound, DType dtype = DType::F32) {
    Factor f{std::move(shape), {}, dtype};
    int64_t n = 1;
    for (int64_t d : f.shape) n *= d;
    std::uniform_real_distribution<double> dist(-bound, bound);
    for (int64_t i = 0; i < n; ++i) f.values.push_back(round_to(static_cast<float>(dist(rng_)), dtype));
    return f;
  }
  double between(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng_); }

 private:
  std::mt19937 rng_;
};

bool is_embedding(const std::string& module) { return module.ends_with("embed_tokens"); }

// Factors with mlx-lm's shapes for every module, sized so that the update's RMS is about 0.2 × the base tensor's
// (lora_a ~ U(±1/sqrt(fan)) as mlx-lm draws it, lora_b uniform). DoRA magnitudes: the base row norms × U(0.8, 1.2).
AdapterFactors random_factors(const SourceModel& base, const std::vector<std::string>& modules, bool dora, int rank,
                              double scale, uint32_t seed, bool legacy_switch = false, DType dtype = DType::F32) {
  Random random(seed);
  AdapterFactors factors;
  for (const std::string& module : modules) {
    const SourceTensor& w = base.require(module + ".weight");
    const std::vector<float> values = ref::read_all(w);
    double ss = 0;
    for (float v : values) ss += static_cast<double>(v) * v;
    const double rms = std::sqrt(ss / static_cast<double>(values.size()));
    const auto& s = w.shape();
    ModuleFactors f;
    int64_t fan = 0;
    if (s.size() == 3) {  // [E, out, in]
      fan = s[2];
      const std::vector<int64_t> shape =
          legacy_switch ? std::vector<int64_t>{s[0] * rank, s[2]} : std::vector<int64_t>{s[0], rank, s[2]};
      f.a = random.uniform(shape, 1.0 / std::sqrt(static_cast<double>(fan)), dtype);
    } else if (is_embedding(module)) {  // [vocab, dims]
      fan = s[0];
      f.a = random.uniform({s[0], rank}, 1.0 / std::sqrt(static_cast<double>(fan)), dtype);
    } else {  // [out, in]
      fan = s[1];
      f.a = random.uniform({s[1], rank}, 1.0 / std::sqrt(static_cast<double>(fan)), dtype);
    }
    // Var(delta) = scale² · rank · (1 / (3 fan)) · (bound² / 3) = (0.2 rms)².
    const double bound = 0.2 * rms / (scale * std::sqrt(rank / (3.0 * fan))) * std::sqrt(3.0);
    if (s.size() == 3) f.b = random.uniform({s[0], s[1], rank}, bound, dtype);
    else if (is_embedding(module)) f.b = random.uniform({rank, s[1]}, bound, dtype);
    else f.b = random.uniform({rank, s[0]}, bound, dtype);
    if (dora) {
      const int64_t rows = w.row_count(), cols = w.row_length();
      f.m.shape = {rows};
      for (int64_t r = 0; r < rows; ++r) {
        double norm = 0;
        for (int64_t c = 0; c < cols; ++c) norm += static_cast<double>(values[r * cols + c]) * values[r * cols + c];
        f.m.values.push_back(static_cast<float>(std::sqrt(norm) * random.between(0.8, 1.2)));
      }
    }
    factors[module] = std::move(f);
  }
  return factors;
}

// Every module mlx-lm's LoRA wraps in the model (the weights of Linear, SwitchLinear and Embedding modules).
std::vector<std::string> adaptable_modules(const SourceModel& model, bool with_switch) {
  std::vector<std::string> modules;
  for (const auto& [name, tensor] : model.tensors()) {
    if (!name.ends_with(".weight") || name.find("norm") != std::string::npos) continue;
    if (tensor.shape().size() == 3 && !with_switch) continue;
    if (tensor.shape().size() == 2 || tensor.shape().size() == 3) modules.push_back(name.substr(0, name.size() - 7));
  }
  return modules;
}

std::vector<int32_t> probe_tokens(const SourceModel& model, int count) {
  const int64_t vocab = model.require("model.embed_tokens.weight").shape()[0];
  std::vector<int32_t> tokens;
  for (int i = 0; i < count; ++i) tokens.push_back(static_cast<int32_t>((i * 37 + 5) % vocab));
  return tokens;
}

// ---- the ops against mlx-lm's formulas ---------------------------------------------------------------------------

using eval_test::F32Tensor;
using eval_test::Filler;
using eval_test::HandModel;
using Mat = std::vector<std::vector<double>>;

constexpr int64_t kVocab = 11, kDims = 6, kOut = 5, kExperts = 3, kExpertOut = 4, kRank = 2, kTokens = 3;
constexpr double kScale = 1.7;
const char* const kEmbed = "model.embed_tokens";
const char* const kLinear = "model.layers.0.self_attn.q_proj";
const char* const kSwitch = "model.layers.0.mlp.switch_mlp.gate_proj";

struct HandCase {
  HandModel folder;
  std::map<std::string, F32Tensor> weights;
  AdapterFactors factors;
  ScratchDir scratch;
  std::unique_ptr<SourceModel> model;
  std::unique_ptr<Adapter> adapter;

  explicit HandCase(bool dora) {
    Filler fill(11);
    weights[std::string(kEmbed) + ".weight"] = fill.tensor({kVocab, kDims}, 1.0);
    weights[std::string(kLinear) + ".weight"] = fill.tensor({kOut, kDims}, 0.5);
    weights[std::string(kLinear) + ".bias"] = fill.tensor({kOut}, 0.5);
    weights[std::string(kSwitch) + ".weight"] = fill.tensor({kExperts, kExpertOut, kDims}, 0.5);
    folder.write({{"model_type", "llama"}}, weights);
    model = std::make_unique<SourceModel>(SourceModel::open(folder.dir()));
    Random random(5);
    factors[kEmbed] = {random.uniform({kVocab, kRank}, 0.6), random.uniform({kRank, kDims}, 0.6), {}};
    factors[kLinear] = {random.uniform({kDims, kRank}, 0.6), random.uniform({kRank, kOut}, 0.6), {}};
    if (dora) {
      factors[kEmbed].m = random.uniform({kVocab}, 3.0);
      factors[kLinear].m = random.uniform({kOut}, 3.0);
    } else {
      // Stored as before October 2025 ([E·r, in]): the same bytes as [E, r, in].
      factors[kSwitch] = {random.uniform({kExperts * kRank, kDims}, 0.6),
                          random.uniform({kExperts, kExpertOut, kRank}, 0.6), {}};
    }
    write_adapter(scratch / "adapter", dora ? "dora" : "lora", kScale, kRank, factors);
    adapter = Adapter::open({scratch / "adapter", std::nullopt}, *model);
  }

  double w(const std::string& name, int64_t i) const { return weights.at(name + ".weight").values.at(i); }
  double a(const std::string& module, int64_t i) const { return factors.at(module).a.values.at(i); }
  double b(const std::string& module, int64_t i) const { return factors.at(module).b.values.at(i); }
  double m(const std::string& module, int64_t i) const { return factors.at(module).m.values.at(i); }
};

ref::Activations inputs(int64_t cols, uint32_t seed) {
  Filler fill(seed);
  const F32Tensor t = fill.tensor({kTokens, cols}, 1.0);
  ref::Activations x(kTokens, cols);
  x.data() = t.values;
  return x;
}

void expect_close(const ref::Activations& got, const Mat& want, const char* what) {
  ASSERT_EQ(got.rows(), static_cast<int64_t>(want.size())) << what;
  for (int64_t t = 0; t < got.rows(); ++t) {
    ASSERT_EQ(got.cols(), static_cast<int64_t>(want[t].size())) << what;
    for (int64_t c = 0; c < got.cols(); ++c)
      EXPECT_NEAR(got.row(t)[c], want[t][c], 1e-5 * (1 + std::abs(want[t][c])))
          << what << " [" << t << "][" << c << "]";
  }
}

TEST(AdapterReferenceOps, LoraTermsFollowMlxLmFormulas) {
  HandCase hc(false);
  const ref::Activations x = inputs(kDims, 3);
  const std::vector<int32_t> tokens = {4, 0, 10};
  ref::AdapterScope scope(*hc.adapter);

  // LoRALinear: y = W x + bias + s·((x @ lora_a) @ lora_b), lora_a [in, r], lora_b [r, out].
  Mat want(kTokens, std::vector<double>(kOut));
  for (int64_t t = 0; t < kTokens; ++t) {
    std::vector<double> xa(kRank, 0.0);
    for (int64_t k = 0; k < kRank; ++k)
      for (int64_t i = 0; i < kDims; ++i) xa[k] += x.row(t)[i] * hc.a(kLinear, i * kRank + k);
    for (int64_t o = 0; o < kOut; ++o) {
      double y = hc.weights.at(std::string(kLinear) + ".bias").values[o];
      for (int64_t i = 0; i < kDims; ++i) y += hc.w(kLinear, o * kDims + i) * x.row(t)[i];
      for (int64_t k = 0; k < kRank; ++k) y += kScale * xa[k] * hc.b(kLinear, k * kOut + o);
      want[t][o] = y;
    }
  }
  const auto& bias = hc.weights.at(std::string(kLinear) + ".bias").values;
  expect_close(ref::linear(x, hc.model->require(std::string(kLinear) + ".weight"), bias.data()), want, "LoRALinear");

  // LoRASwitchLinear, expert e: y = W_e x + s·(lora_b[e] @ (lora_a[e] @ x)), lora_a [E, r, in], lora_b [E, out, r].
  const SourceTensor& sw = hc.model->require(std::string(kSwitch) + ".weight");
  Mat all(kTokens, std::vector<double>(kExperts * kExpertOut));
  for (int64_t e = 0; e < kExperts; ++e) {
    Mat expert(kTokens, std::vector<double>(kExpertOut));
    for (int64_t t = 0; t < kTokens; ++t) {
      std::vector<double> ax(kRank, 0.0);
      for (int64_t k = 0; k < kRank; ++k)
        for (int64_t i = 0; i < kDims; ++i) ax[k] += hc.a(kSwitch, (e * kRank + k) * kDims + i) * x.row(t)[i];
      for (int64_t o = 0; o < kExpertOut; ++o) {
        double y = 0;
        for (int64_t i = 0; i < kDims; ++i) y += hc.w(kSwitch, (e * kExpertOut + o) * kDims + i) * x.row(t)[i];
        for (int64_t k = 0; k < kRank; ++k) y += kScale * hc.b(kSwitch, (e * kExpertOut + o) * kRank + k) * ax[k];
        expert[t][o] = all[t][e * kExpertOut + o] = y;
      }
    }
    expect_close(ref::linear(x, sw, nullptr, e * kExpertOut, kExpertOut), expert, "LoRASwitchLinear expert");
  }
  expect_close(ref::linear(x, sw), all, "LoRASwitchLinear, rows of every expert");

  // LoRAEmbedding lookup: E[t] + s·(lora_a[t] @ lora_b), lora_a [vocab, r], lora_b [r, dims].
  const SourceTensor& table = hc.model->require(std::string(kEmbed) + ".weight");
  Mat looked(kTokens, std::vector<double>(kDims));
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t d = 0; d < kDims; ++d) {
      double y = hc.w(kEmbed, tokens[t] * kDims + d);
      for (int64_t k = 0; k < kRank; ++k)
        y += kScale * hc.a(kEmbed, tokens[t] * kRank + k) * hc.b(kEmbed, k * kDims + d);
      looked[t][d] = y;
    }
  expect_close(ref::embed(table, tokens), looked, "LoRAEmbedding lookup");

  // LoRAEmbedding.as_linear (tied head): x @ Eᵀ + s·((x @ lora_bᵀ) @ lora_aᵀ).
  Mat logits(kTokens, std::vector<double>(kVocab));
  for (int64_t t = 0; t < kTokens; ++t) {
    std::vector<double> xb(kRank, 0.0);
    for (int64_t k = 0; k < kRank; ++k)
      for (int64_t d = 0; d < kDims; ++d) xb[k] += x.row(t)[d] * hc.b(kEmbed, k * kDims + d);
    for (int64_t v = 0; v < kVocab; ++v) {
      double y = 0;
      for (int64_t d = 0; d < kDims; ++d) y += x.row(t)[d] * hc.w(kEmbed, v * kDims + d);
      for (int64_t k = 0; k < kRank; ++k) y += kScale * xb[k] * hc.a(kEmbed, v * kRank + k);
      logits[t][v] = y;
    }
  }
  expect_close(ref::linear(x, table), logits, "LoRAEmbedding.as_linear");
  EXPECT_NO_THROW(scope.check_all_applied());
}

TEST(AdapterReferenceOps, DoraTermsFollowMlxLmFormulas) {
  HandCase hc(true);
  const ref::Activations x = inputs(kDims, 4);
  const std::vector<int32_t> tokens = {7, 1, 7};
  ref::AdapterScope scope(*hc.adapter);

  // DoRALinear: (m / ‖W + s·lora_bᵀ·lora_aᵀ‖_row) ⊙ (W x + s·(x @ lora_a) @ lora_b), then + bias.
  const auto& bias = hc.weights.at(std::string(kLinear) + ".bias").values;
  Mat want(kTokens, std::vector<double>(kOut));
  for (int64_t o = 0; o < kOut; ++o) {
    double ss = 0;
    for (int64_t i = 0; i < kDims; ++i) {
      double v = hc.w(kLinear, o * kDims + i);
      for (int64_t k = 0; k < kRank; ++k) v += kScale * hc.b(kLinear, k * kOut + o) * hc.a(kLinear, i * kRank + k);
      ss += v * v;
    }
    const double factor = hc.m(kLinear, o) / std::sqrt(ss);
    for (int64_t t = 0; t < kTokens; ++t) {
      double y = 0;
      for (int64_t i = 0; i < kDims; ++i) y += hc.w(kLinear, o * kDims + i) * x.row(t)[i];
      for (int64_t k = 0; k < kRank; ++k) {
        double xa = 0;
        for (int64_t i = 0; i < kDims; ++i) xa += x.row(t)[i] * hc.a(kLinear, i * kRank + k);
        y += kScale * xa * hc.b(kLinear, k * kOut + o);
      }
      want[t][o] = factor * y + bias[o];
    }
  }
  expect_close(ref::linear(x, hc.model->require(std::string(kLinear) + ".weight"), bias.data()), want, "DoRALinear");

  // DoRAEmbedding: row v adapted Ea[v] = E[v] + s·lora_a[v] @ lora_b, rescaled by m[v] / ‖Ea[v]‖.
  Mat adapted(kVocab, std::vector<double>(kDims));
  std::vector<double> factor(kVocab);
  for (int64_t v = 0; v < kVocab; ++v) {
    double ss = 0;
    for (int64_t d = 0; d < kDims; ++d) {
      double e = hc.w(kEmbed, v * kDims + d);
      for (int64_t k = 0; k < kRank; ++k) e += kScale * hc.a(kEmbed, v * kRank + k) * hc.b(kEmbed, k * kDims + d);
      adapted[v][d] = e;
      ss += e * e;
    }
    factor[v] = hc.m(kEmbed, v) / std::sqrt(ss);
  }
  const SourceTensor& table = hc.model->require(std::string(kEmbed) + ".weight");
  Mat looked(kTokens, std::vector<double>(kDims));
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t d = 0; d < kDims; ++d) looked[t][d] = factor[tokens[t]] * adapted[tokens[t]][d];
  expect_close(ref::embed(table, tokens), looked, "DoRAEmbedding lookup");

  // as_linear: logits[v] = m[v]/‖Ea[v]‖ · (x·E[v] + s·(x @ lora_bᵀ) @ lora_a[v]ᵀ).
  Mat logits(kTokens, std::vector<double>(kVocab));
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t v = 0; v < kVocab; ++v) {
      double y = 0;
      for (int64_t d = 0; d < kDims; ++d) y += x.row(t)[d] * hc.w(kEmbed, v * kDims + d);
      for (int64_t k = 0; k < kRank; ++k) {
        double xb = 0;
        for (int64_t d = 0; d < kDims; ++d) xb += x.row(t)[d] * hc.b(kEmbed, k * kDims + d);
        y += kScale * xb * hc.a(kEmbed, v * kRank + k);
      }
      logits[t][v] = factor[v] * y;
    }
  expect_close(ref::linear(x, table), logits, "DoRAEmbedding.as_linear");
  EXPECT_NO_THROW(scope.check_all_applied());
}

TEST(AdapterReferenceOps, ModulesNoOpAppliedAreReported) {
  HandCase hc(false);
  ref::AdapterScope scope(*hc.adapter);
  ref::linear(inputs(kDims, 3), hc.model->require(std::string(kLinear) + ".weight"));
  try {
    scope.check_all_applied();
    FAIL() << "unapplied modules not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(kEmbed), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(kSwitch), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find(kLinear), std::string::npos) << e.what();
  }
}

// ---- the fixture: llama.cpp's logits of an independently made adapted model --------------------------------------

TEST(AdapterReference, MatchesLlamaCppOnIndependentLoraFixture) {
  const e2e::OracleFixture fixture = e2e::oracle_fixture("qwen35moe-4bit-lora");
  const SourceModel base = SourceModel::open(fixture.model);
  const auto adapter = Adapter::open({fixture.model / "adapters", std::nullopt}, base);
  ASSERT_EQ(adapter->type(), FineTuneType::Lora);
  ASSERT_EQ(adapter->modules().size(), 38u);  // 13 in each linear-attention layer 1, 2; 12 in full-attention layer 3

  const double with_adapter = e2e::fixture_nmse(reference_logits(base, fixture.tokens, adapter.get()), fixture.logits);
  const double without = e2e::fixture_nmse(reference_logits(base, fixture.tokens), fixture.logits);
  std::printf("[ NMSE     ] qwen35moe-4bit-lora fixture vs llama.cpp: unfused adapter %.3e, base only %.3e\n",
              with_adapter, without);
  EXPECT_LE(with_adapter, 1e-8);
  EXPECT_GT(without, 1e-2);
}

// ---- unfused against merged --------------------------------------------------------------------------------------

struct MergedCase {
  const char* name;
  const char* model_type;  // llama (tied, biases) or mixtral (experts, untied head)
  bool quantized;          // affine 4-bit g64 base, else bf16
  bool dora;
  bool legacy_switch = false;            // expert lora_a stored as [E·r, in]
  DType factor_dtype = DType::F32;
};

void PrintTo(const MergedCase& c, std::ostream* out) { *out << c.name; }

gen::TinyModelSpec merged_case_spec(const MergedCase& c) {
  gen::TinyModelSpec spec;
  spec.model_type = c.model_type;
  spec.hidden = 64;
  spec.layers = 2;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.intermediate = 128;
  if (spec.model_type == "llama") spec.tie_embeddings = spec.attention_bias = spec.mlp_bias = true;
  if (c.quantized) spec.quant = gen::QuantRecipe::parse("affine:4:64");
  spec.seed = 21;
  return spec;
}

class AdapterReferenceVsMerged : public ::testing::TestWithParam<MergedCase> {};

TEST_P(AdapterReferenceVsMerged, UnfusedMatchesFloat32Merge) {
  const MergedCase& c = GetParam();
  ScratchDir scratch;
  gen::write_tiny_model(merged_case_spec(c), scratch / "model");
  const SourceModel base = SourceModel::open(scratch / "model");
  const std::vector<std::string> modules = adaptable_modules(base, !c.dora);
  ASSERT_TRUE(std::find(modules.begin(), modules.end(), "model.embed_tokens") != modules.end());
  write_adapter(scratch / "adapter", c.dora ? "dora" : "lora", 4.0, 4,
                random_factors(base, modules, c.dora, 4, 4.0, 9, c.legacy_switch, c.factor_dtype));
  const auto adapter = Adapter::open({scratch / "adapter", std::nullopt}, base);
  ASSERT_EQ(adapter->modules().size(), modules.size());
  bool has_switch = false, has_embedding = false;
  for (const AdapterModule& m : adapter->modules()) {
    has_switch |= m.kind() == AdapterKind::Switch;
    has_embedding |= m.kind() == AdapterKind::Embedding;
  }
  EXPECT_EQ(has_switch, std::string(c.model_type) == "mixtral");
  EXPECT_TRUE(has_embedding);

  SourceModel merged = SourceModel::open(scratch / "model");
  merged.apply_adapter(*adapter, MergeRule::Float32);

  const std::vector<int32_t> tokens = probe_tokens(base, 12);
  const int64_t vocab = base.require("model.embed_tokens.weight").shape()[0];
  const std::vector<float> unfused = reference_logits(base, tokens, adapter.get());
  const std::vector<float> fused = reference_logits(merged, tokens);
  const std::vector<float> plain = reference_logits(base, tokens);
  const double agreement = nmse(unfused, fused, vocab);
  const double adapter_effect = nmse(plain, fused, vocab);
  std::printf("[ NMSE     ] %s: unfused vs float32 merge %.3e; base vs merge %.3e\n", c.name, agreement,
              adapter_effect);
  EXPECT_LE(agreement, 1e-10);
  EXPECT_GT(adapter_effect, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(
    AdapterReference, AdapterReferenceVsMerged,
    ::testing::Values(MergedCase{"LlamaTiedLoraBf16", "llama", false, false},
                      MergedCase{"LlamaTiedLoraQ4", "llama", true, false, false, DType::BF16},
                      MergedCase{"LlamaTiedDoraBf16", "llama", false, true},
                      MergedCase{"LlamaTiedDoraQ4", "llama", true, true, false, DType::F16},
                      MergedCase{"MixtralLoraBf16", "mixtral", false, false},
                      MergedCase{"MixtralLoraQ4LegacySwitchShape", "mixtral", true, false, true}),
    [](const ::testing::TestParamInfo<MergedCase>& info) { return std::string(info.param.name); });

// A transposed update (W + Δᵀ instead of W + Δ on the square projections) is far from the merged model: the
// agreement above cannot come from a comparison too weak to see the orientation.
TEST(AdapterReference, TransposedUpdateIsCaught) {
  ScratchDir scratch;
  const MergedCase c{"LlamaTiedLoraBf16", "llama", false, false};
  gen::write_tiny_model(merged_case_spec(c), scratch / "model");
  const SourceModel base = SourceModel::open(scratch / "model");
  const std::vector<std::string> modules = adaptable_modules(base, true);
  const AdapterFactors right = random_factors(base, modules, false, 4, 4.0, 9);
  AdapterFactors transposed = right;
  int swapped = 0;
  for (auto& [module, f] : transposed) {
    const auto& s = base.require(module + ".weight").shape();
    if (is_embedding(module) || s[0] != s[1]) continue;
    // lora_a' = lora_bᵀ [in, r], lora_b' = lora_aᵀ [r, out]: s·(lora_a' @ lora_b')ᵀ = Δᵀ.
    const int64_t n = s[0], r = 4;
    Factor a{{n, r}, std::vector<float>(n * r)}, b{{r, n}, std::vector<float>(n * r)};
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < r; ++k) {
        a.values[i * r + k] = f.b.values[k * n + i];
        b.values[k * n + i] = f.a.values[i * r + k];
      }
    f.a = a, f.b = b;
    ++swapped;
  }
  ASSERT_GE(swapped, 4);  // q_proj and o_proj of both layers
  write_adapter(scratch / "right", "lora", 4.0, 4, right);
  write_adapter(scratch / "transposed", "lora", 4.0, 4, transposed);
  const auto right_adapter = Adapter::open({scratch / "right", std::nullopt}, base);
  const auto transposed_adapter = Adapter::open({scratch / "transposed", std::nullopt}, base);
  SourceModel merged = SourceModel::open(scratch / "model");
  merged.apply_adapter(*right_adapter, MergeRule::Float32);

  const std::vector<int32_t> tokens = probe_tokens(base, 12);
  const int64_t vocab = base.require("model.embed_tokens.weight").shape()[0];
  const std::vector<float> fused = reference_logits(merged, tokens);
  const double right_error = nmse(reference_logits(base, tokens, right_adapter.get()), fused, vocab);
  const double transposed_error = nmse(reference_logits(base, tokens, transposed_adapter.get()), fused, vocab);
  std::printf("[ NMSE     ] vs float32 merge: unfused %.3e, unfused with the update transposed %.3e\n", right_error,
              transposed_error);
  EXPECT_LE(right_error, 1e-10);
  EXPECT_GT(transposed_error, 1e-4);
}

// ---- refusals -----------------------------------------------------------------------------------------------------

TEST(AdapterReference, RefusesAnAdapterOnAModelThatAlreadyMergedIt) {
  ScratchDir scratch;
  gen::write_tiny_model(merged_case_spec({"", "llama", false, false}), scratch / "model");
  SourceModel model = SourceModel::open(scratch / "model");
  write_adapter(scratch / "adapter", "lora", 4.0, 4,
                random_factors(model, {"model.layers.0.self_attn.q_proj"}, false, 4, 4.0, 3));
  const auto adapter = Adapter::open({scratch / "adapter", std::nullopt}, model);
  const std::vector<int32_t> tokens = probe_tokens(model, 4);
  EXPECT_NO_THROW(reference_logits(model, tokens, adapter.get()));
  model.apply_adapter(*adapter, MergeRule::Float32);
  try {
    reference_logits(model, tokens, adapter.get());
    FAIL() << "an adapter applied twice was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already has an adapter merged"), std::string::npos) << e.what();
  }
}

TEST(AdapterReference, RefusesFullFineTunes) {
  ScratchDir scratch;
  gen::write_tiny_model(merged_case_spec({"", "llama", false, false}), scratch / "model");
  const SourceModel model = SourceModel::open(scratch / "model");
  const std::string name = "model.layers.1.self_attn.q_proj.weight";
  const SourceTensor& q = model.require(name);
  Factor replacement{q.shape(), ref::read_all(q)};
  fs::create_directories(scratch / "full");
  std::ofstream(scratch / "full" / "adapter_config.json")
      << nlohmann::json{{"fine_tune_type", "full"}, {"num_layers", 1}, {"lora_parameters", nullptr}}.dump(4);
  gen::write_safetensors(scratch / "full" / "adapters.safetensors", {gen_tensor(name, replacement)}, nullptr);
  const auto adapter = Adapter::open({scratch / "full", std::nullopt}, model);
  ASSERT_EQ(adapter->type(), FineTuneType::Full);
  try {
    reference_logits(model, probe_tokens(model, 4), adapter.get());
    FAIL() << "a full fine-tune was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("apply_adapter"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mlx2gguf
