// The Phi-3 reference forward pass: its rotary embeddings written out from mlx-lm's formulas (SuScaledRoPE with long
// or short factors and its input scale, partial rotary, linear), and a one-token forward pass recomputed here from the
// float weights, which pins down how the fused qkv_proj and gate_up_proj rows split.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "arch/phi3/reference.h"
#include "eval/reference.h"
#include "gen/tiny_model.h"
#include "read/source_model.h"
#include "read/test_support.h"

namespace mlx2gguf::ref {
namespace {

nlohmann::json longrope_config() {
  return {{"rope_theta", 10000.0},
          {"partial_rotary_factor", 0.5},
          {"max_position_embeddings", 1024},
          {"original_max_position_embeddings", 64},
          {"rope_scaling", {{"type", "longrope"}, {"long_factor", {2.0, 4.0, 8.0, 16.0}}, {"short_factor", {1.0, 1.1, 1.2, 1.3}}}}};
}

TEST(Phi3Rope, SuScaledRopeDividesByTheLongFactorsAndScalesByTheContextRatio) {
  const Phi3Rope r = phi3_rope(longrope_config(), 16);
  EXPECT_EQ(r.rope.dims, 8);  // int(16 · 0.5)
  EXPECT_FALSE(r.rope.traditional);
  const double factors[] = {2.0, 4.0, 8.0, 16.0};
  ASSERT_EQ(r.rope.inv_freq.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(r.rope.inv_freq[i], 1.0 / (factors[i] * std::pow(10000.0, 2.0 * i / 8.0)));
  // s = 1024 / 64 = 16: sqrt(1 + ln 16 / ln 64) = sqrt(1 + 4/6).
  EXPECT_NEAR(r.input_scale, std::sqrt(1.0 + 4.0 / 6.0), 1e-15);
}

TEST(Phi3Rope, ShortFactorsAreAvailableForTheHuggingFaceReadingOfShortSequences) {
  const Phi3Rope r = phi3_rope(longrope_config(), 16, LongRopeFactors::Short);
  EXPECT_DOUBLE_EQ(r.rope.inv_freq[3], 1.0 / (1.3 * std::pow(10000.0, 6.0 / 8.0)));
  EXPECT_NEAR(r.input_scale, std::sqrt(1.0 + 4.0 / 6.0), 1e-15);
}

TEST(Phi3Rope, NoScaleWithinTheOriginalContextAndPlainOrLinearRopes) {
  auto c = longrope_config();
  c["max_position_embeddings"] = 64;
  EXPECT_EQ(phi3_rope(c, 16).input_scale, 1.0);
  c["rope_scaling"] = nullptr;
  c.erase("partial_rotary_factor");
  const Phi3Rope plain = phi3_rope(c, 16);
  EXPECT_EQ(plain.rope.dims, 16);
  EXPECT_EQ(plain.input_scale, 1.0);
  EXPECT_DOUBLE_EQ(plain.rope.inv_freq[1], std::pow(10000.0, -2.0 / 16.0));
  c["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}, {"long_factor", 1.0}};
  EXPECT_DOUBLE_EQ(phi3_rope(c, 16).rope.inv_freq[1], 0.25 * std::pow(10000.0, -2.0 / 16.0));
}

// ---- one token, by hand ------------------------------------------------------------------------------------------

void rms(std::vector<double>& x, const std::vector<float>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  for (size_t i = 0; i < x.size(); ++i) x[i] = x[i] * inv * w[i];
}

// rows [first, first + count) of W [*, cols] times x.
std::vector<double> matvec(const std::vector<float>& w, int64_t cols, int64_t first, int64_t count, const std::vector<double>& x) {
  std::vector<double> y(static_cast<size_t>(count));
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < cols; ++c) y[r] += w[static_cast<size_t>((first + r) * cols + c)] * x[static_cast<size_t>(c)];
  return y;
}

// For one token the attention of each query head is its key/value head's value vector (a softmax over one key): the
// output depends on which rows are v, on GQA's head sharing and on the gate/up split, not on the rotation.
TEST(Phi3Reference, OneTokenMatchesAForwardPassWrittenOutFromTheFloatWeights) {
  gen::TinyModelSpec spec;
  spec.model_type = "phi3";
  spec.hidden = 64;
  spec.layers = 1;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.intermediate = 48;
  spec.dtype = "float32";
  spec.rope_scaling = {{"type", "longrope"}};
  spec.extra_config = {{"partial_rotary_factor", 0.75}, {"original_max_position_embeddings", 32}};
  spec.seed = 3;
  test_support::TempDir temp;
  gen::write_tiny_model(spec, temp / "m");
  const SourceModel model = SourceModel::open(temp / "m");
  const int32_t token = 7;
  const std::vector<float> got = reference_logits(model, {token});

  auto w = [&](const std::string& name) { return gen::tiny_model_float_weights(spec, name); };
  const int64_t H = 64, hd = 16, q = 4 * hd, kv = 2 * hd, I = 48;
  const auto embed = w("model.embed_tokens.weight");
  const int64_t vocab = static_cast<int64_t>(embed.size()) / H;
  std::vector<double> x(embed.begin() + token * H, embed.begin() + (token + 1) * H);
  std::vector<double> h = x;
  rms(h, w("model.layers.0.input_layernorm.weight"), 1e-5);
  const auto v = matvec(w("model.layers.0.self_attn.qkv_proj.weight"), H, q + kv, kv, h);
  std::vector<double> heads(static_cast<size_t>(q));
  for (int64_t head = 0; head < 4; ++head)
    for (int64_t i = 0; i < hd; ++i) heads[head * hd + i] = v[(head / 2) * hd + i];
  const auto o = matvec(w("model.layers.0.self_attn.o_proj.weight"), q, 0, H, heads);
  for (int64_t i = 0; i < H; ++i) x[i] += o[i];
  h = x;
  rms(h, w("model.layers.0.post_attention_layernorm.weight"), 1e-5);
  const auto gate_up = w("model.layers.0.mlp.gate_up_proj.weight");
  const auto gate = matvec(gate_up, H, 0, I, h), up = matvec(gate_up, H, I, I, h);
  std::vector<double> act(static_cast<size_t>(I));
  for (int64_t i = 0; i < I; ++i) act[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  const auto down = matvec(w("model.layers.0.mlp.down_proj.weight"), I, 0, H, act);
  for (int64_t i = 0; i < H; ++i) x[i] += down[i];
  rms(x, w("model.norm.weight"), 1e-5);
  const auto want = matvec(w("lm_head.weight"), H, 0, vocab, x);

  ASSERT_EQ(static_cast<int64_t>(got.size()), vocab);
  double err = 0, energy = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    energy += want[i] * want[i];
  }
  EXPECT_LT(err / energy, 1e-10);
}

// Two tokens: the second attends to a rotated key, so the factors matter; long and short factors differ.
TEST(Phi3Reference, MlxLmsLongFactorsAndTheShortOnesGiveDifferentLogits) {
  gen::TinyModelSpec spec;
  spec.model_type = "phi3";
  spec.hidden = 64;
  spec.heads = 4;
  spec.kv_heads = 2;
  spec.intermediate = 48;
  spec.rope_scaling = {{"type", "longrope"}};
  spec.extra_config = {{"original_max_position_embeddings", 32}};
  test_support::TempDir temp;
  gen::write_tiny_model(spec, temp / "m");
  const SourceModel model = SourceModel::open(temp / "m");
  const std::vector<int32_t> tokens = {3, 9, 27, 81};
  const auto mlx = reference_logits(model, tokens);
  EXPECT_EQ(mlx, phi3_reference_with(model, tokens, LongRopeFactors::Long));
  EXPECT_NE(mlx, phi3_reference_with(model, tokens, LongRopeFactors::Short));
}

}  // namespace
}  // namespace mlx2gguf::ref
