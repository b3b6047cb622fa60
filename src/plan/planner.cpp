#include "plan/planner.h"

#include <fmt/ranges.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cctype>

#include "encode/k_quants.h"
#include "encode/mlx_aware_k_quants.h"
#include "encode/repack.h"
#include "plan/quant_mix.h"
#include "plan/architecture.h"
#include "plan/general_metadata.h"
#include "plan/tokenizer_metadata.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

struct OutTypeName {
  OutType type;
  const char* name;  // float types, or the name of a llama-quantize mix (plan/quant_mix.h)
};

constexpr OutTypeName kOutTypes[] = {
    {OutType::Auto, "auto"},     {OutType::F32, "f32"},       {OutType::F16, "f16"},       {OutType::BF16, "bf16"},
    {OutType::Q8_0, "q8_0"},     {OutType::Q4_0, "q4_0"},     {OutType::Q4_1, "q4_1"},     {OutType::Q5_0, "q5_0"},
    {OutType::Q5_1, "q5_1"},     {OutType::Q2_K, "q2_k"},     {OutType::Q3_K_S, "q3_k_s"}, {OutType::Q3_K_M, "q3_k_m"},
    {OutType::Q3_K_L, "q3_k_l"}, {OutType::Q4_K_S, "q4_k_s"}, {OutType::Q4_K_M, "q4_k_m"}, {OutType::Q5_K_S, "q5_k_s"},
    {OutType::Q5_K_M, "q5_k_m"}, {OutType::Q6_K, "q6_k"},     {OutType::MXFP4_MOE, "mxfp4_moe"},
};

const QuantMix* mix_of(OutType type) { return find_quant_mix(out_type_name(type)); }

}  // namespace

std::optional<OutType> parse_out_type(const std::string& name) {
  std::string lower = name;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& entry : kOutTypes)
    if (lower == entry.name) return entry.type;
  return std::nullopt;
}

const char* out_type_name(OutType type) {
  for (const auto& entry : kOutTypes)
    if (entry.type == type) return entry.name;
  return "?";
}

std::vector<std::string> out_type_names() {
  std::vector<std::string> names;
  for (const auto& entry : kOutTypes) names.emplace_back(entry.name);
  return names;
}

GgmlType resolve_out_type(const SourceModel& model, OutType out_type) {
  switch (out_type) {
    case OutType::F32: return GgmlType::F32;
    case OutType::F16: return GgmlType::F16;
    case OutType::BF16: return GgmlType::BF16;
    default: break;
  }
  // The source's 16-bit type: what most unquantized weight elements are stored as (none → F16).
  int64_t bf16 = 0, f16 = 0;
  for (const auto& [name, tensor] : model.tensors()) {
    if (tensor.quant() || tensor.merge() || tensor.shape().size() < 2) continue;
    if (tensor.value_dtype() == DType::BF16) bf16 += tensor.element_count();
    if (tensor.value_dtype() == DType::F16) f16 += tensor.element_count();
  }
  return bf16 > f16 ? GgmlType::BF16 : GgmlType::F16;
}

namespace {

// Tensors llama.cpp needs in F32 whatever the file type: everything 1-D, norms, non-weight parameters, and what
// the architecture marks (routers, conv kernels ...). llama-quantize never re-types these either.
bool must_stay_f32(const TensorRecipe& tensor) {
  return tensor.keep_f32 || tensor.shape.size() < 2 || tensor.name.ends_with("_norm.weight") ||
         !tensor.name.ends_with(".weight");
}

// The MLX quantization shared by all sources of a recipe that is a plain copy of quantized rows (no value op,
// no generated values); nullopt otherwise.
std::optional<QuantSpec> packed_source_spec(const TensorRecipe& tensor) {
  if (tensor.sources.empty() || tensor.op != ValueOp::None || !tensor.generated.empty()) return std::nullopt;
  const auto& first = tensor.sources.front()->quant();
  if (!first) return std::nullopt;
  for (const SourceTensor* source : tensor.sources)
    if (source->quant() != first) return std::nullopt;
  return first;
}

const RowMerge* merged_source(const TensorRecipe& tensor) {
  for (const SourceTensor* source : tensor.sources)
    if (source->merge()) return source->merge();
  return nullptr;
}

std::string describe(const QuantSpec& spec) {
  return fmt::format("MLX {} {}-bit g{}", quant_mode_name(spec.mode), spec.bits, spec.group_size);
}

// Why `tensor` cannot be moved losslessly into its exact type `target`, or nullopt when it can (then its type and
// repack fields are set).
std::optional<std::string> try_repack(TensorRecipe& tensor, const QuantSpec& spec, const LosslessTarget& target) {
  if (!target.type) return target.reason;
  std::vector<int64_t> groups;
  if (!tensor.column_map.empty()) {
    const auto as_groups = column_map_as_groups(tensor.column_map, spec.group_size);
    if (!as_groups) return "its column reorder splits quantization groups";
    groups = *as_groups;
  }
  for (const SourceTensor* source : tensor.sources)
    if (auto obstacle = repack_obstacle(*source, *target.type)) return obstacle;
  tensor.type = *target.type;
  tensor.repack = true;
  tensor.repack_groups = std::move(groups);
  tensor.type_note = "lossless from " + describe(spec);
  if (merged_source(tensor)) tensor.type_note = "merged, re-quantized as mlx_lm.fuse does, " + tensor.type_note;
  return std::nullopt;
}

// Block types need whole blocks per row; other rows keep F16, as llama.cpp's tools do.
GgmlType fit_rows(GgmlType type, int64_t row_length) {
  return row_length % ggml_type_info(type).block_size == 0 ? type : GgmlType::F16;
}

MixModel mix_model(const ConversionPlan& plan, bool has_imatrix) {
  const std::string arch = plan.metadata.get("general.architecture")->strings.at(0);
  auto u32 = [&](const std::string& key) -> int64_t {
    const GgufValue* value = plan.metadata.get(arch + "." + key);
    return value != nullptr && !value->is_array() && !value->ints.empty() ? value->ints[0] : 0;
  };
  MixModel model;
  model.arch = arch;
  model.n_layer = u32("block_count");
  model.n_expert = u32("expert_count");
  model.n_head = u32("attention.head_count");
  model.n_head_kv = u32("attention.head_count_kv");
  model.has_output = std::any_of(plan.tensors.begin(), plan.tensors.end(),
                                 [](const TensorRecipe& t) { return t.name == "output.weight"; });
  model.has_imatrix = has_imatrix;
  return model;
}

// The MLX-aware type choice of a mix (plan/quant_mix.h) for a tensor of MLX-quantized rows. Returns true when it
// decided the tensor's type (and note).
bool apply_mlx_source_rule(const QuantMix& mix, TensorRecipe& tensor, const QuantSpec& spec, const LosslessTarget& target) {
  const GgmlType mix_type = tensor.type;
  const MlxTypeChoice choice = mlx_source_type(mix, mix_type, {target.type, spec.bits}, tensor.row_length());
  const char* asked = ggml_type_info(mix_type).name;
  switch (choice.rule) {
    case MlxTypeRule::MixType: return false;
    case MlxTypeRule::LosslessHome:
      if (const auto obstacle = try_repack(tensor, spec, target)) {
        tensor.type = mix_type;
        tensor.type_note = fmt::format("{} re-encoded: {}", describe(spec), *obstacle);
      } else {
        tensor.type_note = fmt::format("kept lossless from {}: {} would cost more bits and add error", describe(spec), asked);
      }
      return true;
    case MlxTypeRule::Q8_0ForMoreBits:
      tensor.type = choice.type;
      tensor.type_note =
          fmt::format("{} re-encoded as Q8_0 where {} asks for more bits: {} would add more error", describe(spec), mix.name, asked);
      return true;
  }
  return false;
}

void assign_types(const SourceModel& model, const PlanOptions& options, ConversionPlan& plan) {
  const OutType out_type = options.out_type;
  const QuantMix* mix = mix_of(out_type);
  std::vector<TensorRecipe*> quantizable;
  for (auto& tensor : plan.tensors) {
    if (must_stay_f32(tensor))
      tensor.type = GgmlType::F32;
    else
      quantizable.push_back(&tensor);
  }

  if (mix != nullptr) {
    std::vector<MixTensor> mix_tensors;
    for (const TensorRecipe* tensor : quantizable) mix_tensors.push_back({tensor->name, tensor->shape});
    const std::vector<GgmlType> types = choose_mix_types(*mix, mix_model(plan, options.has_imatrix), mix_tensors);
    for (size_t i = 0; i < quantizable.size(); ++i) quantizable[i]->type = types[i];
  } else {
    const GgmlType float_type = resolve_out_type(model, out_type);
    for (TensorRecipe* tensor : quantizable) {
      const auto spec = packed_source_spec(*tensor);
      if (out_type != OutType::Auto || !spec) {
        tensor->type = float_type;
        continue;
      }
      // Auto on MLX-quantized weights: the exact GGUF type when there is one, else Q8_0.
      const LosslessTarget target = lossless_target(*spec, tensor->row_length());
      tensor->type = target.type ? *target.type : fit_rows(GgmlType::Q8_0, tensor->row_length());
    }
  }

  // Wherever the chosen type is the exact home of the MLX codes, move them instead of re-quantizing. Checking the
  // scales reads them all, so tensors are checked in parallel.
  tbb::parallel_for(size_t{0}, quantizable.size(), [&](size_t i) {
    TensorRecipe& tensor = *quantizable[i];
    const auto spec = packed_source_spec(tensor);
    if (!spec) return;
    if (mix != nullptr && options.pure) return;  // llama-quantize quantizes every tensor from its float values
    const LosslessTarget target = lossless_target(*spec, tensor.row_length());
    if (mix != nullptr && apply_mlx_source_rule(*mix, tensor, *spec, target)) return;
    // An importance matrix asks for llama-quantize's weighted search instead (convert.cpp).
    if (mix != nullptr && !options.has_imatrix && has_mlx_aware_encoding(tensor.type, *spec) && tensor.row_length() % kKQuantSuperBlock == 0) {
      tensor.mlx_aware_source = spec;
      tensor.type_note = fmt::format("{} searched to keep the codes of {}", ggml_type_info(tensor.type).name, describe(*spec));
      return;
    }
    if (target.type && *target.type != tensor.type) return;  // a type chosen for other reasons
    const auto obstacle = try_repack(tensor, *spec, target);
    if (!obstacle) return;
    if (out_type == OutType::Auto) tensor.type = fit_rows(GgmlType::Q8_0, tensor.row_length());
    tensor.type_note = fmt::format("{} re-encoded: {}", describe(*spec), *obstacle);
  });

  for (TensorRecipe* tensor : quantizable) {
    const RowMerge* merge = merged_source(*tensor);
    if (merge != nullptr && merge->rule() == MergeRule::Float32 && tensor->type_note.empty())
      tensor->type_note = fmt::format("merged with the {} adapter", merge->module().is_dora() ? "DoRA" : "LoRA");
  }
}

}  // namespace

ConversionPlan make_plan(const SourceModel& model, const PlanOptions& options) {
  const std::string model_type = model.folder().model_type();
  const Architecture* arch = find_architecture(model_type);
  if (arch == nullptr)
    fail("'{}': model_type '{}' is not supported (supported: {})", (model.folder().dir() / "config.json").string(),
         model_type, fmt::join(supported_model_types(), ", "));

  ConversionPlan plan;
  plan.metadata.set("general.architecture", GgufValue::str(arch->gguf_name));
  PlanBuilder builder(model, plan);
  arch->describe(builder);
  builder.check_all_used();

  int64_t vocab_rows = 0;
  for (const auto& tensor : plan.tensors) {
    if (tensor.name == "token_embd.weight") vocab_rows = tensor.shape.at(0);
  }
  TokenizerOptions tokenizer_options;
  tokenizer_options.pre_override = options.tokenizer_pre;
  add_tokenizer_metadata(model.folder(), vocab_rows, tokenizer_options, plan.metadata);

  if (options.pure && mix_of(options.out_type) == nullptr)
    fail("--pure applies to llama-quantize output types (q8_0, q4_k_m, ...), not to --outtype {}",
         out_type_name(options.out_type));
  assign_types(model, options, plan);
  add_general_metadata(model, {options.name.value_or(""), options.metadata_file, options.merged_adapter,
                               options.merged_adapter_name, options.source_name}, plan);
  if (const QuantMix* mix = mix_of(options.out_type))
    plan.metadata.set("general.file_type", GgufValue::u32(mix->llama_ftype));
  return plan;
}

}  // namespace mlx2gguf
