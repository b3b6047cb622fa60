#pragma once
// Reference forward pass of a source model, written from the MLX (mlx-lm) semantics of each architecture:
// the ground truth a converted GGUF file's logits are compared against.
#include <cstdint>
#include <string>
#include <vector>

#include "read/adapter.h"
#include "read/source_model.h"

namespace mlx2gguf {

// Float32 forward pass of the source model over `tokens` (positions 0..n-1, no cache). Returns the logits at
// every position, row-major [n_tokens][vocab]. Quantized weights are dequantized row by row as they are used.
// Fails with mlx2gguf::Error on an unsupported model_type, a token id outside the vocabulary, a missing tensor
// or a tensor whose shape disagrees with config.json.
//
// `adapter`: a LoRA or DoRA fine-tune opened against `model` (Adapter::open), applied UNFUSED as mlx-lm's adapter
// modules compute at inference: each adapted linear layer, expert projection or embedding adds its low-rank term
// to the base product (eval/adapter_terms.h). `model` must be the base (no adapter merged into it). Full
// fine-tunes are refused: apply them with SourceModel::apply_adapter and pass no adapter.
std::vector<float> reference_logits(const SourceModel& model, const std::vector<int32_t>& tokens,
                                    const Adapter* adapter = nullptr);

// Whether reference_logits implements `model_type` (as config.json / text_config spells it).
bool reference_supports(const std::string& model_type);

// The model types reference_logits implements, for messages.
std::vector<std::string> reference_model_types();

}  // namespace mlx2gguf
