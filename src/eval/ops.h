#pragma once
// Building blocks of the reference forward pass. Activations are float32; every reduction (dot products,
// norms, softmax sums) accumulates in double so the reference is more accurate than what it judges.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "read/source_model.h"

namespace mlx2gguf::ref {

// A sequence of activation vectors, row-major [rows][cols] (one row per token).
class Activations {
 public:
  Activations() = default;
  Activations(int64_t rows, int64_t cols) : rows_(rows), cols_(cols), data_(static_cast<size_t>(rows * cols), 0.0f) {}

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  float* row(int64_t r) { return data_.data() + r * cols_; }
  const float* row(int64_t r) const { return data_.data() + r * cols_; }
  std::vector<float>& data() { return data_; }
  const std::vector<float>& data() const { return data_; }

 private:
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  std::vector<float> data_;
};

// ---- tensors -----------------------------------------------------------------------------------------------

// While alive, on this thread: the weights `linear` and `read_all` have used are dropped from the resident set
// together with the pages the kernel mapped around them, as far as the data of `model`'s weight files reaches
// (outside such a scope only the tensor's own pages are dropped). reference_logits holds one for its pass.
class ReleaseScope {
 public:
  explicit ReleaseScope(const SourceModel& model);
  ~ReleaseScope();
  ReleaseScope(const ReleaseScope&) = delete;
  ReleaseScope& operator=(const ReleaseScope&) = delete;

 private:
  std::vector<std::pair<uintptr_t, uintptr_t>> file_ranges_;
  std::vector<std::pair<uintptr_t, uintptr_t>>* outer_;
};

// Fails with a message naming the tensor when its logical shape differs from `expected`.
void expect_shape(const SourceTensor& tensor, const std::vector<int64_t>& expected);
// The whole tensor as float32 (for small tensors: norm weights, biases, per-head parameters).
std::vector<float> read_all(const SourceTensor& tensor);
// Rows of `table` picked by token id, dequantized; ids outside the table fail. Under an active adapter (see
// eval/adapter_terms.h) a LoRA/DoRA embedding module on `table` adapts the rows picked.
Activations embed(const SourceTensor& table, std::span<const int32_t> tokens);

// y[t][o] = Σ_i W[first_row + o][i] · x[t][i] (+ bias[o]) for o < row_count. W is streamed in row chunks and
// the chunks are spread over threads. row_count < 0 means every row from first_row on. Under an active adapter
// a LoRA/DoRA module on `w` adds its low-rank term unfused (rows of stacked experts belong to expert
// row / out; an embedding module here is the tied output head).
Activations linear(const Activations& x, const SourceTensor& w, const float* bias = nullptr, int64_t first_row = 0,
                   int64_t row_count = -1);

void add_in_place(Activations& x, const Activations& y);

// ---- element-wise and normalisation -----------------------------------------------------------------------

double silu(double x);
double sigmoid(double x);
double softplus(double x);

// x ← x / sqrt(mean(x²) + eps) · w over n values (w may be null: no weight).
void rms_norm(float* x, int64_t n, const float* w, double eps);
// rms_norm on every row of x, or on every `n`-wide slice of every row (per-head norms) when n > 0.
void rms_norm_rows(Activations& x, const std::vector<float>& w, double eps, int64_t n = 0);

// In place: softmax of n values, computed in double.
void softmax(double* values, int64_t n);

// ---- rotary position embedding ------------------------------------------------------------------------------

struct Rope {
  int64_t dims = 0;              // rotated dimensions at the start of each head (even)
  bool traditional = false;      // pairs (2i, 2i+1) instead of (i, i + dims/2)
  std::vector<double> inv_freq;  // dims/2 angular frequencies: angle_i = position · inv_freq[i]
};

// Frequencies base^(-2i/dims) times position_scale (linear scaling uses 1/factor).
Rope default_rope(int64_t dims, double base, double position_scale = 1.0, bool traditional = false);
// Llama 3 frequency adjustment: long wavelengths slowed by `factor`, a smooth blend between the two thresholds.
Rope llama3_rope(int64_t dims, double base, double factor, double low_freq_factor, double high_freq_factor,
                 double original_max_positions, bool traditional = false);
// The rope an mlx-lm model builds from its rope_scaling entry (null or absent = plain rope). Fails on scaling
// types the reference does not implement.
Rope rope_from_scaling(int64_t dims, double base, bool traditional, const nlohmann::json& scaling);

// Rotates the first rope.dims values of one head vector for the token at `position`.
void apply_rope(float* head, int64_t position, const Rope& rope);
// apply_rope on every head of every row; row t is at position t.
void apply_rope_rows(Activations& x, int64_t head_dim, const Rope& rope);

// ---- attention ------------------------------------------------------------------------------------------------

struct AttentionShape {
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  // query head h reads kv head h / (n_heads / n_kv_heads)
  int64_t head_dim = 0;
  double scale = 0.0;      // applied to q·k before the softmax
  int64_t window = 0;      // > 0: token t sees only keys t - window + 1 .. t
};

// Causal softmax attention. q: [T][n_heads*head_dim], k, v: [T][n_kv_heads*head_dim] → [T][n_heads*head_dim].
Activations causal_attention(const Activations& q, const Activations& k, const Activations& v,
                             const AttentionShape& shape);

// ---- MLP and mixture of experts -----------------------------------------------------------------------------

// gate ← silu(gate) · up.
void silu_mul(Activations& gate, const Activations& up);

// down(silu(gate(x)) · up(x)), optional biases on the three projections.
Activations swiglu_mlp(const Activations& x, const SourceTensor& gate, const SourceTensor& up,
                       const SourceTensor& down, const float* gate_bias = nullptr, const float* up_bias = nullptr,
                       const float* down_bias = nullptr);

struct ExpertChoice {
  int64_t expert = 0;
  double weight = 0.0;
};

// The k largest router logits, weighted by a softmax over those k only (Mixtral).
std::vector<ExpertChoice> route_topk_softmax(const float* logits, int64_t n_experts, int64_t k);
// Softmax over all experts, the k most probable, optionally renormalised to sum to 1 (Qwen MoE).
std::vector<ExpertChoice> route_softmax_topk(const float* logits, int64_t n_experts, int64_t k, bool renormalize);

// Where one expert's projections live: a tensor and the first of its rows (gate/up: `intermediate` rows of
// hidden values; down: `hidden` rows of intermediate values).
struct ExpertRows {
  const SourceTensor* gate = nullptr;
  int64_t gate_row = 0;
  const SourceTensor* up = nullptr;
  int64_t up_row = 0;
  const SourceTensor* down = nullptr;
  int64_t down_row = 0;
};

struct ExpertWeights {
  int64_t intermediate = 0;
  std::vector<ExpertRows> experts;
};

// mlx-lm's stacked layout: gate/up [E, I, H], down [E, H, I] (shapes checked against `hidden`).
ExpertWeights stacked_experts(const SourceTensor& gate, const SourceTensor& up, const SourceTensor& down,
                              int64_t hidden);
// Hugging Face's fused layout: gate_up [E, 2I, H] (per expert the I gate rows, then the I up rows), down [E, H, I].
ExpertWeights fused_experts(const SourceTensor& gate_up, const SourceTensor& down, int64_t hidden);

// Σ over the chosen experts of weight · down_e(silu(gate_e(x)) · up_e(x)). routes[t] lists the choices of token t.
Activations switch_glu(const Activations& x, const ExpertWeights& weights,
                       const std::vector<std::vector<ExpertChoice>>& routes);

// ---- linear attention (Gated DeltaNet) ------------------------------------------------------------------------

// Causal depthwise convolution then SiLU: out[t][c] = silu(Σ_k w[c·K + k] · x[t − (K−1) + k][c]), with zeros
// before the first token. `w` holds K taps per channel, the last one multiplying the current token.
Activations causal_conv_silu(const Activations& x, const std::vector<float>& w, int64_t kernel);

struct DeltaShape {
  int64_t k_heads = 0;  // value head j reads query/key head j / (v_heads / k_heads)
  int64_t v_heads = 0;
  int64_t k_dim = 0;
  int64_t v_dim = 0;
};

// The gated delta rule over a sequence, one state S ∈ R^{v_dim×k_dim} per value head, zero at the start:
// S ← g·S; kv = S·k; Δ = (v − kv)·beta; S ← S + Δ⊗k; y = S·q.
// q, k: [T][k_heads·k_dim]; v: [T][v_heads·v_dim]; g, beta: [T][v_heads] → y: [T][v_heads·v_dim].
Activations gated_delta_rule(const Activations& q, const Activations& k, const Activations& v, const Activations& g,
                             const Activations& beta, const DeltaShape& shape);

}  // namespace mlx2gguf::ref
