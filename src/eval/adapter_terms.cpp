#include "eval/adapter_terms.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "read/dequant.h"
#include "util/error.h"

namespace mlx2gguf::ref {

namespace {

thread_local AdapterScope* active_scope = nullptr;

std::vector<float> load_all(const StoredTensor& tensor) {
  if (tensor.dtype != DType::F32 && tensor.dtype != DType::F16 && tensor.dtype != DType::BF16)
    fail("adapter tensor '{}' is {}, not float32, float16 or bfloat16", tensor.name, dtype_name(tensor.dtype));
  std::vector<float> values(static_cast<size_t>(tensor.element_count()));
  load_floats(tensor.bytes.data(), tensor.dtype, tensor.element_count(), values.data());
  return values;
}

}  // namespace

ModuleTerms::ModuleTerms(const AdapterModule& module, const SourceTensor& base)
    : name_(module.module()), kind_(module.kind()), scale_(static_cast<double>(module.scale())) {
  const StoredTensor& a = module.lora_a();
  const StoredTensor& b = module.lora_b();
  const std::vector<int64_t>& w = base.shape();
  const auto mismatch = [&](const char* expected) {
    fail("adapter module '{}': lora_a [{}] and lora_b [{}] do not fit '{}' [{}] as {}", name_, fmt::join(a.shape, ", "),
         fmt::join(b.shape, ", "), base.name(), fmt::join(w, ", "), expected);
  };
  switch (kind_) {
    case AdapterKind::Linear:  // W [out, in], lora_a [in, r], lora_b [r, out]
      if (w.size() != 2 || a.shape.size() != 2 || b.shape.size() != 2 || a.shape[0] != w[1] || b.shape[1] != w[0] ||
          a.shape[1] != b.shape[0])
        mismatch("LoRALinear (lora_a [in, r], lora_b [r, out])");
      rows_ = w[0], cols_ = w[1], rank_ = a.shape[1];
      break;
    case AdapterKind::Switch: {  // W [E, out, in], lora_a [E, r, in] (or [E·r, in]), lora_b [E, out, r]
      if (w.size() != 3 || b.shape.size() != 3 || b.shape[0] != w[0] || b.shape[1] != w[1])
        mismatch("LoRASwitchLinear (lora_a [E, r, in], lora_b [E, out, r])");
      experts_ = w[0], rows_ = w[1], cols_ = w[2], rank_ = b.shape[2];
      const bool stacked = a.shape == std::vector<int64_t>{experts_, rank_, cols_};
      const bool flat = a.shape == std::vector<int64_t>{experts_ * rank_, cols_};
      if (!stacked && !flat) mismatch("LoRASwitchLinear (lora_a [E, r, in], lora_b [E, out, r])");
      break;
    }
    case AdapterKind::Embedding:  // E [vocab, dims], lora_a [vocab, r], lora_b [r, dims]
      if (w.size() != 2 || a.shape.size() != 2 || b.shape.size() != 2 || a.shape[0] != w[0] || b.shape[1] != w[1] ||
          a.shape[1] != b.shape[0])
        mismatch("LoRAEmbedding (lora_a [vocab, r], lora_b [r, dims])");
      rows_ = w[0], cols_ = w[1], rank_ = a.shape[1];
      break;
  }
  if (rank_ <= 0) fail("adapter module '{}' has rank 0", name_);
  a_ = load_all(a);
  b_ = load_all(b);
  if (const StoredTensor* m = module.magnitude_tensor()) {
    if (kind_ == AdapterKind::Switch)
      fail("adapter module '{}': DoRA on stacked experts does not exist in mlx-lm", name_);
    if (m->shape != std::vector<int64_t>{rows_})
      fail("DoRA magnitude of '{}' has shape [{}], expected [{}]", name_, fmt::join(m->shape, ", "), rows_);
    magnitude_ = load_all(*m);
  }
}

void ModuleTerms::project(const float* x, int64_t expert, double* u) const {
  std::fill(u, u + rank_, 0.0);
  switch (kind_) {
    case AdapterKind::Linear:  // x @ lora_a
      for (int64_t i = 0; i < cols_; ++i) {
        const float* a = a_.data() + i * rank_;
        for (int64_t k = 0; k < rank_; ++k) u[k] += static_cast<double>(x[i]) * a[k];
      }
      return;
    case AdapterKind::Switch:  // lora_a[expert] @ x
      for (int64_t k = 0; k < rank_; ++k) {
        const float* a = a_.data() + (expert * rank_ + k) * cols_;
        for (int64_t i = 0; i < cols_; ++i) u[k] += static_cast<double>(a[i]) * x[i];
      }
      return;
    case AdapterKind::Embedding:  // as the output head: x @ lora_bᵀ
      for (int64_t k = 0; k < rank_; ++k) {
        const float* b = b_.data() + k * cols_;
        for (int64_t d = 0; d < cols_; ++d) u[k] += static_cast<double>(x[d]) * b[d];
      }
      return;
  }
}

double ModuleTerms::term(int64_t row, const double* u) const {
  double sum = 0.0;
  switch (kind_) {
    case AdapterKind::Linear:  // (u @ lora_b)[row]
      for (int64_t k = 0; k < rank_; ++k) sum += u[k] * b_[static_cast<size_t>(k * rows_ + row)];
      break;
    case AdapterKind::Switch:  // (lora_b[e] @ u)[o], row = e·out + o
      for (int64_t k = 0; k < rank_; ++k) sum += static_cast<double>(b_[static_cast<size_t>(row * rank_ + k)]) * u[k];
      break;
    case AdapterKind::Embedding:  // (u @ lora_aᵀ)[row]
      for (int64_t k = 0; k < rank_; ++k) sum += u[k] * a_[static_cast<size_t>(row * rank_ + k)];
      break;
  }
  return scale_ * sum;
}

void ModuleTerms::row_update(int64_t row, std::vector<double>& delta) const {
  delta.assign(static_cast<size_t>(cols_), 0.0);
  switch (kind_) {
    case AdapterKind::Linear:  // (s·lora_bᵀ @ lora_aᵀ)[o][i] = s·Σ_k lora_b[k][o]·lora_a[i][k]
      for (int64_t i = 0; i < cols_; ++i) {
        double sum = 0.0;
        for (int64_t k = 0; k < rank_; ++k)
          sum += static_cast<double>(b_[static_cast<size_t>(k * rows_ + row)]) * a_[static_cast<size_t>(i * rank_ + k)];
        delta[static_cast<size_t>(i)] = scale_ * sum;
      }
      return;
    case AdapterKind::Switch: {  // (s·lora_b[e] @ lora_a[e])[o][i]
      const float* a = a_.data() + expert_of(row) * rank_ * cols_;
      for (int64_t k = 0; k < rank_; ++k) {
        const double coefficient = scale_ * b_[static_cast<size_t>(row * rank_ + k)];
        for (int64_t i = 0; i < cols_; ++i) delta[static_cast<size_t>(i)] += coefficient * a[k * cols_ + i];
      }
      return;
    }
    case AdapterKind::Embedding:  // (s·lora_a @ lora_b)[v][d]
      for (int64_t k = 0; k < rank_; ++k) {
        const double coefficient = scale_ * a_[static_cast<size_t>(row * rank_ + k)];
        const float* b = b_.data() + k * cols_;
        for (int64_t d = 0; d < cols_; ++d) delta[static_cast<size_t>(d)] += coefficient * b[d];
      }
      return;
  }
}

double ModuleTerms::dora_factor(int64_t row, const float* base_row) const {
  if (!is_dora()) return 1.0;
  std::vector<double> delta;
  row_update(row, delta);
  double sum = 0.0;
  for (int64_t c = 0; c < cols_; ++c) {
    const double v = static_cast<double>(base_row[c]) + delta[static_cast<size_t>(c)];
    sum += v * v;
  }
  return static_cast<double>(magnitude_[static_cast<size_t>(row)]) / std::sqrt(sum);
}

void ModuleTerms::adapt_embedding_row(int64_t row, float* values) const {
  if (kind_ != AdapterKind::Embedding)
    fail("adapter module '{}' ({}) is applied to an embedding lookup", name_, adapter_kind_name(kind_));
  std::vector<double> adapted;
  row_update(row, adapted);
  double sum = 0.0;
  for (int64_t d = 0; d < cols_; ++d) {
    double& v = adapted[static_cast<size_t>(d)];
    v += values[d];
    sum += v * v;
  }
  const double factor = is_dora() ? magnitude_[static_cast<size_t>(row)] / std::sqrt(sum) : 1.0;
  for (int64_t d = 0; d < cols_; ++d) values[d] = static_cast<float>(factor * adapted[static_cast<size_t>(d)]);
}

AdapterScope::AdapterScope(const Adapter& adapter) : adapter_(adapter), previous_(active_scope) {
  if (adapter.type() == FineTuneType::Full)
    fail("the reference forward pass applies LoRA and DoRA adapters; a full fine-tune ('{}') replaces tensors: apply "
         "it to the model with SourceModel::apply_adapter",
         adapter.weights_path().string());
  active_scope = this;
}

AdapterScope::~AdapterScope() { active_scope = previous_; }

const ModuleTerms* AdapterScope::find(const SourceTensor& tensor) {
  const AdapterModule* module = adapter_.find(tensor.name());
  if (module == nullptr) return nullptr;
  if (tensor.merge() != nullptr)
    fail("tensor '{}' already has an adapter merged into it: give the reference forward pass the base model and the "
         "adapter, or the merged model alone",
         tensor.name());
  const std::lock_guard lock(mutex_);
  auto& terms = loaded_[module];
  if (!terms) terms = std::make_unique<ModuleTerms>(*module, tensor);
  return terms.get();
}

void AdapterScope::check_all_applied() const {
  std::vector<std::string> missing;
  for (const AdapterModule& module : adapter_.modules())
    if (!loaded_.contains(&module)) missing.push_back(module.module());
  if (!missing.empty())
    fail("the reference forward pass did not apply the adapter modules {} of '{}' (their tensors are not used as "
         "linear layers, experts or embeddings by this architecture)",
         fmt::join(missing, ", "), adapter_.weights_path().string());
}

const ModuleTerms* adapter_terms(const SourceTensor& tensor) {
  return active_scope ? active_scope->find(tensor) : nullptr;
}

}  // namespace mlx2gguf::ref
