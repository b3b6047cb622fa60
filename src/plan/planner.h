#pragma once
// Plans a conversion: architecture mapping, tokenizer and general metadata, and the type of every tensor.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "plan/plan.h"

namespace mlx2gguf {

// --outtype: auto, a float type, or one of llama-quantize's file types (see plan/quant_mix.h).
// Auto keeps MLX-quantized weights losslessly (repacked) and other weights in the source's 16-bit float type.
enum class OutType {
  Auto, F32, F16, BF16,
  Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, MXFP4_MOE,
};

std::optional<OutType> parse_out_type(const std::string& name);
const char* out_type_name(OutType type);
std::vector<std::string> out_type_names();

struct PlanOptions {
  OutType out_type = OutType::Auto;
  std::optional<std::string> tokenizer_pre;  // overrides pre-tokenizer detection
  std::optional<std::string> name;           // general.name; default from the folder name
  std::filesystem::path metadata_file;       // general.* overrides in llama.cpp's --metadata JSON format
  std::string merged_adapter;                // description of an adapter merged into the weights ("" = none)
  std::string merged_adapter_name;           // its name, appended to general.finetune
  // What the model is called when its folder's name does not say (a Hugging Face cache snapshot is named by a
  // commit hash): general.* is derived from it instead. Empty: the folder's name.
  std::string source_name;
  // With a llama-quantize type: exactly llama-quantize's types, every tensor quantized from its float values (no
  // lossless homes, no MLX-aware type choice or encoding); the bytes of llama_model_quantize of the f32 file.
  bool pure = false;
  bool has_imatrix = false;                  // types as llama-quantize chooses them when given an importance matrix
};

ConversionPlan make_plan(const SourceModel& model, const PlanOptions& options);

// The float type that Auto uses for unquantized weights: the source's 16-bit type (F16 when it has none).
GgmlType resolve_out_type(const SourceModel& model, OutType out_type);

}  // namespace mlx2gguf
