#include "plan/quant_mix.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

namespace mlx2gguf {

namespace {

using T = GgmlType;

// llama_ftype codes (include/llama.h) and default types (llama_ftype_get_default_type).
const std::vector<QuantMix> kMixes = {
    {"q4_0", 2, T::Q4_0},     {"q4_1", 3, T::Q4_1},     {"q8_0", 7, T::Q8_0},     {"q5_0", 8, T::Q5_0},
    {"q5_1", 9, T::Q5_1},     {"q2_k", 10, T::Q2_K},    {"q3_k_s", 11, T::Q3_K},  {"q3_k_m", 12, T::Q3_K},
    {"q3_k_l", 13, T::Q3_K},  {"q4_k_s", 14, T::Q4_K},  {"q4_k_m", 15, T::Q4_K},  {"q5_k_s", 16, T::Q5_K},
    {"q5_k_m", 17, T::Q5_K},  {"q6_k", 18, T::Q6_K},    {"mxfp4_moe", 38, T::MXFP4},
};

// llama-quantize's categories: substring matches on the GGUF name, first match wins.
enum class Category { Output, TokenEmbd, AttnQkv, AttnKvB, AttnV, AttnK, AttnQ, AttnOutput, FfnUp, FfnGate, FfnDown, Other };

Category category_of(const std::string& name) {
  auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
  if (name == "output.weight") return Category::Output;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return Category::TokenEmbd;
  if (has("attn_qkv.weight")) return Category::AttnQkv;
  if (has("attn_kv_b.weight")) return Category::AttnKvB;
  if (has("attn_v.weight")) return Category::AttnV;
  if (has("attn_k.weight")) return Category::AttnK;
  if (has("attn_q.weight")) return Category::AttnQ;
  if (has("attn_output.weight")) return Category::AttnOutput;
  if (has("ffn_up")) return Category::FfnUp;
  if (has("ffn_gate")) return Category::FfnGate;
  if (has("ffn_down")) return Category::FfnDown;
  return Category::Other;
}

// Value projections: the tensors most sensitive to quantization.
bool is_attn_v_like(Category c) { return c == Category::AttnV || c == Category::AttnQkv || c == Category::AttnKvB; }

// Layer index of a "blk.N." tensor; -1 for tensors outside the blocks.
int layer_of(const std::string& name) {
  int layer = -1;
  return std::sscanf(name.c_str(), "blk.%d.", &layer) == 1 ? layer : -1;
}

// The first and last eighth of the layers, and every third layer in between.
bool use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// When rows are not whole blocks of the chosen type: the nearest 32-block type, then F16.
GgmlType shape_fallback(GgmlType type, int64_t row_length) {
  if (row_length % ggml_type_info(type).block_size == 0) return type;
  switch (type) {
    case T::Q2_K:
    case T::Q3_K: type = T::Q4_0; break;
    case T::Q4_K: type = T::Q5_0; break;
    case T::Q5_K: type = T::Q5_1; break;
    case T::Q6_K: type = T::Q8_0; break;
    default: break;
  }
  return row_length % ggml_type_info(type).block_size == 0 ? type : T::F16;
}

class MixRules {
 public:
  MixRules(const QuantMix& mix, const MixModel& model, int64_t n_attn_v)
      : mix_(mix), model_(model), name_(mix.name), n_attn_v_(n_attn_v) {}

  GgmlType choose(const MixTensor& tensor) {
    const Category category = category_of(tensor.name);
    GgmlType type = mix_.default_type;
    const int64_t row_length = tensor.shape.back();
    if (category == Category::Output || (!model_.has_output && category == Category::TokenEmbd)) {
      if (is("mxfp4_moe") || row_length % ggml_type_info(type).block_size != 0)
        type = T::Q8_0;
      else if (type != T::Q8_0)
        type = T::Q6_K;
    } else if (is("mxfp4_moe")) {
      type = tensor.shape.size() >= 3 && tensor.shape.front() > 1 ? T::MXFP4 : T::Q8_0;
    } else if (category == Category::TokenEmbd) {
      // no rule for these mixes
    } else if (is_attn_v_like(category)) {
      type = attn_v_type(type);
      ++i_attn_v_;
    } else if (category == Category::AttnK) {
      if (model_.n_expert == 8) type = T::Q8_0;
    } else if (category == Category::FfnDown) {
      type = ffn_down_type(type, tensor.name);
      ++i_ffn_down_;
    } else if (category == Category::AttnOutput) {
      type = attn_output_type(type);
    }
    return shape_fallback(type, row_length);
  }

 private:
  bool is(const char* name) const { return name_ == name; }
  bool is_any(std::initializer_list<const char*> names) const {
    return std::any_of(names.begin(), names.end(), [&](const char* n) { return name_ == n; });
  }

  GgmlType attn_v_type(GgmlType type) const {
    const int64_t gqa = model_.n_head_kv > 0 ? model_.n_head / model_.n_head_kv : 1;
    if (is("q2_k")) type = gqa >= 4 ? T::Q4_K : T::Q3_K;
    else if (is("q3_k_m")) type = i_attn_v_ < 2 ? T::Q5_K : T::Q4_K;
    else if (is("q3_k_l")) type = T::Q5_K;
    else if (is_any({"q4_k_m", "q5_k_m"}) && use_more_bits(i_attn_v_, n_attn_v_)) type = T::Q6_K;
    else if (is("q4_k_s") && i_attn_v_ < 4) type = T::Q5_K;
    // A 70B llama shares each value head across 8 query heads, so attn_v is small: give it more bits.
    if (is_70b() && (type == T::Q3_K || type == T::Q4_K)) type = T::Q5_K;
    if (model_.n_expert == 8) type = T::Q8_0;
    return type;
  }

  GgmlType ffn_down_type(GgmlType type, const std::string& name) const {
    // MoE models name the layer; dense ones count ffn_down tensors (one per layer).
    const int64_t i = model_.n_expert > 1 ? layer_of(name) : i_ffn_down_;
    const int64_t n = model_.n_layer;
    if (is("q2_k")) return T::Q3_K;
    if (is("q3_k_m")) return i < n / 16 ? T::Q5_K : T::Q4_K;
    if (is("q3_k_l")) return T::Q5_K;
    if (is("q4_k_m")) return use_more_bits(i, n) ? T::Q6_K : type;
    if (is("q5_k_m")) return use_more_bits(i, n) ? T::Q6_K : type;
    if (is("q4_k_s") && i < n / 8) return T::Q5_K;
    // With importance weights llama-quantize still guards the first eighth of ffn_down layers of Q4_0 / Q5_0 with
    // the offset types (without them it keeps the default, so that files stay as they were before imatrix).
    if (model_.has_imatrix && is_any({"q4_0", "q5_0"}) && i < n / 8) return is("q4_0") ? T::Q4_1 : T::Q5_1;
    return type;
  }

  GgmlType attn_output_type(GgmlType type) const {
    if (model_.n_expert == 8) return is_any({"q2_k", "q3_k_s", "q3_k_m", "q4_k_s", "q4_k_m"}) ? T::Q5_K : type;
    if (is("q2_k")) return T::Q3_K;
    if (is("q3_k_m")) return T::Q4_K;
    if (is("q3_k_l")) return T::Q5_K;
    return type;
  }

  // llama.cpp's model-size class 70B: an 80-layer llama with grouped KV heads.
  bool is_70b() const { return model_.arch == "llama" && model_.n_layer == 80 && model_.n_head != model_.n_head_kv; }

  const QuantMix& mix_;
  const MixModel& model_;
  std::string name_;
  int64_t n_attn_v_;
  int64_t i_attn_v_ = 0;
  int64_t i_ffn_down_ = 0;
};

}  // namespace

const std::vector<QuantMix>& quant_mixes() { return kMixes; }

double bits_per_weight(GgmlType type) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  return 8.0 * static_cast<double>(info.type_size) / static_cast<double>(info.block_size);
}

MlxTypeChoice mlx_source_type(const QuantMix& mix, GgmlType mix_type, const MlxSource& source, int64_t row_length) {
  if (source.lossless_home) {
    const GgmlType home = *source.lossless_home;
    if (mix_type != home && bits_per_weight(mix_type) >= bits_per_weight(home)) return {home, MlxTypeRule::LosslessHome};
    return {mix_type, MlxTypeRule::MixType};
  }
  // Q8_0 adds an error of about 1/256 of a block's range: well below what a 6-bit source itself holds.
  // Raised by a rule, not by the shape fallback (Q4_K rows that are no whole super-blocks become Q5_0).
  const GgmlType default_type = shape_fallback(mix.default_type, row_length);
  const bool raised = bits_per_weight(mix_type) > bits_per_weight(default_type) && bits_per_weight(mix_type) >= 5.0;
  const bool q8_fits = row_length % ggml_type_info(T::Q8_0).block_size == 0;
  if (source.bits >= 6 && raised && mix_type != T::Q8_0 && q8_fits) return {T::Q8_0, MlxTypeRule::Q8_0ForMoreBits};
  return {mix_type, MlxTypeRule::MixType};
}

const QuantMix* find_quant_mix(const std::string& name) {
  for (const auto& mix : kMixes)
    if (name == mix.name) return &mix;
  return nullptr;
}

std::vector<GgmlType> choose_mix_types(const QuantMix& mix, const MixModel& model, const std::vector<MixTensor>& tensors) {
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int la = layer_of(tensors[a].name), lb = layer_of(tensors[b].name);
    return la != lb ? la < lb : tensors[a].name < tensors[b].name;
  });
  int64_t n_attn_v = 0;
  for (const auto& tensor : tensors) n_attn_v += is_attn_v_like(category_of(tensor.name)) ? 1 : 0;

  MixRules rules(mix, model, n_attn_v);
  std::vector<GgmlType> types(tensors.size());
  for (size_t i : order) types[i] = rules.choose(tensors[i]);
  return types;
}

}  // namespace mlx2gguf
