#pragma once
// Plans a conversion: architecture mapping, tokenizer and general metadata, and the type of every tensor.
#include <optional>
#include <string>

#include "plan/plan.h"

namespace mlx2gguf {

// --outtype. Auto picks the source's 16-bit float type (F16 for quantized or F32 sources).
enum class OutType { Auto, F32, F16, BF16, Q8_0 };

std::optional<OutType> parse_out_type(const std::string& name);
const char* out_type_name(OutType type);

struct PlanOptions {
  OutType out_type = OutType::Auto;
  std::optional<std::string> tokenizer_pre;  // overrides pre-tokenizer detection
  std::optional<std::string> name;           // general.name; default from the folder name
};

ConversionPlan make_plan(const SourceModel& model, const PlanOptions& options);

// The float type Auto resolves to for this model.
GgmlType resolve_out_type(const SourceModel& model, OutType out_type);

}  // namespace mlx2gguf
