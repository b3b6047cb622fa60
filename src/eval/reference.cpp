#include "eval/reference.h"

#include <fmt/ranges.h>

#include "eval/adapter_terms.h"
#include "eval/forward.h"
#include "plan/architecture.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

using Forward = std::vector<float> (*)(const SourceModel&, std::span<const int32_t>);

// The forward pass of the family whose mapping converts `model_type` (the model types each family covers are
// listed once, with its mapping), or null.
Forward find_forward(const std::string& model_type) {
  const Family* family = find_family(model_type);
  if (family == nullptr) return nullptr;
#define MLX2GGUF_FORWARD_OF(family_name) \
  if (family->name == #family_name) return ref::family_name##_reference;
  MLX2GGUF_FAMILIES(MLX2GGUF_FORWARD_OF)
#undef MLX2GGUF_FORWARD_OF
  return nullptr;
}

}  // namespace

std::vector<std::string> reference_model_types() {
  std::vector<std::string> types;
  for (const std::string& type : supported_model_types())
    if (find_forward(type) != nullptr) types.push_back(type);
  return types;
}

bool reference_supports(const std::string& model_type) { return find_forward(model_type) != nullptr; }

std::vector<float> reference_logits(const SourceModel& model, const std::vector<int32_t>& tokens,
                                    const Adapter* adapter) {
  // mlx-lm picks the module by the top-level model_type (a nested text_config may name a text-only variant).
  const nlohmann::json& top = model.folder().config();
  const std::string model_type = top.contains("model_type") && top["model_type"].is_string()
                                     ? top["model_type"].get<std::string>()
                                     : model.folder().model_type();
  const Forward forward = find_forward(model_type);
  if (forward == nullptr)
    fail("the reference forward pass does not implement model_type '{}' (implemented: {})", model_type,
         fmt::join(reference_model_types(), ", "));
  if (tokens.empty()) fail("the reference forward pass needs at least one token");
  const ref::ReleaseScope release(model);
  if (adapter == nullptr) return forward(model, tokens);
  ref::AdapterScope scope(*adapter);
  std::vector<float> logits = forward(model, tokens);
  scope.check_all_applied();
  return logits;
}

namespace ref {

Activations output_logits(const SourceModel& model, const Activations& x, const std::string& lm_head_name,
                          const std::string& embed_name) {
  const SourceTensor* head = model.find(lm_head_name);
  if (head == nullptr) head = &model.require(embed_name);
  if (head->shape().size() != 2 || head->row_length() != x.cols())
    fail("output projection '{}' has shape [{}], expected [vocab, {}]", head->name(), fmt::join(head->shape(), ", "),
         x.cols());
  return linear(x, *head);
}

std::vector<float> read_vector(const SourceModel& model, const std::string& name, int64_t size) {
  const SourceTensor& tensor = model.require(name);
  expect_shape(tensor, {size});
  return read_all(tensor);
}

std::vector<float> read_bias(const SourceModel& model, const std::string& name, int64_t size, bool enabled,
                             const char* config_key) {
  if (enabled) return read_vector(model, name, size);
  if (model.has(name)) fail("tensor '{}' is present but config.json does not set '{}'", name, config_key);
  return {};
}

}  // namespace ref

}  // namespace mlx2gguf
