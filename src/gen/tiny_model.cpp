#include "gen/tiny_model.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>

#include "read/mlx_quantize.h"
#include "gen/random.h"
#include "gen/safetensors_writer.h"
#include "gen/tiny_tokenizer.h"
#include "util/error.h"

namespace mlx2gguf::gen {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------------------------
// Quantization recipe

namespace {

QuantMode parse_mode(const std::string& name) {
  if (name == "affine") return QuantMode::Affine;
  if (name == "mxfp4") return QuantMode::MXFP4;
  if (name == "nvfp4") return QuantMode::NVFP4;
  if (name == "mxfp8") return QuantMode::MXFP8;
  fail("unknown quantization mode '{}' (expected affine, mxfp4, nvfp4 or mxfp8)", name);
}

// mlx-lm's defaults per mode: (bits, group size).
std::pair<int, int> mode_defaults(QuantMode mode) {
  switch (mode) {
    case QuantMode::Affine: return {4, 64};
    case QuantMode::MXFP4: return {4, 32};
    case QuantMode::NVFP4: return {4, 16};
    case QuantMode::MXFP8: return {8, 32};
  }
  return {4, 64};
}

}  // namespace

QuantRecipe QuantRecipe::parse(const std::string& text) {
  QuantRecipe recipe;
  std::vector<std::string> parts;
  size_t begin = 0;
  while (true) {
    const size_t colon = text.find(':', begin);
    parts.push_back(text.substr(begin, colon == std::string::npos ? std::string::npos : colon - begin));
    if (colon == std::string::npos) break;
    begin = colon + 1;
  }
  if (parts.size() > 3 || parts[0].empty()) fail("quantization '{}' is not MODE[:BITS[:GROUP_SIZE]]", text);
  parse_mode(parts[0]);
  recipe.mode = parts[0];
  auto number = [&](const std::string& part) {
    try {
      size_t used = 0;
      const int value = std::stoi(part, &used);
      if (used == part.size() && value > 0) return value;
    } catch (const std::exception&) {
    }
    fail("quantization '{}': '{}' is not a positive number", text, part);
  };
  if (parts.size() > 1) recipe.bits = number(parts[1]);
  if (parts.size() > 2) recipe.group_size = number(parts[2]);
  return recipe;
}

int QuantRecipe::resolved_bits() const { return bits ? bits : mode_defaults(parse_mode(mode)).first; }
int QuantRecipe::resolved_group_size() const { return group_size ? group_size : mode_defaults(parse_mode(mode)).second; }

// ---------------------------------------------------------------------------------------------------------------
// Model layouts: the parameters of each model type in mlx-lm's module definition order (the order mlx-lm fills
// shards in), and the Hugging Face config it came with.

namespace {

// How the values of one canonical tensor are drawn.
struct Draw {
  enum Kind { Normal, LogUniform } kind = Normal;
  double a = 0.0, b = 0.0;  // Normal: mean a, standard deviation b. LogUniform: log of a uniform sample in [a, b].
};

struct Param {
  std::string name;            // as stored
  std::vector<int64_t> shape;  // as stored
  Draw draw;
  bool quantizable = false;    // weight of a Linear, Embedding or SwitchLinear: mlx-lm quantizes these
  std::optional<DType> dtype;  // kept in this dtype whatever the model's (mlx-lm cast predicates)
  // The canonical tensors (named as mlx-lm saves them) whose values this one stores, so that every layout of a
  // seed holds the same model. Empty: the tensor itself. Several (fused experts): per index of the leading axis,
  // each source's block in turn.
  std::vector<std::string> sources;
  // Stores (1 + canonical value), rounded again: mlx-lm's sanitize shift of Qwen's zero-centred norms.
  bool plus_one = false;

  int64_t element_count() const {
    int64_t count = 1;
    for (int64_t dim : shape) count *= dim;
    return count;
  }
};

struct Dims {
  int64_t hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, experts, experts_per_tok;
  double rope_theta, rms_norm_eps;
  // qwen3_5 types
  int64_t linear_key_heads, linear_value_heads, linear_key_dim, linear_value_dim, conv_kernel;
  int64_t full_attention_interval, moe_intermediate, shared_intermediate;
  std::vector<int> mrope_section;

  bool is_linear_layer(int64_t layer) const { return (layer + 1) % full_attention_interval != 0; }
  int64_t linear_key_width() const { return linear_key_heads * linear_key_dim; }
  int64_t linear_value_width() const { return linear_value_heads * linear_value_dim; }
};

struct Layout {
  json config;            // the source config.json (Hugging Face writes it with sorted keys at every level)
  json generation_extra;  // sampling defaults the model's generation_config.json carries besides the token ids
  std::vector<Param> params;
  std::vector<QuantOverride> quant_predicate;  // the model's own per-module quantization, applied after the recipe's
  int64_t vocab = 0;
  bool hf = false;  // Hugging Face checkpoint instead of an mlx-lm folder
};

// Weight scales keep a forward pass tame: linear outputs have about the variance of their inputs, embedding rows
// have unit RMS after the first norm anyway, and norm weights sit near (never exactly at) 1 so that a converter
// that drops or shifts them is caught.
// Residual branches end in `output` projections (attention o_proj, linear-attention out_proj, MLP and expert
// down_proj; biases alike), drawn with standard deviation 1/sqrt(in * hidden) instead of 1/sqrt(in): each block adds
// to the residual stream an update of about its input's RMS (0.3-0.6) times an embedding row's (1/sqrt(hidden)), at
// any width, so the stream changes gradually from block to block, as hidden states of trained decoders do
// (consecutive layers' hidden states are highly similar). At unit gain every block wrote an update as large as the
// stream (the first one six times the embedding it is added to). A SwiGLU MLP or a Gated DeltaNet block answers a
// relative change of its input with a ~1.6x larger relative change of its output (it multiplies two projections of
// the same input), so a perturbation of the stream grew by about (1 + 2.5) / 2 per block: llama.cpp's 8-bit rounding
// of the first block's matmul inputs reached the logits of the 4-layer Qwen3.5 amplified ~8x (NMSE 1.4e-3 against
// llama.cpp's f32 run; 3.7e-4 in the 2-layer llama), far more than in real models.
class ParamList {
 public:
  void linear(const std::string& module, int64_t out, int64_t in, bool bias) { linear_scaled(module, out, in, bias, 1.0); }
  // A residual branch's output projection: `out` is the hidden size.
  void output(const std::string& module, int64_t out, int64_t in, bool bias) {
    linear_scaled(module, out, in, bias, 1.0 / std::sqrt(static_cast<double>(out)));
  }
  void switch_linear(const std::string& module, int64_t experts, int64_t out, int64_t in) {
    add(module + ".weight", {experts, out, in}, {Draw::Normal, 0.0, 1.0 / std::sqrt(static_cast<double>(in))}, true);
  }
  // An MoE router (no bias). Its rows are drawn at twice the unit gain, so that router logits spread over a few units
  // (std ~2) as trained routers' do (large enough that ST-MoE added a z-loss to hold them back): a token's top
  // experts stand out, and the expert at the top-k boundary, where activation rounding can flip a near-tie, seldom
  // carries much weight. At unit gain, tokens whose logits all lay within about one unit split the weight nearly
  // evenly; one boundary flip there moved a position's logits by 8% (Qwen3.5 MoE, 6 of 8 experts per token).
  void router(const std::string& module, int64_t experts, int64_t in) { linear_scaled(module, experts, in, false, 2.0); }
  // The experts' down projections, as `output`.
  void switch_output(const std::string& module, int64_t experts, int64_t out, int64_t in) {
    add(module + ".weight", {experts, out, in},
        {Draw::Normal, 0.0, 1.0 / std::sqrt(static_cast<double>(in) * static_cast<double>(out))}, true);
  }
  void embedding(const std::string& module, int64_t rows, int64_t dim) {
    add(module + ".weight", {rows, dim}, {Draw::Normal, 0.0, 1.0 / std::sqrt(static_cast<double>(dim))}, true);
  }
  void norm(const std::string& module, int64_t dim) { add(module + ".weight", {dim}, {Draw::Normal, 1.0, 0.1}, false); }
  // A norm Hugging Face stores as w and evaluates as (1 + w); mlx-lm stores 1 + w.
  void zero_centred_norm(const std::string& module, int64_t dim) {
    add(module + ".weight", {dim}, {Draw::Normal, 0.0, 0.1}, false);
    params.back().plus_one = true;
  }
  void other(const std::string& name, std::vector<int64_t> shape, Draw draw, std::optional<DType> dtype = std::nullopt) {
    add(name, std::move(shape), draw, false);
    params.back().dtype = dtype;
  }

  std::vector<Param> params;

 private:
  void linear_scaled(const std::string& module, int64_t out, int64_t in, bool bias, double gain) {
    add(module + ".weight", {out, in}, {Draw::Normal, 0.0, gain / std::sqrt(static_cast<double>(in))}, true);
    if (bias) add(module + ".bias", {out}, {Draw::Normal, 0.0, 0.05 * gain}, false);
  }
  void add(std::string name, std::vector<int64_t> shape, Draw draw, bool quantizable) {
    Param param;
    param.name = std::move(name);
    param.shape = std::move(shape);
    param.draw = draw;
    param.quantizable = quantizable;
    params.push_back(std::move(param));
  }
};

void attention(ParamList& p, const std::string& prefix, const Dims& d, bool bias) {
  p.linear(prefix + ".q_proj", d.heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".k_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".v_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.output(prefix + ".o_proj", d.hidden, d.heads * d.head_dim, bias);
}

// Keys every Hugging Face decoder config of these families carries.
json base_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, const char* architecture) {
  json config = {{"architectures", {architecture}},
                 {"attention_dropout", 0.0},
                 {"bos_token_id", tokens.bos_id ? json(*tokens.bos_id) : json(nullptr)},
                 {"eos_token_id", tokens.eos_id ? json(*tokens.eos_id) : json(nullptr)},
                 {"hidden_act", "silu"},
                 {"hidden_size", d.hidden},
                 {"initializer_range", 0.02},
                 {"intermediate_size", d.intermediate},
                 {"max_position_embeddings", spec.max_position_embeddings},
                 {"model_type", spec.model_type},
                 {"num_attention_heads", d.heads},
                 {"num_hidden_layers", d.layers},
                 {"num_key_value_heads", d.kv_heads},
                 {"rms_norm_eps", d.rms_norm_eps},
                 {"rope_theta", d.rope_theta},
                 {"tie_word_embeddings", spec.tie_embeddings},
                 {"torch_dtype", spec.dtype},
                 {"transformers_version", "4.51.3"},
                 {"use_cache", true},
                 {"vocab_size", d.vocab}};
  return config;
}

// Embedding, layers, final norm, untied head: the frame shared by all these models.
template <typename LayerFn>
std::vector<Param> decoder_params(const TinyModelSpec& spec, const Dims& d, LayerFn layer) {
  ParamList p;
  p.embedding("model.embed_tokens", d.vocab, d.hidden);
  for (int64_t i = 0; i < d.layers; ++i) layer(p, fmt::format("model.layers.{}", i));
  p.norm("model.norm", d.hidden);
  if (!spec.tie_embeddings) p.linear("lm_head", d.vocab, d.hidden, false);
  return std::move(p.params);
}

// mlx_lm/models/llama.py (also model_type mistral).
std::vector<Param> dense_llama_params(const TinyModelSpec& spec, const Dims& d) {
  return decoder_params(spec, d, [&](ParamList& p, const std::string& layer) {
    attention(p, layer + ".self_attn", d, spec.attention_bias);
    p.linear(layer + ".mlp.gate_proj", d.intermediate, d.hidden, spec.mlp_bias);
    p.output(layer + ".mlp.down_proj", d.hidden, d.intermediate, spec.mlp_bias);
    p.linear(layer + ".mlp.up_proj", d.intermediate, d.hidden, spec.mlp_bias);
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
  });
}

Layout build_llama(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "LlamaForCausalLM");
  config["attention_bias"] = spec.attention_bias;
  config["head_dim"] = d.head_dim;
  config["mlp_bias"] = spec.mlp_bias;
  config["pretraining_tp"] = 1;
  config["rope_scaling"] = spec.rope_scaling;
  return {config, json::object(), dense_llama_params(spec, d), {}, d.vocab, false};
}

Layout build_mistral(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "MistralForCausalLM");
  config["head_dim"] = d.head_dim;
  config["sliding_window"] = nullptr;
  // Mistral's own config has no bias or rope scaling keys; mlx-lm's llama.py reads them when present.
  if (spec.attention_bias) config["attention_bias"] = true;
  if (spec.mlp_bias) config["mlp_bias"] = true;
  if (!spec.rope_scaling.is_null()) config["rope_scaling"] = spec.rope_scaling;
  return {config, json::object(), dense_llama_params(spec, d), {}, d.vocab, false};
}

// mlx_lm/models/mixtral.py: experts stacked [E, out, in] under switch_mlp, router `gate` [E, H].
Layout build_mixtral(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  if (spec.attention_bias || spec.mlp_bias) fail("mixtral has no attention or MLP biases");
  if (spec.head_dim != 0 && spec.head_dim * spec.heads != spec.hidden)
    fail("mixtral derives head_dim from hidden / heads; head_dim {} contradicts {} / {}", spec.head_dim, spec.hidden,
         spec.heads);
  json config = base_config(spec, d, tokens, "MixtralForCausalLM");
  config["num_local_experts"] = d.experts;
  config["num_experts_per_tok"] = d.experts_per_tok;
  config["output_router_logits"] = false;
  config["router_aux_loss_coef"] = 0.02;
  config["sliding_window"] = nullptr;
  if (!spec.rope_scaling.is_null()) config["rope_scaling"] = spec.rope_scaling;
  auto params = decoder_params(spec, d, [&](ParamList& p, const std::string& layer) {
    attention(p, layer + ".self_attn", d, false);
    const std::string moe = layer + ".block_sparse_moe";
    p.router(moe + ".gate", d.experts, d.hidden);
    p.switch_linear(moe + ".switch_mlp.gate_proj", d.experts, d.intermediate, d.hidden);
    p.switch_linear(moe + ".switch_mlp.up_proj", d.experts, d.intermediate, d.hidden);
    p.switch_output(moe + ".switch_mlp.down_proj", d.experts, d.hidden, d.intermediate);
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
  });
  return {config, json::object(), std::move(params), {}, d.vocab, false};
}

// ---- qwen3_5 / qwen3_5_moe (mlx_lm/models/qwen3_5.py, qwen3_5_moe.py; blocks from qwen3_next.py)

// A whole number where the value is one, as Qwen's configs spell rope_theta (10000000, not 1e7).
json number(double value) {
  if (value == std::floor(value) && std::fabs(value) < 0x1p53) return static_cast<int64_t>(value);
  return value;
}

json qwen3_5_text_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, bool moe) {
  json layer_types = json::array();
  for (int64_t i = 0; i < d.layers; ++i) layer_types.push_back(d.is_linear_layer(i) ? "linear_attention" : "full_attention");
  // mlx-lm reads partial_rotary_factor and rope_theta from rope_parameters only; Hugging Face writes the factor at
  // both levels.
  const json rope = {{"mrope_interleaved", true},
                     {"mrope_section", d.mrope_section},
                     {"partial_rotary_factor", spec.partial_rotary_factor},
                     {"rope_theta", number(d.rope_theta)},
                     {"rope_type", "default"}};
  json text = {{"attention_bias", spec.attention_bias},
               {"attention_dropout", 0.0},
               {"attn_output_gate", true},
               {"bos_token_id", tokens.bos_id ? json(*tokens.bos_id) : json(nullptr)},
               {"dtype", spec.dtype},
               {"eos_token_id", tokens.eos_id ? json(*tokens.eos_id) : json(nullptr)},
               {"full_attention_interval", d.full_attention_interval},
               {"head_dim", d.head_dim},
               {"hidden_act", "silu"},
               {"hidden_size", d.hidden},
               {"initializer_range", 0.02},
               {"layer_types", layer_types},
               {"linear_conv_kernel_dim", d.conv_kernel},
               {"linear_key_head_dim", d.linear_key_dim},
               {"linear_num_key_heads", d.linear_key_heads},
               {"linear_num_value_heads", d.linear_value_heads},
               {"linear_value_head_dim", d.linear_value_dim},
               {"mamba_ssm_dtype", "float32"},
               {"max_position_embeddings", spec.max_position_embeddings},
               {"model_type", moe ? "qwen3_5_moe_text" : "qwen3_5_text"},
               {"mtp_num_hidden_layers", 1},
               {"mtp_use_dedicated_embeddings", false},
               {"num_attention_heads", d.heads},
               {"num_hidden_layers", d.layers},
               {"num_key_value_heads", d.kv_heads},
               {"pad_token_id", nullptr},
               {"partial_rotary_factor", spec.partial_rotary_factor},
               {"rms_norm_eps", d.rms_norm_eps},
               {"rope_parameters", rope},
               {"tie_word_embeddings", spec.tie_embeddings},
               {"use_cache", true},
               {"vocab_size", d.vocab}};
  if (moe) {
    text["moe_intermediate_size"] = d.moe_intermediate;
    text["num_experts"] = d.experts;
    text["num_experts_per_tok"] = d.experts_per_tok;
    text["output_router_logits"] = false;
    text["router_aux_loss_coef"] = 0.001;
    text["shared_expert_intermediate_size"] = d.shared_intermediate;
  } else {
    text["intermediate_size"] = d.intermediate;
  }
  if (spec.norm_topk_prob) text["norm_topk_prob"] = *spec.norm_topk_prob;
  return text;
}

// Hugging Face's multimodal config: the language model under text_config, the vision tower beside it (mlx-lm drops
// vision_config when it converts).
json qwen3_5_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, bool moe) {
  const json vision = {{"deepstack_visual_indexes", json::array()},
                       {"depth", 1},
                       {"hidden_act", "gelu_pytorch_tanh"},
                       {"hidden_size", 32},
                       {"in_channels", 3},
                       {"initializer_range", 0.02},
                       {"intermediate_size", 64},
                       {"model_type", spec.model_type},
                       {"num_heads", 4},
                       {"num_position_embeddings", 64},
                       {"out_hidden_size", d.hidden},
                       {"patch_size", 16},
                       {"spatial_merge_size", 2},
                       {"temporal_patch_size", 2}};
  // The image/video token ids are Qwen's; the text model never reads them.
  return {{"architectures", {moe ? "Qwen3_5MoeForConditionalGeneration" : "Qwen3_5ForConditionalGeneration"}},
          {"image_token_id", 248056},
          {"model_type", spec.model_type},
          {"text_config", qwen3_5_text_config(spec, d, tokens, moe)},
          {"tie_word_embeddings", spec.tie_embeddings},
          {"transformers_version", "4.57.1"},
          {"video_token_id", 248057},
          {"vision_config", vision},
          {"vision_end_token_id", 248054},
          {"vision_start_token_id", 248053}};
}

// Gated full attention: q_proj yields per head [query (head_dim) | output gate (head_dim)].
void gated_attention(ParamList& p, const std::string& prefix, const Dims& d, bool bias) {
  p.linear(prefix + ".q_proj", 2 * d.heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".k_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".v_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.output(prefix + ".o_proj", d.hidden, d.heads * d.head_dim, bias);
  p.zero_centred_norm(prefix + ".q_norm", d.head_dim);
  p.zero_centred_norm(prefix + ".k_norm", d.head_dim);
}

// Gated DeltaNet. Random weights make this block touchy in two places, which the scales below avoid so that the
// model's logits move about as little as a llama's when its weights are rounded or quantized:
//  - Each value head's output is RMS-normalized: a head output near zero (or near the norm's epsilon) turns small
//    weight errors into large output changes. Conv taps ten times 1/sqrt(K) make the conv outputs large, so v and
//    with it the head outputs sit far above the epsilon, and SiLU of large inputs leaves q and k mostly positive,
//    so q.k rarely crosses zero.
//  - A decay exp(-exp(A_log) * softplus(a + dt_bias)) near 0 wipes the state every token, leaving a head output
//    proportional to q.k of the current token alone. dt_bias around -4 (softplus ~ 0.02, the time steps Mamba-style
//    models start from) keeps most decays near 1 (about 0.85 for A = 8), so several tokens share the state.
void gated_delta_net(ParamList& p, const std::string& prefix, const Dims& d) {
  const int64_t conv_channels = 2 * d.linear_key_width() + d.linear_value_width();
  p.other(prefix + ".conv1d.weight", {conv_channels, d.conv_kernel, 1},
          {Draw::Normal, 0.0, 10.0 / std::sqrt(static_cast<double>(d.conv_kernel))});
  p.linear(prefix + ".in_proj_qkv", conv_channels, d.hidden, false);
  p.linear(prefix + ".in_proj_z", d.linear_value_width(), d.hidden, false);
  p.linear(prefix + ".in_proj_b", d.linear_value_heads, d.hidden, false);
  p.linear(prefix + ".in_proj_a", d.linear_value_heads, d.hidden, false);
  p.other(prefix + ".dt_bias", {d.linear_value_heads}, {Draw::Normal, -4.0, 1.0});
  // Float32 in Qwen's checkpoints, and mlx-lm's cast predicate keeps it so.
  p.other(prefix + ".A_log", {d.linear_value_heads}, {Draw::LogUniform, 1.0, 16.0}, DType::F32);
  p.norm(prefix + ".norm", d.linear_value_dim);  // gated RMSNorm: a plain weight around 1, not shifted
  p.output(prefix + ".out_proj", d.hidden, d.linear_value_width(), false);
}

// Qwen3NextSparseMoeBlock: softmax router, stacked routed experts, shared expert scaled by a sigmoid gate.
void sparse_moe(ParamList& p, const std::string& prefix, const Dims& d) {
  p.router(prefix + ".gate", d.experts, d.hidden);
  p.switch_linear(prefix + ".switch_mlp.gate_proj", d.experts, d.moe_intermediate, d.hidden);
  p.switch_linear(prefix + ".switch_mlp.up_proj", d.experts, d.moe_intermediate, d.hidden);
  p.switch_output(prefix + ".switch_mlp.down_proj", d.experts, d.hidden, d.moe_intermediate);
  p.linear(prefix + ".shared_expert.gate_proj", d.shared_intermediate, d.hidden, false);
  p.output(prefix + ".shared_expert.down_proj", d.hidden, d.shared_intermediate, false);
  p.linear(prefix + ".shared_expert.up_proj", d.shared_intermediate, d.hidden, false);
  p.linear(prefix + ".shared_expert_gate", 1, d.hidden, false);
}

std::vector<Param> qwen3_5_params(const TinyModelSpec& spec, const Dims& d, bool moe) {
  ParamList p;
  const std::string model = "language_model.model.";
  p.embedding(model + "embed_tokens", d.vocab, d.hidden);
  for (int64_t i = 0; i < d.layers; ++i) {
    const std::string layer = model + fmt::format("layers.{}", i);
    if (d.is_linear_layer(i))
      gated_delta_net(p, layer + ".linear_attn", d);
    else
      gated_attention(p, layer + ".self_attn", d, spec.attention_bias);
    p.zero_centred_norm(layer + ".input_layernorm", d.hidden);
    p.zero_centred_norm(layer + ".post_attention_layernorm", d.hidden);
    if (moe) {
      sparse_moe(p, layer + ".mlp", d);
    } else {
      p.linear(layer + ".mlp.gate_proj", d.intermediate, d.hidden, false);
      p.output(layer + ".mlp.down_proj", d.hidden, d.intermediate, false);
      p.linear(layer + ".mlp.up_proj", d.intermediate, d.hidden, false);
    }
  }
  p.zero_centred_norm(model + "norm", d.hidden);
  if (!spec.tie_embeddings) p.linear("language_model.lm_head", d.vocab, d.hidden, false);
  return std::move(p.params);
}

std::string replace_prefix(const std::string& name, const std::string& from, const std::string& to) {
  return name.starts_with(from) ? to + name.substr(from.size()) : name;
}

// The Hugging Face checkpoint mlx-lm's sanitize turns into `mlx`: same values, Hugging Face names and layouts.
std::vector<Param> qwen3_5_hf_params(const std::vector<Param>& mlx) {
  std::vector<Param> hf;
  for (size_t i = 0; i < mlx.size(); ++i) {
    Param param = mlx[i];
    param.sources = {mlx[i].name};
    param.plus_one = false;
    param.quantizable = false;
    param.name = replace_prefix(param.name, "language_model.model.", "model.language_model.");
    param.name = replace_prefix(param.name, "language_model.lm_head.", "lm_head.");
    if (param.name.ends_with(".conv1d.weight")) {
      param.shape = {param.shape[0], 1, param.shape[1]};  // same element order: MLX [c, k, 0] is HF [c, 0, k]
    } else if (param.name.ends_with(".mlp.switch_mlp.gate_proj.weight")) {
      const Param& up = mlx.at(i + 1);
      if (!up.name.ends_with(".mlp.switch_mlp.up_proj.weight"))
        fail("internal error: '{}' does not follow '{}'", up.name, mlx[i].name);
      param.name = param.name.substr(0, param.name.size() - std::string("switch_mlp.gate_proj.weight").size()) +
                   "experts.gate_up_proj";
      param.shape[1] *= 2;
      param.sources.push_back(up.name);
      ++i;
    } else if (param.name.ends_with(".mlp.switch_mlp.down_proj.weight")) {
      param.name = param.name.substr(0, param.name.size() - std::string("switch_mlp.down_proj.weight").size()) +
                   "experts.down_proj";
    }
    hf.push_back(std::move(param));
  }
  return hf;
}

// A few tensors of the vision tower and of the multi-token-prediction head, which Qwen's checkpoints carry and a
// text-model converter drops. Their norms are zero-centred like the decoder's.
void qwen3_5_hf_extra_params(std::vector<Param>& params, const Dims& d, bool moe) {
  ParamList p;
  p.other("model.visual.patch_embed.proj.weight", {32, 3, 2, 16, 16}, {Draw::Normal, 0.0, 0.02});
  p.other("model.visual.patch_embed.proj.bias", {32}, {Draw::Normal, 0.0, 0.02});
  p.linear("model.visual.merger.linear_fc2", d.hidden, 32 * 4, true);
  p.linear("mtp.fc", d.hidden, 2 * d.hidden, false);
  p.other("mtp.pre_fc_norm_embedding.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  p.other("mtp.pre_fc_norm_hidden.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  p.other("mtp.layers.0.input_layernorm.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  p.linear("mtp.layers.0.self_attn.q_proj", 2 * d.heads * d.head_dim, d.hidden, false);
  if (moe) {
    p.switch_linear("mtp.layers.0.mlp.experts.gate_up_proj", d.experts, 2 * d.moe_intermediate, d.hidden);
    p.switch_linear("mtp.layers.0.mlp.experts.down_proj", d.experts, d.hidden, d.moe_intermediate);
  } else {
    p.linear("mtp.layers.0.mlp.gate_proj", d.intermediate, d.hidden, false);
  }
  p.other("mtp.norm.weight", {d.hidden}, {Draw::Normal, 0.0, 0.1});
  for (Param& param : p.params) {
    if (param.name.ends_with("experts.gate_up_proj.weight") || param.name.ends_with("experts.down_proj.weight"))
      param.name.resize(param.name.size() - std::string(".weight").size());
    param.quantizable = false;
    params.push_back(std::move(param));
  }
}

Layout build_qwen3_5_family(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, bool moe) {
  if (spec.mlp_bias) fail("{} has no MLP biases", spec.model_type);
  if (!spec.rope_scaling.is_null())
    fail("{} takes its RoPE settings from rope_theta, partial_rotary_factor and mrope_section, not rope_scaling",
         spec.model_type);
  Layout layout;
  layout.config = qwen3_5_config(spec, d, tokens, moe);
  layout.generation_extra = {{"do_sample", true}, {"temperature", 1.0}, {"top_k", 20}, {"top_p", 0.95}};
  if (tokens.eos_id) layout.generation_extra["pad_token_id"] = *tokens.eos_id;
  layout.params = qwen3_5_params(spec, d, moe);
  layout.vocab = d.vocab;
  // qwen3_5.py's quant_predicate, only when the model has experts.
  if (moe) layout.quant_predicate = {{"mlp.gate", 8, 64, ""}, {"shared_expert_gate", 8, 64, ""}};
  if (spec.layout == "hf") {
    layout.hf = true;
    layout.params = qwen3_5_hf_params(layout.params);
    if (spec.hf_extra_tensors) qwen3_5_hf_extra_params(layout.params, d, moe);
  }
  return layout;
}

Layout build_qwen3_5(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  return build_qwen3_5_family(spec, d, tokens, false);
}

Layout build_qwen3_5_moe(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  return build_qwen3_5_family(spec, d, tokens, true);
}

// ---- Model type table

struct TypeDefaults {
  int layers;
  int head_dim;  // 0: hidden / heads
  double rope_theta, rms_norm_eps;
};

struct ModelType {
  const char* name;
  bool moe;
  bool hybrid;  // Qwen3.5-style linear/full attention decoder, with a Hugging Face layout
  TypeDefaults defaults;
  Layout (*build)(const TinyModelSpec&, const Dims&, const TokenizerFacts&);
};

constexpr ModelType kModelTypes[] = {
    {"llama", false, false, {2, 0, 10000, 1e-5}, build_llama},
    {"mistral", false, false, {2, 0, 10000, 1e-5}, build_mistral},
    {"mixtral", true, false, {2, 0, 10000, 1e-5}, build_mixtral},
    {"qwen3_5", false, true, {4, 64, 1e7, 1e-6}, build_qwen3_5},
    {"qwen3_5_moe", true, true, {4, 64, 1e7, 1e-6}, build_qwen3_5_moe},
};

const ModelType& find_model_type(const std::string& name) {
  for (const ModelType& type : kModelTypes)
    if (name == type.name) return type;
  std::string known;
  for (const ModelType& type : kModelTypes) known += std::string(known.empty() ? "" : ", ") + type.name;
  fail("unknown model type '{}' (known: {})", name, known);
}

DType storage_dtype(const std::string& name) {
  if (name == "bfloat16") return DType::BF16;
  if (name == "float16") return DType::F16;
  if (name == "float32") return DType::F32;
  fail("unknown dtype '{}' (expected bfloat16, float16 or float32)", name);
}

TokenizerFacts tokenizer_facts(const TinyModelSpec& spec) {
  return spec.tokenizer_dir.empty() ? tiny_tokenizer_facts() : read_tokenizer_facts(spec.tokenizer_dir);
}

void positive(const char* what, int64_t value) {
  if (value <= 0) fail("{} must be positive, got {}", what, value);
}

// The qwen3_5 dimensions, checked.
void hybrid_dims(const TinyModelSpec& spec, Dims& d, bool moe) {
  positive("linear_num_key_heads", spec.linear_num_key_heads);
  positive("linear_num_value_heads", spec.linear_num_value_heads);
  positive("linear_key_head_dim", spec.linear_key_head_dim);
  positive("linear_value_head_dim", spec.linear_value_head_dim);
  positive("linear_conv_kernel_dim", spec.linear_conv_kernel_dim);
  positive("full_attention_interval", spec.full_attention_interval);
  if (spec.linear_num_value_heads % spec.linear_num_key_heads != 0)
    fail("linear_num_value_heads ({}) must be a multiple of linear_num_key_heads ({})", spec.linear_num_value_heads,
         spec.linear_num_key_heads);
  d.linear_key_heads = spec.linear_num_key_heads;
  d.linear_value_heads = spec.linear_num_value_heads;
  d.linear_key_dim = spec.linear_key_head_dim;
  d.linear_value_dim = spec.linear_value_head_dim;
  d.conv_kernel = spec.linear_conv_kernel_dim;
  d.full_attention_interval = spec.full_attention_interval;
  d.moe_intermediate = spec.moe_intermediate ? spec.moe_intermediate : 64;
  d.shared_intermediate = spec.shared_expert_intermediate ? spec.shared_expert_intermediate : 64;
  if (moe) {
    positive("moe_intermediate", d.moe_intermediate);
    positive("shared_expert_intermediate", d.shared_intermediate);
  }
  if (!(spec.partial_rotary_factor > 0.0 && spec.partial_rotary_factor <= 1.0))
    fail("partial_rotary_factor must be in (0, 1], got {}", spec.partial_rotary_factor);
  const auto rotary_dims = static_cast<int64_t>(static_cast<double>(d.head_dim) * spec.partial_rotary_factor);
  if (rotary_dims < 2 || rotary_dims % 2 != 0)
    fail("head_dim {} x partial_rotary_factor {} gives {} rotated dims; RoPE needs a positive even count", d.head_dim,
         spec.partial_rotary_factor, rotary_dims);
  if (spec.mrope_section.empty()) {
    // Qwen's [11, 11, 10] split of 32 rotated pairs, scaled to this head.
    const int pairs = static_cast<int>(rotary_dims / 2);
    const int spatial = static_cast<int>(std::lround(pairs * 11.0 / 32.0));
    d.mrope_section = {spatial, spatial, pairs - 2 * spatial};
  } else {
    if (spec.mrope_section.size() != 3) fail("mrope_section needs 3 entries, got {}", spec.mrope_section.size());
    d.mrope_section = spec.mrope_section;
  }
}

Layout build_layout(const TinyModelSpec& spec, const TokenizerFacts& tokens) {
  const ModelType& type = find_model_type(spec.model_type);
  if (spec.layout != "mlx" && spec.layout != "hf") fail("unknown layout '{}' (expected mlx or hf)", spec.layout);
  if (spec.layout == "hf" && !type.hybrid)
    fail("the hf layout is available for qwen3_5 and qwen3_5_moe only, not {}", spec.model_type);
  if (spec.layout == "hf" && spec.quant) fail("a Hugging Face checkpoint (layout hf) is not MLX-quantized");
  if (spec.hf_extra_tensors && spec.layout != "hf") fail("hf_extra_tensors needs the hf layout");
  positive("hidden", spec.hidden);
  positive("heads", spec.heads);
  positive("kv_heads", spec.kv_heads);
  positive("intermediate", spec.intermediate);
  if (spec.heads % spec.kv_heads != 0) fail("heads ({}) must be a multiple of kv_heads ({})", spec.heads, spec.kv_heads);
  const TypeDefaults& defaults = type.defaults;
  if (spec.head_dim == 0 && defaults.head_dim == 0 && spec.hidden % spec.heads != 0)
    fail("hidden ({}) is not a multiple of heads ({}); give head_dim", spec.hidden, spec.heads);
  Dims d{};
  d.hidden = spec.hidden;
  d.layers = spec.layers ? spec.layers : defaults.layers;
  positive("layers", d.layers);
  d.heads = spec.heads;
  d.kv_heads = spec.kv_heads;
  d.head_dim = spec.head_dim ? spec.head_dim : defaults.head_dim ? defaults.head_dim : spec.hidden / spec.heads;
  positive("head_dim", d.head_dim);
  d.intermediate = spec.intermediate;
  d.vocab = spec.vocab ? spec.vocab : tokens.vocab_size;
  positive("vocab", d.vocab);
  d.rope_theta = spec.rope_theta != 0 ? spec.rope_theta : defaults.rope_theta;
  d.rms_norm_eps = spec.rms_norm_eps != 0 ? spec.rms_norm_eps : defaults.rms_norm_eps;
  if (type.moe) {
    d.experts = spec.experts ? spec.experts : 4;
    d.experts_per_tok = spec.experts_per_tok ? spec.experts_per_tok : 2;
    if (d.experts_per_tok > d.experts) fail("experts_per_tok ({}) exceeds experts ({})", d.experts_per_tok, d.experts);
  } else if (spec.experts || spec.experts_per_tok) {
    fail("model type '{}' has no experts", spec.model_type);
  }
  if (type.hybrid) hybrid_dims(spec, d, type.moe);
  return type.build(spec, d, tokens);
}

std::vector<float> draw_values(const std::string& source, const Draw& draw, int64_t count, uint64_t seed, DType dtype) {
  NormalStream stream(tensor_seed(seed, source));
  std::vector<float> values(static_cast<size_t>(count));
  for (float& value : values) {
    const double x = draw.kind == Draw::Normal ? draw.a + draw.b * stream.next()
                                               : std::log(draw.a + (draw.b - draw.a) * stream.uniform());
    value = round_to_dtype(static_cast<float>(x), dtype);
  }
  return values;
}

std::vector<float> generate_values(const Param& param, uint64_t seed, DType model_dtype) {
  const DType dtype = param.dtype.value_or(model_dtype);
  const std::vector<std::string> sources = param.sources.empty() ? std::vector<std::string>{param.name} : param.sources;
  const int64_t per_source = param.element_count() / static_cast<int64_t>(sources.size());
  std::vector<float> values;
  if (sources.size() == 1) {
    values = draw_values(sources[0], param.draw, per_source, seed, dtype);
  } else {
    std::vector<std::vector<float>> parts;
    for (const std::string& source : sources) parts.push_back(draw_values(source, param.draw, per_source, seed, dtype));
    const int64_t block = per_source / param.shape[0];
    values.reserve(static_cast<size_t>(param.element_count()));
    for (int64_t lead = 0; lead < param.shape[0]; ++lead)
      for (const auto& part : parts) values.insert(values.end(), part.begin() + lead * block, part.begin() + (lead + 1) * block);
  }
  // As MLX adds a Python float to a 16-bit array: in float32, then rounded to the array's dtype.
  if (param.plus_one)
    for (float& value : values) value = round_to_dtype(1.0f + value, dtype);
  return values;
}

// ---------------------------------------------------------------------------------------------------------------
// Quantization of one module, as mlx_lm's quantize_model decides it.

struct ModuleQuant {
  QuantMode mode;
  int bits, group_size;
  std::optional<ordered_json> entry;  // per-module config entry, when an override applies
};

std::optional<ModuleQuant> module_quant(const Param& param, const QuantRecipe& recipe) {
  if (!param.quantizable) return std::nullopt;
  const std::string module = param.name.substr(0, param.name.size() - std::string(".weight").size());
  const int64_t in = param.shape.back();
  // mlx-lm skips modules whose input size the top-level group size does not divide, before any override.
  if (in % recipe.resolved_group_size() != 0) return std::nullopt;
  for (const QuantOverride& o : recipe.overrides) {
    if (!module.ends_with(o.module_suffix)) continue;
    if (o.bits == 0) return std::nullopt;
    const QuantMode mode = o.mode.empty() ? QuantMode::Affine : parse_mode(o.mode);
    if (in % o.group_size != 0)
      fail("override '{}': group size {} does not divide the {} inputs of '{}'", o.module_suffix, o.group_size, in, module);
    ordered_json entry = {{"group_size", o.group_size}, {"bits", o.bits}};
    if (!o.mode.empty()) entry["mode"] = o.mode;
    return ModuleQuant{mode, o.bits, o.group_size, entry};
  }
  return ModuleQuant{parse_mode(recipe.mode), recipe.resolved_bits(), recipe.resolved_group_size(), std::nullopt};
}

void check_recipe(const QuantRecipe& recipe) {
  const QuantMode mode = parse_mode(recipe.mode);
  const int bits = recipe.resolved_bits(), group_size = recipe.resolved_group_size();
  if (mode == QuantMode::Affine) {
    if (bits != 2 && bits != 3 && bits != 4 && bits != 5 && bits != 6 && bits != 8)
      fail("affine quantization supports 2, 3, 4, 5, 6 or 8 bits, not {}", bits);
    if (group_size != 32 && group_size != 64 && group_size != 128)
      fail("affine quantization supports group sizes 32, 64 or 128, not {}", group_size);
  } else if (std::pair(bits, group_size) != mode_defaults(mode)) {
    fail("{} quantization needs {} bits and group size {}, not {} and {}", recipe.mode, mode_defaults(mode).first,
         mode_defaults(mode).second, bits, group_size);
  }
}


// ---------------------------------------------------------------------------------------------------------------
// Files

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create '{}'", path.string());
  out << text;
  if (!out.flush()) fail("cannot write '{}'", path.string());
}

// What mlx-lm writes from the source config: load_config drops `_name_or_path` and `vision_config` and takes
// eos_token_id from generation_config.json when that has a truthy one; save_config sorts only the top level, so
// nested objects keep their order (Hugging Face's sorted one for the source keys, insertion order for
// "quantization").
ordered_json mlx_config(const json& source, const std::optional<int64_t>& generation_eos,
                        const std::optional<ordered_json>& quantization) {
  std::map<std::string, ordered_json> top;
  for (const auto& [key, value] : source.items())
    if (key != "_name_or_path" && key != "vision_config") top[key] = ordered_json(value);
  if (generation_eos && *generation_eos != 0) top["eos_token_id"] = *generation_eos;
  if (quantization) {
    top["quantization"] = *quantization;
    top["quantization_config"] = *quantization;
  }
  ordered_json config = ordered_json::object();
  for (auto& [key, value] : top) config[key] = std::move(value);
  return config;
}

// Hugging Face's JSON files (config.json, generation_config.json, the shard index): keys sorted at every level,
// indent 2, a final newline.
std::string hf_json(const json& value) { return value.dump(2) + "\n"; }

}  // namespace

std::vector<std::string> tiny_model_types() {
  std::vector<std::string> names;
  for (const ModelType& type : kModelTypes) names.push_back(type.name);
  return names;
}

TinyModelSpec qwen36_like_spec() {
  TinyModelSpec spec;
  spec.model_type = "qwen3_5_moe";
  spec.hidden = 2048;
  spec.layers = 2;
  spec.full_attention_interval = 2;
  spec.heads = 16;
  spec.kv_heads = 2;
  spec.head_dim = 256;
  spec.linear_num_key_heads = 16;
  spec.linear_num_value_heads = 32;
  spec.linear_key_head_dim = 128;
  spec.linear_value_head_dim = 128;
  spec.linear_conv_kernel_dim = 4;
  spec.partial_rotary_factor = 0.25;
  spec.experts = 4;
  // 3 of 4 rather than Qwen's 8 of 256 (2 of 4 would do for the code paths): the expert at the top-k boundary then
  // carries a small share of the routed weight, as it does in the real model, so a near-tie that llama.cpp's
  // activation rounding flips there moves the logits little (with 2 of 4, one such flip could cost NMSE 1e-3).
  spec.experts_per_tok = 3;
  spec.moe_intermediate = 512;
  spec.shared_expert_intermediate = 512;
  spec.rope_theta = 1e7;
  spec.rms_norm_eps = 1e-6;
  spec.max_position_embeddings = 262144;
  return spec;
}

std::vector<std::string> tiny_model_presets() { return {"qwen3.6-35b-a3b-widths"}; }

TinyModelSpec tiny_model_preset(const std::string& name) {
  if (name == "qwen3.6-35b-a3b-widths") return qwen36_like_spec();
  fail("unknown preset '{}' (known: qwen3.6-35b-a3b-widths)", name);
}

std::vector<float> tiny_model_float_weights(const TinyModelSpec& spec, const std::string& name) {
  const Layout layout = build_layout(spec, tokenizer_facts(spec));
  for (const Param& param : layout.params)
    if (param.name == name) return generate_values(param, spec.seed, storage_dtype(spec.dtype));
  fail("a {} model ({} layout) has no tensor '{}'", spec.model_type, spec.layout, name);
}

std::map<std::string, std::vector<float>> tiny_model_float_weights(const TinyModelSpec& spec,
                                                                   const std::vector<std::string>& names) {
  const Layout layout = build_layout(spec, tokenizer_facts(spec));
  std::vector<const Param*> params;
  for (const std::string& name : names) {
    const auto param = std::find_if(layout.params.begin(), layout.params.end(),
                                    [&](const Param& p) { return p.name == name; });
    if (param == layout.params.end())
      fail("a {} model ({} layout) has no tensor '{}'", spec.model_type, spec.layout, name);
    params.push_back(&*param);
  }
  // Each tensor has its own random stream, so they are drawn in parallel.
  std::vector<std::vector<float>> drawn(params.size());
  tbb::parallel_for(size_t{0}, params.size(),
                    [&](size_t i) { drawn[i] = generate_values(*params[i], spec.seed, storage_dtype(spec.dtype)); });
  std::map<std::string, std::vector<float>> values;
  for (size_t i = 0; i < params.size(); ++i) values[names[i]] = std::move(drawn[i]);
  return values;
}

std::vector<TinyTensorInfo> tiny_model_tensors(const TinyModelSpec& spec) {
  const Layout layout = build_layout(spec, tokenizer_facts(spec));
  // The recipe as write_tiny_model applies it: the model's own predicate after the recipe's overrides.
  std::optional<QuantRecipe> recipe = spec.quant;
  if (recipe) recipe->overrides.insert(recipe->overrides.end(), layout.quant_predicate.begin(), layout.quant_predicate.end());
  std::vector<TinyTensorInfo> infos;
  for (const Param& param : layout.params) {
    TinyTensorInfo info{param.name, param.shape, param.dtype.value_or(storage_dtype(spec.dtype)), TinyModuleKind::None, {}};
    // Only the weights of Linear, SwitchLinear and Embedding modules are quantizable, so the flag tells them apart
    // from every other parameter (the hf layout clears it, as nothing there is an mlx-lm module).
    if (param.quantizable)
      info.module_kind = param.shape.size() == 3                  ? TinyModuleKind::SwitchLinear
                         : param.name.ends_with("embed_tokens.weight") ? TinyModuleKind::Embedding
                                                                       : TinyModuleKind::Linear;
    if (recipe)
      if (const auto quant = module_quant(param, *recipe)) info.quant = QuantSpec{quant->mode, quant->bits, quant->group_size};
    infos.push_back(std::move(info));
  }
  return infos;
}

TinyModelSummary write_tiny_model(const TinyModelSpec& spec, const fs::path& out_dir) {
  const DType dtype = storage_dtype(spec.dtype);
  if (spec.quant) check_recipe(*spec.quant);
  if (!spec.tokenizer_dir.empty() && !fs::exists(fs::path(spec.tokenizer_dir) / "tokenizer.json"))
    fail("tokenizer folder '{}' has no tokenizer.json", spec.tokenizer_dir);
  const TokenizerFacts tokens = tokenizer_facts(spec);
  const Layout layout = build_layout(spec, tokens);
  if (fs::exists(out_dir) && !fs::is_empty(out_dir)) fail("'{}' already exists and is not empty", out_dir.string());
  fs::create_directories(out_dir);

  TinyModelSummary summary;
  summary.vocab_size = layout.vocab;

  std::optional<QuantRecipe> recipe = spec.quant;
  std::optional<ordered_json> quantization;
  if (recipe) {
    recipe->overrides.insert(recipe->overrides.end(), layout.quant_predicate.begin(), layout.quant_predicate.end());
    quantization = ordered_json{{"group_size", recipe->resolved_group_size()}, {"bits", recipe->resolved_bits()}};
    if (recipe->write_mode) (*quantization)["mode"] = recipe->mode;
  }

  // Each parameter's stored tensors: its float values, or its quantized triplet. Parameters are independent (each
  // has its own random stream), so they are generated in parallel; everything order-dependent happens after.
  std::vector<std::optional<ModuleQuant>> quants(layout.params.size());
  for (size_t i = 0; i < layout.params.size(); ++i)
    if (recipe) quants[i] = module_quant(layout.params[i], *recipe);
  std::vector<std::vector<GenTensor>> generated(layout.params.size());
  tbb::parallel_for(size_t{0}, layout.params.size(), [&](size_t i) {
    const Param& param = layout.params[i];
    const std::vector<float> values = generate_values(param, spec.seed, dtype);
    const auto& quant = quants[i];
    if (!quant) {
      const DType stored = param.dtype.value_or(dtype);
      generated[i].push_back({param.name, stored, param.shape, float_bytes(values, stored)});
      return;
    }
    const std::string module = param.name.substr(0, param.name.size() - std::string(".weight").size());
    const int64_t in = param.shape.back();
    const int64_t rows = param.element_count() / in;
    QuantizedRows q = quant->mode == QuantMode::Affine
                          ? quantize_affine(values.data(), rows, in, quant->bits, quant->group_size, dtype)
                          : quantize_fp(values.data(), rows, in, quant->mode);
    std::vector<int64_t> packed_shape = param.shape, group_shape = param.shape;
    packed_shape.back() = in * quant->bits / 32;
    group_shape.back() = in / quant->group_size;
    generated[i].push_back({param.name, DType::U32, packed_shape, word_bytes(q.packed)});
    generated[i].push_back({module + ".scales", q.scale_dtype, group_shape, std::move(q.scales)});
    if (quant->mode == QuantMode::Affine) generated[i].push_back({module + ".biases", q.scale_dtype, group_shape, std::move(q.biases)});
  });

  std::vector<GenTensor> tensors;
  for (size_t i = 0; i < layout.params.size(); ++i) {
    const Param& param = layout.params[i];
    summary.total_parameters += static_cast<uint64_t>(param.element_count());
    if (quants[i]) {
      ++summary.quantized_modules;
      if (quants[i]->entry)
        (*quantization)[param.name.substr(0, param.name.size() - std::string(".weight").size())] = *quants[i]->entry;
    }
    for (GenTensor& tensor : generated[i]) tensors.push_back(std::move(tensor));
  }

  // Shards fill in parameter order; a tensor that would overflow the current shard starts the next one.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t shard_size = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (shard_size + tensors[i].data.size() > spec.max_shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shards.back().push_back(i);
    shard_size += tensors[i].data.size();
    summary.total_size += tensors[i].data.size();
  }
  summary.tensor_count = static_cast<int64_t>(tensors.size());

  // MLX saves unpadded headers tagged "mlx"; Hugging Face (the safetensors library) pads the header with spaces to
  // a multiple of 8 bytes and tags PyTorch's format.
  const json shard_metadata = layout.hf ? json{{"format", "pt"}} : json{{"format", "mlx"}};
  const size_t header_alignment = layout.hf ? 8 : 1;
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shards.size() == 1 ? "model.safetensors"
                                                : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    std::vector<GenTensor> shard;
    for (size_t index : shards[i]) {
      weight_map[tensors[index].name] = name;
      shard.push_back(std::move(tensors[index]));  // written once, not needed afterwards
    }
    write_safetensors(out_dir / name, shard, shard_metadata, header_alignment);
    summary.shards.push_back(name);
    summary.files.push_back(out_dir / name);
  }

  if (!layout.hf) {
    // mlx-lm always writes the index, metadata in its own key order.
    ordered_json index = {{"metadata", {{"total_size", summary.total_size}, {"total_parameters", summary.total_parameters}}},
                          {"weight_map", ordered_json::object()}};
    for (const auto& [tensor, shard] : weight_map) index["weight_map"][tensor] = shard;
    write_text(out_dir / "model.safetensors.index.json", index.dump(4));
    summary.files.push_back(out_dir / "model.safetensors.index.json");
  } else if (shards.size() > 1) {
    // Hugging Face writes an index only for sharded checkpoints.
    json index = {{"metadata", {{"total_size", summary.total_size}}}, {"weight_map", weight_map}};
    write_text(out_dir / "model.safetensors.index.json", hf_json(index));
    summary.files.push_back(out_dir / "model.safetensors.index.json");
  }

  write_text(out_dir / "config.json",
             layout.hf ? hf_json(layout.config) : mlx_config(layout.config, tokens.eos_id, quantization).dump(4));
  summary.files.push_back(out_dir / "config.json");

  if (spec.tokenizer_dir.empty()) {
    write_tiny_tokenizer(out_dir);
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"})
      summary.files.push_back(out_dir / name);
  } else {
    // What a Hugging Face tokenizer's save_pretrained may leave, depending on its class.
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                             "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json"}) {
      const fs::path source = fs::path(spec.tokenizer_dir) / name;
      if (!fs::exists(source)) continue;
      fs::copy_file(source, out_dir / name);
      summary.files.push_back(out_dir / name);
    }
  }

  // Hugging Face writes generation_config.json without unset ids; mlx-lm copies it.
  // Models without sampling defaults get one derived from config.json.
  json generation = layout.generation_extra.empty() ? json{{"_from_model_config", true}} : layout.generation_extra;
  generation["transformers_version"] = layout.config.at("transformers_version");
  if (tokens.bos_id) generation["bos_token_id"] = *tokens.bos_id;
  if (tokens.eos_id) generation["eos_token_id"] = *tokens.eos_id;
  write_text(out_dir / "generation_config.json", hf_json(generation));
  summary.files.push_back(out_dir / "generation_config.json");

  if (!layout.hf) {
    write_text(out_dir / "README.md",
               fmt::format("---\nlibrary_name: mlx\npipeline_tag: text-generation\ntags:\n- mlx\n---\n\n"
                           "Tiny {} model with random weights (seed {}), for testing converters and runtimes.\n",
                           spec.model_type, spec.seed));
    summary.files.push_back(out_dir / "README.md");
  }
  return summary;
}

}  // namespace mlx2gguf::gen
