// qwen3_5 / qwen3_5_moe reference forward pass on small hand-written folders, against plain double loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "arch/qwen35/reference.h"
#include "eval/eval_test_support.h"
#include "eval/forward.h"
#include "eval/reference.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

using eval_test::F32Tensor;
using eval_test::Filler;
using eval_test::HandModel;
using Weights = std::map<std::string, F32Tensor>;
using Vec = std::vector<double>;

struct QSpec {
  int hidden = 8, layers = 2, inter = 12, heads = 2, kv_heads = 1, head_dim = 4, vocab = 12;
  double eps = 1e-6;
  int interval = 2;  // layer 0 linear attention, layer 1 full attention
  int hk = 2, hv = 4, dk = 4, dv = 3, kernel = 3;
  int experts = 0, top_k = 0, moe_inter = 5, shared_inter = 6;
  bool norm_topk = true;
  double theta = 1000.0;
  double partial = 0.5;
  bool tied = false;
};

const std::string P = "language_model.model.";

Vec mv(const F32Tensor& w, const Vec& x, int first_row = 0, int rows = -1) {
  const int in = static_cast<int>(w.shape.back());
  if (rows < 0) rows = static_cast<int>(w.values.size()) / in;
  Vec y(rows, 0.0);
  for (int o = 0; o < rows; ++o)
    for (int i = 0; i < in; ++i) y[o] += static_cast<double>(w.values[(first_row + o) * in + i]) * x[i];
  return y;
}

// x / sqrt(mean(x²) + eps) · w over [begin, begin + n).
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

std::vector<Vec> naive_qwen(const QSpec& s, const Weights& w, const std::vector<int32_t>& tokens) {
  const int T = static_cast<int>(tokens.size());
  const auto& table = w.at(P + "embed_tokens.weight").values;
  std::vector<Vec> x(T);
  for (int t = 0; t < T; ++t) x[t] = Vec(table.begin() + tokens[t] * s.hidden, table.begin() + (tokens[t] + 1) * s.hidden);
  const int rd = static_cast<int>(s.head_dim * s.partial);

  for (int l = 0; l < s.layers; ++l) {
    const std::string p = P + "layers." + std::to_string(l) + ".";
    std::vector<Vec> h(T);
    for (int t = 0; t < T; ++t) {
      h[t] = x[t];
      norm_slice(h[t].data(), s.hidden, w.at(p + "input_layernorm.weight").values.data(), s.eps);
    }
    std::vector<Vec> mixer(T);
    if ((l + 1) % s.interval != 0) {
      const std::string a = p + "linear_attn.";
      const int kd = s.hk * s.dk, vd = s.hv * s.dv, cw = 2 * kd + vd;
      std::vector<Vec> qkv(T), z(T), bb(T), aa(T), conv(T);
      for (int t = 0; t < T; ++t) {
        qkv[t] = mv(w.at(a + "in_proj_qkv.weight"), h[t]);
        z[t] = mv(w.at(a + "in_proj_z.weight"), h[t]);
        bb[t] = mv(w.at(a + "in_proj_b.weight"), h[t]);
        aa[t] = mv(w.at(a + "in_proj_a.weight"), h[t]);
      }
      const auto& cwts = w.at(a + "conv1d.weight").values;
      for (int t = 0; t < T; ++t) {
        conv[t].assign(cw, 0.0);
        for (int c = 0; c < cw; ++c) {
          double acc = 0;
          for (int j = 0; j < s.kernel; ++j) {
            const int src = t - (s.kernel - 1) + j;
            if (src >= 0) acc += cwts[c * s.kernel + j] * qkv[src][c];
          }
          conv[t][c] = acc * sig(acc);
        }
        for (int hh = 0; hh < s.hk; ++hh) {
          norm_slice(conv[t].data() + hh * s.dk, s.dk, nullptr, 1e-6);
          norm_slice(conv[t].data() + kd + hh * s.dk, s.dk, nullptr, 1e-6);
          for (int i = 0; i < s.dk; ++i) {
            conv[t][hh * s.dk + i] /= s.dk;
            conv[t][kd + hh * s.dk + i] /= std::sqrt(static_cast<double>(s.dk));
          }
        }
      }
      const auto& alog = w.at(a + "A_log").values;
      const auto& dtb = w.at(a + "dt_bias").values;
      std::vector<Vec> y(T, Vec(vd, 0.0));
      for (int j = 0; j < s.hv; ++j) {
        const int kh = j / (s.hv / s.hk);
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
          for (int r = 0; r < s.dv; ++r) {
            double kv = 0;
            for (int c = 0; c < s.dk; ++c) kv += S[r][c] * k[c];
            const double delta = (v[r] - kv) * beta;
            for (int c = 0; c < s.dk; ++c) S[r][c] += delta * k[c];
          }
          for (int r = 0; r < s.dv; ++r) {
            double out = 0;
            for (int c = 0; c < s.dk; ++c) out += S[r][c] * q[c];
            y[t][j * s.dv + r] = out;
          }
        }
      }
      for (int t = 0; t < T; ++t) {
        for (int j = 0; j < s.hv; ++j) {
          norm_slice(y[t].data() + j * s.dv, s.dv, w.at(a + "norm.weight").values.data(), s.eps);
          for (int r = 0; r < s.dv; ++r) y[t][j * s.dv + r] *= z[t][j * s.dv + r] * sig(z[t][j * s.dv + r]);
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
            const double angle = t * std::pow(s.theta, -2.0 * (i % (rd / 2)) / rd);
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
      if (s.experts == 0) {
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
    norm_slice(hn.data(), s.hidden, w.at(P + "norm.weight").values.data(), s.eps);
    logits[t] = mv(w.at(s.tied ? P + "embed_tokens.weight" : "language_model.lm_head.weight"), hn);
  }
  return logits;
}

Weights qwen_weights(const QSpec& s, uint32_t seed) {
  Filler f(seed);
  Weights w;
  w[P + "embed_tokens.weight"] = f.tensor({s.vocab, s.hidden}, 1.0);
  w[P + "norm.weight"] = f.norm(s.hidden);
  if (!s.tied) w["language_model.lm_head.weight"] = f.tensor({s.vocab, s.hidden}, 0.5);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = P + "layers." + std::to_string(l) + ".";
    w[p + "input_layernorm.weight"] = f.norm(s.hidden);
    w[p + "post_attention_layernorm.weight"] = f.norm(s.hidden);
    if ((l + 1) % s.interval != 0) {
      const std::string a = p + "linear_attn.";
      const int kd = s.hk * s.dk, vd = s.hv * s.dv;
      w[a + "in_proj_qkv.weight"] = f.tensor({2 * kd + vd, s.hidden}, 0.6);
      w[a + "in_proj_z.weight"] = f.tensor({vd, s.hidden}, 0.6);
      w[a + "in_proj_b.weight"] = f.tensor({s.hv, s.hidden}, 0.6);
      w[a + "in_proj_a.weight"] = f.tensor({s.hv, s.hidden}, 0.6);
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
    if (s.experts == 0) {
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

nlohmann::json text_config(const QSpec& s, const std::string& model_type) {
  nlohmann::json c = {{"model_type", model_type}, {"hidden_size", s.hidden}, {"num_hidden_layers", s.layers},
                      {"intermediate_size", s.inter}, {"num_attention_heads", s.heads},
                      {"num_key_value_heads", s.kv_heads}, {"head_dim", s.head_dim}, {"rms_norm_eps", s.eps},
                      {"vocab_size", s.vocab}, {"full_attention_interval", s.interval},
                      {"linear_num_key_heads", s.hk}, {"linear_num_value_heads", s.hv},
                      {"linear_key_head_dim", s.dk}, {"linear_value_head_dim", s.dv},
                      {"linear_conv_kernel_dim", s.kernel}, {"tie_word_embeddings", s.tied},
                      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", s.theta},
                                           {"partial_rotary_factor", s.partial}, {"mrope_section", {1, 1, 0}}}}};
  if (s.experts > 0) {
    c["num_experts"] = s.experts;
    c["num_experts_per_tok"] = s.top_k;
    c["moe_intermediate_size"] = s.moe_inter;
    c["shared_expert_intermediate_size"] = s.shared_inter;
    if (!s.norm_topk) c["norm_topk_prob"] = false;
  }
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

const std::vector<int32_t> kTokens = {5, 1, 11, 0, 5, 8, 3, 3};

TEST(ReferenceQwen35, DenseHybridLayersMatchPlainLoops) {
  QSpec s;
  const Weights w = qwen_weights(s, 11);
  // Nested text_config whose model_type names the text-only variant: dispatch goes by the top-level one.
  const nlohmann::json config = {{"model_type", "qwen3_5"}, {"text_config", text_config(s, "qwen3_5_text")}};
  HandModel folder;
  folder.write(config, w);
  const auto got = reference_logits(SourceModel::open(folder.dir()), kTokens);
  expect_match(got, naive_qwen(s, w, kTokens), s.vocab);
}

TEST(ReferenceQwen35, MoeWithSharedExpertMatchesPlainLoops) {
  QSpec s;
  s.layers = 4;  // linear, full, linear, full
  s.experts = 4;
  s.top_k = 2;
  s.tied = true;
  const Weights w = qwen_weights(s, 12);
  HandModel folder;
  folder.write(text_config(s, "qwen3_5_moe"), w);
  const SourceModel model = SourceModel::open(folder.dir());
  const auto got = reference_logits(model, kTokens);
  expect_match(got, naive_qwen(s, w, kTokens), s.vocab);

  // norm_topk_prob false keeps the raw softmax probabilities of the chosen experts.
  QSpec raw = s;
  raw.norm_topk = false;
  HandModel raw_folder;
  raw_folder.write(text_config(raw, "qwen3_5_moe"), w);
  const auto got_raw = reference_logits(SourceModel::open(raw_folder.dir()), kTokens);
  expect_match(got_raw, naive_qwen(raw, w, kTokens), s.vocab);
  double diff = 0;
  for (size_t i = 0; i < got.size(); ++i) diff = std::max(diff, static_cast<double>(std::abs(got[i] - got_raw[i])));
  EXPECT_GT(diff, 1e-3);
}

// The model of `w` as Hugging Face stores it: names under `prefix`, conv1d [C, 1, K], the five zero-centred norms
// holding w − 1 (exact in float for weights near 1; linear_attn.norm keeps its value), experts fused
// (`experts.gate_up_proj` / `experts.down_proj`) or one tensor per expert.
Weights hugging_face_layout(const QSpec& s, const Weights& w, const std::string& prefix, bool fused) {
  Weights hf;
  for (const auto& [name, tensor] : w) {
    const std::string hf_name = name == "language_model.lm_head.weight" ? "lm_head.weight" : prefix + name.substr(P.size());
    F32Tensor t = tensor;
    if (name.find("conv1d.weight") != std::string::npos) t.shape = {t.shape[0], 1, t.shape[1]};
    for (const char* suffix : {"input_layernorm.weight", "post_attention_layernorm.weight", "q_norm.weight",
                               "k_norm.weight"})
      if (name.ends_with(suffix))
        for (float& v : t.values) v -= 1.0f;
    if (name == P + "norm.weight")
      for (float& v : t.values) v -= 1.0f;
    const auto stacked = hf_name.find("switch_mlp.");
    if (stacked == std::string::npos) {
      hf[hf_name] = t;
      continue;
    }
    const std::string mlp = hf_name.substr(0, stacked);  // "...mlp."
    const std::string proj = hf_name.substr(stacked + 11, hf_name.size() - stacked - 11 - 7);  // gate_proj, ...
    const int64_t rows = t.shape[1], cols = t.shape[2];
    for (int e = 0; e < s.experts; ++e) {
      const auto first = t.values.begin() + e * rows * cols;
      if (!fused) {
        hf[mlp + "experts." + std::to_string(e) + "." + proj + ".weight"] = {{rows, cols}, {first, first + rows * cols}};
      } else if (proj == "down_proj") {
        hf[mlp + "experts.down_proj"] = t;
      } else {
        F32Tensor& gate_up = hf[mlp + "experts.gate_up_proj"];
        gate_up.shape = {s.experts, 2 * rows, cols};
        gate_up.values.resize(static_cast<size_t>(s.experts * 2 * rows * cols));
        const int64_t offset = (e * 2 + (proj == "up_proj" ? 1 : 0)) * rows * cols;
        std::copy(first, first + rows * cols, gate_up.values.begin() + offset);
      }
    }
  }
  return hf;
}

TEST(ReferenceQwen35, HuggingFaceLayoutEvaluatesZeroCentredNormsAsOnePlusW) {
  QSpec s;
  s.experts = 4;
  s.top_k = 2;
  const Weights w = qwen_weights(s, 13);
  const auto want = naive_qwen(s, w, kTokens);

  // Multimodal checkpoint names, fused experts, and tensors a text model ignores.
  Weights hf = hugging_face_layout(s, w, "model.language_model.", true);
  ASSERT_TRUE(hf.contains("model.language_model.layers.0.mlp.experts.gate_up_proj"));
  ASSERT_TRUE(hf.contains("lm_head.weight"));
  hf["mtp.fc.weight"] = Filler(3).tensor({4, 4}, 1.0);
  hf["model.visual.patch_embed.proj.weight"] = Filler(4).tensor({4, 4}, 1.0);
  HandModel folder;
  folder.write({{"model_type", "qwen3_5_moe"}, {"text_config", text_config(s, "qwen3_5_moe_text")}}, hf);
  expect_match(reference_logits(SourceModel::open(folder.dir()), kTokens), want, s.vocab);

  // Text-only names, one tensor per expert.
  const Weights text_only = hugging_face_layout(s, w, "model.", false);
  ASSERT_TRUE(text_only.contains("model.layers.1.mlp.experts.3.down_proj.weight"));
  HandModel text_folder;
  text_folder.write(text_config(s, "qwen3_5_moe"), text_only);
  expect_match(reference_logits(SourceModel::open(text_folder.dir()), kTokens), want, s.vocab);
}

TEST(ReferenceQwen35, RopeParametersLikeMlxLm) {
  // rope_parameters present: its theta and factor (rope_type renamed to type).
  const ref::Rope a = ref::qwen3_5_rope(
      {{"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 1000}, {"partial_rotary_factor", 0.5}}}}, 8);
  EXPECT_EQ(a.dims, 4);
  EXPECT_FALSE(a.traditional);
  EXPECT_NEAR(a.inv_freq[1], std::pow(1000.0, -0.5), 1e-15);
  // Absent: mlx-lm's default parameters win over top-level keys (theta 100000, factor 0.25).
  const ref::Rope b = ref::qwen3_5_rope({{"rope_theta", 10.0}, {"partial_rotary_factor", 1.0}}, 16);
  EXPECT_EQ(b.dims, 4);
  EXPECT_NEAR(b.inv_freq[1], std::pow(100000.0, -0.5), 1e-15);
  // Null: the top-level keys.
  const ref::Rope c = ref::qwen3_5_rope({{"rope_parameters", nullptr}, {"rope_theta", 10.0}, {"partial_rotary_factor", 1.0}}, 4);
  EXPECT_EQ(c.dims, 4);
  EXPECT_NEAR(c.inv_freq[1], std::pow(10.0, -0.5), 1e-15);
  // Missing keys inside rope_parameters take the same defaults.
  const ref::Rope d = ref::qwen3_5_rope({{"rope_parameters", {{"type", "default"}}}}, 16);
  EXPECT_EQ(d.dims, 4);
  EXPECT_NEAR(d.inv_freq[1], std::pow(100000.0, -0.5), 1e-15);
}

}  // namespace
}  // namespace mlx2gguf
