#include "gen/tiny_model.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>

#include "read/mlx_quantize.h"
#include "gen/model_builder.h"
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
// Model layouts: each architecture family's builder (src/arch/<family>/builder.cpp) gives the parameters of its
// model types in mlx-lm's module definition order (the order mlx-lm fills shards in), and the Hugging Face config.

namespace {

const ModelTypeBuilder& find_model_type(const std::string& name) {
  for (const ModelTypeBuilder& type : model_type_builders())
    if (name == type.name) return type;
  std::string known;
  for (const ModelTypeBuilder& type : model_type_builders()) known += std::string(known.empty() ? "" : ", ") + type.name;
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
  const ModelTypeBuilder& type = find_model_type(spec.model_type);
  if (spec.layout != "mlx" && spec.layout != "hf") fail("unknown layout '{}' (expected mlx or hf)", spec.layout);
  if (spec.layout == "hf" && !type.hf_layout)
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
  Layout layout = type.build(spec, d, tokens);
  if (!spec.extra_config.is_object()) fail("extra_config must be a JSON object");
  for (const auto& [key, value] : spec.extra_config.items()) layout.config[key] = value;
  return layout;
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
  for (const ModelTypeBuilder& type : model_type_builders()) names.push_back(type.name);
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
