#include "gen/tiny_model.h"

#include <fmt/format.h>

#include <fstream>
#include <map>

#include "gen/quantize.h"
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

struct Param {
  std::string name;
  std::vector<int64_t> shape;
  double mean = 0.0, stddev = 0.0;
  bool quantizable = false;       // weight of a Linear, Embedding or SwitchLinear: mlx-lm quantizes these
  std::optional<DType> dtype;     // kept in this dtype whatever the model's (mlx-lm cast predicates)

  int64_t element_count() const {
    int64_t count = 1;
    for (int64_t dim : shape) count *= dim;
    return count;
  }
};

struct Dims {
  int64_t hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, experts, experts_per_tok;
};

struct Layout {
  json config;  // the source config.json (Hugging Face writes it with sorted keys at every level)
  std::vector<Param> params;
};

// Weight scales keep a forward pass tame: linear outputs have about the variance of their inputs, embedding rows
// have unit RMS after the first norm anyway, and norm weights sit near (never exactly at) 1 so that a converter
// that drops or shifts them is caught.
class ParamList {
 public:
  void linear(const std::string& module, int64_t out, int64_t in, bool bias) {
    add(module + ".weight", {out, in}, 0.0, 1.0 / std::sqrt(static_cast<double>(in)), true);
    if (bias) add(module + ".bias", {out}, 0.0, 0.05, false);
  }
  void switch_linear(const std::string& module, int64_t experts, int64_t out, int64_t in) {
    add(module + ".weight", {experts, out, in}, 0.0, 1.0 / std::sqrt(static_cast<double>(in)), true);
  }
  void embedding(const std::string& module, int64_t rows, int64_t dim) {
    add(module + ".weight", {rows, dim}, 0.0, 1.0 / std::sqrt(static_cast<double>(dim)), true);
  }
  void norm(const std::string& module, int64_t dim) { add(module + ".weight", {dim}, 1.0, 0.1, false); }

  std::vector<Param> params;

 private:
  void add(std::string name, std::vector<int64_t> shape, double mean, double stddev, bool quantizable) {
    Param param;
    param.name = std::move(name);
    param.shape = std::move(shape);
    param.mean = mean;
    param.stddev = stddev;
    param.quantizable = quantizable;
    params.push_back(std::move(param));
  }
};

void attention(ParamList& p, const std::string& prefix, const Dims& d, bool bias) {
  p.linear(prefix + ".q_proj", d.heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".k_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".v_proj", d.kv_heads * d.head_dim, d.hidden, bias);
  p.linear(prefix + ".o_proj", d.hidden, d.heads * d.head_dim, bias);
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
                 {"rms_norm_eps", spec.rms_norm_eps},
                 {"rope_theta", spec.rope_theta},
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
    p.linear(layer + ".mlp.down_proj", d.hidden, d.intermediate, spec.mlp_bias);
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
  return {config, dense_llama_params(spec, d)};
}

Layout build_mistral(const TinyModelSpec& spec, const Dims& d, const TokenizerFacts& tokens) {
  json config = base_config(spec, d, tokens, "MistralForCausalLM");
  config["head_dim"] = d.head_dim;
  config["sliding_window"] = nullptr;
  // Mistral's own config has no bias or rope scaling keys; mlx-lm's llama.py reads them when present.
  if (spec.attention_bias) config["attention_bias"] = true;
  if (spec.mlp_bias) config["mlp_bias"] = true;
  if (!spec.rope_scaling.is_null()) config["rope_scaling"] = spec.rope_scaling;
  return {config, dense_llama_params(spec, d)};
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
    p.linear(moe + ".gate", d.experts, d.hidden, false);
    p.switch_linear(moe + ".switch_mlp.gate_proj", d.experts, d.intermediate, d.hidden);
    p.switch_linear(moe + ".switch_mlp.up_proj", d.experts, d.intermediate, d.hidden);
    p.switch_linear(moe + ".switch_mlp.down_proj", d.experts, d.hidden, d.intermediate);
    p.norm(layer + ".input_layernorm", d.hidden);
    p.norm(layer + ".post_attention_layernorm", d.hidden);
  });
  return {config, std::move(params)};
}

struct ModelType {
  const char* name;
  bool moe;
  Layout (*build)(const TinyModelSpec&, const Dims&, const TokenizerFacts&);
};

constexpr ModelType kModelTypes[] = {
    {"llama", false, build_llama},
    {"mistral", false, build_mistral},
    {"mixtral", true, build_mixtral},
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

Layout build_layout(const TinyModelSpec& spec, const TokenizerFacts& tokens) {
  const ModelType& type = find_model_type(spec.model_type);
  auto positive = [](const char* what, int64_t value) {
    if (value <= 0) fail("{} must be positive, got {}", what, value);
  };
  positive("hidden", spec.hidden);
  positive("layers", spec.layers);
  positive("heads", spec.heads);
  positive("kv_heads", spec.kv_heads);
  positive("intermediate", spec.intermediate);
  if (spec.heads % spec.kv_heads != 0) fail("heads ({}) must be a multiple of kv_heads ({})", spec.heads, spec.kv_heads);
  if (spec.head_dim == 0 && spec.hidden % spec.heads != 0)
    fail("hidden ({}) is not a multiple of heads ({}); give head_dim", spec.hidden, spec.heads);
  Dims d{};
  d.hidden = spec.hidden;
  d.layers = spec.layers;
  d.heads = spec.heads;
  d.kv_heads = spec.kv_heads;
  d.head_dim = spec.head_dim ? spec.head_dim : spec.hidden / spec.heads;
  d.intermediate = spec.intermediate;
  d.vocab = spec.vocab ? spec.vocab : tokens.vocab_size;
  positive("vocab", d.vocab);
  if (type.moe) {
    d.experts = spec.experts ? spec.experts : 4;
    d.experts_per_tok = spec.experts_per_tok ? spec.experts_per_tok : 2;
    if (d.experts_per_tok > d.experts) fail("experts_per_tok ({}) exceeds experts ({})", d.experts_per_tok, d.experts);
  } else if (spec.experts || spec.experts_per_tok) {
    fail("model type '{}' has no experts", spec.model_type);
  }
  return type.build(spec, d, tokens);
}

std::vector<float> generate_values(const Param& param, uint64_t seed, DType dtype) {
  NormalStream stream(tensor_seed(seed, param.name));
  std::vector<float> values(static_cast<size_t>(param.element_count()));
  for (float& value : values)
    value = round_to_dtype(static_cast<float>(param.mean + param.stddev * stream.next()), param.dtype.value_or(dtype));
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

std::vector<uint8_t> float_bytes(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) store_float(values[i], dtype, bytes.data() + i * dtype_size(dtype));
  return bytes;
}

std::vector<uint8_t> word_bytes(const std::vector<uint32_t>& words) {
  std::vector<uint8_t> bytes(words.size() * 4);
  for (size_t i = 0; i < words.size(); ++i)
    for (int b = 0; b < 4; ++b) bytes[i * 4 + b] = static_cast<uint8_t>(words[i] >> (8 * b));
  return bytes;
}

// ---------------------------------------------------------------------------------------------------------------
// Files

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create '{}'", path.string());
  out << text;
  if (!out.flush()) fail("cannot write '{}'", path.string());
}

// mlx-lm sorts only the top level of config.json; nested objects keep their order (Hugging Face's sorted one for
// the source keys, insertion order for "quantization").
ordered_json mlx_config(const json& source, const std::optional<ordered_json>& quantization) {
  std::map<std::string, ordered_json> top;
  for (const auto& [key, value] : source.items()) top[key] = ordered_json(value);
  if (quantization) {
    top["quantization"] = *quantization;
    top["quantization_config"] = *quantization;
  }
  ordered_json config = ordered_json::object();
  for (auto& [key, value] : top) config[key] = std::move(value);
  return config;
}

}  // namespace

std::vector<std::string> tiny_model_types() {
  std::vector<std::string> names;
  for (const ModelType& type : kModelTypes) names.push_back(type.name);
  return names;
}

std::vector<float> tiny_model_float_weights(const TinyModelSpec& spec, const std::string& name) {
  const Layout layout = build_layout(spec, tokenizer_facts(spec));
  for (const Param& param : layout.params)
    if (param.name == name) return generate_values(param, spec.seed, storage_dtype(spec.dtype));
  fail("a {} model has no tensor '{}'", spec.model_type, name);
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
  summary.vocab_size = layout.config.at("vocab_size").get<int64_t>();

  std::optional<ordered_json> quantization;
  if (spec.quant) {
    quantization = ordered_json{{"group_size", spec.quant->resolved_group_size()}, {"bits", spec.quant->resolved_bits()}};
    if (spec.quant->write_mode) (*quantization)["mode"] = spec.quant->mode;
  }

  std::vector<GenTensor> tensors;
  for (const Param& param : layout.params) {
    const std::vector<float> values = generate_values(param, spec.seed, dtype);
    summary.total_parameters += static_cast<uint64_t>(param.element_count());
    const auto quant = spec.quant ? module_quant(param, *spec.quant) : std::nullopt;
    if (!quant) {
      const DType stored = param.dtype.value_or(dtype);
      tensors.push_back({param.name, stored, param.shape, float_bytes(values, stored)});
      continue;
    }
    const std::string module = param.name.substr(0, param.name.size() - std::string(".weight").size());
    if (quant->entry) (*quantization)[module] = *quant->entry;
    ++summary.quantized_modules;
    const int64_t in = param.shape.back();
    const int64_t rows = param.element_count() / in;
    QuantizedRows q = quant->mode == QuantMode::Affine
                          ? quantize_affine(values.data(), rows, in, quant->bits, quant->group_size, dtype)
                          : quantize_fp(values.data(), rows, in, quant->mode);
    std::vector<int64_t> packed_shape = param.shape, group_shape = param.shape;
    packed_shape.back() = in * quant->bits / 32;
    group_shape.back() = in / quant->group_size;
    tensors.push_back({param.name, DType::U32, packed_shape, word_bytes(q.packed)});
    tensors.push_back({module + ".scales", q.scale_dtype, group_shape, std::move(q.scales)});
    if (quant->mode == QuantMode::Affine) tensors.push_back({module + ".biases", q.scale_dtype, group_shape, std::move(q.biases)});
  }

  // Shards fill in parameter order; a tensor that would overflow the current shard starts the next one.
  std::vector<std::vector<const GenTensor*>> shards(1);
  uint64_t shard_size = 0;
  for (const GenTensor& tensor : tensors) {
    if (shard_size + tensor.data.size() > spec.max_shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shards.back().push_back(&tensor);
    shard_size += tensor.data.size();
    summary.total_size += tensor.data.size();
  }
  summary.tensor_count = static_cast<int64_t>(tensors.size());

  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shards.size() == 1 ? "model.safetensors"
                                                : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    std::vector<GenTensor> shard;
    for (const GenTensor* tensor : shards[i]) {
      shard.push_back(*tensor);
      weight_map[tensor->name] = name;
    }
    write_safetensors(out_dir / name, shard, {{"format", "mlx"}});
    summary.shards.push_back(name);
    summary.files.push_back(out_dir / name);
  }

  ordered_json index = {{"metadata", {{"total_size", summary.total_size}, {"total_parameters", summary.total_parameters}}},
                        {"weight_map", ordered_json::object()}};
  for (const auto& [tensor, shard] : weight_map) index["weight_map"][tensor] = shard;
  write_text(out_dir / "model.safetensors.index.json", index.dump(4));
  summary.files.push_back(out_dir / "model.safetensors.index.json");

  write_text(out_dir / "config.json", mlx_config(layout.config, quantization).dump(4));
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

  // Hugging Face writes generation_config.json sorted, indented by 2, without unset ids; mlx-lm copies it.
  json generation = {{"_from_model_config", true}, {"transformers_version", layout.config.at("transformers_version")}};
  for (const char* key : {"bos_token_id", "eos_token_id"})
    if (!layout.config.at(key).is_null()) generation[key] = layout.config.at(key);
  write_text(out_dir / "generation_config.json", generation.dump(2) + "\n");
  summary.files.push_back(out_dir / "generation_config.json");

  write_text(out_dir / "README.md",
             fmt::format("---\nlibrary_name: mlx\npipeline_tag: text-generation\ntags:\n- mlx\n---\n\n"
                         "Tiny {} model with random weights (seed {}), for testing converters and runtimes.\n",
                         spec.model_type, spec.seed));
  summary.files.push_back(out_dir / "README.md");
  return summary;
}

}  // namespace mlx2gguf::gen
