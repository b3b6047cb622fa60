// GGUF mapping of the Gemma family, llama.cpp architectures "gemma3" and "gemma2": model_type gemma3_text (Gemma 3
// text models), gemma3 (the multimodal Gemma 3 wrapper, whose language model mlx-lm keeps under language_model.*
// and whose config nests it in text_config) and gemma2 (Gemma 2), as mlx-lm saves them.
//
//   MLX (mlx-lm; gemma3: prefix language_model.)          GGUF                                 transform
//   model.embed_tokens.weight                             token_embd.weight                    (also the tied head)
//   model.norm.weight                                     output_norm.weight                   1 + w
//   lm_head.weight (gemma3 only, when untied)             output.weight
//   model.layers.N.input_layernorm.weight                 blk.N.attn_norm.weight               1 + w
//   model.layers.N.self_attn.{q,k,v,o}_proj.weight        blk.N.attn_{q,k,v,output}.weight     unpermuted (NEOX rope)
//   model.layers.N.self_attn.{q,k}_norm.weight (gemma3)   blk.N.attn_{q,k}_norm.weight         1 + w (q: see below)
//   model.layers.N.post_attention_layernorm.weight        blk.N.post_attention_norm.weight     (1 + w) · c
//   model.layers.N.pre_feedforward_layernorm.weight       blk.N.ffn_norm.weight                1 + w
//   model.layers.N.mlp.{gate,up,down}_proj.weight         blk.N.ffn_{gate,up,down}.weight      GELU (tanh) gate
//   model.layers.N.post_feedforward_layernorm.weight      blk.N.post_ffw_norm.weight           (1 + w) · c
//   vision_tower.*, multi_modal_projector.*               dropped (mlx-lm's gemma3 drops them too)
//
// Why 1 + w: mlx-lm keeps Gemma's RMSNorm weights as Hugging Face stores them and multiplies by (1 + w) at run time;
// llama.cpp multiplies by the stored tensor as it is (its own converter adds the 1).
//
// Why c: both scale the embedding rows by sqrt(hidden_size) before the first layer, llama.cpp by sqrtf(n_embd) in
// float32, mlx-lm by that number rounded to bfloat16 (gemma3_text) or to the embedding's dtype (gemma2), e.g. 50.5
// instead of 50.596 for Gemma 3 4B. Every branch of the residual stream ends in a post-norm and every reader of it
// starts with a pre-norm, so scaling the stream by c = sqrtf(n_embd) / mlx's scale everywhere (the embedding in
// llama.cpp's graph, the two post-norms of every layer here) leaves each pre-norm's output, hence the logits, as
// mlx-lm computes them, while the embedding (often 4-bit, and tied to the head) is moved untouched.
//
// The attention scale: mlx-lm scales q·k by query_pre_attn_scalar^-1/2; llama.cpp reads no key for it and uses
// head_dim^-1/2, or (n_embd / n_head)^-1/2 for the 27B models it recognises by their layer count (62 for gemma3, 46
// for gemma2). Gemma 3 normalises q before the rotation, so the ratio is folded into attn_q_norm; Gemma 2 has no
// such tensor, so a scalar llama.cpp does not use is refused.
//
// Sliding windows: mlx-lm's gemma3_text makes layer i global when i % sliding_window_pattern == pattern - 1 (its
// layer_types key is not read), the others attend to the last sliding_window tokens with rope base
// rope_local_base_freq; llama.cpp's gemma3 does exactly that from attention.sliding_window(_pattern) and
// rope.freq_base_swa, and silently attends to everything when the window key is missing. mlx-lm's gemma2 has no
// sliding window at all while the model (and Hugging Face, and llama.cpp's graph) windows the even layers: the file
// keeps the model's window, which agrees with mlx-lm for contexts up to sliding_window (4096 in Gemma 2).
#include <cmath>
#include <optional>

#include "plan/architecture.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf {

namespace {

enum class Variant { Gemma3, Gemma2 };

struct GemmaDims {
  Variant variant;
  int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab;
  std::string prefix;   // "" or "language_model." (the gemma3 wrapper)
  double stream_scale;  // c: the factor llama.cpp's residual stream carries relative to mlx-lm's
  double q_scale;       // folded into attn_q_norm: mlx-lm's attention scale over llama.cpp's
};

std::string blk(int64_t i, const std::string& name) { return fmt::format("blk.{}.{}", i, name); }

std::string layer(const GemmaDims& d, int64_t i, const std::string& name) {
  return fmt::format("{}model.layers.{}.{}", d.prefix, i, name);
}

// A present, non-null config value.
bool is_set(const nlohmann::json& cfg, const char* key) { return cfg.contains(key) && !cfg[key].is_null(); }

// The embedding scale as mlx-lm computes it: gemma3_text rounds sqrt(hidden_size) to bfloat16 whatever the model's
// dtype; gemma2 multiplies by the Python float, which MLX casts to the embedding's dtype.
double mlx_embedding_scale(Variant v, int64_t n_embd, DType embedding_dtype) {
  const float exact = static_cast<float>(std::sqrt(static_cast<double>(n_embd)));
  if (v == Variant::Gemma3 || embedding_dtype == DType::BF16) return bf16_to_f32(f32_to_bf16(exact));
  if (embedding_dtype == DType::F16) return f16_to_f32(f32_to_f16(exact));
  return std::sqrt(static_cast<double>(n_embd));
}

// The attention scale llama.cpp's graphs use: 1/sqrt(head_dim), or 1/sqrt(n_embd / n_head) (integer division) for
// the layer count it takes for the 27B model.
int64_t llama_cpp_query_scalar(const GemmaDims& d) {
  const int64_t layers_27b = d.variant == Variant::Gemma3 ? 62 : 46;
  return d.n_layer == layers_27b ? d.n_embd / d.n_head : d.head_dim;
}

// mlx-lm's gemma3_text picks global layers by sliding_window_pattern alone. Newer Hugging Face configs also list
// layer_types, which transformers follows: a list that disagrees describes another model.
void check_layer_types(const PlanBuilder& b, const GemmaDims& d, int64_t pattern) {
  const auto& cfg = b.config();
  if (!is_set(cfg, "layer_types")) return;
  const auto& types = cfg["layer_types"];
  if (!types.is_array() || static_cast<int64_t>(types.size()) != d.n_layer)
    fail("config.json: layer_types must list the attention type of each of the {} layers, got {}", d.n_layer,
         types.dump());
  for (int64_t i = 0; i < d.n_layer; ++i) {
    const bool sliding = pattern > 1 && i % pattern != pattern - 1;
    const std::string want = sliding ? "sliding_attention" : "full_attention";
    if (types[static_cast<size_t>(i)] != want)
      fail("config.json: layer_types[{}] is {}, but mlx-lm's gemma3_text runs layer {} as {} (sliding_window_pattern "
           "{}, layer_types is not read): the two describe different models",
           i, types[static_cast<size_t>(i)].dump(), i, want, pattern);
  }
}

std::string rope_type(const nlohmann::json& scaling) {
  if (scaling.contains("type") && scaling["type"].is_string() && !scaling["type"].get<std::string>().empty())
    return scaling["type"].get<std::string>();
  if (scaling.contains("rope_type") && scaling["rope_type"].is_string()) return scaling["rope_type"].get<std::string>();
  return "default";
}

// mlx-lm applies rope_scaling to the global layers only, as llama.cpp's gemma3 applies rope.scaling.* (its local
// layers keep scale 1).
void describe_rope_scaling(PlanBuilder& b) {
  const auto& cfg = b.config();
  if (!is_set(cfg, "rope_scaling")) return;
  const auto& scaling = cfg["rope_scaling"];
  if (!scaling.is_object()) fail("config.json: rope_scaling is not an object: {}", scaling.dump());
  const std::string type = rope_type(scaling);
  if (type == "default") return;
  if (type != "linear")
    fail("config.json rope_scaling type '{}' is not supported for gemma3 (supported: linear, default)", type);
  if (!scaling.contains("factor") || !scaling["factor"].is_number() || !(scaling["factor"].get<double>() > 0.0))
    fail("config.json: rope_scaling of type linear needs a positive 'factor', got {}", scaling.dump());
  b.kv_str("rope.scaling.type", "linear");
  b.kv_f32("rope.scaling.factor", scaling["factor"].get<double>());
}

// mlx-lm reads rope_theta / rope_local_base_freq / rope_scaling; transformers 5 writes rope_parameters instead.
void check_rope_parameters(const PlanBuilder& b) {
  const auto& cfg = b.config();
  if (!is_set(cfg, "rope_parameters")) return;
  const auto& params = cfg["rope_parameters"];
  auto theta_of = [&](const char* kind) -> std::optional<double> {
    if (params.contains(kind) && params[kind].is_object() && params[kind].contains("rope_theta") &&
        params[kind]["rope_theta"].is_number())
      return params[kind]["rope_theta"].get<double>();
    return std::nullopt;
  };
  const auto full = theta_of("full_attention"), local = theta_of("sliding_attention");
  if ((full && *full != b.cfg_float("rope_theta", 1e6)) || (local && *local != b.cfg_float("rope_local_base_freq", 1e4)))
    fail("config.json: rope_parameters {} disagrees with rope_theta / rope_local_base_freq, which mlx-lm reads; "
         "refusing to guess which rope to write",
         params.dump());
}

void describe_gemma3_keys(PlanBuilder& b, const GemmaDims& d) {
  const auto& cfg = b.config();
  for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"})
    if (is_set(cfg, key))
      fail("config.json sets {} {}: mlx-lm's gemma3_text ignores it, Hugging Face and llama.cpp would cap the "
           "logits; remove it to convert the model as mlx-lm runs it",
           key, cfg[key].dump());
  check_rope_parameters(b);
  b.kv_f32("rope.freq_base", b.cfg_float("rope_theta", 1e6));
  describe_rope_scaling(b);
  const int64_t pattern = b.cfg_count("sliding_window_pattern", 6);
  check_layer_types(b, d, pattern);
  if (pattern > 1) {
    b.kv_u32("attention.sliding_window", b.cfg_count("sliding_window", 512));
    b.kv_u32("attention.sliding_window_pattern", pattern);
    b.kv_f32("rope.freq_base_swa", b.cfg_float("rope_local_base_freq", 1e4));
  }
}

double softcap(const PlanBuilder& b, const char* key, double fallback) {
  const auto& cfg = b.config();
  if (cfg.contains(key) && cfg[key].is_null())
    fail("config.json: {} is null; mlx-lm's gemma2 divides by it (Gemma 2 uses 50 for attention, 30 for the logits)", key);
  const double value = b.cfg_float(key, fallback);
  if (!(value > 0.0)) fail("config.json: {} must be positive, got {}", key, value);
  return value;
}

void describe_gemma2_keys(PlanBuilder& b) {
  if (b.cfg_bool("rope_traditional", false))
    fail("config.json sets rope_traditional true: llama.cpp's gemma2 rotates half-split pairs only");
  b.kv_f32("rope.freq_base", b.cfg_float("rope_theta", 10000.0));
  b.kv_f32("attn_logit_softcapping", softcap(b, "attn_logit_softcapping", 50.0));
  b.kv_f32("final_logit_softcapping", softcap(b, "final_logit_softcapping", 30.0));
  // The model's window on the even layers (see the top of the file); llama.cpp would assume 4096 without the key.
  const auto& cfg = b.config();
  if (cfg.contains("sliding_window") && cfg["sliding_window"].is_null())
    fail("config.json: sliding_window is null; Gemma 2's local layers need a window");
  b.kv_u32("attention.sliding_window", b.cfg_count("sliding_window", 4096));
  b.kv_u32("attention.sliding_window_pattern", 2);
}

// The attention scale: folded into attn_q_norm for gemma3, refused for gemma2 when llama.cpp's differs.
double query_scale(const PlanBuilder& b, const GemmaDims& d) {
  const double mlx_scalar = b.cfg_float("query_pre_attn_scalar", d.variant == Variant::Gemma3 ? 256.0 : 144.0);
  if (!(mlx_scalar > 0.0)) fail("config.json: query_pre_attn_scalar must be positive, got {}", mlx_scalar);
  const auto llama_scalar = static_cast<double>(llama_cpp_query_scalar(d));
  if (mlx_scalar == llama_scalar) return 1.0;
  if (d.variant == Variant::Gemma2)
    fail("config.json: query_pre_attn_scalar {} makes mlx-lm scale attention scores by 1/sqrt({}), llama.cpp's gemma2 "
         "by 1/sqrt({}) ({}) and reads no key for it; the file would compute a different model",
         mlx_scalar, mlx_scalar, llama_scalar, d.n_layer == 46 ? "hidden_size / num_attention_heads, for 46 layers" : "head_dim");
  return std::sqrt(llama_scalar / mlx_scalar);
}

// A norm tensor holding (1 + w) · scale, computed in double from the source weights.
void shifted_norm(PlanBuilder& b, const std::string& gguf, const std::string& source, int64_t size, double scale) {
  TensorRecipe& recipe = b.map(gguf, source, {size});
  recipe.keep_f32 = true;
  if (scale == 1.0) {
    recipe.op = ValueOp::AddOne;
    return;
  }
  std::vector<float> w(static_cast<size_t>(size));
  recipe.sources.front()->read_rows(0, 1, w.data());
  recipe.generated.resize(w.size());
  for (size_t i = 0; i < w.size(); ++i) recipe.generated[i] = static_cast<float>((1.0 + w[i]) * scale);
}

void describe_layer(PlanBuilder& b, const GemmaDims& d, int64_t i) {
  const int64_t q_rows = d.n_head * d.head_dim, kv_rows = d.n_head_kv * d.head_dim;
  shifted_norm(b, blk(i, "attn_norm.weight"), layer(d, i, "input_layernorm.weight"), d.n_embd, 1.0);
  b.map(blk(i, "attn_q.weight"), layer(d, i, "self_attn.q_proj.weight"), {q_rows, d.n_embd});
  b.map(blk(i, "attn_k.weight"), layer(d, i, "self_attn.k_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_v.weight"), layer(d, i, "self_attn.v_proj.weight"), {kv_rows, d.n_embd});
  b.map(blk(i, "attn_output.weight"), layer(d, i, "self_attn.o_proj.weight"), {d.n_embd, q_rows});
  if (d.variant == Variant::Gemma3) {
    shifted_norm(b, blk(i, "attn_q_norm.weight"), layer(d, i, "self_attn.q_norm.weight"), d.head_dim, d.q_scale);
    shifted_norm(b, blk(i, "attn_k_norm.weight"), layer(d, i, "self_attn.k_norm.weight"), d.head_dim, 1.0);
  }
  shifted_norm(b, blk(i, "post_attention_norm.weight"), layer(d, i, "post_attention_layernorm.weight"), d.n_embd,
               d.stream_scale);
  shifted_norm(b, blk(i, "ffn_norm.weight"), layer(d, i, "pre_feedforward_layernorm.weight"), d.n_embd, 1.0);
  b.map(blk(i, "ffn_gate.weight"), layer(d, i, "mlp.gate_proj.weight"), {d.n_ff, d.n_embd});
  b.map(blk(i, "ffn_up.weight"), layer(d, i, "mlp.up_proj.weight"), {d.n_ff, d.n_embd});
  b.map(blk(i, "ffn_down.weight"), layer(d, i, "mlp.down_proj.weight"), {d.n_embd, d.n_ff});
  shifted_norm(b, blk(i, "post_ffw_norm.weight"), layer(d, i, "post_feedforward_layernorm.weight"), d.n_embd,
               d.stream_scale);
}

GemmaDims read_dims(const PlanBuilder& b, Variant v) {
  GemmaDims d{};
  d.variant = v;
  d.prefix = v == Variant::Gemma3 && b.has("language_model.model.embed_tokens.weight") ? "language_model." : "";
  // mlx-lm's ModelArgs: gemma3_text has defaults (Gemma 3 1B's), gemma2 requires the sizes.
  const bool g3 = v == Variant::Gemma3;
  d.n_embd = g3 ? b.cfg_count("hidden_size", 1152) : b.cfg_count("hidden_size");
  d.n_layer = g3 ? b.cfg_count("num_hidden_layers", 26) : b.cfg_count("num_hidden_layers");
  d.n_ff = g3 ? b.cfg_count("intermediate_size", 6912) : b.cfg_count("intermediate_size");
  // The gemma3 wrapper's ModelArgs fills in 8 heads and 4 key/value heads where text_config has none.
  const bool wrapped = !d.prefix.empty();
  d.n_head = g3 ? b.cfg_count("num_attention_heads", wrapped ? 8 : 4) : b.cfg_count("num_attention_heads");
  d.n_head_kv = g3 ? b.cfg_count("num_key_value_heads", wrapped ? 4 : 1) : b.cfg_count("num_key_value_heads");
  d.head_dim = g3 ? b.cfg_count("head_dim", 256) : b.cfg_count("head_dim");
  if (d.n_head % d.n_head_kv != 0)
    fail("config.json: {} attention heads cannot share {} key/value heads", d.n_head, d.n_head_kv);
  const SourceTensor& embedding = b.model().require(d.prefix + "model.embed_tokens.weight");
  d.n_vocab = embedding.shape().at(0);
  d.stream_scale = static_cast<double>(std::sqrt(static_cast<float>(d.n_embd))) /
                   mlx_embedding_scale(v, d.n_embd, embedding.value_dtype());
  d.q_scale = query_scale(b, d);
  return d;
}

void describe_gemma(PlanBuilder& b, Variant v) {
  const GemmaDims d = read_dims(b, v);
  b.kv_u32("context_length", b.cfg_int("max_position_embeddings", v == Variant::Gemma3 ? 32768 : 8192));
  b.kv_u32("embedding_length", d.n_embd);
  b.kv_u32("block_count", d.n_layer);
  b.kv_u32("feed_forward_length", d.n_ff);
  b.kv_u32("attention.head_count", d.n_head);
  b.kv_u32("attention.head_count_kv", d.n_head_kv);
  b.kv_u32("attention.key_length", d.head_dim);
  b.kv_u32("attention.value_length", d.head_dim);
  b.kv_u32("rope.dimension_count", d.head_dim);
  b.kv_f32("attention.layer_norm_rms_epsilon", b.cfg_float("rms_norm_eps", 1e-6));
  b.kv_u32("vocab_size", d.n_vocab);
  if (v == Variant::Gemma3)
    describe_gemma3_keys(b, d);
  else
    describe_gemma2_keys(b);

  b.map("token_embd.weight", d.prefix + "model.embed_tokens.weight", {d.n_vocab, d.n_embd});
  for (int64_t i = 0; i < d.n_layer; ++i) describe_layer(b, d, i);
  shifted_norm(b, "output_norm.weight", d.prefix + "model.norm.weight", d.n_embd, 1.0);
  const std::string head = d.prefix + "lm_head.weight";
  if (b.has(head)) {
    // gemma3_text's sanitize keeps a stored head untied; mlx-lm's gemma2 has no head of its own.
    if (v == Variant::Gemma2)
      fail("'{}': mlx-lm's gemma2 always uses the embedding table as its head and cannot load this tensor", head);
    b.map("output.weight", head, {d.n_vocab, d.n_embd});
  }
  b.drop_if([](const std::string& name) {
    return name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector.") ||
           name.ends_with("self_attn.rotary_emb.inv_freq");
  });
}

void describe_gemma3(PlanBuilder& b) { describe_gemma(b, Variant::Gemma3); }
void describe_gemma2(PlanBuilder& b) { describe_gemma(b, Variant::Gemma2); }

}  // namespace

const Family& gemma_family() {
  static const Family family{"gemma",
                             {{"gemma3", {"gemma3_text", "gemma3"}, describe_gemma3},
                              {"gemma2", {"gemma2"}, describe_gemma2}}};
  return family;
}

}  // namespace mlx2gguf
