// Reference forward pass of the gpt-oss family (mlx-lm gpt_oss.py): pre-norm decoder blocks of grouped-query
// attention with per-head sinks, sliding-window layers as layer_types says, YaRN rotary embeddings, and a mixture of
// experts (router with bias, top-k logits, softmax over the k, experts with biases and a clamped SwiGLU).
#include "arch/gpt_oss/reference.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "eval/forward.h"
#include "read/model_folder.h"
#include "util/error.h"

namespace mlx2gguf::ref {

namespace {

struct GptOssParams {
  // gpt_oss.py's ModelArgs defaults.
  int64_t hidden = 2880, layers = 36, intermediate = 2880, heads = 64, kv_heads = 8, head_dim = 64;
  int64_t experts = 128, experts_per_token = 4, window = 128;
  double eps = 1e-5;
  ScaledRope rope;
  std::vector<bool> sliding;  // per layer
};

std::vector<bool> read_layer_types(const nlohmann::json& c, int64_t layers) {
  std::vector<bool> sliding;
  if (!c.contains("layer_types") || c["layer_types"].is_null()) {
    // ["sliding_attention", "full_attention"] * (layers // 2), zipped with the layers.
    if (layers % 2 != 0) fail("config.json: without layer_types, mlx-lm runs only {} of the {} layers", layers - 1, layers);
    for (int64_t i = 0; i < layers; ++i) sliding.push_back(i % 2 == 0);
    return sliding;
  }
  const nlohmann::json& types = c["layer_types"];
  if (!types.is_array() || static_cast<int64_t>(types.size()) != layers)
    fail("config.json: layer_types must list {} layer types", layers);
  for (const auto& type : types) {
    if (type != "sliding_attention" && type != "full_attention")
      fail("config.json: unknown layer type {} in layer_types", type.dump());
    sliding.push_back(type == "sliding_attention");
  }
  return sliding;
}

GptOssParams read_params(const SourceModel& model) {
  const nlohmann::json& c = model.config();
  GptOssParams p;
  p.hidden = config_value<int64_t>(c, "hidden_size", p.hidden);
  p.layers = config_value<int64_t>(c, "num_hidden_layers", p.layers);
  p.intermediate = config_value<int64_t>(c, "intermediate_size", p.intermediate);
  p.heads = config_value<int64_t>(c, "num_attention_heads", p.heads);
  p.kv_heads = config_value<int64_t>(c, "num_key_value_heads", p.kv_heads);
  p.head_dim = config_value<int64_t>(c, "head_dim", p.head_dim);
  p.experts = config_value<int64_t>(c, "num_local_experts", p.experts);
  p.experts_per_token = config_value<int64_t>(c, "num_experts_per_tok", p.experts_per_token);
  p.eps = config_value<double>(c, "rms_norm_eps", p.eps);
  if (c.contains("sliding_window") && c["sliding_window"].is_null()) fail("config.json: sliding_window is null");
  p.window = config_value<int64_t>(c, "sliding_window", p.window);
  if (p.hidden <= 0 || p.heads <= 0 || p.kv_heads <= 0 || p.head_dim <= 0 || p.window <= 0 || p.layers <= 0)
    fail("config.json: sizes, head counts and sliding_window must be positive");
  p.rope = gpt_oss_rope(c, p.head_dim);
  p.sliding = read_layer_types(c, p.layers);
  return p;
}

double yarn_get_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

double json_number(const nlohmann::json& object, const char* key, double fallback) {
  if (!object.contains(key) || object[key].is_null()) return fallback;
  if (!object[key].is_number()) fail("config.json: rope_scaling '{}' is not a number", key);
  return object[key].get<double>();
}

Activations attention_block(const SourceModel& model, const GptOssParams& p, const std::string& prefix,
                            const Activations& x, bool sliding) {
  const int64_t q_rows = p.heads * p.head_dim, kv_rows = p.kv_heads * p.head_dim;
  const SourceTensor& wq = model.require(prefix + "q_proj.weight");
  const SourceTensor& wk = model.require(prefix + "k_proj.weight");
  const SourceTensor& wv = model.require(prefix + "v_proj.weight");
  const SourceTensor& wo = model.require(prefix + "o_proj.weight");
  expect_shape(wq, {q_rows, p.hidden});
  expect_shape(wk, {kv_rows, p.hidden});
  expect_shape(wv, {kv_rows, p.hidden});
  expect_shape(wo, {p.hidden, q_rows});
  // Every projection of gpt_oss.py has a bias.
  const auto bq = read_vector(model, prefix + "q_proj.bias", q_rows);
  const auto bk = read_vector(model, prefix + "k_proj.bias", kv_rows);
  const auto bv = read_vector(model, prefix + "v_proj.bias", kv_rows);
  const auto bo = read_vector(model, prefix + "o_proj.bias", p.hidden);
  const auto sinks = read_vector(model, prefix + "sinks", p.heads);

  Activations q = linear(x, wq, bq.data());
  Activations k = linear(x, wk, bk.data());
  const Activations v = linear(x, wv, bv.data());
  for (Activations* a : {&q, &k}) {
    if (p.rope.mscale != 1.0)
      for (int64_t t = 0; t < a->rows(); ++t)
        for (int64_t h = 0; h < a->cols(); h += p.head_dim)
          for (int64_t d = 0; d < p.rope.rope.dims; ++d)
            a->row(t)[h + d] = static_cast<float>(p.rope.mscale * a->row(t)[h + d]);
    apply_rope_rows(*a, p.head_dim, p.rope.rope);
  }
  AttentionShape shape;
  shape.n_heads = p.heads;
  shape.n_kv_heads = p.kv_heads;
  shape.head_dim = p.head_dim;
  shape.scale = 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  shape.window = sliding ? p.window : 0;
  return linear(attention_with_sinks(q, k, v, shape, sinks), wo, bo.data());
}

Activations experts_block(const SourceModel& model, const GptOssParams& p, const std::string& prefix,
                          const Activations& x) {
  const SourceTensor& router = model.require(prefix + "router.weight");
  expect_shape(router, {p.experts, p.hidden});
  const auto router_bias = read_vector(model, prefix + "router.bias", p.experts);
  const Activations logits = linear(x, router, router_bias.data());

  const int64_t inter = p.intermediate, hidden = p.hidden;
  const SourceTensor& gate = model.require(prefix + "experts.gate_proj.weight");
  const SourceTensor& up = model.require(prefix + "experts.up_proj.weight");
  const SourceTensor& down = model.require(prefix + "experts.down_proj.weight");
  expect_shape(gate, {p.experts, inter, hidden});
  expect_shape(up, {p.experts, inter, hidden});
  expect_shape(down, {p.experts, hidden, inter});
  auto read_matrix = [&](const std::string& name, int64_t cols) {
    const SourceTensor& tensor = model.require(name);
    expect_shape(tensor, {p.experts, cols});
    return read_all(tensor);
  };
  const auto gate_bias = read_matrix(prefix + "experts.gate_proj.bias", inter);
  const auto up_bias = read_matrix(prefix + "experts.up_proj.bias", inter);
  const auto down_bias = read_matrix(prefix + "experts.down_proj.bias", hidden);

  // Top-k of the router logits, weighted by a softmax over those k.
  std::vector<std::vector<std::pair<int64_t, double>>> users(static_cast<size_t>(p.experts));  // (token, weight)
  for (int64_t t = 0; t < x.rows(); ++t)
    for (const ExpertChoice& choice : route_topk_softmax(logits.row(t), p.experts, p.experts_per_token))
      users[static_cast<size_t>(choice.expert)].emplace_back(t, choice.weight);

  std::vector<double> acc(static_cast<size_t>(x.rows() * hidden), 0.0);
  for (int64_t e = 0; e < p.experts; ++e) {
    const auto& chosen = users[static_cast<size_t>(e)];
    if (chosen.empty()) continue;
    Activations xe(static_cast<int64_t>(chosen.size()), hidden);
    for (size_t i = 0; i < chosen.size(); ++i)
      std::copy(x.row(chosen[i].first), x.row(chosen[i].first) + hidden, xe.row(static_cast<int64_t>(i)));
    Activations g = linear(xe, gate, gate_bias.data() + e * inter, e * inter, inter);
    const Activations u = linear(xe, up, up_bias.data() + e * inter, e * inter, inter);
    for (size_t i = 0; i < g.data().size(); ++i) g.data()[i] = static_cast<float>(clamped_swiglu(g.data()[i], u.data()[i]));
    const Activations y = linear(g, down, down_bias.data() + e * hidden, e * hidden, hidden);
    for (size_t i = 0; i < chosen.size(); ++i) {
      double* out = acc.data() + chosen[i].first * hidden;
      for (int64_t d = 0; d < hidden; ++d) out[d] += chosen[i].second * y.row(static_cast<int64_t>(i))[d];
    }
  }
  Activations out(x.rows(), hidden);
  for (size_t i = 0; i < acc.size(); ++i) out.data()[i] = static_cast<float>(acc[i]);
  return out;
}

}  // namespace

ScaledRope yarn_rope(int64_t dims, double base, double factor, double original_max_positions, double beta_fast,
                     double beta_slow, double mscale, double mscale_all_dim) {
  ScaledRope yarn;
  yarn.rope = default_rope(dims, base);
  const auto correction_dim = [&](double rotations) {
    return static_cast<double>(dims) * std::log(original_max_positions / (rotations * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(base));
  };
  const double low = std::max(std::floor(correction_dim(beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(beta_slow)), static_cast<double>(dims - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < dims / 2; ++i) {
    // Share of the original (extrapolated) frequency: 1 below the range, 0 above it.
    const double extrapolated = 1.0 - std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    double& inv = yarn.rope.inv_freq[static_cast<size_t>(i)];
    inv = extrapolated * inv + (1.0 - extrapolated) * inv / factor;
  }
  yarn.mscale = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim);
  return yarn;
}

ScaledRope gpt_oss_rope(const nlohmann::json& config, int64_t head_dim) {
  const double base = config_value<double>(config, "rope_theta", 150000.0);
  ScaledRope rope;
  if (!config.contains("rope_scaling") || config["rope_scaling"].is_null()) {
    rope.rope = default_rope(head_dim, base);
    return rope;
  }
  const nlohmann::json& s = config["rope_scaling"];
  if (!s.is_object()) fail("config.json: rope_scaling is not an object");
  std::string type = "default";
  if (s.contains("type") && s["type"].is_string() && !s["type"].get<std::string>().empty())
    type = s["type"].get<std::string>();
  else if (s.contains("rope_type") && s["rope_type"].is_string())
    type = s["rope_type"].get<std::string>();
  if (type == "default" || type == "mrope") {
    rope.rope = default_rope(head_dim, base);
  } else if (type == "linear") {
    rope.rope = default_rope(head_dim, base, 1.0 / json_number(s, "factor", std::nan("")));
  } else if (type == "yarn" || type == "deepseek_yarn" || type == "telechat3-yarn") {
    rope = yarn_rope(head_dim, base, json_number(s, "factor", std::nan("")),
                     json_number(s, "original_max_position_embeddings", 4096.0), json_number(s, "beta_fast", 32.0),
                     json_number(s, "beta_slow", 1.0), json_number(s, "mscale", 1.0), json_number(s, "mscale_all_dim", 0.0));
  } else {
    fail("config.json: rope_scaling type '{}' is not implemented by the gpt-oss reference forward pass", type);
  }
  for (double inv : rope.rope.inv_freq)
    if (!std::isfinite(inv)) fail("config.json: rope_scaling {} gives no finite rotary frequencies", s.dump());
  return rope;
}

Activations attention_with_sinks(const Activations& q, const Activations& k, const Activations& v,
                                 const AttentionShape& shape, const std::vector<float>& sinks) {
  const int64_t hd = shape.head_dim;
  if (shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0)
    fail("config.json: {} attention heads cannot share {} key/value heads", shape.n_heads, shape.n_kv_heads);
  if (q.cols() != shape.n_heads * hd || k.cols() != shape.n_kv_heads * hd || v.cols() != shape.n_kv_heads * hd ||
      k.rows() != q.rows() || v.rows() != q.rows() || static_cast<int64_t>(sinks.size()) != shape.n_heads)
    fail("internal: attention inputs do not match {} heads, {} kv heads of {} and {} sinks", shape.n_heads,
         shape.n_kv_heads, hd, sinks.size());
  const int64_t group = shape.n_heads / shape.n_kv_heads;
  const int64_t tokens = q.rows();
  Activations out(tokens, shape.n_heads * hd);
  std::vector<double> scores(static_cast<size_t>(tokens + 1));
  std::vector<double> acc(static_cast<size_t>(hd));
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t first = shape.window > 0 ? std::max<int64_t>(0, t - shape.window + 1) : 0;
    const int64_t n = t - first + 1;
    for (int64_t h = 0; h < shape.n_heads; ++h) {
      const int64_t kvh = h / group;
      const float* qh = q.row(t) + h * hd;
      for (int64_t j = first; j <= t; ++j) {
        const float* kh = k.row(j) + kvh * hd;
        double dot = 0.0;
        for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * kh[d];
        scores[static_cast<size_t>(j - first)] = dot * shape.scale;
      }
      scores[static_cast<size_t>(n)] = sinks[static_cast<size_t>(h)];  // the sink's logit, softmaxed with the keys
      softmax(scores.data(), n + 1);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = first; j <= t; ++j) {
        const float* vh = v.row(j) + kvh * hd;
        for (int64_t d = 0; d < hd; ++d) acc[static_cast<size_t>(d)] += scores[static_cast<size_t>(j - first)] * vh[d];
      }
      for (int64_t d = 0; d < hd; ++d) out.row(t)[h * hd + d] = static_cast<float>(acc[static_cast<size_t>(d)]);
    }
  }
  return out;
}

double clamped_swiglu(double gate, double up) {
  constexpr double alpha = 1.702, limit = 7.0;
  gate = std::min(gate, limit);
  up = std::clamp(up, -limit, limit);
  return gate * sigmoid(alpha * gate) * (up + 1.0);
}

std::vector<float> gpt_oss_reference(const SourceModel& model, std::span<const int32_t> tokens) {
  const GptOssParams p = read_params(model);
  const SourceTensor& table = model.require("model.embed_tokens.weight");
  if (table.shape().size() != 2 || table.row_length() != p.hidden)
    fail("'{}' has rows of {} values, config.json hidden_size is {}", table.name(), table.row_length(), p.hidden);
  Activations x = embed(table, tokens);
  for (int64_t i = 0; i < p.layers; ++i) {
    const std::string layer = fmt::format("model.layers.{}.", i);
    Activations h = x;
    rms_norm_rows(h, read_vector(model, layer + "input_layernorm.weight", p.hidden), p.eps);
    add_in_place(x, attention_block(model, p, layer + "self_attn.", h, p.sliding[static_cast<size_t>(i)]));
    h = x;
    rms_norm_rows(h, read_vector(model, layer + "post_attention_layernorm.weight", p.hidden), p.eps);
    add_in_place(x, experts_block(model, p, layer + "mlp.", h));
  }
  rms_norm_rows(x, read_vector(model, "model.norm.weight", p.hidden), p.eps);
  // gpt_oss.py always has its own lm_head.
  const SourceTensor& head = model.require("lm_head.weight");
  expect_shape(head, {table.shape()[0], p.hidden});
  return linear(x, head).data();
}

}  // namespace mlx2gguf::ref
