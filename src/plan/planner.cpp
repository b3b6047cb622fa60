#include "plan/planner.h"

#include <fmt/ranges.h>

#include "plan/architecture.h"
#include "plan/general_metadata.h"
#include "plan/tokenizer_metadata.h"
#include "util/error.h"

namespace mlx2gguf {

std::optional<OutType> parse_out_type(const std::string& name) {
  if (name == "auto") return OutType::Auto;
  if (name == "f32") return OutType::F32;
  if (name == "f16") return OutType::F16;
  if (name == "bf16") return OutType::BF16;
  if (name == "q8_0") return OutType::Q8_0;
  return std::nullopt;
}

const char* out_type_name(OutType type) {
  switch (type) {
    case OutType::Auto: return "auto";
    case OutType::F32: return "f32";
    case OutType::F16: return "f16";
    case OutType::BF16: return "bf16";
    case OutType::Q8_0: return "q8_0";
  }
  return "?";
}

GgmlType resolve_out_type(const SourceModel& model, OutType out_type) {
  switch (out_type) {
    case OutType::F32: return GgmlType::F32;
    case OutType::F16: return GgmlType::F16;
    case OutType::BF16: return GgmlType::BF16;
    case OutType::Q8_0: return GgmlType::Q8_0;
    case OutType::Auto: break;
  }
  // The source's 16-bit type: what most weight elements are stored as (quantized sources → F16).
  int64_t bf16 = 0, f16 = 0;
  for (const auto& [name, tensor] : model.tensors()) {
    if (tensor.quant() || tensor.shape().size() < 2) continue;
    if (tensor.value_dtype() == DType::BF16) bf16 += tensor.element_count();
    if (tensor.value_dtype() == DType::F16) f16 += tensor.element_count();
  }
  return bf16 > f16 ? GgmlType::BF16 : GgmlType::F16;
}

namespace {

// Tensors llama.cpp needs in F32 whatever the file type: everything 1-D, norms, non-weight parameters.
bool must_stay_f32(const TensorRecipe& tensor) {
  return tensor.keep_f32 || tensor.shape.size() < 2 || tensor.name.ends_with("_norm.weight") ||
         !tensor.name.ends_with(".weight");
}

void assign_types(ConversionPlan& plan, GgmlType out_type) {
  for (auto& tensor : plan.tensors) {
    if (must_stay_f32(tensor)) {
      tensor.type = GgmlType::F32;
      continue;
    }
    tensor.type = out_type;
    // Block types need whole blocks per row; such rows keep a 16-bit type, as llama.cpp's converter does.
    if (tensor.row_length() % ggml_type_info(out_type).block_size != 0) tensor.type = GgmlType::F16;
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

  assign_types(plan, resolve_out_type(model, options.out_type));
  add_general_metadata(model, options.name.value_or(""), plan);
  return plan;
}

}  // namespace mlx2gguf
