#include "plan/adapter_plan.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "util/error.h"

namespace mlx2gguf {

namespace {

const char* kMergeInstead = "merge it into the model with `mlx2gguf convert MODEL --adapter-path ADAPTER` instead";

// The base recipes that write `module`'s tensor as plain matrices (or stacks of expert matrices): the only kind
// llama.cpp multiplies through LoRA. A tensor split into several (Qwen3-Next's fused in_proj_qkvz) has several;
// each gets the low-rank update of its own rows.
std::vector<const TensorRecipe*> target_recipes(const ConversionPlan& base_plan, const SourceTensor& base_tensor,
                                                const AdapterModule& module) {
  std::vector<const TensorRecipe*> found;
  for (const TensorRecipe& recipe : base_plan.tensors) {
    if (std::find(recipe.sources.begin(), recipe.sources.end(), &base_tensor) == recipe.sources.end()) continue;
    if (recipe.sources.size() != 1 || recipe.op != ValueOp::None || !recipe.name.ends_with(".weight") ||
        recipe.name.ends_with("_norm.weight"))
      fail("adapter module '{}': llama.cpp does not apply LoRA to its GGUF tensor '{}'; {}", module.module(), recipe.name,
           kMergeInstead);
    found.push_back(&recipe);
  }
  if (found.empty())
    fail("adapter module '{}': its base tensor is not written as a matrix llama.cpp applies LoRA to; {}", module.module(),
         kMergeInstead);
  return found;
}

// Source rows of the lora_a stack for each output expert: all rows of output expert e must come from one source
// expert of the base tensor (an expert split or reorder), whose A factor then serves it.
std::vector<int64_t> expert_rows_of_a(const TensorRecipe& recipe, const AdapterModule& module) {
  if (recipe.row_map.empty()) return {};
  const int64_t experts = recipe.shape[0], rows = recipe.shape[1], rank = module.rank();
  std::vector<int64_t> a_rows;
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t source_expert = module.expert_of(recipe.row_map[static_cast<size_t>(e * rows)]);
    for (int64_t r = 0; r < rows; ++r)
      if (module.expert_of(recipe.row_map[static_cast<size_t>(e * rows + r)]) != source_expert)
        fail("adapter module '{}': GGUF tensor '{}' mixes rows of several experts; {}", module.module(), recipe.name,
             kMergeInstead);
    for (int64_t k = 0; k < rank; ++k) a_rows.push_back(source_expert * rank + k);
  }
  return a_rows;
}

class AdapterPlanner {
 public:
  AdapterPlanner(const ConversionPlan& base_plan, ConversionPlan& plan) : base_plan_(base_plan), plan_(plan) {}

  void add(const SourceModel& base, const AdapterModule& module) {
    for (const TensorRecipe* target : target_recipes(base_plan_, *base.find(module.weight_name()), module))
      add(module, *target);
  }

 private:
  void add(const AdapterModule& module, const TensorRecipe& target) {
    const int64_t rank = module.rank();
    switch (module.kind()) {
      case AdapterKind::Linear: {
        TensorRecipe& a = add_factor(target.name + ".lora_a", view(SourceTensor::transposed(module.lora_a())),
                                     {rank, target.shape[1]});
        a.column_map = target.column_map;
        TensorRecipe& b = add_factor(target.name + ".lora_b", view(SourceTensor::transposed(module.lora_b())),
                                     {target.shape[0], rank});
        b.row_map = target.row_map;
        return;
      }
      case AdapterKind::Switch: {
        const SourceTensor& stacked_a =
            view(SourceTensor::plain(module.lora_a()).reshaped({module.experts(), rank, module.cols()}));
        TensorRecipe& a = add_factor(target.name + ".lora_a", stacked_a, {target.shape[0], rank, target.shape[2]});
        a.column_map = target.column_map;
        a.row_map = expert_rows_of_a(target, module);
        TensorRecipe& b = add_factor(target.name + ".lora_b", view(SourceTensor::plain(module.lora_b())),
                                     {target.shape[0], target.shape[1], rank});
        b.row_map = target.row_map;
        return;
      }
      case AdapterKind::Embedding: {
        if (target.name != "token_embd.weight")
          fail("adapter module '{}' is an embedding LoRA, but its GGUF tensor is '{}'; {}", module.module(), target.name,
               kMergeInstead);
        if (std::none_of(base_plan_.tensors.begin(), base_plan_.tensors.end(),
                         [](const TensorRecipe& t) { return t.name == "output.weight"; }))
          fail("adapter module '{}': a LoRA on the embedding of a model whose output head is that same (tied) "
               "embedding cannot be a GGUF LoRA (llama.cpp would apply it to the input only); {}",
               module.module(), kMergeInstead);
        // llama.cpp's flipped layout for token_embd: lora_a holds a row per token, lora_b a row per embedding value.
        TensorRecipe& a = add_factor(target.name + ".lora_a", view(SourceTensor::plain(module.lora_a())),
                                     {target.shape[0], rank});
        a.row_map = target.row_map;
        TensorRecipe& b = add_factor(target.name + ".lora_b", view(SourceTensor::transposed(module.lora_b())),
                                     {target.shape[1], rank});
        b.row_map = target.column_map;
        return;
      }
    }
  }

  const SourceTensor& view(SourceTensor tensor) {
    plan_.views.push_back(std::move(tensor));
    return plan_.views.back();
  }

  TensorRecipe& add_factor(const std::string& name, const SourceTensor& source, std::vector<int64_t> shape) {
    TensorRecipe recipe;
    recipe.name = name;
    recipe.shape = std::move(shape);
    recipe.sources = {&source};
    plan_.tensors.push_back(std::move(recipe));
    return plan_.tensors.back();
  }

  const ConversionPlan& base_plan_;
  ConversionPlan& plan_;
};

GgmlType factor_type(OutType out_type, int64_t row_length) {
  switch (out_type) {
    case OutType::F32: return GgmlType::F32;
    case OutType::F16: return GgmlType::F16;
    case OutType::BF16: return GgmlType::BF16;
    case OutType::Q8_0: return row_length % 32 == 0 ? GgmlType::Q8_0 : GgmlType::F16;  // lora_b rows are `rank` long
    default: fail("--outtype {} is not a type for adapters (f32, f16, bf16 or q8_0)", out_type_name(out_type));
  }
}

}  // namespace

ConversionPlan make_adapter_plan(const SourceModel& base, const Adapter& adapter, const AdapterPlanOptions& options) {
  if (adapter.type() != FineTuneType::Lora)
    fail("'{}' is a {} fine-tune, which a GGUF LoRA adapter cannot express ({}); merge it into the model with "
         "`mlx2gguf convert MODEL --adapter-path ADAPTER` instead",
         adapter.config_path().string(), fine_tune_type_name(adapter.type()),
         adapter.type() == FineTuneType::Dora ? "DoRA rescales whole rows" : "it replaces whole tensors");
  for (const AdapterModule& module : adapter.modules())
    if (module.rank() != adapter.rank())
      fail("adapter module '{}' has rank {} while others have {}: one GGUF adapter has one alpha for all; {}",
           module.module(), module.rank(), adapter.rank(), kMergeInstead);

  PlanOptions base_options;
  base_options.out_type = OutType::F32;
  const ConversionPlan base_plan = make_plan(base, base_options);

  ConversionPlan plan;
  const std::string arch = base_plan.metadata.get("general.architecture")->strings.at(0);
  plan.metadata.set("general.architecture", GgufValue::str(arch));
  plan.metadata.set("general.type", GgufValue::str("adapter"));
  std::filesystem::path folder = adapter.config_path().parent_path();
  plan.metadata.set("general.name", GgufValue::str(options.name.value_or(folder.filename().string())));
  plan.metadata.set("adapter.type", GgufValue::str("lora"));
  // llama.cpp scales by alpha / rank: this makes its scale at user scale 1.0 equal mlx-lm's.
  plan.metadata.set("adapter.lora.alpha", GgufValue::f32(adapter.scale() * static_cast<float>(adapter.rank())));

  AdapterPlanner planner(base_plan, plan);
  for (const AdapterModule& module : adapter.modules()) planner.add(base, module);
  for (TensorRecipe& tensor : plan.tensors) tensor.type = factor_type(options.out_type, tensor.row_length());
  return plan;
}

}  // namespace mlx2gguf
