// The gpt-oss family's reference forward pass on small hand-written model folders, against a deliberately plain
// double-precision forward pass of mlx-lm's gpt_oss.py written out in this file; and its new pieces (YaRN, sinks,
// the clamped SwiGLU) one by one.
#include "arch/gpt_oss/reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "eval/eval_test_support.h"
#include "eval/reference.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using eval_test::F32Tensor;
using eval_test::Filler;
using eval_test::HandModel;
using Weights = std::map<std::string, F32Tensor>;
using Vec = std::vector<double>;

// ---- the plain forward pass ------------------------------------------------------------------------------------

struct Naive {
  int hidden = 16, layers = 4, inter = 12, heads = 4, kv_heads = 2, head_dim = 8, vocab = 14;
  int experts = 4, top_k = 2, window = 3;
  double eps = 1e-5;
  std::vector<bool> sliding = {true, false, true, false};
  Vec periods;          // head_dim/2 rotation periods (positions per radian), as MLX's rope `freqs`
  double mscale = 1.0;  // YaRN's factor on q and k
};

Vec matvec(const F32Tensor& w, const Vec& x, int first_row = 0, int rows = -1) {
  const int in = static_cast<int>(w.shape.back());
  if (rows < 0) rows = static_cast<int>(w.values.size()) / in;
  Vec y(rows, 0.0);
  for (int o = 0; o < rows; ++o)
    for (int i = 0; i < in; ++i) y[o] += static_cast<double>(w.values[(first_row + o) * in + i]) * x[i];
  return y;
}

Vec add(Vec y, const F32Tensor& b, int first = 0) {
  for (size_t i = 0; i < y.size(); ++i) y[i] += b.values[first + i];
  return y;
}

Vec rmsnorm(const Vec& x, const F32Tensor& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / x.size() + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w.values[i];
  return y;
}

// mlx's rope with explicit freqs after the YaRN magnitude: x·mscale rotated by position/period in halves.
void rope_head(double* h, int hd, int pos, const Naive& n) {
  Vec out(hd);
  for (int i = 0; i < hd / 2; ++i) {
    const double a = h[i] * n.mscale, b = h[i + hd / 2] * n.mscale, angle = pos / n.periods[i];
    out[i] = a * std::cos(angle) - b * std::sin(angle);
    out[i + hd / 2] = a * std::sin(angle) + b * std::cos(angle);
  }
  std::copy(out.begin(), out.end(), h);
}

double swiglu_oai(double gate, double up) {
  const double g = gate > 7.0 ? 7.0 : gate;
  const double u = up > 7.0 ? 7.0 : up < -7.0 ? -7.0 : up;
  return g / (1.0 + std::exp(-1.702 * g)) * (u + 1.0);
}

std::vector<Vec> naive_logits(const Naive& n, const Weights& w, const std::vector<int32_t>& tokens) {
  const int T = static_cast<int>(tokens.size());
  std::vector<Vec> x(T);
  for (int t = 0; t < T; ++t)
    x[t] = Vec(w.at("model.embed_tokens.weight").values.begin() + tokens[t] * n.hidden,
               w.at("model.embed_tokens.weight").values.begin() + (tokens[t] + 1) * n.hidden);
  for (int l = 0; l < n.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    std::vector<Vec> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      const Vec h = rmsnorm(x[t], w.at(p + "input_layernorm.weight"), n.eps);
      q[t] = add(matvec(w.at(a + "q_proj.weight"), h), w.at(a + "q_proj.bias"));
      k[t] = add(matvec(w.at(a + "k_proj.weight"), h), w.at(a + "k_proj.bias"));
      v[t] = add(matvec(w.at(a + "v_proj.weight"), h), w.at(a + "v_proj.bias"));
      for (int hh = 0; hh < n.heads; ++hh) rope_head(q[t].data() + hh * n.head_dim, n.head_dim, t, n);
      for (int hh = 0; hh < n.kv_heads; ++hh) rope_head(k[t].data() + hh * n.head_dim, n.head_dim, t, n);
    }
    for (int t = 0; t < T; ++t) {
      Vec attn(n.heads * n.head_dim, 0.0);
      for (int hh = 0; hh < n.heads; ++hh) {
        const int kvh = hh / (n.heads / n.kv_heads);
        // Scores of the visible keys, then the sink's logit last; the softmax runs over all of them.
        std::vector<double> s;
        std::vector<int> keys;
        for (int j = 0; j <= t; ++j) {
          if (n.sliding[l] && t - j >= n.window) continue;
          double dot = 0;
          for (int d = 0; d < n.head_dim; ++d) dot += q[t][hh * n.head_dim + d] * k[j][kvh * n.head_dim + d];
          s.push_back(dot / std::sqrt(static_cast<double>(n.head_dim)));
          keys.push_back(j);
        }
        s.push_back(w.at(a + "sinks").values[hh]);
        double z = 0;
        for (double e : s) z += std::exp(e);
        for (size_t i = 0; i + 1 < s.size(); ++i)
          for (int d = 0; d < n.head_dim; ++d) attn[hh * n.head_dim + d] += std::exp(s[i]) / z * v[keys[i]][kvh * n.head_dim + d];
      }
      const Vec o = add(matvec(w.at(a + "o_proj.weight"), attn), w.at(a + "o_proj.bias"));
      for (int i = 0; i < n.hidden; ++i) x[t][i] += o[i];
    }
    const std::string m = p + "mlp.";
    for (int t = 0; t < T; ++t) {
      const Vec h = rmsnorm(x[t], w.at(p + "post_attention_layernorm.weight"), n.eps);
      const Vec logits = add(matvec(w.at(m + "router.weight"), h), w.at(m + "router.bias"));
      std::vector<int> order(n.experts);
      for (int e = 0; e < n.experts; ++e) order[e] = e;
      std::sort(order.begin(), order.end(), [&](int a1, int b1) { return logits[a1] > logits[b1]; });
      double z = 0;
      for (int i = 0; i < n.top_k; ++i) z += std::exp(logits[order[i]]);
      Vec out(n.hidden, 0.0);
      for (int i = 0; i < n.top_k; ++i) {
        const int e = order[i];
        const Vec g = add(matvec(w.at(m + "experts.gate_proj.weight"), h, e * n.inter, n.inter),
                          w.at(m + "experts.gate_proj.bias"), e * n.inter);
        const Vec u = add(matvec(w.at(m + "experts.up_proj.weight"), h, e * n.inter, n.inter),
                          w.at(m + "experts.up_proj.bias"), e * n.inter);
        Vec act(n.inter);
        for (int j = 0; j < n.inter; ++j) act[j] = swiglu_oai(g[j], u[j]);
        const Vec y = add(matvec(w.at(m + "experts.down_proj.weight"), act, e * n.hidden, n.hidden),
                          w.at(m + "experts.down_proj.bias"), e * n.hidden);
        for (int d = 0; d < n.hidden; ++d) out[d] += std::exp(logits[e]) / z * y[d];
      }
      for (int d = 0; d < n.hidden; ++d) x[t][d] += out[d];
    }
  }
  std::vector<Vec> logits(T);
  for (int t = 0; t < T; ++t) logits[t] = matvec(w.at("lm_head.weight"), rmsnorm(x[t], w.at("model.norm.weight"), n.eps));
  return logits;
}

// ---- the model ---------------------------------------------------------------------------------------------------

Weights gpt_oss_weights(const Naive& n, uint32_t seed) {
  Filler f(seed);
  Weights w;
  const int64_t q = n.heads * n.head_dim, kv = n.kv_heads * n.head_dim;
  w["model.embed_tokens.weight"] = f.tensor({n.vocab, n.hidden}, 1.0);
  w["model.norm.weight"] = f.norm(n.hidden);
  w["lm_head.weight"] = f.tensor({n.vocab, n.hidden}, 0.5);
  for (int l = 0; l < n.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w[p + "input_layernorm.weight"] = f.norm(n.hidden);
    w[p + "post_attention_layernorm.weight"] = f.norm(n.hidden);
    w[p + "self_attn.q_proj.weight"] = f.tensor({q, n.hidden}, 0.6);
    w[p + "self_attn.k_proj.weight"] = f.tensor({kv, n.hidden}, 0.6);
    w[p + "self_attn.v_proj.weight"] = f.tensor({kv, n.hidden}, 0.5);
    w[p + "self_attn.o_proj.weight"] = f.tensor({n.hidden, q}, 0.5);
    w[p + "self_attn.q_proj.bias"] = f.tensor({q}, 0.3);
    w[p + "self_attn.k_proj.bias"] = f.tensor({kv}, 0.3);
    w[p + "self_attn.v_proj.bias"] = f.tensor({kv}, 0.3);
    w[p + "self_attn.o_proj.bias"] = f.tensor({n.hidden}, 0.3);
    w[p + "self_attn.sinks"] = f.tensor({n.heads}, 2.0);
    w[p + "mlp.router.weight"] = f.tensor({n.experts, n.hidden}, 1.0);
    w[p + "mlp.router.bias"] = f.tensor({n.experts}, 0.5);
    // Gate and up projections wide enough that the clamps at ±7 engage for some units.
    w[p + "mlp.experts.gate_proj.weight"] = f.tensor({n.experts, n.inter, n.hidden}, 3.0);
    w[p + "mlp.experts.up_proj.weight"] = f.tensor({n.experts, n.inter, n.hidden}, 3.0);
    w[p + "mlp.experts.down_proj.weight"] = f.tensor({n.experts, n.hidden, n.inter}, 0.1);
    w[p + "mlp.experts.gate_proj.bias"] = f.tensor({n.experts, n.inter}, 0.3);
    w[p + "mlp.experts.up_proj.bias"] = f.tensor({n.experts, n.inter}, 0.3);
    w[p + "mlp.experts.down_proj.bias"] = f.tensor({n.experts, n.hidden}, 0.3);
  }
  return w;
}

nlohmann::json gpt_oss_config(const Naive& n) {
  nlohmann::json types = nlohmann::json::array();
  for (bool s : n.sliding) types.push_back(s ? "sliding_attention" : "full_attention");
  return {{"model_type", "gpt_oss"},     {"hidden_size", n.hidden},         {"num_hidden_layers", n.layers},
          {"intermediate_size", n.inter}, {"num_attention_heads", n.heads},  {"num_key_value_heads", n.kv_heads},
          {"head_dim", n.head_dim},       {"rms_norm_eps", n.eps},           {"vocab_size", n.vocab},
          {"num_local_experts", n.experts}, {"num_experts_per_tok", n.top_k}, {"experts_per_token", n.top_k},
          {"sliding_window", n.window},   {"layer_types", types},            {"rope_theta", 10000},
          {"swiglu_limit", 7.0},          {"tie_word_embeddings", false}};
}

Vec plain_periods(int dims, double base) {
  Vec periods;
  for (int i = 0; i < dims / 2; ++i) periods.push_back(std::pow(base, 2.0 * i / dims));
  return periods;
}

// rope_utils.py's YarnRoPE, formula by formula: the periods of the extrapolated and the interpolated frequencies,
// blended by 1 - ramp(i), ramp the clipped linear ramp from floor(corr(beta_fast)) to ceil(corr(beta_slow)).
Vec yarn_periods(int dims, double base, double factor, double original, double beta_fast, double beta_slow) {
  auto corr = [&](double rot) { return dims * std::log(original / (rot * 2 * std::numbers::pi)) / (2 * std::log(base)); };
  const double low = std::max(std::floor(corr(beta_fast)), 0.0);
  double high = std::min(std::ceil(corr(beta_slow)), dims - 1.0);
  if (low == high) high += 0.001;
  Vec periods;
  for (int i = 0; i < dims / 2; ++i) {
    const double ramp = std::min(1.0, std::max(0.0, (i - low) / (high - low)));
    const double mask = 1.0 - ramp;
    const double extra = std::pow(base, 2.0 * i / dims), inter = factor * extra;
    periods.push_back(inter * extra / (inter * mask + extra * (1 - mask)));
  }
  return periods;
}

void expect_logits_match(const std::vector<float>& got, const std::vector<Vec>& want, int vocab) {
  ASSERT_EQ(got.size(), want.size() * vocab);
  double worst = 0, largest = 0;
  for (size_t t = 0; t < want.size(); ++t)
    for (int o = 0; o < vocab; ++o) {
      worst = std::max(worst, std::abs(got[t * vocab + o] - want[t][o]));
      largest = std::max(largest, std::abs(want[t][o]));
    }
  EXPECT_GT(largest, 0.1);  // the check is not vacuous
  EXPECT_LT(worst, 2e-5) << "largest logit " << largest;
}

// Longer than the window of 3, so that the sliding layers see fewer keys than the full ones.
const std::vector<int32_t> kTokens = {3, 0, 13, 7, 7, 2, 9, 11, 5};

// ---- tests ------------------------------------------------------------------------------------------------------

TEST(GptOssReference, YarnSinksSlidingWindowAndClampedExpertsMatchPlainLoops) {
  Naive n;
  // head_dim 8, base 1e4, original context 64: correction range [0, 2] over the 4 pairs, so pair 0 keeps its
  // frequency, pair 1 blends, pairs 2 and 3 are divided by the factor.
  const double factor = 4, original = 64;
  n.periods = yarn_periods(n.head_dim, 10000, factor, original, 32, 1);
  n.mscale = 0.1 * std::log(factor) + 1.0;
  const Weights w = gpt_oss_weights(n, 3);
  nlohmann::json config = gpt_oss_config(n);
  config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", factor}, {"original_max_position_embeddings", original},
                            {"beta_fast", 32.0}, {"beta_slow", 1.0}, {"truncate", false}};
  HandModel folder;
  folder.write(config, w);
  const std::vector<float> got = reference_logits(SourceModel::open(folder.dir()), kTokens);
  expect_logits_match(got, naive_logits(n, w, kTokens), n.vocab);
}

TEST(GptOssReference, YarnMagnitudeFromMscaleAndMscaleAllDim) {
  Naive n;
  const double factor = 8, original = 64;
  n.periods = yarn_periods(n.head_dim, 10000, factor, original, 32, 1);
  n.mscale = (0.1 * 0.5 * std::log(factor) + 1.0) / (0.1 * 2.0 * std::log(factor) + 1.0);
  const Weights w = gpt_oss_weights(n, 4);
  nlohmann::json config = gpt_oss_config(n);
  config["rope_scaling"] = {{"type", "yarn"}, {"factor", factor}, {"original_max_position_embeddings", original},
                            {"mscale", 0.5}, {"mscale_all_dim", 2.0}};
  HandModel folder;
  folder.write(config, w);
  expect_logits_match(reference_logits(SourceModel::open(folder.dir()), kTokens), naive_logits(n, w, kTokens), n.vocab);
}

TEST(GptOssReference, PlainRopeAndMlxLmsDefaultLayerTypes) {
  Naive n;
  n.periods = plain_periods(n.head_dim, 10000);
  const Weights w = gpt_oss_weights(n, 5);
  nlohmann::json config = gpt_oss_config(n);
  config.erase("layer_types");  // mlx-lm: sliding, full, sliding, full
  config["rope_scaling"] = nullptr;
  HandModel folder;
  folder.write(config, w);
  expect_logits_match(reference_logits(SourceModel::open(folder.dir()), kTokens), naive_logits(n, w, kTokens), n.vocab);
}

TEST(GptOssReference, OtherLayerPatternsAndWindows) {
  Naive n;
  n.periods = plain_periods(n.head_dim, 10000);
  n.sliding = {true, true, false, true};
  n.window = 2;
  const Weights w = gpt_oss_weights(n, 6);
  HandModel folder;
  folder.write(gpt_oss_config(n), w);
  expect_logits_match(reference_logits(SourceModel::open(folder.dir()), kTokens), naive_logits(n, w, kTokens), n.vocab);
}

// Each piece of the model must matter in this test model, or the comparison above proves nothing about it.
TEST(GptOssReference, EveryPieceChangesTheLogits) {
  Naive n;
  n.periods = plain_periods(n.head_dim, 10000);
  const Weights w = gpt_oss_weights(n, 7);
  const std::vector<Vec> base = naive_logits(n, w, kTokens);
  auto distance = [&](const std::vector<Vec>& other) {
    double d = 0, e = 0;
    for (size_t t = 0; t < base.size(); ++t)
      for (size_t o = 0; o < base[t].size(); ++o) d += std::pow(other[t][o] - base[t][o], 2), e += std::pow(base[t][o], 2);
    return d / e;
  };
  Naive full = n;
  full.sliding = {false, false, false, false};
  EXPECT_GT(distance(naive_logits(full, w, kTokens)), 1e-3) << "the window";
  Weights no_sinks = w;
  for (int l = 0; l < n.layers; ++l)
    for (float& s : no_sinks["model.layers." + std::to_string(l) + ".self_attn.sinks"].values) s = -1e9f;
  EXPECT_GT(distance(naive_logits(n, no_sinks, kTokens)), 1e-3) << "the sinks";
  Weights swapped = w;
  for (int l = 0; l < n.layers; ++l) {
    const std::string e = "model.layers." + std::to_string(l) + ".mlp.experts.";
    std::swap(swapped[e + "gate_proj.weight"], swapped[e + "up_proj.weight"]);
  }
  EXPECT_GT(distance(naive_logits(n, swapped, kTokens)), 1e-3) << "gate vs up";
  Naive scaled = n;
  scaled.mscale = 1.3;
  EXPECT_GT(distance(naive_logits(scaled, w, kTokens)), 1e-3) << "the YaRN magnitude";
}

TEST(GptOssReference, YarnFrequenciesAndMagnitude) {
  // gpt-oss's own: head_dim 64, base 150000, factor 32 over 4096 positions: correction range [8, 18].
  const ref::ScaledRope yarn = ref::yarn_rope(64, 150000, 32, 4096, 32, 1, 1, 0);
  EXPECT_NEAR(yarn.mscale, 0.1 * std::log(32.0) + 1.0, 1e-15);
  ASSERT_EQ(yarn.rope.inv_freq.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    const double original = std::pow(150000.0, -2.0 * i / 64);
    const double ramp = std::clamp((i - 8.0) / 10.0, 0.0, 1.0);
    EXPECT_NEAR(yarn.rope.inv_freq[i], (1 - ramp) * original + ramp * original / 32, 1e-15 + 1e-12 * original) << i;
  }
  EXPECT_EQ(yarn.rope.inv_freq[8], std::pow(150000.0, -16.0 / 64));
  EXPECT_NEAR(yarn.rope.inv_freq[18], std::pow(150000.0, -36.0 / 64) / 32, 1e-18);
  EXPECT_FALSE(yarn.rope.traditional);
  // factor <= 1: no magnitude change.
  EXPECT_EQ(ref::yarn_rope(64, 150000, 1, 4096, 32, 1, 1, 0).mscale, 1.0);
}

TEST(GptOssReference, ClampedSwigluAsGptOssPy) {
  EXPECT_NEAR(ref::clamped_swiglu(1.0, 2.0), 1.0 / (1.0 + std::exp(-1.702)) * 3.0, 1e-15);
  EXPECT_NEAR(ref::clamped_swiglu(-2.0, 0.5), -2.0 / (1.0 + std::exp(3.404)) * 1.5, 1e-15);
  // gate is clipped only from above, up on both sides.
  EXPECT_EQ(ref::clamped_swiglu(9.0, 1.0), ref::clamped_swiglu(7.0, 1.0));
  EXPECT_EQ(ref::clamped_swiglu(2.0, 12.0), ref::clamped_swiglu(2.0, 7.0));
  EXPECT_EQ(ref::clamped_swiglu(2.0, -12.0), ref::clamped_swiglu(2.0, -7.0));
  EXPECT_NEAR(ref::clamped_swiglu(-30.0, 1.0), -30.0 / (1.0 + std::exp(30 * 1.702)) * 2.0, 1e-30);
  EXPECT_EQ(ref::clamped_swiglu(3.0, -1.0), 0.0);  // up + 1
}

TEST(GptOssReference, SinksTakeTheirShareOfTheSoftmax) {
  // One head, one token: the only key gets e^s / (e^s + e^sink) of its value.
  ref::Activations q(1, 2), k(1, 2), v(1, 2);
  q.row(0)[0] = 1.0f, q.row(0)[1] = 0.5f;
  k.row(0)[0] = 2.0f, k.row(0)[1] = -1.0f;
  v.row(0)[0] = 3.0f, v.row(0)[1] = -4.0f;
  ref::AttentionShape shape;
  shape.n_heads = shape.n_kv_heads = 1;
  shape.head_dim = 2;
  shape.scale = 0.5;
  const double score = (1.0 * 2.0 - 0.5 * 1.0) * 0.5, sink = 0.25;
  const double share = std::exp(score) / (std::exp(score) + std::exp(sink));
  const ref::Activations out = ref::attention_with_sinks(q, k, v, shape, {static_cast<float>(sink)});
  EXPECT_NEAR(out.row(0)[0], 3.0 * share, 1e-6);
  EXPECT_NEAR(out.row(0)[1], -4.0 * share, 1e-6);
}

TEST(GptOssReference, RefusesWhatItDoesNotImplement) {
  Naive n;
  n.periods = plain_periods(n.head_dim, 10000);
  const Weights w = gpt_oss_weights(n, 8);
  for (const nlohmann::json& scaling : {nlohmann::json{{"rope_type", "llama3"}, {"factor", 8.0}},
                                        nlohmann::json{{"rope_type", "dynamic"}, {"factor", 2.0}}}) {
    nlohmann::json config = gpt_oss_config(n);
    config["rope_scaling"] = scaling;
    HandModel folder;
    folder.write(config, w);
    EXPECT_THROW(reference_logits(SourceModel::open(folder.dir()), kTokens), Error) << scaling.dump();
  }
  nlohmann::json config = gpt_oss_config(n);
  config["layer_types"] = {"sliding_attention", "full_attention"};
  HandModel folder;
  folder.write(config, w);
  EXPECT_THROW(reference_logits(SourceModel::open(folder.dir()), kTokens), Error);
}

}  // namespace
}  // namespace mlx2gguf
