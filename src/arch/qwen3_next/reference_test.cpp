// qwen3_next reference forward pass on small hand-written folders, against plain double loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

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

struct NSpec {
  int hidden = 8, layers = 2, inter = 12, heads = 2, kv_heads = 1, head_dim = 4, vocab = 12;
  double eps = 1e-6;
  int interval = 2;  // layer 0 linear attention, layer 1 full attention
  int hk = 2, hv = 4, dk = 4, dv = 3, kernel = 3;
  int experts = 4, top_k = 2, moe_inter = 5, shared_inter = 6;
  bool norm_topk = true;
  std::vector<int> dense_layers;  // written as mlp_only_layers
  double theta = 1000.0;
  double partial = 0.5;
  double linear_rope_factor = 0;  // > 0: rope_scaling {type linear}
  bool tied = false;
};

Vec mv(const F32Tensor& w, const Vec& x, int first_row = 0, int rows = -1) {
  const int in = static_cast<int>(w.shape.back());
  if (rows < 0) rows = static_cast<int>(w.values.size()) / in;
  Vec y(rows, 0.0);
  for (int o = 0; o < rows; ++o)
    for (int i = 0; i < in; ++i) y[o] += static_cast<double>(w.values[(first_row + o) * in + i]) * x[i];
  return y;
}

void norm_slice(double* x, int n, const float* w, double eps) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const double r = 1.0 / std::sqrt(ss / n + eps);
  for (int i = 0; i < n; ++i) x[i] = x[i] * r * (w ? w[i] : 1.0);
}

double sig(double v) { return 1.0 / (1.0 + std::exp(-v)); }

Vec mlp(const Weights& w, const std::string& p, const Vec& x, int expert = -1, int inter = 0, int hidden = 0) {
  Vec g, u;
  if (expert < 0) {
    g = mv(w.at(p + "gate_proj.weight"), x);
    u = mv(w.at(p + "up_proj.weight"), x);
  } else {
    g = mv(w.at(p + "gate_proj.weight"), x, expert * inter, inter);
    u = mv(w.at(p + "up_proj.weight"), x, expert * inter, inter);
  }
  for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] * sig(g[i]) * u[i];
  return expert < 0 ? mv(w.at(p + "down_proj.weight"), g) : mv(w.at(p + "down_proj.weight"), g, expert * hidden, hidden);
}

bool dense(const NSpec& s, int l) { return std::find(s.dense_layers.begin(), s.dense_layers.end(), l) != s.dense_layers.end(); }

// Written from qwen3_next.py directly: fused projections split per key head, convolution over [q | k | v], the
// recurrence per value head reading key head j / r.
std::vector<Vec> naive_next(const NSpec& s, const Weights& w, const std::vector<int32_t>& tokens) {
  const int T = static_cast<int>(tokens.size());
  const auto& table = w.at("model.embed_tokens.weight").values;
  std::vector<Vec> x(T);
  for (int t = 0; t < T; ++t) x[t] = Vec(table.begin() + tokens[t] * s.hidden, table.begin() + (tokens[t] + 1) * s.hidden);
  const int rd = static_cast<int>(s.head_dim * s.partial);
  const double position_scale = s.linear_rope_factor > 0 ? 1.0 / s.linear_rope_factor : 1.0;

  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<Vec> h(T);
    for (int t = 0; t < T; ++t) {
      h[t] = x[t];
      norm_slice(h[t].data(), s.hidden, w.at(p + "input_layernorm.weight").values.data(), s.eps);
    }
    std::vector<Vec> mixer(T);
    if ((l + 1) % s.interval != 0) {
      const std::string a = p + "linear_attn.";
      const int r = s.hv / s.hk, kd = s.hk * s.dk, vd = s.hv * s.dv, cw = 2 * kd + vd, group = 2 * s.dk + 2 * r * s.dv;
      std::vector<Vec> mixed(T, Vec(cw)), z(T, Vec(vd)), bb(T, Vec(s.hv)), aa(T, Vec(s.hv)), conv(T);
      for (int t = 0; t < T; ++t) {
        const Vec qkvz = mv(w.at(a + "in_proj_qkvz.weight"), h[t]);
        const Vec ba = mv(w.at(a + "in_proj_ba.weight"), h[t]);
        for (int kh = 0; kh < s.hk; ++kh) {
          for (int i = 0; i < s.dk; ++i) {
            mixed[t][kh * s.dk + i] = qkvz[kh * group + i];
            mixed[t][kd + kh * s.dk + i] = qkvz[kh * group + s.dk + i];
          }
          for (int i = 0; i < r * s.dv; ++i) {
            mixed[t][2 * kd + kh * r * s.dv + i] = qkvz[kh * group + 2 * s.dk + i];
            z[t][kh * r * s.dv + i] = qkvz[kh * group + 2 * s.dk + r * s.dv + i];
          }
          for (int j = 0; j < r; ++j) {
            bb[t][kh * r + j] = ba[kh * 2 * r + j];
            aa[t][kh * r + j] = ba[kh * 2 * r + r + j];
          }
        }
      }
      const auto& cwts = w.at(a + "conv1d.weight").values;
      for (int t = 0; t < T; ++t) {
        conv[t].assign(cw, 0.0);
        for (int c = 0; c < cw; ++c) {
          double acc = 0;
          for (int j = 0; j < s.kernel; ++j) {
            const int src = t - (s.kernel - 1) + j;
            if (src >= 0) acc += cwts[c * s.kernel + j] * mixed[src][c];
          }
          conv[t][c] = acc * sig(acc);
        }
        for (int kh = 0; kh < s.hk; ++kh) {
          norm_slice(conv[t].data() + kh * s.dk, s.dk, nullptr, 1e-6);
          norm_slice(conv[t].data() + kd + kh * s.dk, s.dk, nullptr, 1e-6);
          for (int i = 0; i < s.dk; ++i) {
            conv[t][kh * s.dk + i] /= s.dk;
            conv[t][kd + kh * s.dk + i] /= std::sqrt(static_cast<double>(s.dk));
          }
        }
      }
      const auto& alog = w.at(a + "A_log").values;
      const auto& dtb = w.at(a + "dt_bias").values;
      std::vector<Vec> y(T, Vec(vd, 0.0));
      for (int j = 0; j < s.hv; ++j) {
        const int kh = j / r;
        std::vector<Vec> S(s.dv, Vec(s.dk, 0.0));
        for (int t = 0; t < T; ++t) {
          const double sp = std::log(1.0 + std::exp(aa[t][j] + dtb[j]));
          const double g = std::exp(-std::exp(static_cast<double>(alog[j])) * sp);
          const double beta = sig(bb[t][j]);
          const double* q = conv[t].data() + kh * s.dk;
          const double* k = conv[t].data() + kd + kh * s.dk;
          const double* v = conv[t].data() + 2 * kd + j * s.dv;
          for (auto& row : S)
            for (double& e : row) e *= g;
          for (int rr = 0; rr < s.dv; ++rr) {
            double kv = 0;
            for (int c = 0; c < s.dk; ++c) kv += S[rr][c] * k[c];
            const double delta = (v[rr] - kv) * beta;
            for (int c = 0; c < s.dk; ++c) S[rr][c] += delta * k[c];
          }
          for (int rr = 0; rr < s.dv; ++rr) {
            double out = 0;
            for (int c = 0; c < s.dk; ++c) out += S[rr][c] * q[c];
            y[t][j * s.dv + rr] = out;
          }
        }
      }
      for (int t = 0; t < T; ++t) {
        for (int j = 0; j < s.hv; ++j) {
          norm_slice(y[t].data() + j * s.dv, s.dv, w.at(a + "norm.weight").values.data(), s.eps);
          for (int rr = 0; rr < s.dv; ++rr) y[t][j * s.dv + rr] *= z[t][j * s.dv + rr] * sig(z[t][j * s.dv + rr]);
        }
        mixer[t] = mv(w.at(a + "out_proj.weight"), y[t]);
      }
    } else {
      const std::string a = p + "self_attn.";
      const int hd = s.head_dim;
      std::vector<Vec> q(T, Vec(s.heads * hd)), gate(T, Vec(s.heads * hd)), k(T), v(T);
      for (int t = 0; t < T; ++t) {
        const Vec qg = mv(w.at(a + "q_proj.weight"), h[t]);
        for (int hh = 0; hh < s.heads; ++hh)
          for (int d = 0; d < hd; ++d) {
            q[t][hh * hd + d] = qg[hh * 2 * hd + d];
            gate[t][hh * hd + d] = qg[hh * 2 * hd + hd + d];
          }
        k[t] = mv(w.at(a + "k_proj.weight"), h[t]);
        v[t] = mv(w.at(a + "v_proj.weight"), h[t]);
        auto rope = [&](double* head) {
          Vec out(head, head + hd);
          for (int i = 0; i < rd; ++i) {
            const double angle = t * position_scale * std::pow(s.theta, -2.0 * (i % (rd / 2)) / rd);
            const double partner = i < rd / 2 ? -head[i + rd / 2] : head[i - rd / 2];
            out[i] = head[i] * std::cos(angle) + partner * std::sin(angle);
          }
          std::copy(out.begin(), out.end(), head);
        };
        for (int hh = 0; hh < s.heads; ++hh) {
          norm_slice(q[t].data() + hh * hd, hd, w.at(a + "q_norm.weight").values.data(), s.eps);
          rope(q[t].data() + hh * hd);
        }
        for (int hh = 0; hh < s.kv_heads; ++hh) {
          norm_slice(k[t].data() + hh * hd, hd, w.at(a + "k_norm.weight").values.data(), s.eps);
          rope(k[t].data() + hh * hd);
        }
      }
      for (int t = 0; t < T; ++t) {
        Vec out(s.heads * hd, 0.0);
        for (int hh = 0; hh < s.heads; ++hh) {
          const int kvh = hh / (s.heads / s.kv_heads);
          Vec sc(t + 1);
          double mx = -1e300, zsum = 0;
          for (int j = 0; j <= t; ++j) {
            double dot = 0;
            for (int d = 0; d < hd; ++d) dot += q[t][hh * hd + d] * k[j][kvh * hd + d];
            sc[j] = dot / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, sc[j]);
          }
          for (double& e : sc) zsum += (e = std::exp(e - mx));
          for (int j = 0; j <= t; ++j)
            for (int d = 0; d < hd; ++d) out[hh * hd + d] += sc[j] / zsum * v[j][kvh * hd + d];
        }
        for (int i = 0; i < s.heads * hd; ++i) out[i] *= sig(gate[t][i]);
        mixer[t] = mv(w.at(a + "o_proj.weight"), out);
      }
    }
    for (int t = 0; t < T; ++t) {
      for (int i = 0; i < s.hidden; ++i) x[t][i] += mixer[t][i];
      Vec hn = x[t];
      norm_slice(hn.data(), s.hidden, w.at(p + "post_attention_layernorm.weight").values.data(), s.eps);
      Vec m(s.hidden, 0.0);
      if (dense(s, l)) {
        m = mlp(w, p + "mlp.", hn);
      } else {
        const Vec logits = mv(w.at(p + "mlp.gate.weight"), hn);
        Vec prob(s.experts);
        double zsum = 0;
        for (int e = 0; e < s.experts; ++e) zsum += (prob[e] = std::exp(logits[e]));
        for (double& pr : prob) pr /= zsum;
        std::vector<int> order(s.experts);
        for (int e = 0; e < s.experts; ++e) order[e] = e;
        std::sort(order.begin(), order.end(), [&](int a2, int b2) { return prob[a2] > prob[b2]; });
        double kept = 0;
        for (int i = 0; i < s.top_k; ++i) kept += prob[order[i]];
        for (int i = 0; i < s.top_k; ++i) {
          const Vec y = mlp(w, p + "mlp.switch_mlp.", hn, order[i], s.moe_inter, s.hidden);
          const double weight = s.norm_topk ? prob[order[i]] / kept : prob[order[i]];
          for (int d = 0; d < s.hidden; ++d) m[d] += weight * y[d];
        }
        const Vec shared = mlp(w, p + "mlp.shared_expert.", hn);
        const double sg = sig(mv(w.at(p + "mlp.shared_expert_gate.weight"), hn)[0]);
        for (int d = 0; d < s.hidden; ++d) m[d] += sg * shared[d];
      }
      for (int i = 0; i < s.hidden; ++i) x[t][i] += m[i];
    }
  }
  std::vector<Vec> logits(T);
  for (int t = 0; t < T; ++t) {
    Vec hn = x[t];
    norm_slice(hn.data(), s.hidden, w.at("model.norm.weight").values.data(), s.eps);
    logits[t] = mv(w.at(s.tied ? "model.embed_tokens.weight" : "lm_head.weight"), hn);
  }
  return logits;
}

// The weights as mlx-lm saves them (norms already 1 + w).
Weights next_weights(const NSpec& s, uint32_t seed) {
  Filler f(seed);
  Weights w;
  w["model.embed_tokens.weight"] = f.tensor({s.vocab, s.hidden}, 1.0);
  w["model.norm.weight"] = f.norm(s.hidden);
  if (!s.tied) w["lm_head.weight"] = f.tensor({s.vocab, s.hidden}, 0.5);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w[p + "input_layernorm.weight"] = f.norm(s.hidden);
    w[p + "post_attention_layernorm.weight"] = f.norm(s.hidden);
    if ((l + 1) % s.interval != 0) {
      const std::string a = p + "linear_attn.";
      const int kd = s.hk * s.dk, vd = s.hv * s.dv;
      w[a + "in_proj_qkvz.weight"] = f.tensor({2 * kd + 2 * vd, s.hidden}, 0.6);
      w[a + "in_proj_ba.weight"] = f.tensor({2 * s.hv, s.hidden}, 0.6);
      w[a + "conv1d.weight"] = f.tensor({2 * kd + vd, s.kernel, 1}, 0.8);
      w[a + "dt_bias"] = f.tensor({s.hv}, 1.0);
      w[a + "A_log"] = f.tensor({s.hv}, 1.0);
      w[a + "norm.weight"] = f.norm(s.dv);
      w[a + "out_proj.weight"] = f.tensor({s.hidden, vd}, 0.5);
    } else {
      const std::string a = p + "self_attn.";
      w[a + "q_proj.weight"] = f.tensor({2 * s.heads * s.head_dim, s.hidden}, 0.6);
      w[a + "k_proj.weight"] = f.tensor({s.kv_heads * s.head_dim, s.hidden}, 0.6);
      w[a + "v_proj.weight"] = f.tensor({s.kv_heads * s.head_dim, s.hidden}, 0.5);
      w[a + "o_proj.weight"] = f.tensor({s.hidden, s.heads * s.head_dim}, 0.5);
      w[a + "q_norm.weight"] = f.norm(s.head_dim);
      w[a + "k_norm.weight"] = f.norm(s.head_dim);
    }
    const std::string m = p + "mlp.";
    if (dense(s, l)) {
      w[m + "gate_proj.weight"] = f.tensor({s.inter, s.hidden}, 0.5);
      w[m + "up_proj.weight"] = f.tensor({s.inter, s.hidden}, 0.5);
      w[m + "down_proj.weight"] = f.tensor({s.hidden, s.inter}, 0.5);
    } else {
      w[m + "gate.weight"] = f.tensor({s.experts, s.hidden}, 1.0);
      w[m + "switch_mlp.gate_proj.weight"] = f.tensor({s.experts, s.moe_inter, s.hidden}, 0.5);
      w[m + "switch_mlp.up_proj.weight"] = f.tensor({s.experts, s.moe_inter, s.hidden}, 0.5);
      w[m + "switch_mlp.down_proj.weight"] = f.tensor({s.experts, s.hidden, s.moe_inter}, 0.5);
      w[m + "shared_expert.gate_proj.weight"] = f.tensor({s.shared_inter, s.hidden}, 0.5);
      w[m + "shared_expert.up_proj.weight"] = f.tensor({s.shared_inter, s.hidden}, 0.5);
      w[m + "shared_expert.down_proj.weight"] = f.tensor({s.hidden, s.shared_inter}, 0.5);
      w[m + "shared_expert_gate.weight"] = f.tensor({1, s.hidden}, 1.0);
    }
  }
  return w;
}

nlohmann::json next_config(const NSpec& s) {
  nlohmann::json c = {{"model_type", "qwen3_next"}, {"hidden_size", s.hidden}, {"num_hidden_layers", s.layers},
                      {"intermediate_size", s.inter}, {"num_attention_heads", s.heads},
                      {"num_key_value_heads", s.kv_heads}, {"head_dim", s.head_dim}, {"rms_norm_eps", s.eps},
                      {"vocab_size", s.vocab}, {"full_attention_interval", s.interval},
                      {"linear_num_key_heads", s.hk}, {"linear_num_value_heads", s.hv},
                      {"linear_key_head_dim", s.dk}, {"linear_value_head_dim", s.dv},
                      {"linear_conv_kernel_dim", s.kernel}, {"tie_word_embeddings", s.tied},
                      {"num_experts", s.experts}, {"num_experts_per_tok", s.top_k},
                      {"moe_intermediate_size", s.moe_inter}, {"shared_expert_intermediate_size", s.shared_inter},
                      {"decoder_sparse_step", 1}, {"mlp_only_layers", s.dense_layers},
                      {"max_position_embeddings", 64}, {"rope_theta", s.theta},
                      {"partial_rotary_factor", s.partial}, {"rope_scaling", nullptr}};
  if (s.norm_topk) c["norm_topk_prob"] = true;  // absent: mlx-lm's default, false
  if (s.linear_rope_factor > 0) c["rope_scaling"] = {{"type", "linear"}, {"factor", s.linear_rope_factor}};
  return c;
}

void expect_match(const std::vector<float>& got, const std::vector<Vec>& want, int vocab) {
  ASSERT_EQ(got.size(), want.size() * vocab);
  double worst = 0, largest = 0;
  for (size_t t = 0; t < want.size(); ++t)
    for (int o = 0; o < vocab; ++o) {
      worst = std::max(worst, std::abs(got[t * vocab + o] - want[t][o]));
      largest = std::max(largest, std::abs(want[t][o]));
    }
  EXPECT_GT(largest, 0.1);
  EXPECT_LT(worst, 2e-5) << "largest logit " << largest;
}

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
  return diff;
}

const std::vector<int32_t> kTokens = {5, 1, 11, 0, 5, 8, 3, 3};

std::vector<float> run(const NSpec& s, const Weights& w) {
  HandModel folder;
  folder.write(next_config(s), w);
  return reference_logits(SourceModel::open(folder.dir()), kTokens);
}

TEST(ReferenceQwen3Next, HybridMoeLayersMatchPlainLoops) {
  NSpec s;
  s.layers = 4;  // linear, full, linear, full
  const Weights w = next_weights(s, 21);
  const auto got = run(s, w);
  expect_match(got, naive_next(s, w, kTokens), s.vocab);

  // norm_topk_prob absent is mlx-lm's false: the raw softmax probabilities of the chosen experts.
  NSpec raw = s;
  raw.norm_topk = false;
  const auto got_raw = run(raw, w);
  expect_match(got_raw, naive_next(raw, w, kTokens), s.vocab);
  EXPECT_GT(max_difference(got, got_raw), 1e-3);
}

// The per-key-head grouping of in_proj_qkvz matters: the same rows rearranged from [q_h | k_h | v_h | z_h] per key
// head to [all q | all k | all v | all z] (the mix-up of a converter that skips the split) give other logits.
TEST(ReferenceQwen3Next, FusedProjectionsAreSplitPerKeyHead) {
  NSpec s;
  const Weights w = next_weights(s, 22);
  const auto got = run(s, w);
  expect_match(got, naive_next(s, w, kTokens), s.vocab);
  Weights regrouped = w;
  const int r = s.hv / s.hk, group = 2 * s.dk + 2 * r * s.dv;
  F32Tensor& qkvz = regrouped.at("model.layers.0.linear_attn.in_proj_qkvz.weight");
  const F32Tensor original = qkvz;
  std::vector<int> flat;  // row i of the rearranged tensor is row flat[i] of the original
  for (int part = 0; part < 4; ++part)
    for (int kh = 0; kh < s.hk; ++kh) {
      const int offset = part == 0 ? 0 : part == 1 ? s.dk : part == 2 ? 2 * s.dk : 2 * s.dk + r * s.dv;
      const int width = part < 2 ? s.dk : r * s.dv;
      for (int i = 0; i < width; ++i) flat.push_back(kh * group + offset + i);
    }
  ASSERT_EQ(flat.size(), original.values.size() / s.hidden);
  for (size_t i = 0; i < flat.size(); ++i)
    std::copy_n(original.values.begin() + flat[i] * s.hidden, s.hidden, qkvz.values.begin() + static_cast<int64_t>(i) * s.hidden);
  EXPECT_GT(max_difference(got, run(s, regrouped)), 1e-3);
}

TEST(ReferenceQwen3Next, DenseLayersTiedHeadAndLinearRope) {
  NSpec s;
  s.layers = 4;
  s.dense_layers = {1, 2};  // mlp_only_layers: Qwen3NextMLP of intermediate_size
  s.tied = true;
  s.linear_rope_factor = 2.0;
  const Weights w = next_weights(s, 23);
  expect_match(run(s, w), naive_next(s, w, kTokens), s.vocab);
}

// The checkpoint mlx-lm's sanitize still transforms: per-expert tensors, conv1d [C, 1, K], zero-centred norms as w
// (exact in float for weights near 1), linear_attn.norm as it is, and a multi-token-prediction head it drops.
TEST(ReferenceQwen3Next, HuggingFaceLayoutIsReadAsSanitizeMakesIt) {
  NSpec s;
  s.layers = 4;
  const Weights w = next_weights(s, 24);
  const auto want = naive_next(s, w, kTokens);
  Weights hf;
  for (const auto& [name, tensor] : w) {
    F32Tensor t = tensor;
    if (name.find("conv1d.weight") != std::string::npos) t.shape = {t.shape[0], 1, t.shape[1]};
    for (const char* suffix : {"input_layernorm.weight", "post_attention_layernorm.weight", "q_norm.weight", "k_norm.weight"})
      if (name.ends_with(suffix))
        for (float& v : t.values) v -= 1.0f;
    if (name == "model.norm.weight")
      for (float& v : t.values) v -= 1.0f;
    const auto stacked = name.find("switch_mlp.");
    if (stacked == std::string::npos) {
      hf[name] = t;
      continue;
    }
    const std::string proj = name.substr(stacked + 11, name.size() - stacked - 11 - 7);
    const int64_t rows = t.shape[1], cols = t.shape[2];
    for (int e = 0; e < s.experts; ++e) {
      const auto first = t.values.begin() + e * rows * cols;
      hf[name.substr(0, stacked) + "experts." + std::to_string(e) + "." + proj + ".weight"] = {{rows, cols}, {first, first + rows * cols}};
    }
  }
  ASSERT_TRUE(hf.contains("model.layers.0.mlp.experts.0.up_proj.weight"));
  hf["mtp.fc.weight"] = Filler(3).tensor({4, 4}, 1.0);
  expect_match(run(s, hf), want, s.vocab);

  // The same zero-centred values in an mlx-lm folder (no per-expert tensors) are taken as already shifted.
  Weights unshifted = w;
  for (auto& [name, tensor] : unshifted)
    if (name.ends_with("input_layernorm.weight"))
      for (float& v : tensor.values) v -= 1.0f;
  EXPECT_GT(max_difference(run(s, unshifted), run(s, w)), 1e-3);
}

TEST(ReferenceQwen3Next, MissingRequiredKeysFail) {
  NSpec s;
  const Weights w = next_weights(s, 25);
  for (const char* key : {"rope_theta", "head_dim", "num_experts", "linear_conv_kernel_dim"}) {
    nlohmann::json config = next_config(s);
    config.erase(key);
    HandModel folder;
    folder.write(config, w);
    EXPECT_THROW(reference_logits(SourceModel::open(folder.dir()), kTokens), Error) << key;
  }
}

}  // namespace
}  // namespace mlx2gguf
