#pragma once
// An mlx-lm model folder: config.json, weights in one or more safetensors files, tokenizer files.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "read/safetensors.h"

namespace mlx2gguf {

class ModelFolder {
 public:
  // Opens and validates config.json and every weight file. Shards listed in model.safetensors.index.json
  // must all exist and must hold exactly the tensors the index names.
  static ModelFolder open(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  // The language model's hyper-parameters: `text_config` when the config nests one, else the config itself.
  const nlohmann::json& text_config() const { return config_.contains("text_config") ? config_["text_config"] : config_; }
  std::string model_type() const;

  const std::map<std::string, StoredTensor>& tensors() const { return tensors_; }
  const StoredTensor* find(const std::string& name) const;
  const StoredTensor& require(const std::string& name) const;

  // Path of a file in the folder if it exists (tokenizer.json, generation_config.json, ...).
  std::optional<std::filesystem::path> file(const std::string& name) const;
  // Parsed JSON of a file in the folder, or nullopt when it does not exist. Invalid JSON is an error.
  std::optional<nlohmann::json> json_file(const std::string& name) const;

 private:
  std::filesystem::path dir_;
  nlohmann::json config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, StoredTensor> tensors_;
};

// Reads a hyper-parameter, with a clear error naming config.json when it is missing or of the wrong kind.
template <typename T>
T config_value(const nlohmann::json& config, const std::string& key);
template <typename T>
T config_value(const nlohmann::json& config, const std::string& key, T fallback);

}  // namespace mlx2gguf
