#pragma once
// An mlx-lm LoRA / DoRA adapter applied UNFUSED by the reference forward pass, as mlx-lm's adapter modules
// compute at inference (mlx_lm/tuner/lora.py, dora.py), s = scale, x an activation row:
//   LoRALinear        y = W x + b + s·((x @ lora_a) @ lora_b)
//   LoRASwitchLinear  for the expert e a token is routed to: y = W_e x + s·(lora_b[e] @ (lora_a[e] @ x))
//   LoRAEmbedding     lookup E[t] + s·(lora_a[t] @ lora_b);
//                     as the tied output head x @ Eᵀ + s·((x @ lora_bᵀ) @ lora_aᵀ)
//   DoRALinear        (m / ‖W + s·lora_bᵀ·lora_aᵀ‖_row) ⊙ (W x + s·(x @ lora_a) @ lora_b), then + b
//   DoRAEmbedding     the LoRAEmbedding value of row v (lookup) or logit v (as_linear),
//                     times m[v] / ‖E[v] + s·lora_a[v] @ lora_b‖
// The weights are never merged: the ops add the low-rank term to the base product. Only DoRA's norms form the
// adapted rows (in double, from the base rows as the reference reads them).
//
// reference_logits opens an AdapterScope around the forward pass; the ops (linear, embed, and through them
// switch_glu and output_logits) ask adapter_terms() for the module updating the tensor they read, by its name.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "read/adapter.h"
#include "read/source_model.h"

namespace mlx2gguf::ref {

// The factors of one LoRA / DoRA module as float32, read from the adapter's stored tensors and bound to the base
// tensor they update. Rows are counted over the whole base tensor (E·out rows for stacked experts).
class ModuleTerms {
 public:
  ModuleTerms(const AdapterModule& module, const SourceTensor& base);

  const std::string& name() const { return name_; }
  AdapterKind kind() const { return kind_; }
  bool is_dora() const { return !magnitude_.empty(); }
  int64_t rank() const { return rank_; }
  int64_t experts() const { return experts_; }
  int64_t expert_of(int64_t row) const { return row / rows_; }

  // The module's rank-space projection of an activation row x (cols() values) for `expert`, into u[rank]:
  //   Linear x @ lora_a;  Switch lora_a[expert] @ x;  Embedding as the output head x @ lora_bᵀ.
  void project(const float* x, int64_t expert, double* u) const;
  // The low-rank term s·Σ_k coefficient(row, k)·u[k] of output `row`, u being project() of its expert:
  //   Linear (u @ lora_b)[o];  Switch (lora_b[e] @ u)[o];  Embedding as the output head (u @ lora_aᵀ)[v].
  double term(int64_t row, const double* u) const;
  // DoRA: m[row] / ‖base_row + s·(the row's low-rank update)‖ for a base row of cols() values; 1 for LoRA.
  double dora_factor(int64_t row, const float* base_row) const;
  // Embedding lookup of `row` (a token id): the base row (cols() values) replaced by the adapted one.
  void adapt_embedding_row(int64_t row, float* values) const;
  int64_t cols() const { return cols_; }

 private:
  // s·Σ_k up(row, k)·down(k, c) for every column c: the row's low-rank update in the base tensor's layout.
  void row_update(int64_t row, std::vector<double>& delta) const;

  std::string name_;
  AdapterKind kind_;
  double scale_;
  int64_t experts_ = 1, rank_ = 0, rows_ = 0, cols_ = 0;
  std::vector<float> a_, b_, magnitude_;  // lora_a, lora_b, m as stored (row-major)
};

// While alive, the ops on this thread apply `adapter` (LoRA or DoRA, opened against the model being run).
class AdapterScope {
 public:
  explicit AdapterScope(const Adapter& adapter);
  ~AdapterScope();
  AdapterScope(const AdapterScope&) = delete;
  AdapterScope& operator=(const AdapterScope&) = delete;

  // Fails naming the modules no op applied (their tensors were read in a way that cannot take an adapter, or
  // not at all): a reference that silently dropped part of the adapter would prove nothing.
  void check_all_applied() const;

  const ModuleTerms* find(const SourceTensor& tensor);

 private:
  const Adapter& adapter_;
  AdapterScope* previous_;
  std::mutex mutex_;
  std::map<const AdapterModule*, std::unique_ptr<ModuleTerms>> loaded_;
};

// The module of the active adapter that updates `tensor`, or null (no adapter active, or none for this tensor).
// Fails when the tensor already has an adapter merged into it. Call from the thread that opened the scope.
const ModuleTerms* adapter_terms(const SourceTensor& tensor);

}  // namespace mlx2gguf::ref
