#pragma once
// Plans a GGUF LoRA adapter (general.type "adapter") from an mlx-lm LoRA fine-tune, for the base GGUF that
// make_plan writes from the same base model. llama.cpp applies it at run time (`--lora`, llama_adapter_lora_init)
// with scale alpha / rank = mlx-lm's scale, so the base keeps its exact (e.g. losslessly repacked) weights.
//
// Each adapted module becomes `<gguf tensor>.lora_a` / `.lora_b` in the orientation llama.cpp reads:
//   matrices and experts   lora_a [r, in] / [E, r, in]      lora_b [out, r] / [E, out, r]   (row-major)
//   token_embd             lora_a [vocab, r]                lora_b [n_embd, r]
// and the base tensor's layout fixes are applied to the factors on the matching axis: its row map (q/k rope
// permutation, Qwen's V-head reorder, expert splits) to the output side, its column map (input-side reorders such
// as Qwen's ssm_out) to the input side.
#include <optional>
#include <string>

#include "plan/planner.h"
#include "read/adapter.h"

namespace mlx2gguf {

struct AdapterPlanOptions {
  OutType out_type = OutType::F32;  // f32, f16, bf16 or q8_0 (q8_0 where rows are whole blocks, else f16)
  std::optional<std::string> name;  // general.name; default from the adapter folder's name
};

// Fails naming the module when the fine-tune cannot be a GGUF LoRA (DoRA, full fine-tunes, a module whose base
// tensor llama.cpp does not run through LoRA, an embedding LoRA on a model whose output head is the tied
// embedding): those must be merged with `convert --adapter-path` instead.
ConversionPlan make_adapter_plan(const SourceModel& base, const Adapter& adapter, const AdapterPlanOptions& options);

}  // namespace mlx2gguf
