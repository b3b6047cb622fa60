// The Qwen3 family's reference forward pass (qwen2, qwen3, qwen3_moe) on small hand-written model folders, against a
// deliberately plain double-precision forward pass written out in this file from mlx-lm's qwen2.py, qwen3.py,
// qwen3_moe.py and rope_utils.py.
#include "eval/reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "arch/qwen3/reference.h"
#include "eval/eval_test_support.h"
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
  std::string type = "qwen3";
  int hidden = 8, layers = 2, inter = 12, heads = 2, kv_heads = 1, head_dim = 6, vocab = 14;
  double eps = 1e-6;
  int experts = 0, top_k = 0, expert_inter = 5;
  bool norm_topk = true;
  std::vector<bool> sparse;  // per layer, qwen3_moe
  bool tied = false;
  bool per_expert = false;   // Hugging Face layout: experts.E.X_proj.weight
  Vec periods;               // head_dim/2 entries: angle = position / period
  double qk_scale = 1.0;     // YaRN's mscale on q and k
  bool biases() const { return type == "qwen2"; }
  bool qk_norm() const { return type != "qwen2"; }
};

Vec matvec(const F32Tensor& w, const Vec& x, int first_row = 0, int rows = -1) {
  const int in = static_cast<int>(w.shape.back());
  if (rows < 0) rows = static_cast<int>(w.values.size()) / in;
  Vec y(rows, 0.0);
  for (int o = 0; o < rows; ++o)
    for (int i = 0; i < in; ++i) y[o] += static_cast<double>(w.values[(first_row + o) * in + i]) * x[i];
  return y;
}

void add_bias(Vec& y, const F32Tensor& b) {
  for (size_t i = 0; i < y.size(); ++i) y[i] += b.values[i];
}

// x / sqrt(mean(x^2) + eps) * w over `n` values at `x`.
void rmsnorm(double* x, int n, const F32Tensor& w, double eps) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const double r = 1.0 / std::sqrt(ss / n + eps);
  for (int i = 0; i < n; ++i) x[i] = x[i] * r * w.values[i];
}

// Half-split rotation (mlx's traditional=False): pairs (i, i + d/2).
void rope_head(double* h, int hd, int pos, const Vec& periods, double scale) {
  for (int i = 0; i < hd; ++i) h[i] *= scale;
  for (int i = 0; i < hd / 2; ++i) {
    const double angle = pos / periods[i];
    const double a = h[i], b = h[i + hd / 2];
    h[i] = a * std::cos(angle) - b * std::sin(angle);
    h[i + hd / 2] = a * std::sin(angle) + b * std::cos(angle);
  }
}

Vec swiglu(const F32Tensor& gate, const F32Tensor& up, const F32Tensor& down, const Vec& x, int first = 0, int rows = -1,
           int down_first = 0, int down_rows = -1) {
  Vec g = matvec(gate, x, first, rows), u = matvec(up, x, first, rows);
  for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  return matvec(down, g, down_first, down_rows);
}

std::vector<Vec> naive_logits(const Naive& n, const Weights& w, const std::vector<int32_t>& tokens) {
  const int T = static_cast<int>(tokens.size());
  const F32Tensor& table = w.at("model.embed_tokens.weight");
  std::vector<Vec> x(T);
  for (int t = 0; t < T; ++t) x[t] = Vec(table.values.begin() + tokens[t] * n.hidden, table.values.begin() + (tokens[t] + 1) * n.hidden);
  const int hd = n.head_dim;
  for (int l = 0; l < n.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<Vec> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      Vec h = x[t];
      rmsnorm(h.data(), n.hidden, w.at(p + "input_layernorm.weight"), n.eps);
      q[t] = matvec(w.at(p + "self_attn.q_proj.weight"), h);
      k[t] = matvec(w.at(p + "self_attn.k_proj.weight"), h);
      v[t] = matvec(w.at(p + "self_attn.v_proj.weight"), h);
      if (n.biases()) {
        add_bias(q[t], w.at(p + "self_attn.q_proj.bias"));
        add_bias(k[t], w.at(p + "self_attn.k_proj.bias"));
        add_bias(v[t], w.at(p + "self_attn.v_proj.bias"));
      }
      for (int hh = 0; hh < n.heads; ++hh) {
        if (n.qk_norm()) rmsnorm(q[t].data() + hh * hd, hd, w.at(p + "self_attn.q_norm.weight"), n.eps);
        rope_head(q[t].data() + hh * hd, hd, t, n.periods, n.qk_scale);
      }
      for (int hh = 0; hh < n.kv_heads; ++hh) {
        if (n.qk_norm()) rmsnorm(k[t].data() + hh * hd, hd, w.at(p + "self_attn.k_norm.weight"), n.eps);
        rope_head(k[t].data() + hh * hd, hd, t, n.periods, n.qk_scale);
      }
    }
    for (int t = 0; t < T; ++t) {
      Vec attn(n.heads * hd, 0.0);
      for (int hh = 0; hh < n.heads; ++hh) {
        const int kvh = hh / (n.heads / n.kv_heads);
        Vec s(t + 1);
        double mx = -1e300, z = 0;
        for (int j = 0; j <= t; ++j) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += q[t][hh * hd + d] * k[j][kvh * hd + d];
          mx = std::max(mx, s[j] = dot / std::sqrt(static_cast<double>(hd)));
        }
        for (double& e : s) z += (e = std::exp(e - mx));
        for (int j = 0; j <= t; ++j)
          for (int d = 0; d < hd; ++d) attn[hh * hd + d] += s[j] / z * v[j][kvh * hd + d];
      }
      const Vec o = matvec(w.at(p + "self_attn.o_proj.weight"), attn);
      for (int i = 0; i < n.hidden; ++i) x[t][i] += o[i];
    }
    for (int t = 0; t < T; ++t) {
      Vec h = x[t];
      rmsnorm(h.data(), n.hidden, w.at(p + "post_attention_layernorm.weight"), n.eps);
      Vec m(n.hidden, 0.0);
      if (n.sparse.empty() || !n.sparse[l]) {
        m = swiglu(w.at(p + "mlp.gate_proj.weight"), w.at(p + "mlp.up_proj.weight"), w.at(p + "mlp.down_proj.weight"), h);
      } else {
        const Vec logits = matvec(w.at(p + "mlp.gate.weight"), h);
        Vec prob(logits.size());
        double mx = -1e300, z = 0;
        for (double g : logits) mx = std::max(mx, g);
        for (size_t e = 0; e < logits.size(); ++e) z += (prob[e] = std::exp(logits[e] - mx));
        for (double& pr : prob) pr /= z;
        std::vector<int> order(n.experts);
        for (int e = 0; e < n.experts; ++e) order[e] = e;
        std::sort(order.begin(), order.end(), [&](int a, int b) { return prob[a] > prob[b]; });
        double kept = 0;
        for (int i = 0; i < n.top_k; ++i) kept += prob[order[i]];
        for (int i = 0; i < n.top_k; ++i) {
          const int e = order[i];
          Vec y;
          if (n.per_expert) {
            const std::string ex = p + "mlp.experts." + std::to_string(e) + ".";
            y = swiglu(w.at(ex + "gate_proj.weight"), w.at(ex + "up_proj.weight"), w.at(ex + "down_proj.weight"), h);
          } else {
            const std::string sw = p + "mlp.switch_mlp.";
            y = swiglu(w.at(sw + "gate_proj.weight"), w.at(sw + "up_proj.weight"), w.at(sw + "down_proj.weight"), h,
                       e * n.expert_inter, n.expert_inter, e * n.hidden, n.hidden);
          }
          const double weight = n.norm_topk ? prob[e] / kept : prob[e];
          for (int d = 0; d < n.hidden; ++d) m[d] += weight * y[d];
        }
      }
      for (int i = 0; i < n.hidden; ++i) x[t][i] += m[i];
    }
  }
  std::vector<Vec> logits(T);
  for (int t = 0; t < T; ++t) {
    Vec h = x[t];
    rmsnorm(h.data(), n.hidden, w.at("model.norm.weight"), n.eps);
    logits[t] = matvec(w.at(n.tied ? "model.embed_tokens.weight" : "lm_head.weight"), h);
  }
  return logits;
}

// ---- model folders ---------------------------------------------------------------------------------------------

Weights qwen_weights(const Naive& n, uint32_t seed) {
  Filler f(seed);
  Weights w;
  const int64_t q = n.heads * n.head_dim, kv = n.kv_heads * n.head_dim;
  w["model.embed_tokens.weight"] = f.tensor({n.vocab, n.hidden}, 1.0);
  w["model.norm.weight"] = f.norm(n.hidden);
  // A stored head is always written: with tied embeddings mlx-lm must ignore it.
  w["lm_head.weight"] = f.tensor({n.vocab, n.hidden}, 0.5);
  for (int l = 0; l < n.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w[p + "input_layernorm.weight"] = f.norm(n.hidden);
    w[p + "post_attention_layernorm.weight"] = f.norm(n.hidden);
    w[p + "self_attn.q_proj.weight"] = f.tensor({q, n.hidden}, 0.6);
    w[p + "self_attn.k_proj.weight"] = f.tensor({kv, n.hidden}, 0.6);
    w[p + "self_attn.v_proj.weight"] = f.tensor({kv, n.hidden}, 0.5);
    w[p + "self_attn.o_proj.weight"] = f.tensor({n.hidden, q}, 0.5);
    if (n.biases()) {
      w[p + "self_attn.q_proj.bias"] = f.tensor({q}, 0.5);
      w[p + "self_attn.k_proj.bias"] = f.tensor({kv}, 0.5);
      w[p + "self_attn.v_proj.bias"] = f.tensor({kv}, 0.5);
    }
    if (n.qk_norm()) {
      w[p + "self_attn.q_norm.weight"] = f.norm(n.head_dim);
      w[p + "self_attn.k_norm.weight"] = f.norm(n.head_dim);
    }
    if (!n.sparse.empty() && n.sparse[l]) {
      w[p + "mlp.gate.weight"] = f.tensor({n.experts, n.hidden}, 1.0);
      if (n.per_expert) {
        for (int e = 0; e < n.experts; ++e) {
          const std::string ex = p + "mlp.experts." + std::to_string(e) + ".";
          w[ex + "gate_proj.weight"] = f.tensor({n.expert_inter, n.hidden}, 0.5);
          w[ex + "up_proj.weight"] = f.tensor({n.expert_inter, n.hidden}, 0.5);
          w[ex + "down_proj.weight"] = f.tensor({n.hidden, n.expert_inter}, 0.5);
        }
      } else {
        w[p + "mlp.switch_mlp.gate_proj.weight"] = f.tensor({n.experts, n.expert_inter, n.hidden}, 0.5);
        w[p + "mlp.switch_mlp.up_proj.weight"] = f.tensor({n.experts, n.expert_inter, n.hidden}, 0.5);
        w[p + "mlp.switch_mlp.down_proj.weight"] = f.tensor({n.experts, n.hidden, n.expert_inter}, 0.5);
      }
    } else {
      w[p + "mlp.gate_proj.weight"] = f.tensor({n.inter, n.hidden}, 0.5);
      w[p + "mlp.up_proj.weight"] = f.tensor({n.inter, n.hidden}, 0.5);
      w[p + "mlp.down_proj.weight"] = f.tensor({n.hidden, n.inter}, 0.5);
    }
  }
  return w;
}

nlohmann::json qwen_config(const Naive& n) {
  nlohmann::json c = {{"model_type", n.type}, {"hidden_size", n.hidden}, {"num_hidden_layers", n.layers},
                      {"intermediate_size", n.inter}, {"num_attention_heads", n.heads},
                      {"num_key_value_heads", n.kv_heads}, {"rms_norm_eps", n.eps}, {"vocab_size", n.vocab},
                      {"tie_word_embeddings", n.tied}, {"max_position_embeddings", 4096}, {"rope_theta", 10000.0}};
  if (n.type != "qwen2") c["head_dim"] = n.head_dim;
  return c;
}

Vec plain_periods(int dims, double base) {
  Vec periods;
  for (int i = 0; i < dims / 2; ++i) periods.push_back(std::pow(base, 2.0 * i / dims));
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

double max_difference(const std::vector<float>& got, const std::vector<Vec>& want, int vocab) {
  double worst = 0;
  for (size_t t = 0; t < want.size(); ++t)
    for (int o = 0; o < vocab; ++o) worst = std::max(worst, std::abs(got[t * vocab + o] - want[t][o]));
  return worst;
}

const std::vector<int32_t> kTokens = {3, 0, 11, 7, 7, 2, 9, 13};

std::vector<float> reference(const nlohmann::json& config, const Weights& w, const std::vector<int32_t>& tokens = kTokens) {
  HandModel folder;
  folder.write(config, w);
  return reference_logits(SourceModel::open(folder.dir()), tokens);
}

// ---- tests ------------------------------------------------------------------------------------------------------

TEST(ReferenceQwen3, Qwen2WithBiasesDerivedHeadDimAndDefaultsMatchesPlainLoops) {
  Naive n;
  n.type = "qwen2";
  n.head_dim = 4;  // hidden / heads
  n.periods = plain_periods(4, 1e6);  // qwen2.py's default rope_theta
  const Weights w = qwen_weights(n, 1);
  nlohmann::json config = qwen_config(n);
  config.erase("rope_theta");
  config["head_dim"] = 6;  // not read by qwen2.py
  const std::vector<float> got = reference(config, w);
  expect_logits_match(got, naive_logits(n, w, kTokens), n.vocab);

  // The biases matter: without them the plain loops disagree.
  Weights stripped = w;
  for (int l = 0; l < n.layers; ++l)
    for (const char* proj : {"q", "k", "v"})
      for (float& b : stripped["model.layers." + std::to_string(l) + ".self_attn." + proj + "_proj.bias"].values) b = 0;
  EXPECT_GT(max_difference(got, naive_logits(n, stripped, kTokens), n.vocab), 1e-2);
}

TEST(ReferenceQwen3, Qwen2TiedByDefaultIgnoresAStoredLmHead) {
  Naive n;
  n.type = "qwen2";
  n.head_dim = 4;
  n.tied = true;
  n.periods = plain_periods(4, 10000.0);
  const Weights w = qwen_weights(n, 2);
  nlohmann::json config = qwen_config(n);
  config.erase("tie_word_embeddings");  // qwen2.py: True
  expect_logits_match(reference(config, w), naive_logits(n, w, kTokens), n.vocab);
}

TEST(ReferenceQwen3, Qwen3WithPerHeadQkNormsAndHeadDimMatchesPlainLoops) {
  Naive n;  // head_dim 6 while hidden / heads = 4
  n.periods = plain_periods(6, 10000.0);
  const Weights w = qwen_weights(n, 3);
  const std::vector<float> got = reference(qwen_config(n), w);
  expect_logits_match(got, naive_logits(n, w, kTokens), n.vocab);

  // The q/k norms matter: shifted by +1 (as if they were zero-centred) the plain loops disagree.
  Weights shifted = w;
  for (auto& [name, tensor] : shifted)
    if (name.ends_with("q_norm.weight") || name.ends_with("k_norm.weight"))
      for (float& v : tensor.values) v += 1.0f;
  EXPECT_GT(max_difference(got, naive_logits(n, shifted, kTokens), n.vocab), 1e-2);
}

TEST(ReferenceQwen3, Qwen3TiedWithLinearRopeMatchesPlainLoops) {
  Naive n;
  n.tied = true;
  n.periods = plain_periods(6, 10000.0);
  for (double& period : n.periods) period *= 2.0;  // positions scaled by 1 / factor
  const Weights w = qwen_weights(n, 4);
  nlohmann::json config = qwen_config(n);
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_logits_match(reference(config, w), naive_logits(n, w, kTokens), n.vocab);
}

// YaRN written out from the YaRN paper's definition as mlx-lm's rope_utils.py implements it.
Vec yarn_periods(int dims, double base, double factor, double original, double beta_fast, double beta_slow) {
  auto dim_for = [&](double rotations) { return dims * std::log(original / (rotations * 2 * std::numbers::pi)) / (2 * std::log(base)); };
  const double low = std::max(0.0, std::floor(dim_for(beta_fast)));
  const double high = std::min(static_cast<double>(dims - 1), std::ceil(dim_for(beta_slow)));
  Vec periods;
  for (int i = 0; i < dims / 2; ++i) {
    const double wavelength_extrapolated = std::pow(base, 2.0 * i / dims);
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);  // 0: keep (high frequencies), 1: interpolate
    // Angular frequency blended linearly: (1 - ramp)·ω + ramp·ω / factor.
    const double omega = (1 - ramp) / wavelength_extrapolated + ramp / (factor * wavelength_extrapolated);
    periods.push_back(1.0 / omega);
  }
  return periods;
}

TEST(ReferenceQwen3, Qwen3WithYarnMatchesPlainLoops) {
  Naive n;
  n.head_dim = 16;
  n.heads = 2;
  n.kv_heads = 2;
  // base 1e4, original context 2048: correction dims floor(2.02) = 2 and ceil(5.03) = 6, so of the 8 pairs 0-2 keep
  // their frequency, 3-5 are blended and 6-7 are interpolated.
  n.periods = yarn_periods(16, 10000.0, 4.0, 2048, 32, 1);
  n.qk_scale = 0.1 * std::log(4.0) + 1.0;
  const Weights w = qwen_weights(n, 5);
  nlohmann::json config = qwen_config(n);
  config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 2048}};
  const std::vector<int32_t> tokens = {3, 0, 11, 7, 7, 2, 9, 13, 1, 5, 4, 12, 8, 6, 10, 3, 2, 2, 11, 0};
  expect_logits_match(reference(config, w, tokens), naive_logits(n, w, tokens), n.vocab);

  const ref::QwenRope rope = ref::qwen_rope(config, "qwen3", 16);
  EXPECT_DOUBLE_EQ(rope.input_scale, n.qk_scale);
  ASSERT_EQ(rope.rope.inv_freq.size(), 8u);
  EXPECT_DOUBLE_EQ(rope.rope.inv_freq[0], 1.0);  // kept
  EXPECT_NEAR(rope.rope.inv_freq[7], 1.0 / (4.0 * std::pow(10000.0, 14.0 / 16)), 1e-15);  // interpolated
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(rope.rope.inv_freq[i], 1.0 / n.periods[i], 1e-12) << i;
}

TEST(ReferenceQwen3, Qwen3MoeWithSparseAndDenseLayersMatchesPlainLoops) {
  Naive n;
  n.type = "qwen3_moe";
  n.layers = 3;
  n.experts = 4;
  n.top_k = 2;
  n.sparse = {false, true, false};  // decoder_sparse_step 2 and mlp_only_layers [2]: only layer 1 is sparse
  n.periods = plain_periods(6, 10000.0);
  const Weights w = qwen_weights(n, 6);
  nlohmann::json config = qwen_config(n);
  config["num_experts"] = n.experts;
  config["num_experts_per_tok"] = n.top_k;
  config["moe_intermediate_size"] = n.expert_inter;
  config["norm_topk_prob"] = true;
  config["decoder_sparse_step"] = 2;
  config["mlp_only_layers"] = {2};
  // qwen3_moe.py builds a plain RoPE and never reads rope_scaling.
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  expect_logits_match(reference(config, w), naive_logits(n, w, kTokens), n.vocab);
}

TEST(ReferenceQwen3, Qwen3MoeWithoutRenormalisationAndPerExpertTensorsMatchesPlainLoops) {
  Naive n;
  n.type = "qwen3_moe";
  n.experts = 4;
  n.top_k = 3;
  n.norm_topk = false;
  n.per_expert = true;
  n.sparse = {true, true};
  n.tied = true;
  n.periods = plain_periods(6, 10000.0);
  const Weights w = qwen_weights(n, 7);
  nlohmann::json config = qwen_config(n);
  config["num_experts"] = n.experts;
  config["num_experts_per_tok"] = n.top_k;
  config["moe_intermediate_size"] = n.expert_inter;
  config["norm_topk_prob"] = false;
  config["decoder_sparse_step"] = 1;
  config["mlp_only_layers"] = nlohmann::json::array();
  const std::vector<float> got = reference(config, w);
  expect_logits_match(got, naive_logits(n, w, kTokens), n.vocab);

  // Renormalising (what llama.cpp's qwen3moe always does) is a different model.
  Naive renormalised = n;
  renormalised.norm_topk = true;
  EXPECT_GT(max_difference(got, naive_logits(renormalised, w, kTokens), n.vocab), 1e-2);
}

std::string error_of(const nlohmann::json& config, const Weights& w) {
  try {
    reference(config, w);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ReferenceQwen3, RejectsWhatMlxLmWouldNotLoad) {
  Naive n;
  n.periods = plain_periods(6, 10000.0);
  const Weights w = qwen_weights(n, 8);
  // qwen3.py requires head_dim and tie_word_embeddings.
  for (const char* key : {"head_dim", "tie_word_embeddings", "rope_theta"}) {
    nlohmann::json config = qwen_config(n);
    config.erase(key);
    EXPECT_NE(error_of(config, w).find(key), std::string::npos) << key;
  }
  // Biases in a qwen3 folder have no parameter in mlx-lm's qwen3.
  Weights biased = w;
  biased["model.layers.0.self_attn.q_proj.bias"] = Filler(1).tensor({n.heads * n.head_dim}, 0.1);
  EXPECT_NE(error_of(qwen_config(n), biased).find("q_proj.bias"), std::string::npos);
  // A qwen2 folder without its biases.
  Naive q2 = n;
  q2.type = "qwen2";
  q2.head_dim = 4;
  Weights unbiased = qwen_weights(q2, 9);
  unbiased.erase("model.layers.1.self_attn.v_proj.bias");
  EXPECT_NE(error_of(qwen_config(q2), unbiased).find("v_proj.bias"), std::string::npos);
  // Untied without a head.
  Weights headless = w;
  headless.erase("lm_head.weight");
  EXPECT_NE(error_of(qwen_config(n), headless).find("lm_head"), std::string::npos);
}

}  // namespace
}  // namespace mlx2gguf
