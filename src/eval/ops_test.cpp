// Building blocks of the reference forward pass against values worked out by hand or by plain loops.
#include "eval/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "eval/eval_test_support.h"
#include "util/error.h"

namespace mlx2gguf::ref {
namespace {

using eval_test::Filler;
using eval_test::HandModel;

TEST(ReferenceOps, RmsNormScalesByInverseRootMeanSquareAndWeight) {
  float x[4] = {1, 2, 3, 4};
  const float w[4] = {1, 1, 2, 0.5f};
  rms_norm(x, 4, w, 0.0);
  // mean(x²) = 30/4 = 7.5
  const double inv = 1.0 / std::sqrt(7.5);
  EXPECT_NEAR(x[0], 1 * inv, 1e-7);
  EXPECT_NEAR(x[1], 2 * inv, 1e-7);
  EXPECT_NEAR(x[2], 3 * inv * 2, 1e-7);
  EXPECT_NEAR(x[3], 4 * inv * 0.5, 1e-7);

  float y[2] = {3, 4};
  rms_norm(y, 2, nullptr, 0.5);  // mean(y²) = 12.5, + eps = 13
  EXPECT_NEAR(y[0], 3 / std::sqrt(13.0), 1e-7);
  EXPECT_NEAR(y[1], 4 / std::sqrt(13.0), 1e-7);
}

TEST(ReferenceOps, RmsNormRowsNormalisesEachHeadSeparately) {
  Activations x(1, 4);
  x.row(0)[0] = 1, x.row(0)[1] = 1, x.row(0)[2] = 3, x.row(0)[3] = -3;
  rms_norm_rows(x, {2.0f, 1.0f}, 0.0, 2);
  EXPECT_NEAR(x.row(0)[0], 2.0, 1e-7);
  EXPECT_NEAR(x.row(0)[1], 1.0, 1e-7);
  EXPECT_NEAR(x.row(0)[2], 2.0, 1e-7);
  EXPECT_NEAR(x.row(0)[3], -1.0, 1e-7);
}

TEST(ReferenceOps, RopeRotatesHalfSplitPairs) {
  // head_dim 4, base 10000: frequencies 1 and 0.01; at position 2 the pair (0, 2) turns by 2 rad, (1, 3) by 0.02.
  const Rope rope = default_rope(4, 10000.0);
  ASSERT_EQ(rope.inv_freq.size(), 2u);
  EXPECT_DOUBLE_EQ(rope.inv_freq[0], 1.0);
  EXPECT_NEAR(rope.inv_freq[1], 0.01, 1e-15);
  float v[4] = {1, 2, 3, 4};
  apply_rope(v, 2, rope);
  EXPECT_NEAR(v[0], -3.1440391170241875, 1e-6);  // 1·cos 2 − 3·sin 2
  EXPECT_NEAR(v[1], 1.9196053465598233, 1e-6);   // 2·cos .02 − 4·sin .02
  EXPECT_NEAR(v[2], -0.33914308281574557, 1e-6); // 1·sin 2 + 3·cos 2
  EXPECT_NEAR(v[3], 4.039197360052977, 1e-6);    // 2·sin .02 + 4·cos .02

  float same[4] = {1, 2, 3, 4};
  apply_rope(same, 0, rope);
  EXPECT_EQ(same[0], 1.0f);
  EXPECT_EQ(same[2], 3.0f);
}

TEST(ReferenceOps, RopeTraditionalRotatesAdjacentPairs) {
  const Rope rope = default_rope(4, 10000.0, 1.0, /*traditional=*/true);
  float v[4] = {1, 3, 2, 4};  // pairs (1, 3) at 2 rad and (2, 4) at 0.02 rad
  apply_rope(v, 2, rope);
  EXPECT_NEAR(v[0], -3.1440391170241875, 1e-6);
  EXPECT_NEAR(v[1], -0.33914308281574557, 1e-6);
  EXPECT_NEAR(v[2], 1.9196053465598233, 1e-6);
  EXPECT_NEAR(v[3], 4.039197360052977, 1e-6);
}

TEST(ReferenceOps, PartialRopeLeavesTheTailAlone) {
  // 2 of 4 dims rotated: one pair (0, 1) with frequency base^0 = 1.
  const Rope rope = default_rope(2, 10000.0);
  float v[4] = {1, 3, 5, 7};
  apply_rope(v, 2, rope);
  EXPECT_NEAR(v[0], -3.1440391170241875, 1e-6);
  EXPECT_NEAR(v[1], -0.33914308281574557, 1e-6);
  EXPECT_EQ(v[2], 5.0f);
  EXPECT_EQ(v[3], 7.0f);
}

TEST(ReferenceOps, LinearRopeScalingDividesPositions) {
  const Rope scaled = rope_from_scaling(8, 500000.0, false, {{"type", "linear"}, {"factor", 4.0}});
  const Rope plain = default_rope(8, 500000.0);
  float a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  apply_rope(a, 12, scaled);
  apply_rope(b, 3, plain);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(a[i], b[i], 1e-6) << i;
}

TEST(ReferenceOps, Llama3FrequencyTable) {
  // dims 8, base 1e4: periods 1, 10, 100, 1000 (wavelengths 2π·period). With original context 1000 and
  // low/high frequency factors 1/4 the wavelength thresholds are 1000 and 250: the first two frequencies stay,
  // the last is divided by the factor 8, the third (wavelength 628.3) is blended with
  // s = (1000/628.3 − 1)/3: inv = (1 − s)·0.01/8 + s·0.01.
  const double s = (1000.0 / (2 * std::numbers::pi * 100.0) - 1.0) / 3.0;
  const double blended = (1 - s) * 0.01 / 8 + s * 0.01;
  EXPECT_NEAR(blended, 0.002975352506846947, 1e-15);
  const nlohmann::json scaling = {{"rope_type", "llama3"},
                                  {"factor", 8.0},
                                  {"low_freq_factor", 1.0},
                                  {"high_freq_factor", 4.0},
                                  {"original_max_position_embeddings", 1000}};
  const Rope rope = rope_from_scaling(8, 10000.0, false, scaling);
  ASSERT_EQ(rope.inv_freq.size(), 4u);
  EXPECT_NEAR(rope.inv_freq[0], 1.0, 1e-15);
  EXPECT_NEAR(rope.inv_freq[1], 0.1, 1e-15);
  EXPECT_NEAR(rope.inv_freq[2], 0.002975352506846947, 1e-15);
  EXPECT_NEAR(rope.inv_freq[3], 0.000125, 1e-15);
}

TEST(ReferenceOps, RopeScalingTypesAndErrors) {
  // "type" wins over "rope_type"; "default" and absent scaling give the plain table.
  const Rope a = rope_from_scaling(4, 100.0, false, {{"type", "linear"}, {"rope_type", "llama3"}, {"factor", 2.0}});
  EXPECT_NEAR(a.inv_freq[1], 0.5 * 0.1, 1e-15);
  const Rope b = rope_from_scaling(4, 100.0, false, {{"rope_type", "default"}});
  EXPECT_NEAR(b.inv_freq[1], 0.1, 1e-15);
  const Rope c = rope_from_scaling(4, 100.0, false, nullptr);
  EXPECT_NEAR(c.inv_freq[1], 0.1, 1e-15);
  try {
    rope_from_scaling(4, 100.0, false, {{"type", "yarn"}, {"factor", 2.0}});
    FAIL() << "yarn accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("yarn"), std::string::npos);
  }
  EXPECT_THROW(rope_from_scaling(4, 100.0, false, {{"type", "linear"}}), Error);  // no factor
}

TEST(ReferenceOps, CausalAttentionOnTwoTokens) {
  // One head, head_dim 2, scale 0.5. Token 0 sees only itself; token 1 mixes both values.
  Activations q(2, 2), k(2, 2), v(2, 2);
  const float qs[] = {1, 0, 1, 2}, ks[] = {2, 0, 0, 1}, vs[] = {1, 2, 3, -1};
  std::copy(qs, qs + 4, q.data().begin());
  std::copy(ks, ks + 4, k.data().begin());
  std::copy(vs, vs + 4, v.data().begin());
  AttentionShape shape{1, 1, 2, 0.5, 0};
  const Activations out = causal_attention(q, k, v, shape);
  EXPECT_NEAR(out.row(0)[0], 1.0, 1e-7);
  EXPECT_NEAR(out.row(0)[1], 2.0, 1e-7);
  // token 1: scores 0.5·(q1·k0) = 1, 0.5·(q1·k1) = 1 → equal weights.
  EXPECT_NEAR(out.row(1)[0], 2.0, 1e-7);
  EXPECT_NEAR(out.row(1)[1], 0.5, 1e-7);

  // Change k1 so the scores differ: q1·k1 = 4 → scores 1 and 2.
  k.row(1)[1] = 2;
  const Activations out2 = causal_attention(q, k, v, shape);
  const double p0 = 1.0 / (1.0 + std::exp(1.0));
  EXPECT_NEAR(out2.row(1)[0], p0 * 1 + (1 - p0) * 3, 1e-6);
  EXPECT_NEAR(out2.row(1)[1], p0 * 2 + (1 - p0) * -1, 1e-6);

  // A window of 1 leaves every token alone with its own value.
  shape.window = 1;
  const Activations alone = causal_attention(q, k, v, shape);
  EXPECT_NEAR(alone.row(1)[0], 3.0, 1e-7);
  EXPECT_NEAR(alone.row(1)[1], -1.0, 1e-7);
}

TEST(ReferenceOps, GroupedQueryHeadsShareContiguousKvHeads) {
  // 4 query heads, 2 kv heads, head_dim 1, a single token: output head h = value of kv head h / 2.
  Activations q(1, 4), k(1, 2), v(1, 2);
  for (int h = 0; h < 4; ++h) q.row(0)[h] = 1;
  k.row(0)[0] = 1, k.row(0)[1] = 1;
  v.row(0)[0] = 10, v.row(0)[1] = 20;
  const Activations out = causal_attention(q, k, v, {4, 2, 1, 1.0, 0});
  EXPECT_EQ(out.row(0)[0], 10.0f);
  EXPECT_EQ(out.row(0)[1], 10.0f);
  EXPECT_EQ(out.row(0)[2], 20.0f);
  EXPECT_EQ(out.row(0)[3], 20.0f);
}

TEST(ReferenceOps, TopKThenSoftmaxRouting) {
  const float logits[] = {1.0f, 3.0f, 2.0f, 0.5f};
  const auto routes = route_topk_softmax(logits, 4, 2);
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[0].expert, 1);
  EXPECT_EQ(routes[1].expert, 2);
  const double e = std::exp(1.0);
  EXPECT_NEAR(routes[0].weight, e / (e + 1), 1e-12);
  EXPECT_NEAR(routes[1].weight, 1 / (e + 1), 1e-12);
}

TEST(ReferenceOps, SoftmaxThenTopKRouting) {
  const float logits[] = {1.0f, 3.0f, 2.0f, 0.5f};
  const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + std::exp(0.5);
  const auto raw = route_softmax_topk(logits, 4, 2, false);
  ASSERT_EQ(raw.size(), 2u);
  EXPECT_EQ(raw[0].expert, 1);
  EXPECT_EQ(raw[1].expert, 2);
  EXPECT_NEAR(raw[0].weight, std::exp(3.0) / z, 1e-12);
  EXPECT_NEAR(raw[1].weight, std::exp(2.0) / z, 1e-12);
  const auto norm = route_softmax_topk(logits, 4, 2, true);
  const double e = std::exp(1.0);
  EXPECT_NEAR(norm[0].weight, e / (e + 1), 1e-12);
  EXPECT_NEAR(norm[1].weight, 1 / (e + 1), 1e-12);
  EXPECT_THROW(route_softmax_topk(logits, 4, 5, true), Error);
}

TEST(ReferenceOps, ScalarFunctions) {
  EXPECT_NEAR(silu(1.0), 1.0 / (1.0 + std::exp(-1.0)), 1e-15);
  EXPECT_NEAR(sigmoid(-800.0), 0.0, 1e-300);  // no overflow
  EXPECT_NEAR(softplus(0.0), std::log(2.0), 1e-15);
  EXPECT_NEAR(softplus(50.0), 50.0, 1e-12);
  EXPECT_NEAR(softplus(-50.0), std::exp(-50.0), 1e-30);
}

TEST(ReferenceOps, CausalConvUsesPastTokensAndTheLastTapForTheCurrentOne) {
  // One channel, kernel 3, taps [0.5, -1, 2]: the tap 2 multiplies the current token.
  Activations x(3, 2);
  const float values[] = {1, 10, 2, 20, 3, 30};
  std::copy(values, values + 6, x.data().begin());
  const std::vector<float> w = {0.5f, -1.0f, 2.0f, 0.0f, 0.0f, 1.0f};  // channel 1: identity
  const Activations y = causal_conv_silu(x, w, 3);
  const auto s = [](double v) { return v / (1 + std::exp(-v)); };
  EXPECT_NEAR(y.row(0)[0], s(2.0), 1e-6);                    // 2·1
  EXPECT_NEAR(y.row(1)[0], s(-1.0 + 4.0), 1e-6);             // −1·1 + 2·2
  EXPECT_NEAR(y.row(2)[0], s(0.5 - 2.0 + 6.0), 1e-6);        // 0.5·1 − 1·2 + 2·3
  EXPECT_NEAR(y.row(2)[1], s(30.0), 1e-5);
}

TEST(ReferenceOps, GatedDeltaRuleByHand) {
  // One key head (dk 2) shared by two value heads (dv 1); head 1 sees v doubled and no decay.
  Activations q(2, 2), k(2, 2), v(2, 2), g(2, 2), beta(2, 2);
  q.row(0)[0] = 1, q.row(0)[1] = 0, q.row(1)[0] = 0, q.row(1)[1] = 1;
  k.row(0)[0] = 1, k.row(0)[1] = 0, k.row(1)[0] = 0.6f, k.row(1)[1] = 0.8f;
  v.row(0)[0] = 2, v.row(0)[1] = 4, v.row(1)[0] = 1, v.row(1)[1] = 2;
  g.row(0)[0] = 0.5f, g.row(1)[0] = 0.5f, g.row(0)[1] = 1, g.row(1)[1] = 1;
  beta.row(0)[0] = 0.5f, beta.row(1)[0] = 1, beta.row(0)[1] = 0.5f, beta.row(1)[1] = 1;
  const Activations y = gated_delta_rule(q, k, v, g, beta, {1, 2, 2, 1});
  // head 0: t0 S = [1, 0], y = 1. t1 S = [0.5, 0], kv = 0.3, Δ = 0.7, S = [0.92, 0.56], y = 0.56.
  EXPECT_NEAR(y.row(0)[0], 1.0, 1e-6);
  EXPECT_NEAR(y.row(1)[0], 0.56, 1e-6);
  // head 1: t0 S = [2, 0], y = 2. t1 kv = 1.2, Δ = 0.8, S = [2.48, 0.64], y = 0.64.
  EXPECT_NEAR(y.row(0)[1], 2.0, 1e-6);
  EXPECT_NEAR(y.row(1)[1], 0.64, 1e-6);
}

// linear, embed and switch_glu on tensors read back from a safetensors file, against plain loops.
TEST(ReferenceOps, StreamedLinearEmbedAndExpertsMatchPlainLoops) {
  Filler fill(7);
  const int64_t rows = 5000, in = 8, experts = 3, inter = 5;  // 5000 rows: several row chunks
  const auto w = fill.tensor({rows, in}, 1.0);
  const auto bias = fill.tensor({rows}, 1.0);
  const auto gate = fill.tensor({experts, inter, in}, 1.0);
  const auto up = fill.tensor({experts, inter, in}, 1.0);
  const auto down = fill.tensor({experts, in, inter}, 1.0);
  eval_test::F32Tensor gate_up{{experts, 2 * inter, in}, {}};
  for (int64_t e = 0; e < experts; ++e) {
    const auto g0 = gate.values.begin() + e * inter * in, u0 = up.values.begin() + e * inter * in;
    gate_up.values.insert(gate_up.values.end(), g0, g0 + inter * in);
    gate_up.values.insert(gate_up.values.end(), u0, u0 + inter * in);
  }
  HandModel folder;
  folder.write({{"model_type", "llama"}}, {{"w.weight", w}, {"w.bias", bias}, {"g.weight", gate}, {"u.weight", up},
                                          {"d.weight", down}, {"gu.weight", gate_up}});
  const SourceModel model = SourceModel::open(folder.dir());

  const std::vector<int32_t> ids = {4999, 0, 17};
  const Activations x = embed(model.require("w.weight"), ids);
  for (int t = 0; t < 3; ++t)
    for (int i = 0; i < in; ++i) ASSERT_EQ(x.row(t)[i], w.values[ids[t] * in + i]);
  EXPECT_THROW(embed(model.require("w.weight"), std::vector<int32_t>{5000}), Error);
  EXPECT_THROW(embed(model.require("w.weight"), std::vector<int32_t>{-1}), Error);

  const Activations y = linear(x, model.require("w.weight"), bias.values.data());
  ASSERT_EQ(y.cols(), rows);
  for (int t = 0; t < 3; ++t)
    for (int64_t o = 0; o < rows; ++o) {
      double acc = bias.values[o];
      for (int i = 0; i < in; ++i) acc += static_cast<double>(w.values[o * in + i]) * x.row(t)[i];
      ASSERT_NEAR(y.row(t)[o], acc, 1e-5) << t << " " << o;
    }
  const Activations part = linear(x, model.require("w.weight"), nullptr, 4000, 3);
  ASSERT_EQ(part.cols(), 3);
  for (int o = 0; o < 3; ++o) EXPECT_NEAR(part.row(1)[o], y.row(1)[4000 + o] - bias.values[4000 + o], 1e-5);
  EXPECT_THROW(linear(x, model.require("w.weight"), nullptr, 4999, 2), Error);

  // Token 0 → experts 2 (0.75) and 0 (0.25); token 1 → expert 1 only; token 2 → expert 2.
  const std::vector<std::vector<ExpertChoice>> routes = {{{2, 0.75}, {0, 0.25}}, {{1, 1.0}}, {{2, 0.5}}};
  const Activations moe = switch_glu(
      x, stacked_experts(model.require("g.weight"), model.require("u.weight"), model.require("d.weight"), in), routes);
  // The same experts fused as [E, 2I, H] (per expert: gate rows, then up rows) give the same result.
  const Activations fused = switch_glu(x, fused_experts(model.require("gu.weight"), model.require("d.weight"), in), routes);
  for (size_t i = 0; i < moe.data().size(); ++i) EXPECT_EQ(fused.data()[i], moe.data()[i]);

  for (int t = 0; t < 3; ++t) {
    std::vector<double> expect(in, 0.0);
    for (const auto& choice : routes[t]) {
      const int64_t e = choice.expert;
      std::vector<double> hidden(inter);
      for (int j = 0; j < inter; ++j) {
        double g = 0, u = 0;
        for (int i = 0; i < in; ++i) {
          g += gate.values[(e * inter + j) * in + i] * static_cast<double>(x.row(t)[i]);
          u += up.values[(e * inter + j) * in + i] * static_cast<double>(x.row(t)[i]);
        }
        hidden[j] = g / (1 + std::exp(-g)) * u;
      }
      for (int i = 0; i < in; ++i) {
        double d = 0;
        for (int j = 0; j < inter; ++j) d += down.values[(e * in + i) * inter + j] * hidden[j];
        expect[i] += choice.weight * d;
      }
    }
    for (int i = 0; i < in; ++i) EXPECT_NEAR(moe.row(t)[i], expect[i], 1e-5) << t << " " << i;
  }
}

}  // namespace
}  // namespace mlx2gguf::ref
