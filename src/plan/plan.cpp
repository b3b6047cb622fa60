#include "plan/plan.h"

#include <fmt/ranges.h>

#include "util/error.h"

namespace mlx2gguf {

int64_t TensorRecipe::row_count() const {
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < shape.size(); ++d) rows *= shape[d];
  return rows;
}

std::string PlanBuilder::arch() const {
  const GgufValue* value = plan_.metadata.get("general.architecture");
  if (value == nullptr) fail("internal error: general.architecture is not set yet");
  return value->strings.at(0);
}

TensorRecipe& PlanBuilder::map(const std::string& gguf_name, const std::string& source,
                               const std::vector<int64_t>& expected_shape) {
  const SourceTensor& tensor = model_.require(source);
  if (!expected_shape.empty() && tensor.shape() != expected_shape)
    fail("tensor '{}' has shape [{}], but config.json implies [{}]", source, fmt::join(tensor.shape(), ", "),
         fmt::join(expected_shape, ", "));
  used_.insert(source);
  TensorRecipe recipe;
  recipe.name = gguf_name;
  recipe.shape = tensor.shape();
  recipe.sources = {&tensor};
  plan_.tensors.push_back(std::move(recipe));
  return plan_.tensors.back();
}

TensorRecipe& PlanBuilder::map_reshaped(const std::string& gguf_name, const std::string& source,
                                        const std::vector<int64_t>& stored_shape, const std::vector<int64_t>& shape) {
  TensorRecipe& recipe = map(gguf_name, source, stored_shape);
  plan_.views.push_back(recipe.sources.front()->reshaped(shape));
  recipe.sources = {&plan_.views.back()};
  recipe.shape = shape;
  return recipe;
}

TensorRecipe* PlanBuilder::map_optional(const std::string& gguf_name, const std::string& source,
                                        const std::vector<int64_t>& expected_shape) {
  if (!model_.has(source)) return nullptr;
  return &map(gguf_name, source, expected_shape);
}

TensorRecipe& PlanBuilder::generate(const std::string& gguf_name, std::vector<float> values) {
  TensorRecipe recipe;
  recipe.name = gguf_name;
  recipe.shape = {static_cast<int64_t>(values.size())};
  recipe.generated = std::move(values);
  recipe.keep_f32 = true;
  plan_.tensors.push_back(std::move(recipe));
  return plan_.tensors.back();
}

TensorRecipe& PlanBuilder::stack(const std::string& gguf_name, const std::vector<std::string>& sources,
                                 const std::vector<int64_t>& expected_item_shape) {
  TensorRecipe recipe;
  recipe.name = gguf_name;
  for (const auto& source : sources) {
    const SourceTensor& tensor = model_.require(source);
    if (tensor.shape() != expected_item_shape)
      fail("tensor '{}' has shape [{}], but config.json implies [{}]", source, fmt::join(tensor.shape(), ", "),
           fmt::join(expected_item_shape, ", "));
    used_.insert(source);
    recipe.sources.push_back(&tensor);
  }
  recipe.shape = expected_item_shape;
  recipe.shape.insert(recipe.shape.begin(), static_cast<int64_t>(sources.size()));
  plan_.tensors.push_back(std::move(recipe));
  return plan_.tensors.back();
}

void PlanBuilder::drop_if(const std::function<bool(const std::string&)>& predicate) {
  for (const auto& [name, tensor] : model_.tensors()) {
    if (predicate(name)) used_.insert(name);
  }
}

void PlanBuilder::check_all_used() const {
  std::vector<std::string> unused;
  for (const auto& [name, tensor] : model_.tensors()) {
    if (!used_.contains(name)) unused.push_back(name);
  }
  if (unused.empty()) return;
  const size_t shown = std::min<size_t>(unused.size(), 5);
  fail("{} tensor(s) of the model have no place in the '{}' mapping, e.g. '{}'; refusing to drop weights silently",
       unused.size(), arch(), fmt::join(unused.begin(), unused.begin() + static_cast<std::ptrdiff_t>(shown), "', '"));
}

int64_t PlanBuilder::cfg_int(const std::string& key) const { return config_value<int64_t>(config(), key); }
int64_t PlanBuilder::cfg_int(const std::string& key, int64_t fallback) const {
  return config_value<int64_t>(config(), key, fallback);
}
namespace {

constexpr int64_t kMaxCount = int64_t{1} << 24;

int64_t checked_count(const std::string& key, int64_t value) {
  if (value < 1 || value > kMaxCount)
    fail("config.json: '{}' is {}, but it must be a count between 1 and {}", key, value, kMaxCount);
  return value;
}

}  // namespace

int64_t PlanBuilder::cfg_count(const std::string& key) const { return checked_count(key, cfg_int(key)); }
int64_t PlanBuilder::cfg_count(const std::string& key, int64_t fallback) const {
  return checked_count(key, cfg_int(key, fallback));
}

double PlanBuilder::cfg_float(const std::string& key) const { return config_value<double>(config(), key); }
double PlanBuilder::cfg_float(const std::string& key, double fallback) const {
  return config_value<double>(config(), key, fallback);
}
bool PlanBuilder::cfg_bool(const std::string& key, bool fallback) const {
  return config_value<bool>(config(), key, fallback);
}

void PlanBuilder::kv_u32(const std::string& key_suffix, int64_t value) {
  if (value < 0 || value > 0xffffffffll) fail("config value for {} is out of range: {}", key_suffix, value);
  plan_.metadata.set(arch() + "." + key_suffix, GgufValue::u32(static_cast<uint32_t>(value)));
}
void PlanBuilder::kv_f32(const std::string& key_suffix, double value) {
  plan_.metadata.set(arch() + "." + key_suffix, GgufValue::f32(static_cast<float>(value)));
}
void PlanBuilder::kv_str(const std::string& key_suffix, const std::string& value) {
  plan_.metadata.set(arch() + "." + key_suffix, GgufValue::str(value));
}

}  // namespace mlx2gguf
