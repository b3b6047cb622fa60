#pragma once
// Pieces of the Gemma family's reference forward pass (mlx-lm gemma3_text.py, gemma3.py, gemma2.py) that the other
// families' building blocks (eval/ops.h) do not have. Its tests look at them one by one.
#include <cstdint>

#include "eval/ops.h"
#include "read/safetensors.h"

namespace mlx2gguf::ref {

// mlx-lm's nn.gelu_approx: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
double gelu_tanh(double x);

// The factor mlx-lm multiplies embedding rows by: sqrt(hidden) rounded to bfloat16 (gemma3_text, whatever the model's
// dtype), or to the embedding's dtype (gemma2, a Python float times the array).
double gemma_embedding_scale(bool gemma3, int64_t hidden, DType embedding_dtype);

// Causal attention with Gemma 2's soft-capping: scores q·k·scale become cap·tanh(scores / cap) (cap 0: no capping)
// before the softmax; shape.window > 0 restricts token t to keys t - window + 1 .. t. Shapes as causal_attention.
Activations softcapped_attention(const Activations& q, const Activations& k, const Activations& v,
                                 const AttentionShape& shape, double cap);

}  // namespace mlx2gguf::ref
