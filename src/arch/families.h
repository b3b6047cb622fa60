#pragma once
// The architecture families mlx2gguf converts: the one list a family is added to. Each family lives in
// src/arch/<family>/ and provides three independent implementations of the same model, which the build requires
// all of (a family listed here and missing one does not link):
//   mapping.cpp    const Family& <family>_family(): its model types and GGUF mapping       (the converter)
//   reference.cpp  <family>_reference(): its float32 forward pass from mlx-lm's semantics   (the test kit)
//   builder.cpp    <family>_builders(): writers of tiny test models as mlx-lm saves them    (the test kit)
// The reference and the builders never call the mapping: each is a separate reading of the model.
#define MLX2GGUF_FAMILIES(X) \
  X(llama)                   \
  X(qwen35)                  \
  X(qwen3)                   \
  X(qwen3_next)              \
  X(gpt_oss)                 \
  X(phi3)                    \
  X(gemma)
