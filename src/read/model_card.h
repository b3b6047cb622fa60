#pragma once
// The model card a Hugging Face or mlx-lm folder carries: the YAML front matter of its README.md (license,
// base_model, datasets, tags, language, ...), and the recommended sampling settings of generation_config.json.
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mlx2gguf {

// The front matter's top-level keys. Values are kept as text: a scalar is a one-element list, a list (block
// `- item` or flow `[a, b]`) keeps its items in order. Nested mappings (model-index, widget, ...) and list items
// that are mappings are not read: nothing written to the GGUF comes from them.
struct ModelCard {
  std::map<std::string, std::vector<std::string>> fields;
  const std::vector<std::string>* get(const std::string& key) const;
  std::optional<std::string> scalar(const std::string& key) const;  // the value of a one-item key
};

// Parses front matter text: the lines between a first line "---" and the next "---". No front matter: empty card.
ModelCard parse_model_card(const std::string& readme_text);
// `dir`/README.md; an absent file is an empty card.
ModelCard read_model_card(const std::filesystem::path& dir);

// Sampling settings from generation_config.json, as llama.cpp's converter reads them, plus Hugging Face's own
// `repetition_penalty` (the same multiplicative penalty llama.cpp calls penalty_repeat).
struct SamplingDefaults {
  std::optional<float> temperature, top_p, min_p, penalty_repeat;
  std::optional<int32_t> top_k;
  bool empty() const { return !temperature && !top_p && !min_p && !penalty_repeat && !top_k; }
};

// `dir`/generation_config.json; absent file or keys: nothing. A key of the wrong type is an error naming the file.
SamplingDefaults read_sampling_defaults(const std::filesystem::path& dir);

}  // namespace mlx2gguf
