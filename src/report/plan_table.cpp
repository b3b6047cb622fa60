#include "report/plan_table.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "read/quant_config.h"
#include "read/safetensors.h"
#include "write/gguf_file.h"

namespace mlx2gguf {

namespace {

std::string describe_sources(const TensorRecipe& recipe) {
  if (recipe.sources.empty()) return "computed";
  if (recipe.sources.size() == 1) return recipe.sources.front()->name();
  if (recipe.sources.size() == 2) return recipe.sources[0]->name() + " + " + recipe.sources[1]->name();
  return fmt::format("{} … {} ({} tensors)", recipe.sources.front()->name(), recipe.sources.back()->name(),
                     recipe.sources.size());
}

std::string describe_source_type(const TensorRecipe& recipe) {
  if (recipe.sources.empty()) return "float32";
  const SourceTensor& source = *recipe.sources.front();
  if (const auto& spec = source.stored_quant())
    return fmt::format("MLX {} {}-bit g{}", quant_mode_name(spec->mode), spec->bits, spec->group_size);
  return dtype_name(source.value_dtype());
}

bool has_merge(const TensorRecipe& recipe) {
  for (const SourceTensor* source : recipe.sources)
    if (source->merge()) return true;
  return false;
}

// The steps between the source bytes and the GGUF bytes, in the order they happen.
std::string describe_transform(const TensorRecipe& recipe) {
  std::vector<std::string> steps;
  if (recipe.sources.size() > 1) steps.push_back(fmt::format("stack {}", recipe.sources.size()));
  if (has_merge(recipe)) steps.push_back("merge adapter");
  if (!recipe.row_map.empty()) steps.push_back("reorder rows");
  if (!recipe.column_map.empty()) steps.push_back("reorder columns");
  if (recipe.op == ValueOp::AddOne) steps.push_back("1 + w");
  if (recipe.op == ValueOp::NegExp) steps.push_back("-exp(w)");
  const bool quantized_source = !recipe.sources.empty() && recipe.sources.front()->stored_quant().has_value();
  if (recipe.repack)
    steps.push_back("repack");
  else if (quantized_source)
    steps.push_back("dequantize, encode");
  else
    steps.push_back("encode");
  return fmt::format("{}", fmt::join(steps, ", "));
}

}  // namespace

std::vector<PlannedTensor> describe_tensors(const ConversionPlan& plan) {
  std::vector<PlannedTensor> tensors;
  tensors.reserve(plan.tensors.size());
  for (const TensorRecipe& recipe : plan.tensors) {
    PlannedTensor tensor;
    tensor.name = recipe.name;
    tensor.ne = recipe.ne();
    tensor.type = ggml_type_info(recipe.type).name;
    tensor.bytes = static_cast<uint64_t>(recipe.row_count() * ggml_row_bytes(recipe.type, recipe.row_length()));
    tensor.source = describe_sources(recipe);
    tensor.source_type = describe_source_type(recipe);
    tensor.transform = describe_transform(recipe);
    tensor.repack = recipe.repack;
    tensor.keep_f32 = recipe.keep_f32;
    tensor.note = recipe.type_note;
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

uint64_t planned_file_size(const ConversionPlan& plan) {
  std::vector<GgufTensorInfo> infos;
  infos.reserve(plan.tensors.size());
  for (const TensorRecipe& recipe : plan.tensors) infos.push_back({recipe.name, recipe.ne(), recipe.type, 0});
  return gguf_file_size(plan.metadata, std::move(infos));
}

}  // namespace mlx2gguf
