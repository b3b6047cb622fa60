// The Gemma family's reference forward pass, piece by piece: GELU (tanh), the embedding scale as mlx-lm rounds it,
// soft-capped and windowed attention, and the whole pass's use of (1 + w) norms and the sliding-window pattern.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "arch/gemma/reference.h"
#include "eval/reference.h"
#include "gen/tiny_model.h"
#include "read/source_model.h"
#include "read/test_support.h"

namespace mlx2gguf::ref {
namespace {

using test_support::TempDir;

TEST(GemmaReference, GeluTanhMatchesItsClosedForm) {
  EXPECT_EQ(gelu_tanh(0.0), 0.0);
  // 0.5·1·(1 + tanh(sqrt(2/π)·1.044715)) = 0.8411919906...
  EXPECT_NEAR(gelu_tanh(1.0), 0.8411919906082768, 1e-15);
  EXPECT_NEAR(gelu_tanh(-3.0), -0.0036373920817729943, 1e-15);
}

TEST(GemmaReference, EmbeddingScaleIsRoundedAsMlxLmRoundsIt) {
  EXPECT_EQ(gemma_embedding_scale(true, 2560, DType::F32), 50.5);      // bf16(50.596), whatever the dtype
  EXPECT_EQ(gemma_embedding_scale(true, 1152, DType::BF16), 34.0);     // bf16(33.941)
  EXPECT_EQ(gemma_embedding_scale(true, 256, DType::BF16), 16.0);
  EXPECT_EQ(gemma_embedding_scale(false, 3584, DType::BF16), 59.75);   // bf16(59.867)
  EXPECT_EQ(gemma_embedding_scale(false, 3584, DType::F16), 59.875);   // f16(59.867)
  EXPECT_DOUBLE_EQ(gemma_embedding_scale(false, 3584, DType::F32), std::sqrt(3584.0));
}

Activations rows(int64_t n, int64_t cols, const std::vector<float>& values) {
  Activations a(n, cols);
  a.data() = values;
  return a;
}

// One head of width 1: with q = k = 1 and scale 10 every score is 10; capped at 2 it becomes 2·tanh(5). Values are
// the token index, so the output is the mean of the visible indices (scores are all equal).
TEST(GemmaReference, SoftcappedWindowedAttentionAveragesTheVisibleKeys) {
  const int64_t t = 5;
  const Activations q = rows(t, 1, {1, 1, 1, 1, 1}), k = q, v = rows(t, 1, {0, 1, 2, 3, 4});
  AttentionShape shape;
  shape.n_heads = shape.n_kv_heads = shape.head_dim = 1;
  shape.scale = 10.0;
  shape.window = 2;
  const Activations out = softcapped_attention(q, k, v, shape, 2.0);
  EXPECT_FLOAT_EQ(out.row(0)[0], 0.0f);
  for (int64_t i = 1; i < t; ++i) EXPECT_FLOAT_EQ(out.row(i)[0], static_cast<float>(i) - 0.5f) << i;
  // Unequal scores: with the cap the softmax sees 2·tanh(s / 2), not s.
  const Activations q2 = rows(2, 1, {1, 1}), k2 = rows(2, 1, {0, 1}), v2 = rows(2, 1, {0, 1});
  shape.window = 0;
  shape.scale = 3.0;
  const Activations capped = softcapped_attention(q2, k2, v2, shape, 2.0);
  const double s = 2.0 * std::tanh(1.5);
  EXPECT_NEAR(capped.row(1)[0], std::exp(s) / (1.0 + std::exp(s)), 1e-6);
  const Activations uncapped = softcapped_attention(q2, k2, v2, shape, 0.0);
  EXPECT_NEAR(uncapped.row(1)[0], std::exp(3.0) / (1.0 + std::exp(3.0)), 1e-6);
}

gen::TinyModelSpec small_spec(const std::string& type) {
  gen::TinyModelSpec s;
  s.model_type = type;
  s.hidden = 64;
  s.layers = 3;
  s.heads = 2;
  s.kv_heads = 1;
  s.head_dim = 32;
  s.intermediate = 64;
  s.tie_embeddings = true;
  s.sliding_window = 2;
  s.extra_config = {{"sliding_window_pattern", 3}};
  s.seed = 3;
  return s;
}

void set_all(const std::filesystem::path& dir, const std::string& key, const nlohmann::json& value) {
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  config[key] = value;
  std::ofstream(dir / "config.json") << config.dump(2);
}

// The window changes the logits of tokens beyond it only, and only through the local layers.
TEST(GemmaReference, TheWindowBindsOnlyBeyondItsLength) {
  TempDir temp;
  gen::write_tiny_model(small_spec("gemma3_text"), temp / "m");
  const std::vector<int32_t> tokens = {2, 7, 9, 11, 13, 17};
  const auto windowed = reference_logits(SourceModel::open(temp / "m"), tokens);
  set_all(temp / "m", "sliding_window", 64);
  const auto wide = reference_logits(SourceModel::open(temp / "m"), tokens);
  const size_t vocab = windowed.size() / tokens.size();
  for (size_t i = 0; i < 2 * vocab; ++i) ASSERT_EQ(windowed[i], wide[i]) << i;
  double diff = 0.0;
  for (size_t i = 2 * vocab; i < windowed.size(); ++i) diff += std::fabs(windowed[i] - wide[i]);
  EXPECT_GT(diff, 1e-3);
}

TEST(GemmaReference, Gemma2CapsItsLogits) {
  TempDir temp;
  auto spec = small_spec("gemma2");
  spec.extra_config = {{"final_logit_softcapping", 0.5}};
  gen::write_tiny_model(spec, temp / "m");
  for (float logit : reference_logits(SourceModel::open(temp / "m"), {2, 3, 4})) ASSERT_LT(std::fabs(logit), 0.5f);
}

}  // namespace
}  // namespace mlx2gguf::ref
