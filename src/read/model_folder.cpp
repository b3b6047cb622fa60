#include "read/model_folder.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "read/json_input.h"
#include "util/error.h"

namespace mlx2gguf {

namespace fs = std::filesystem;

namespace {

// Weight files of the folder: the shards the index names, else every model*.safetensors (what mlx-lm loads).
std::vector<fs::path> weight_files(const fs::path& dir, std::map<std::string, std::string>& index_map) {
  const fs::path index_path = dir / "model.safetensors.index.json";
  std::vector<fs::path> files;
  if (fs::exists(index_path)) {
    const nlohmann::json index = read_json_file(index_path);
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail("'{}' has no weight_map object", index_path.string());
    std::set<std::string> shard_names;
    for (const auto& [tensor, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) fail("'{}': weight_map entry '{}' is not a file name", index_path.string(), tensor);
      index_map[tensor] = shard.get<std::string>();
      shard_names.insert(shard.get<std::string>());
    }
    for (const auto& name : shard_names) {
      const fs::path shard = dir / name;
      if (!fs::exists(shard))
        fail("shard '{}' listed in '{}' is missing", shard.string(), index_path.string());
      files.push_back(shard);
    }
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with("model") && name.ends_with(".safetensors") && !shard_names.contains(name))
        fail("'{}' is not listed in '{}': remove the stray file or fix the index", entry.path().string(),
             index_path.string());
    }
    return files;
  }
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("model") && name.ends_with(".safetensors")) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) fail("'{}' holds no model*.safetensors weight file", dir.string());
  return files;
}

}  // namespace

ModelFolder ModelFolder::open(const fs::path& dir) {
  ModelFolder folder;
  folder.dir_ = dir;
  if (!fs::is_directory(dir)) fail("'{}' is not a directory", dir.string());
  const fs::path config_path = dir / "config.json";
  if (!fs::exists(config_path)) fail("'{}' has no config.json: is this an mlx-lm model folder?", dir.string());
  folder.config_ = read_json_file(config_path);
  if (!folder.config_.is_object()) fail("'{}' is not a JSON object", config_path.string());

  std::map<std::string, std::string> index_map;
  for (const fs::path& path : weight_files(dir, index_map)) {
    folder.files_.push_back(SafetensorsFile::open(path));
    for (const auto& [name, tensor] : folder.files_.back()->tensors()) {
      if (folder.tensors_.contains(name))
        fail("tensor '{}' is stored twice: in '{}' and '{}'", name, folder.tensors_.at(name).file.string(), path.string());
      if (!index_map.empty()) {
        auto it = index_map.find(name);
        if (it == index_map.end())
          fail("tensor '{}' in '{}' is not listed in model.safetensors.index.json", name, path.string());
        if (it->second != path.filename().string())
          fail("tensor '{}' is in '{}' but model.safetensors.index.json says '{}'", name, path.string(), it->second);
      }
      folder.tensors_.emplace(name, tensor);
    }
  }
  for (const auto& [name, shard] : index_map) {
    if (!folder.tensors_.contains(name))
      fail("tensor '{}' listed in model.safetensors.index.json is missing from '{}'", name, (dir / shard).string());
  }
  return folder;
}

std::string ModelFolder::model_type() const {
  const auto& text = text_config();
  if (text.contains("model_type") && text["model_type"].is_string()) return text["model_type"].get<std::string>();
  if (config_.contains("model_type") && config_["model_type"].is_string()) return config_["model_type"].get<std::string>();
  fail("'{}' has no model_type", (dir_ / "config.json").string());
}

const StoredTensor* ModelFolder::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const StoredTensor& ModelFolder::require(const std::string& name) const {
  const StoredTensor* tensor = find(name);
  if (tensor == nullptr) fail("tensor '{}' is missing from the weights in '{}'", name, dir_.string());
  return *tensor;
}

std::optional<fs::path> ModelFolder::file(const std::string& name) const {
  fs::path path = dir_ / name;
  if (fs::exists(path)) return path;
  return std::nullopt;
}

std::optional<nlohmann::json> ModelFolder::json_file(const std::string& name) const {
  auto path = file(name);
  if (!path) return std::nullopt;
  return read_json_file(*path);
}

template <typename T>
T config_value(const nlohmann::json& config, const std::string& key) {
  if (!config.contains(key) || config[key].is_null()) fail("config.json lacks '{}'", key);
  try {
    return config[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("config.json: '{}' has an unexpected value {}", key, config[key].dump());
  }
}

template <typename T>
T config_value(const nlohmann::json& config, const std::string& key, T fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  return config_value<T>(config, key);
}

template int64_t config_value<int64_t>(const nlohmann::json&, const std::string&);
template int64_t config_value<int64_t>(const nlohmann::json&, const std::string&, int64_t);
template double config_value<double>(const nlohmann::json&, const std::string&);
template double config_value<double>(const nlohmann::json&, const std::string&, double);
template bool config_value<bool>(const nlohmann::json&, const std::string&);
template bool config_value<bool>(const nlohmann::json&, const std::string&, bool);
template std::string config_value<std::string>(const nlohmann::json&, const std::string&);
template std::string config_value<std::string>(const nlohmann::json&, const std::string&, std::string);

}  // namespace mlx2gguf
