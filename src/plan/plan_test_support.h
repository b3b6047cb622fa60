#pragma once
// Shared by the plan tests and the architecture mapping tests: a generated model folder and its plan, checks of
// metadata values, and a small llama.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>

#include "gen/tiny_model.h"
#include "plan/permutations.h"
#include "plan/planner.h"
#include "read/source_model.h"
#include "read/test_support.h"

namespace mlx2gguf::plan_test {

namespace fs = std::filesystem;
using gen::TinyModelSpec;
using test_support::TempDir;

// A source model and its plan; the plan points into the model, so they live together.
struct Planned {
  SourceModel model;
  ConversionPlan plan;
  Planned(const fs::path& dir, const PlanOptions& options) : model(SourceModel::open(dir)), plan(make_plan(model, options)) {}

  const TensorRecipe& tensor(const std::string& name) const {
    for (const auto& recipe : plan.tensors)
      if (recipe.name == name) return recipe;
    throw std::runtime_error("the plan has no tensor '" + name + "'");
  }
  bool has(const std::string& name) const {
    for (const auto& recipe : plan.tensors)
      if (recipe.name == name) return true;
    return false;
  }
  std::set<std::string> names() const {
    std::set<std::string> out;
    for (const auto& recipe : plan.tensors) out.insert(recipe.name);
    return out;
  }
  const GgufValue& key(const std::string& name) const {
    const GgufValue* value = plan.metadata.get(name);
    if (value == nullptr) throw std::runtime_error("the plan has no metadata key '" + name + "'");
    return *value;
  }
};

inline std::unique_ptr<Planned> plan_model(const fs::path& dir, OutType out_type = OutType::Auto) {
  PlanOptions options;
  options.out_type = out_type;
  return std::make_unique<Planned>(dir, options);
}

inline fs::path write_model(const TempDir& temp, const std::string& folder, const TinyModelSpec& spec) {
  const fs::path dir = temp / folder;
  gen::write_tiny_model(spec, dir);
  return dir;
}

inline ::testing::AssertionResult is_u32(const Planned& p, const std::string& key, int64_t value) {
  const GgufValue* v = p.plan.metadata.get(key);
  if (v == nullptr) return ::testing::AssertionFailure() << key << " is missing";
  if (v->type != GgufType::UINT32) return ::testing::AssertionFailure() << key << " is " << gguf_type_name(v->type) << ", not u32";
  if (v->ints.size() != 1 || v->ints[0] != value)
    return ::testing::AssertionFailure() << key << " = " << v->to_string() << ", expected " << value;
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult is_f32(const Planned& p, const std::string& key, float value) {
  const GgufValue* v = p.plan.metadata.get(key);
  if (v == nullptr) return ::testing::AssertionFailure() << key << " is missing";
  if (v->type != GgufType::FLOAT32) return ::testing::AssertionFailure() << key << " is " << gguf_type_name(v->type) << ", not f32";
  if (v->floats.size() != 1 || static_cast<float>(v->floats[0]) != value)
    return ::testing::AssertionFailure() << key << " = " << v->to_string() << ", expected " << value;
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult is_str(const Planned& p, const std::string& key, const std::string& value) {
  const GgufValue* v = p.plan.metadata.get(key);
  if (v == nullptr) return ::testing::AssertionFailure() << key << " is missing";
  if (v->type != GgufType::STRING) return ::testing::AssertionFailure() << key << " is " << gguf_type_name(v->type) << ", not str";
  if (v->strings.size() != 1 || v->strings[0] != value)
    return ::testing::AssertionFailure() << key << " = " << v->to_string() << ", expected \"" << value << "\"";
  return ::testing::AssertionSuccess();
}


// Half-split rotary rows → adjacent pairs, written out directly: output row h*hd + 2j + k takes h*hd + k*hd/2 + j.
inline IndexMap expected_rope_rows(int64_t heads, int64_t head_dim) {
  IndexMap map;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < head_dim / 2; ++j)
      for (int64_t k = 0; k < 2; ++k) map.push_back(h * head_dim + k * (head_dim / 2) + j);
  return map;
}

// ---- llama ------------------------------------------------------------------------------------------------------

// Untied, attention biases, head_dim different from hidden / heads so q/k/o widths cannot be confused.
inline TinyModelSpec llama_spec() {
  TinyModelSpec s;
  s.model_type = "llama";
  s.hidden = 128;
  s.layers = 2;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 48;
  s.intermediate = 256;
  s.attention_bias = true;
  s.dtype = "bfloat16";
  s.seed = 7;
  return s;
}

constexpr int64_t kHidden = 128, kHeads = 4, kKvHeads = 2, kHeadDim = 48, kFf = 256, kLayers = 2;

}  // namespace mlx2gguf::plan_test
