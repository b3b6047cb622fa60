#include "eval/ops.h"

#include <fmt/ranges.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <system_error>
#include <cmath>
#include <numbers>
#include <numeric>
#include <optional>

#include "eval/adapter_terms.h"
#include "util/error.h"

namespace mlx2gguf::ref {

// ---- tensors -----------------------------------------------------------------------------------------------

void expect_shape(const SourceTensor& tensor, const std::vector<int64_t>& expected) {
  if (tensor.shape() != expected)
    fail("tensor '{}' has shape [{}] but the model's config implies [{}]", tensor.name(),
         fmt::join(tensor.shape(), ", "), fmt::join(expected, ", "));
}

Activations embed(const SourceTensor& table, std::span<const int32_t> tokens) {
  if (table.shape().size() != 2) fail("embedding table '{}' is not 2-D", table.name());
  const int64_t vocab = table.row_count();
  const ModuleTerms* lora = adapter_terms(table);
  Activations x(static_cast<int64_t>(tokens.size()), table.row_length());
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < 0 || tokens[t] >= vocab)
      fail("token id {} at position {} is outside the vocabulary of {} rows of '{}'", tokens[t], t, vocab,
           table.name());
    table.read_rows(tokens[t], 1, x.row(static_cast<int64_t>(t)));
    if (lora) lora->adapt_embedding_row(tokens[t], x.row(static_cast<int64_t>(t)));
  }
  return x;
}

namespace {

// Σ w[i]·x[i] in double, over four interleaved partial sums (vectorizable without reassociating a single sum).
double dot(const float* w, const double* x, int64_t n) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += static_cast<double>(w[i]) * x[i];
    s1 += static_cast<double>(w[i + 1]) * x[i + 1];
    s2 += static_cast<double>(w[i + 2]) * x[i + 2];
    s3 += static_cast<double>(w[i + 3]) * x[i + 3];
  }
  for (; i < n; ++i) s0 += static_cast<double>(w[i]) * x[i];
  return (s0 + s1) + (s2 + s3);
}

// The data ranges of the mapped weight files of the model a ReleaseScope covers: [first tensor byte, last tensor
// byte) of each file, all inside its mapping.
thread_local std::vector<std::pair<uintptr_t, uintptr_t>>* release_bounds = nullptr;

// Drops the mapped pages holding rows [first, first + count) of `tensor` (codes, scales and biases) out of the
// resident set once they have been used: they stay in the page cache, but a forward pass reading the whole model
// would otherwise keep every page it touched resident, as much as the model. Rows are contiguous in every stored
// tensor but a transposed one, which is released whole. Reading one page also maps the cached pages around it (the
// kernel's fault-around, 64 KiB), which may belong to a neighbour: the range is widened by that much, within the
// tensor, or within its file's data under a ReleaseScope. A neighbour's page dropped with it is just mapped again on
// its next read.
void release_rows(const SourceTensor& tensor, int64_t first, int64_t count) {
  static const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  constexpr uintptr_t kFaultAround = 64 * 1024;
  const int64_t rows = tensor.row_count();
  const bool whole = tensor.weight().shape.size() == 2 && tensor.weight().shape[0] != rows;  // transposed
  for (const StoredTensor* stored : {&tensor.weight(), tensor.scales(), tensor.biases()}) {
    if (stored == nullptr || stored->bytes.empty() || rows <= 0) continue;
    const auto base = reinterpret_cast<uintptr_t>(stored->bytes.data());
    const uintptr_t row_bytes = stored->bytes.size() / static_cast<uintptr_t>(rows);
    uintptr_t low = base, high = base + stored->bytes.size();  // how far the range may widen
    if (release_bounds != nullptr)
      for (const auto& [file_begin, file_end] : *release_bounds)
        if (file_begin <= base && base < file_end) low = file_begin, high = file_end;
    const uintptr_t from = whole ? base : base + row_bytes * static_cast<uintptr_t>(first);
    const uintptr_t to = whole ? base + stored->bytes.size() : base + row_bytes * static_cast<uintptr_t>(first + count);
    const uintptr_t begin = std::max(low, from >= kFaultAround ? from - kFaultAround : 0) / page * page;
    const uintptr_t end = std::min(high, to + kFaultAround);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // a hint: failure is harmless
  }
}

}  // namespace

ReleaseScope::ReleaseScope(const SourceModel& model) {
  std::map<std::filesystem::path, std::pair<uintptr_t, uintptr_t>> files;
  for (const auto& [name, tensor] : model.tensors())
    for (const StoredTensor* stored : {&tensor.weight(), tensor.scales(), tensor.biases()}) {
      if (stored == nullptr || stored->bytes.empty()) continue;
      const auto begin = reinterpret_cast<uintptr_t>(stored->bytes.data());
      const uintptr_t end = begin + stored->bytes.size();
      auto [it, added] = files.try_emplace(stored->file, begin, end);
      if (!added) it->second = {std::min(it->second.first, begin), std::max(it->second.second, end)};
    }
  // A span longer than its file would mean two mappings of the same file: such a file is left out.
  for (const auto& [file, range] : files) {
    std::error_code error;
    const uintmax_t size = file.empty() ? 0 : std::filesystem::file_size(file, error);
    if (!error && range.second - range.first <= size) file_ranges_.push_back(range);
  }
  outer_ = release_bounds;
  release_bounds = &file_ranges_;
}

ReleaseScope::~ReleaseScope() { release_bounds = outer_; }

std::vector<float> read_all(const SourceTensor& tensor) {
  std::vector<float> values(static_cast<size_t>(tensor.element_count()));
  tensor.read_rows(0, tensor.row_count(), values.data());
  release_rows(tensor, 0, tensor.row_count());
  return values;
}

Activations linear(const Activations& x, const SourceTensor& w, const float* bias, int64_t first_row,
                   int64_t row_count) {
  const int64_t in = w.row_length();
  if (x.cols() != in)
    fail("tensor '{}' has rows of {} values but is applied to vectors of {}", w.name(), in, x.cols());
  if (row_count < 0) row_count = w.row_count() - first_row;
  if (first_row < 0 || first_row + row_count > w.row_count())
    fail("rows [{}, {}) requested from '{}', which has {} rows", first_row, first_row + row_count, w.name(),
         w.row_count());
  const int64_t tokens = x.rows();
  Activations y(tokens, row_count);
  if (tokens == 0 || row_count == 0) return y;

  std::vector<double> xd(x.data().begin(), x.data().end());
  // An adapter module on `w`: the rank-space projection of every token for each expert the rows belong to,
  // lora_u[((expert - first_expert)·tokens + t)·rank + k].
  const ModuleTerms* lora = adapter_terms(w);
  const int64_t rank = lora ? lora->rank() : 0;
  const int64_t first_expert = lora ? lora->expert_of(first_row) : 0;
  std::vector<double> lora_u;
  if (lora) {
    const int64_t experts = lora->expert_of(first_row + row_count - 1) - first_expert + 1;
    lora_u.resize(static_cast<size_t>(experts * tokens * rank));
    for (int64_t e = 0; e < experts; ++e)
      for (int64_t t = 0; t < tokens; ++t)
        lora->project(x.row(t), first_expert + e, lora_u.data() + (e * tokens + t) * rank);
  }
  // About 64 KiB of dequantized weights per chunk.
  const int64_t chunk_rows = std::max<int64_t>(1, (16 * 1024) / std::max<int64_t>(1, in));
  const int64_t chunks = (row_count + chunk_rows - 1) / chunk_rows;
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, chunks), [&](const tbb::blocked_range<int64_t>& range) {
    std::vector<float> rows(static_cast<size_t>(chunk_rows * in));
    for (int64_t c = range.begin(); c != range.end(); ++c) {
      const int64_t begin = c * chunk_rows;
      const int64_t count = std::min(chunk_rows, row_count - begin);
      w.read_rows(first_row + begin, count, rows.data());
      for (int64_t r = 0; r < count; ++r) {
        const float* wr = rows.data() + r * in;
        const double b = bias ? static_cast<double>(bias[begin + r]) : 0.0;
        if (lora == nullptr) {
          for (int64_t t = 0; t < tokens; ++t)
            y.row(t)[begin + r] = static_cast<float>(dot(wr, xd.data() + t * in, in) + b);
          continue;
        }
        // Unfused: DoRA's factor · (W x + the low-rank term), then the bias.
        const int64_t row = first_row + begin + r;
        const double factor = lora->dora_factor(row, wr);
        const double* u = lora_u.data() + (lora->expert_of(row) - first_expert) * tokens * rank;
        for (int64_t t = 0; t < tokens; ++t) {
          const double value = factor * (dot(wr, xd.data() + t * in, in) + lora->term(row, u + t * rank));
          y.row(t)[begin + r] = static_cast<float>(value + b);
        }
      }
    }
  });
  release_rows(w, first_row, row_count);
  return y;
}

void add_in_place(Activations& x, const Activations& y) {
  if (x.rows() != y.rows() || x.cols() != y.cols())
    fail("internal: adding activations [{}x{}] and [{}x{}]", x.rows(), x.cols(), y.rows(), y.cols());
  for (size_t i = 0; i < x.data().size(); ++i) x.data()[i] += y.data()[i];
}

// ---- element-wise and normalisation -----------------------------------------------------------------------

double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }

double silu(double x) { return x * sigmoid(x); }

double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

void rms_norm(float* x, int64_t n, const float* w, double eps) {
  double sum_squares = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_squares += static_cast<double>(x[i]) * x[i];
  const double inv = 1.0 / std::sqrt(sum_squares / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(x[i] * inv * (w ? static_cast<double>(w[i]) : 1.0));
}

void rms_norm_rows(Activations& x, const std::vector<float>& w, double eps, int64_t n) {
  if (n <= 0) n = x.cols();
  if (x.cols() % n != 0) fail("internal: rows of {} values do not split into slices of {}", x.cols(), n);
  if (!w.empty() && static_cast<int64_t>(w.size()) != n)
    fail("internal: norm weight of {} values for slices of {}", w.size(), n);
  for (int64_t t = 0; t < x.rows(); ++t)
    for (int64_t s = 0; s < x.cols(); s += n) rms_norm(x.row(t) + s, n, w.empty() ? nullptr : w.data(), eps);
}

void softmax(double* values, int64_t n) {
  if (n <= 0) return;
  const double top = *std::max_element(values, values + n);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += (values[i] = std::exp(values[i] - top));
  for (int64_t i = 0; i < n; ++i) values[i] /= sum;
}

// ---- rotary position embedding ------------------------------------------------------------------------------

Rope default_rope(int64_t dims, double base, double position_scale, bool traditional) {
  if (dims <= 0 || dims % 2 != 0) fail("rotary dimension count {} is not a positive even number", dims);
  Rope rope;
  rope.dims = dims;
  rope.traditional = traditional;
  for (int64_t i = 0; i < dims / 2; ++i)
    rope.inv_freq.push_back(position_scale * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(dims)));
  return rope;
}

Rope llama3_rope(int64_t dims, double base, double factor, double low_freq_factor, double high_freq_factor,
                 double original_max_positions, bool traditional) {
  Rope rope = default_rope(dims, base, 1.0, traditional);
  const double low_freq_wavelen = original_max_positions / low_freq_factor;
  const double high_freq_wavelen = original_max_positions / high_freq_factor;
  for (double& inv : rope.inv_freq) {
    const double period = 1.0 / inv;  // positions per radian
    const double wavelen = 2.0 * std::numbers::pi * period;
    if (wavelen > low_freq_wavelen) {
      inv = 1.0 / (period * factor);
    } else if (wavelen > high_freq_wavelen) {  // strictly between the two thresholds
      const double smooth = (original_max_positions / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      inv = ((1.0 - smooth) / factor + smooth) / period;
    }
  }
  return rope;
}

namespace {

double scaling_number(const nlohmann::json& scaling, const char* key, std::optional<double> fallback) {
  if (!scaling.contains(key) || scaling[key].is_null()) {
    if (!fallback) fail("config.json: rope_scaling lacks '{}'", key);
    return *fallback;
  }
  if (!scaling[key].is_number()) fail("config.json: rope_scaling '{}' is not a number: {}", key, scaling[key].dump());
  return scaling[key].get<double>();
}

}  // namespace

Rope rope_from_scaling(int64_t dims, double base, bool traditional, const nlohmann::json& scaling) {
  if (scaling.is_null()) return default_rope(dims, base, 1.0, traditional);
  if (!scaling.is_object()) fail("config.json: rope_scaling is not an object: {}", scaling.dump());
  // `type` wins when it is set; `rope_type` is the newer spelling.
  std::string type = "default";
  if (scaling.contains("type") && scaling["type"].is_string() && !scaling["type"].get<std::string>().empty())
    type = scaling["type"].get<std::string>();
  else if (scaling.contains("rope_type") && scaling["rope_type"].is_string())
    type = scaling["rope_type"].get<std::string>();

  if (type == "default" || type == "mrope") return default_rope(dims, base, 1.0, traditional);
  if (type == "linear") return default_rope(dims, base, 1.0 / scaling_number(scaling, "factor", std::nullopt), traditional);
  if (type == "llama3")
    return llama3_rope(dims, base, scaling_number(scaling, "factor", std::nullopt),
                       scaling_number(scaling, "low_freq_factor", 1.0), scaling_number(scaling, "high_freq_factor", 4.0),
                       scaling_number(scaling, "original_max_position_embeddings", 8192.0), traditional);
  fail("config.json: rope_scaling type '{}' is not supported by the reference forward pass", type);
}

void apply_rope(float* head, int64_t position, const Rope& rope) {
  const int64_t half = rope.dims / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(position) * rope.inv_freq[i];
    const double c = std::cos(angle);
    const double s = std::sin(angle);
    float& a = rope.traditional ? head[2 * i] : head[i];
    float& b = rope.traditional ? head[2 * i + 1] : head[i + half];
    const double x = a;
    const double y = b;
    a = static_cast<float>(x * c - y * s);
    b = static_cast<float>(x * s + y * c);
  }
}

void apply_rope_rows(Activations& x, int64_t head_dim, const Rope& rope) {
  if (head_dim <= 0 || x.cols() % head_dim != 0 || rope.dims > head_dim)
    fail("internal: rope over {} dims of heads of {} in rows of {}", rope.dims, head_dim, x.cols());
  for (int64_t t = 0; t < x.rows(); ++t)
    for (int64_t h = 0; h < x.cols(); h += head_dim) apply_rope(x.row(t) + h, t, rope);
}

// ---- attention ------------------------------------------------------------------------------------------------

Activations causal_attention(const Activations& q, const Activations& k, const Activations& v,
                             const AttentionShape& shape) {
  const int64_t hd = shape.head_dim;
  if (shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0)
    fail("config.json: {} attention heads cannot share {} key/value heads", shape.n_heads, shape.n_kv_heads);
  if (q.cols() != shape.n_heads * hd || k.cols() != shape.n_kv_heads * hd || v.cols() != shape.n_kv_heads * hd ||
      k.rows() != q.rows() || v.rows() != q.rows())
    fail("internal: attention inputs q [{}x{}], k [{}x{}], v [{}x{}] for {} heads, {} kv heads, head_dim {}",
         q.rows(), q.cols(), k.rows(), k.cols(), v.rows(), v.cols(), shape.n_heads, shape.n_kv_heads, hd);
  const int64_t group = shape.n_heads / shape.n_kv_heads;
  const int64_t tokens = q.rows();
  Activations out(tokens, shape.n_heads * hd);
  std::vector<double> scores(static_cast<size_t>(tokens));
  std::vector<double> acc(static_cast<size_t>(hd));
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t first = shape.window > 0 ? std::max<int64_t>(0, t - shape.window + 1) : 0;
    for (int64_t h = 0; h < shape.n_heads; ++h) {
      const int64_t kvh = h / group;
      const float* qh = q.row(t) + h * hd;
      for (int64_t j = first; j <= t; ++j) {
        const float* kh = k.row(j) + kvh * hd;
        double dot = 0.0;
        for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * kh[d];
        scores[j - first] = dot * shape.scale;
      }
      const int64_t n = t - first + 1;
      softmax(scores.data(), n);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = first; j <= t; ++j) {
        const float* vh = v.row(j) + kvh * hd;
        for (int64_t d = 0; d < hd; ++d) acc[d] += scores[j - first] * vh[d];
      }
      for (int64_t d = 0; d < hd; ++d) out.row(t)[h * hd + d] = static_cast<float>(acc[d]);
    }
  }
  return out;
}

// ---- MLP and mixture of experts -----------------------------------------------------------------------------

void silu_mul(Activations& gate, const Activations& up) {
  if (gate.rows() != up.rows() || gate.cols() != up.cols())
    fail("internal: gate [{}x{}] and up [{}x{}] differ", gate.rows(), gate.cols(), up.rows(), up.cols());
  for (size_t i = 0; i < gate.data().size(); ++i)
    gate.data()[i] = static_cast<float>(silu(gate.data()[i]) * up.data()[i]);
}

Activations swiglu_mlp(const Activations& x, const SourceTensor& gate, const SourceTensor& up,
                       const SourceTensor& down, const float* gate_bias, const float* up_bias, const float* down_bias) {
  Activations g = linear(x, gate, gate_bias);
  const Activations u = linear(x, up, up_bias);
  silu_mul(g, u);
  return linear(g, down, down_bias);
}

namespace {

// Indices of the k largest values, largest first; ties go to the lower index.
std::vector<int64_t> top_k(const double* values, int64_t n, int64_t k) {
  if (k <= 0 || k > n) fail("config.json: cannot pick {} experts out of {}", k, n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return values[a] != values[b] ? values[a] > values[b] : a < b;
  });
  order.resize(static_cast<size_t>(k));
  return order;
}

}  // namespace

std::vector<ExpertChoice> route_topk_softmax(const float* logits, int64_t n_experts, int64_t k) {
  const std::vector<double> values(logits, logits + n_experts);
  const std::vector<int64_t> chosen = top_k(values.data(), n_experts, k);
  std::vector<double> weights;
  for (int64_t e : chosen) weights.push_back(values[e]);
  softmax(weights.data(), k);
  std::vector<ExpertChoice> routes;
  for (int64_t i = 0; i < k; ++i) routes.push_back({chosen[i], weights[i]});
  return routes;
}

std::vector<ExpertChoice> route_softmax_topk(const float* logits, int64_t n_experts, int64_t k, bool renormalize) {
  std::vector<double> probs(logits, logits + n_experts);
  softmax(probs.data(), n_experts);
  const std::vector<int64_t> chosen = top_k(probs.data(), n_experts, k);
  double sum = 0.0;
  for (int64_t e : chosen) sum += probs[e];
  std::vector<ExpertChoice> routes;
  for (int64_t e : chosen) routes.push_back({e, renormalize ? probs[e] / sum : probs[e]});
  return routes;
}

ExpertWeights stacked_experts(const SourceTensor& gate, const SourceTensor& up, const SourceTensor& down,
                              int64_t hidden) {
  if (gate.shape().size() != 3) fail("stacked expert tensor '{}' is not 3-D", gate.name());
  const int64_t experts = gate.shape()[0];
  const int64_t inter = gate.shape()[1];
  expect_shape(gate, {experts, inter, hidden});
  expect_shape(up, {experts, inter, hidden});
  expect_shape(down, {experts, hidden, inter});
  ExpertWeights weights;
  weights.intermediate = inter;
  for (int64_t e = 0; e < experts; ++e) weights.experts.push_back({&gate, e * inter, &up, e * inter, &down, e * hidden});
  return weights;
}

ExpertWeights fused_experts(const SourceTensor& gate_up, const SourceTensor& down, int64_t hidden) {
  if (gate_up.shape().size() != 3 || gate_up.shape()[1] % 2 != 0)
    fail("fused expert tensor '{}' is not [experts, 2 x intermediate, hidden]", gate_up.name());
  const int64_t experts = gate_up.shape()[0];
  const int64_t inter = gate_up.shape()[1] / 2;
  expect_shape(gate_up, {experts, 2 * inter, hidden});
  expect_shape(down, {experts, hidden, inter});
  ExpertWeights weights;
  weights.intermediate = inter;
  for (int64_t e = 0; e < experts; ++e)
    weights.experts.push_back({&gate_up, e * 2 * inter, &gate_up, e * 2 * inter + inter, &down, e * hidden});
  return weights;
}

Activations switch_glu(const Activations& x, const ExpertWeights& weights,
                       const std::vector<std::vector<ExpertChoice>>& routes) {
  const auto experts = static_cast<int64_t>(weights.experts.size());
  const int64_t inter = weights.intermediate;
  const int64_t hidden = x.cols();
  if (static_cast<int64_t>(routes.size()) != x.rows()) fail("internal: {} routes for {} tokens", routes.size(), x.rows());

  // Every expert's tensors take their adapter modules, whether or not a token is routed to that expert.
  for (const ExpertRows& rows : weights.experts)
    for (const SourceTensor* tensor : {rows.gate, rows.up, rows.down}) adapter_terms(*tensor);

  std::vector<double> acc(static_cast<size_t>(x.rows() * hidden), 0.0);
  for (int64_t e = 0; e < experts; ++e) {
    std::vector<std::pair<int64_t, double>> users;  // (token, weight)
    for (int64_t t = 0; t < x.rows(); ++t)
      for (const ExpertChoice& choice : routes[t]) {
        if (choice.expert < 0 || choice.expert >= experts)
          fail("internal: expert {} routed but the model has {}", choice.expert, experts);
        if (choice.expert == e) users.emplace_back(t, choice.weight);
      }
    if (users.empty()) continue;
    const ExpertRows& rows = weights.experts[e];
    Activations xe(static_cast<int64_t>(users.size()), hidden);
    for (size_t i = 0; i < users.size(); ++i)
      std::copy(x.row(users[i].first), x.row(users[i].first) + hidden, xe.row(static_cast<int64_t>(i)));
    Activations g = linear(xe, *rows.gate, nullptr, rows.gate_row, inter);
    silu_mul(g, linear(xe, *rows.up, nullptr, rows.up_row, inter));
    const Activations y = linear(g, *rows.down, nullptr, rows.down_row, hidden);
    for (size_t i = 0; i < users.size(); ++i) {
      double* out = acc.data() + users[i].first * hidden;
      for (int64_t d = 0; d < hidden; ++d) out[d] += users[i].second * y.row(static_cast<int64_t>(i))[d];
    }
  }
  Activations out(x.rows(), hidden);
  for (size_t i = 0; i < acc.size(); ++i) out.data()[i] = static_cast<float>(acc[i]);
  return out;
}

// ---- linear attention (Gated DeltaNet) ------------------------------------------------------------------------

Activations causal_conv_silu(const Activations& x, const std::vector<float>& w, int64_t kernel) {
  const int64_t channels = x.cols();
  if (kernel <= 0 || static_cast<int64_t>(w.size()) != channels * kernel)
    fail("internal: {} convolution taps for {} channels of kernel {}", w.size(), channels, kernel);
  Activations out(x.rows(), channels);
  for (int64_t t = 0; t < x.rows(); ++t)
    for (int64_t c = 0; c < channels; ++c) {
      double acc = 0.0;
      for (int64_t j = 0; j < kernel; ++j) {
        const int64_t source = t - (kernel - 1) + j;
        if (source >= 0) acc += static_cast<double>(w[c * kernel + j]) * x.row(source)[c];
      }
      out.row(t)[c] = static_cast<float>(silu(acc));
    }
  return out;
}

Activations gated_delta_rule(const Activations& q, const Activations& k, const Activations& v, const Activations& g,
                             const Activations& beta, const DeltaShape& shape) {
  const int64_t dk = shape.k_dim, dv = shape.v_dim, hk = shape.k_heads, hv = shape.v_heads;
  if (hk <= 0 || hv % hk != 0) fail("config.json: {} linear-attention value heads cannot share {} key heads", hv, hk);
  const int64_t tokens = q.rows();
  if (q.cols() != hk * dk || k.cols() != hk * dk || v.cols() != hv * dv || g.cols() != hv || beta.cols() != hv ||
      k.rows() != tokens || v.rows() != tokens || g.rows() != tokens || beta.rows() != tokens)
    fail("internal: gated delta inputs do not match {} key heads of {} and {} value heads of {}", hk, dk, hv, dv);
  const int64_t group = hv / hk;
  Activations y(tokens, hv * dv);
  std::vector<double> state(static_cast<size_t>(dv * dk));
  std::vector<double> delta(static_cast<size_t>(dv));
  for (int64_t j = 0; j < hv; ++j) {
    const int64_t kh = j / group;
    std::fill(state.begin(), state.end(), 0.0);
    for (int64_t t = 0; t < tokens; ++t) {
      const float* qt = q.row(t) + kh * dk;
      const float* kt = k.row(t) + kh * dk;
      const float* vt = v.row(t) + j * dv;
      const double decay = g.row(t)[j];
      const double b = beta.row(t)[j];
      for (int64_t r = 0; r < dv; ++r) {
        double* s = state.data() + r * dk;
        double kv = 0.0;
        for (int64_t c = 0; c < dk; ++c) kv += (s[c] *= decay) * kt[c];
        delta[r] = (vt[r] - kv) * b;
      }
      for (int64_t r = 0; r < dv; ++r) {
        double* s = state.data() + r * dk;
        double out = 0.0;
        for (int64_t c = 0; c < dk; ++c) out += (s[c] += delta[r] * kt[c]) * qt[c];
        y.row(t)[j * dv + r] = static_cast<float>(out);
      }
    }
  }
  return y;
}

}  // namespace mlx2gguf::ref
