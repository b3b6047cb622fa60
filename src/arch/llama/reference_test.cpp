// The llama family's reference forward pass (llama, mistral, mixtral) on small hand-written model folders, against a
// deliberately plain double-precision forward pass written out in this file.
#include "eval/reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

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
  int hidden = 8, layers = 1, inter = 16, heads = 2, kv_heads = 1, head_dim = 4, vocab = 12;
  double eps = 1e-5;
  bool attention_bias = false, mlp_bias = false;
  bool moe = false;
  int experts = 0, top_k = 0;
  Vec inv_freq;                      // head_dim/2 entries
  std::vector<int> windows;          // per layer, 0 = none
  std::string lm_head = "lm_head.weight";  // empty: tied
};

Vec matvec(const F32Tensor& w, const Vec& x, int first_row = 0, int rows = -1) {
  const int in = static_cast<int>(w.shape.back());
  if (rows < 0) rows = static_cast<int>(w.values.size()) / in;
  Vec y(rows, 0.0);
  for (int o = 0; o < rows; ++o)
    for (int i = 0; i < in; ++i) y[o] += static_cast<double>(w.values[(first_row + o) * in + i]) * x[i];
  return y;
}

Vec plus_bias(Vec y, const Weights& w, const std::string& name, bool enabled) {
  if (!enabled) return y;
  for (size_t i = 0; i < y.size(); ++i) y[i] += w.at(name).values[i];
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

// q·cos + rotate_half(q)·sin with cos/sin repeated over both halves of the head.
void rope_head(double* h, int hd, int pos, const Vec& inv_freq) {
  Vec rotated(hd), out(hd);
  for (int i = 0; i < hd / 2; ++i) rotated[i] = -h[i + hd / 2], rotated[i + hd / 2] = h[i];
  for (int i = 0; i < hd; ++i) {
    const double angle = pos * inv_freq[i % (hd / 2)];
    out[i] = h[i] * std::cos(angle) + rotated[i] * std::sin(angle);
  }
  std::copy(out.begin(), out.end(), h);
}

Vec swiglu(const Weights& w, const std::string& p, const Vec& x, bool bias, int expert = -1, int inter = 0, int hidden = 0) {
  Vec g, u;
  if (expert < 0) {
    g = plus_bias(matvec(w.at(p + "gate_proj.weight"), x), w, p + "gate_proj.bias", bias);
    u = plus_bias(matvec(w.at(p + "up_proj.weight"), x), w, p + "up_proj.bias", bias);
  } else {
    g = matvec(w.at(p + "gate_proj.weight"), x, expert * inter, inter);
    u = matvec(w.at(p + "up_proj.weight"), x, expert * inter, inter);
  }
  for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  if (expert < 0) return plus_bias(matvec(w.at(p + "down_proj.weight"), g), w, p + "down_proj.bias", bias);
  return matvec(w.at(p + "down_proj.weight"), g, expert * hidden, hidden);
}

std::vector<Vec> naive_logits(const Naive& n, const Weights& w, const std::vector<int32_t>& tokens) {
  const int T = static_cast<int>(tokens.size());
  std::vector<Vec> x(T);
  for (int t = 0; t < T; ++t)
    x[t] = Vec(w.at("model.embed_tokens.weight").values.begin() + tokens[t] * n.hidden,
               w.at("model.embed_tokens.weight").values.begin() + (tokens[t] + 1) * n.hidden);
  for (int l = 0; l < n.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<Vec> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      const Vec h = rmsnorm(x[t], w.at(p + "input_layernorm.weight"), n.eps);
      q[t] = plus_bias(matvec(w.at(p + "self_attn.q_proj.weight"), h), w, p + "self_attn.q_proj.bias", n.attention_bias);
      k[t] = plus_bias(matvec(w.at(p + "self_attn.k_proj.weight"), h), w, p + "self_attn.k_proj.bias", n.attention_bias);
      v[t] = plus_bias(matvec(w.at(p + "self_attn.v_proj.weight"), h), w, p + "self_attn.v_proj.bias", n.attention_bias);
      for (int hh = 0; hh < n.heads; ++hh) rope_head(q[t].data() + hh * n.head_dim, n.head_dim, t, n.inv_freq);
      for (int hh = 0; hh < n.kv_heads; ++hh) rope_head(k[t].data() + hh * n.head_dim, n.head_dim, t, n.inv_freq);
    }
    const int window = n.windows.empty() ? 0 : n.windows[l];
    for (int t = 0; t < T; ++t) {
      Vec attn(n.heads * n.head_dim, 0.0);
      for (int hh = 0; hh < n.heads; ++hh) {
        const int kvh = hh * n.kv_heads / n.heads;
        std::vector<double> s;
        std::vector<int> keys;
        for (int j = 0; j <= t; ++j) {
          if (window > 0 && t - j >= window) continue;
          double dot = 0;
          for (int d = 0; d < n.head_dim; ++d) dot += q[t][hh * n.head_dim + d] * k[j][kvh * n.head_dim + d];
          s.push_back(dot / std::sqrt(static_cast<double>(n.head_dim)));
          keys.push_back(j);
        }
        double mx = -1e300, z = 0;
        for (double e : s) mx = std::max(mx, e);
        for (double& e : s) z += (e = std::exp(e - mx));
        for (size_t i = 0; i < s.size(); ++i)
          for (int d = 0; d < n.head_dim; ++d) attn[hh * n.head_dim + d] += s[i] / z * v[keys[i]][kvh * n.head_dim + d];
      }
      const Vec o = plus_bias(matvec(w.at(p + "self_attn.o_proj.weight"), attn), w, p + "self_attn.o_proj.bias", n.attention_bias);
      for (int i = 0; i < n.hidden; ++i) x[t][i] += o[i];
    }
    for (int t = 0; t < T; ++t) {
      const Vec h = rmsnorm(x[t], w.at(p + "post_attention_layernorm.weight"), n.eps);
      Vec m(n.hidden, 0.0);
      if (!n.moe) {
        m = swiglu(w, p + "mlp.", h, n.mlp_bias);
      } else {
        // softmax over every expert, keep the top k, renormalise: the same weights as a softmax over the top k.
        const Vec logits = matvec(w.at(p + "block_sparse_moe.gate.weight"), h);
        Vec prob(logits.size());
        double z = 0;
        for (size_t e = 0; e < logits.size(); ++e) z += (prob[e] = std::exp(logits[e]));
        for (double& pr : prob) pr /= z;
        std::vector<int> order(n.experts);
        for (int e = 0; e < n.experts; ++e) order[e] = e;
        std::sort(order.begin(), order.end(), [&](int a, int b) { return prob[a] > prob[b]; });
        double kept = 0;
        for (int i = 0; i < n.top_k; ++i) kept += prob[order[i]];
        for (int i = 0; i < n.top_k; ++i) {
          const Vec y = swiglu(w, p + "block_sparse_moe.switch_mlp.", h, false, order[i], n.inter, n.hidden);
          for (int d = 0; d < n.hidden; ++d) m[d] += prob[order[i]] / kept * y[d];
        }
      }
      for (int i = 0; i < n.hidden; ++i) x[t][i] += m[i];
    }
  }
  std::vector<Vec> logits(T);
  for (int t = 0; t < T; ++t) {
    const Vec h = rmsnorm(x[t], w.at("model.norm.weight"), n.eps);
    logits[t] = matvec(w.at(n.lm_head.empty() ? "model.embed_tokens.weight" : n.lm_head), h);
  }
  return logits;
}

// ---- model builders --------------------------------------------------------------------------------------------

Weights llama_weights(const Naive& n, uint32_t seed) {
  Filler f(seed);
  Weights w;
  const int64_t q = n.heads * n.head_dim, kv = n.kv_heads * n.head_dim;
  w["model.embed_tokens.weight"] = f.tensor({n.vocab, n.hidden}, 1.0);
  w["model.norm.weight"] = f.norm(n.hidden);
  if (!n.lm_head.empty()) w[n.lm_head] = f.tensor({n.vocab, n.hidden}, 0.5);
  for (int l = 0; l < n.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w[p + "input_layernorm.weight"] = f.norm(n.hidden);
    w[p + "post_attention_layernorm.weight"] = f.norm(n.hidden);
    w[p + "self_attn.q_proj.weight"] = f.tensor({q, n.hidden}, 0.6);
    w[p + "self_attn.k_proj.weight"] = f.tensor({kv, n.hidden}, 0.6);
    w[p + "self_attn.v_proj.weight"] = f.tensor({kv, n.hidden}, 0.5);
    w[p + "self_attn.o_proj.weight"] = f.tensor({n.hidden, q}, 0.5);
    if (n.attention_bias) {
      w[p + "self_attn.q_proj.bias"] = f.tensor({q}, 0.3);
      w[p + "self_attn.k_proj.bias"] = f.tensor({kv}, 0.3);
      w[p + "self_attn.v_proj.bias"] = f.tensor({kv}, 0.3);
      w[p + "self_attn.o_proj.bias"] = f.tensor({n.hidden}, 0.3);
    }
    if (n.moe) {
      const std::string m = p + "block_sparse_moe.";
      w[m + "gate.weight"] = f.tensor({n.experts, n.hidden}, 1.0);
      w[m + "switch_mlp.gate_proj.weight"] = f.tensor({n.experts, n.inter, n.hidden}, 0.5);
      w[m + "switch_mlp.up_proj.weight"] = f.tensor({n.experts, n.inter, n.hidden}, 0.5);
      w[m + "switch_mlp.down_proj.weight"] = f.tensor({n.experts, n.hidden, n.inter}, 0.5);
    } else {
      w[p + "mlp.gate_proj.weight"] = f.tensor({n.inter, n.hidden}, 0.5);
      w[p + "mlp.up_proj.weight"] = f.tensor({n.inter, n.hidden}, 0.5);
      w[p + "mlp.down_proj.weight"] = f.tensor({n.hidden, n.inter}, 0.5);
      if (n.mlp_bias) {
        w[p + "mlp.gate_proj.bias"] = f.tensor({n.inter}, 0.3);
        w[p + "mlp.up_proj.bias"] = f.tensor({n.inter}, 0.3);
        w[p + "mlp.down_proj.bias"] = f.tensor({n.hidden}, 0.3);
      }
    }
  }
  return w;
}

Vec plain_inv_freq(int dims, double base, double position_scale = 1.0) {
  Vec inv;
  for (int i = 0; i < dims / 2; ++i) inv.push_back(position_scale / std::pow(base, 2.0 * i / dims));
  return inv;
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

const std::vector<int32_t> kTokens = {3, 0, 11, 7, 7, 2, 9};

// ---- tests ------------------------------------------------------------------------------------------------------

TEST(ReferenceForward, LlamaWithBiasesGqaHeadDimAndLlama3RopeMatchesPlainLoops) {
  Naive n;
  n.layers = 2;
  n.head_dim = 6;  // not hidden/heads = 4: head_dim must come from config.json
  n.attention_bias = n.mlp_bias = true;
  // base 1e4, 6 rotated dims: periods 1, 21.5, 464 → wavelengths 6.3, 135, 2917. Thresholds: 1000/1 and
  // 1000/8 = 125, so the second frequency is blended and the third divided by the factor 4.
  const double factor = 4, lo = 1, hi = 8, old = 1000;
  for (double inv : plain_inv_freq(6, 10000.0)) {
    const double wavelen = 2 * std::numbers::pi / inv;
    if (wavelen < old / hi) n.inv_freq.push_back(inv);
    else if (wavelen > old / lo) n.inv_freq.push_back(inv / factor);
    else {
      const double s = (old / wavelen - lo) / (hi - lo);
      n.inv_freq.push_back((1 - s) * inv / factor + s * inv);
    }
  }
  const Weights w = llama_weights(n, 1);
  const nlohmann::json config = {
      {"model_type", "llama"}, {"hidden_size", n.hidden}, {"num_hidden_layers", n.layers},
      {"intermediate_size", n.inter}, {"num_attention_heads", n.heads}, {"num_key_value_heads", n.kv_heads},
      {"head_dim", n.head_dim}, {"rms_norm_eps", n.eps}, {"vocab_size", n.vocab}, {"attention_bias", true},
      {"mlp_bias", true}, {"rope_theta", 10000.0}, {"tie_word_embeddings", false},
      {"rope_scaling", {{"rope_type", "llama3"}, {"factor", factor}, {"low_freq_factor", lo},
                        {"high_freq_factor", hi}, {"original_max_position_embeddings", old}}}};
  HandModel folder;
  folder.write(config, w);
  const std::vector<float> got = reference_logits(SourceModel::open(folder.dir()), kTokens);
  expect_logits_match(got, naive_logits(n, w, kTokens), n.vocab);
}

TEST(ReferenceForward, TiedMistralWithLinearRopeMatchesPlainLoops) {
  Naive n;
  n.layers = 2;
  n.kv_heads = 2;
  n.lm_head.clear();
  n.eps = 1e-6;
  n.inv_freq = plain_inv_freq(4, 1e6, 0.5);
  const Weights w = llama_weights(n, 2);
  const nlohmann::json config = {
      {"model_type", "mistral"}, {"hidden_size", n.hidden}, {"num_hidden_layers", n.layers},
      {"intermediate_size", n.inter}, {"num_attention_heads", n.heads}, {"num_key_value_heads", n.kv_heads},
      {"rms_norm_eps", n.eps}, {"vocab_size", n.vocab}, {"rope_theta", 1e6},
      {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}};
  HandModel folder;
  folder.write(config, w);
  const std::vector<float> got = reference_logits(SourceModel::open(folder.dir()), kTokens);
  expect_logits_match(got, naive_logits(n, w, kTokens), n.vocab);
}

TEST(ReferenceForward, SlidingWindowLayersMaskDistantKeys) {
  Naive n;
  n.layers = 2;
  n.windows = {3, 0};
  n.inv_freq = plain_inv_freq(4, 10000.0);
  const Weights w = llama_weights(n, 3);
  nlohmann::json config = {
      {"model_type", "llama"}, {"hidden_size", n.hidden}, {"num_hidden_layers", n.layers},
      {"intermediate_size", n.inter}, {"num_attention_heads", n.heads}, {"num_key_value_heads", n.kv_heads},
      {"rms_norm_eps", n.eps}, {"vocab_size", n.vocab}, {"tie_word_embeddings", false},
      {"layer_types", {"sliding_attention", "full_attention"}}, {"sliding_window", 3}};
  HandModel folder;
  folder.write(config, w);
  const std::vector<float> got = reference_logits(SourceModel::open(folder.dir()), kTokens);
  expect_logits_match(got, naive_logits(n, w, kTokens), n.vocab);

  // Without the window the logits after position 2 change.
  Naive full = n;
  full.windows.clear();
  const auto unwindowed = naive_logits(full, w, kTokens);
  double diff = 0;
  for (int o = 0; o < n.vocab; ++o) diff = std::max(diff, std::abs(got[6 * n.vocab + o] - unwindowed[6][o]));
  EXPECT_GT(diff, 1e-3);
}

TEST(ReferenceForward, MixtralTopTwoOfFourExpertsMatchesPlainLoops) {
  Naive n;
  n.moe = true;
  n.experts = 4;
  n.top_k = 2;
  n.inter = 6;
  n.kv_heads = 2;
  n.inv_freq = plain_inv_freq(4, 1e6);  // mixtral's default rope_theta; rope_scaling is ignored
  const Weights w = llama_weights(n, 4);
  const nlohmann::json config = {
      {"model_type", "mixtral"}, {"hidden_size", n.hidden}, {"num_hidden_layers", n.layers},
      {"intermediate_size", n.inter}, {"num_attention_heads", n.heads}, {"num_key_value_heads", n.kv_heads},
      {"head_dim", 6},  // ignored by mixtral: hidden/heads = 4
      {"rms_norm_eps", n.eps}, {"vocab_size", n.vocab}, {"num_local_experts", n.experts},
      {"num_experts_per_tok", n.top_k}, {"rope_scaling", {{"type", "linear"}, {"factor", 4.0}}}};
  HandModel folder;
  folder.write(config, w);
  const std::vector<float> got = reference_logits(SourceModel::open(folder.dir()), kTokens);
  expect_logits_match(got, naive_logits(n, w, kTokens), n.vocab);
}

nlohmann::json small_llama_config(const Naive& n) {
  return {{"model_type", "llama"}, {"hidden_size", n.hidden}, {"num_hidden_layers", n.layers},
          {"intermediate_size", n.inter}, {"num_attention_heads", n.heads}, {"num_key_value_heads", n.kv_heads},
          {"rms_norm_eps", n.eps}, {"vocab_size", n.vocab}, {"tie_word_embeddings", false}};
}

std::string error_of(const SourceModel& model, const std::vector<int32_t>& tokens) {
  try {
    reference_logits(model, tokens);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ReferenceForward, RejectsUnknownModelTypesByName) {
  Naive n;
  nlohmann::json config = small_llama_config(n);
  config["model_type"] = "gpt_neox";
  HandModel folder;
  folder.write(config, llama_weights(n, 5));
  const std::string message = error_of(SourceModel::open(folder.dir()), kTokens);
  EXPECT_NE(message.find("gpt_neox"), std::string::npos) << message;
  EXPECT_TRUE(reference_supports("mixtral"));
  EXPECT_FALSE(reference_supports("gpt_neox"));
}

TEST(ReferenceForward, RejectsBadTokensAndInconsistentWeights) {
  Naive n;
  HandModel folder;
  folder.write(small_llama_config(n), llama_weights(n, 6));
  const SourceModel model = SourceModel::open(folder.dir());
  EXPECT_NE(error_of(model, {1, 12}).find("token id 12"), std::string::npos);
  EXPECT_NE(error_of(model, {}).find("at least one token"), std::string::npos);

  // A q_proj with the wrong number of rows is named.
  Weights bad = llama_weights(n, 6);
  bad["model.layers.0.self_attn.q_proj.weight"] = Filler(1).tensor({6, n.hidden}, 1.0);
  HandModel bad_folder;
  bad_folder.write(small_llama_config(n), bad);
  EXPECT_NE(error_of(SourceModel::open(bad_folder.dir()), kTokens).find("q_proj"), std::string::npos);

  // Biases present while config.json leaves attention_bias off.
  Naive biased = n;
  biased.attention_bias = true;
  HandModel bias_folder;
  bias_folder.write(small_llama_config(n), llama_weights(biased, 6));
  EXPECT_NE(error_of(SourceModel::open(bias_folder.dir()), kTokens).find("attention_bias"), std::string::npos);

  // A missing tensor is named.
  Weights missing = llama_weights(n, 6);
  missing.erase("model.layers.0.mlp.up_proj.weight");
  HandModel missing_folder;
  missing_folder.write(small_llama_config(n), missing);
  EXPECT_NE(error_of(SourceModel::open(missing_folder.dir()), kTokens).find("up_proj"), std::string::npos);
}

}  // namespace
}  // namespace mlx2gguf
