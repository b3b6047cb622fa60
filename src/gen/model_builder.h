#pragma once
// What the architecture families' test-model builders (src/arch/<family>/builder.cpp) are written with: the
// parameters of a model type in mlx-lm's module order, how their values are drawn, and the config it came with.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arch/families.h"
#include "gen/tiny_model.h"
#include "gen/tiny_tokenizer.h"
#include "read/safetensors.h"

namespace mlx2gguf::gen {

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
  nlohmann::json config;            // the source config.json (Hugging Face writes it with sorted keys at every level)
  nlohmann::json generation_extra;  // sampling defaults the model's generation_config.json carries besides the token ids
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

void attention(ParamList& p, const std::string& prefix, const Dims& d, bool bias);

// Keys every Hugging Face decoder config of these families carries.
nlohmann::json base_config(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens, const char* architecture);

// Embedding, layers, final norm, untied head: the frame shared by most decoders.
template <typename LayerFn>
std::vector<Param> decoder_params(const TinyModelSpec& spec, const Dims& d, LayerFn layer) {
  ParamList p;
  p.embedding("model.embed_tokens", d.vocab, d.hidden);
  for (int64_t i = 0; i < d.layers; ++i) layer(p, fmt::format("model.layers.{}", i));
  p.norm("model.norm", d.hidden);
  if (!spec.tie_embeddings) p.linear("lm_head", d.vocab, d.hidden, false);
  return std::move(p.params);
}

// Fails naming `what` unless value > 0.
void positive(const char* what, int64_t value);

// A whole number where the value is one, as configs spell e.g. rope_theta (10000000, not 1e7).
nlohmann::json number(double value);

// Per model type: what the generator fills in when the spec leaves it open, and how the folder is laid out.
struct TypeDefaults {
  int layers;
  int head_dim;  // 0: hidden / heads
  double rope_theta, rms_norm_eps;
};

struct ModelTypeBuilder {
  const char* name;       // config.json model_type
  bool moe;               // has experts (TinyModelSpec::experts applies)
  bool hf_layout;         // can also write the Hugging Face checkpoint (TinyModelSpec::layout "hf")
  TypeDefaults defaults;
  // The parameters and config of the model. `d` holds the generic dimensions, checked; the builder completes and
  // checks its family's own.
  Layout (*build)(const TinyModelSpec& spec, Dims d, const TokenizerFacts& tokens);
};

#define MLX2GGUF_DECLARE_BUILDERS(family) std::vector<ModelTypeBuilder> family##_builders();
MLX2GGUF_FAMILIES(MLX2GGUF_DECLARE_BUILDERS)
#undef MLX2GGUF_DECLARE_BUILDERS

// Every model type the families can write.
const std::vector<ModelTypeBuilder>& model_type_builders();

}  // namespace mlx2gguf::gen
