#include "read/model_card.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <iterator>

#include "read/json_input.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

std::string trim(const std::string& text) {
  const auto begin = text.find_first_not_of(" \t\r");
  if (begin == std::string::npos) return "";
  const auto end = text.find_last_not_of(" \t\r");
  return text.substr(begin, end - begin + 1);
}

// A YAML scalar as text: quotes removed, a trailing comment dropped from plain scalars.
std::string unquote(std::string text) {
  text = trim(text);
  if (text.size() >= 2 && (text.front() == '"' || text.front() == '\'') && text.back() == text.front())
    return text.substr(1, text.size() - 2);
  const auto comment = text.find(" #");
  if (comment != std::string::npos) text = trim(text.substr(0, comment));
  return text;
}

std::vector<std::string> flow_list(const std::string& text) {
  std::vector<std::string> items;
  std::string current;
  char quote = 0;
  for (const char c : text.substr(1, text.size() - 2)) {
    if (quote != 0) {
      if (c == quote) quote = 0;
      current += c;
    } else if (c == '"' || c == '\'') {
      quote = c;
      current += c;
    } else if (c == ',') {
      items.push_back(unquote(current));
      current.clear();
    } else {
      current += c;
    }
  }
  if (!trim(current).empty()) items.push_back(unquote(current));
  return items;
}

bool is_mapping_item(const std::string& item) {
  if (item.empty() || item.front() == '"' || item.front() == '\'') return false;
  const auto colon = item.find(':');
  return colon != std::string::npos && (colon + 1 == item.size() || item[colon + 1] == ' ');
}

}  // namespace

const std::vector<std::string>* ModelCard::get(const std::string& key) const {
  const auto it = fields.find(key);
  return it == fields.end() || it->second.empty() ? nullptr : &it->second;
}

std::optional<std::string> ModelCard::scalar(const std::string& key) const {
  const auto* values = get(key);
  if (values == nullptr || values->size() != 1 || values->front().empty()) return std::nullopt;
  return values->front();
}

ModelCard parse_model_card(const std::string& readme_text) {
  std::vector<std::string> lines;
  {
    std::string line;
    for (const char c : readme_text) {
      if (c == '\n') {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(line);
        line.clear();
      } else {
        line += c;
      }
    }
    lines.push_back(line);
  }
  ModelCard card;
  if (lines.empty() || lines.front() != "---") return card;
  std::string key;  // the top-level key whose block list may follow
  for (size_t i = 1; i < lines.size() && lines[i] != "---"; ++i) {
    std::string line = lines[i];
    for (char& c : line)
      if (c == '\t') c = ' ';  // some cards indent with tabs
    const std::string text = trim(line);
    if (text.empty() || text.front() == '#') continue;
    const bool indented = line.front() == ' ';
    if (text.rfind("- ", 0) == 0 || text == "-") {
      // An item of the last top-level key's list; deeper lists belong to nested mappings.
      if (key.empty()) continue;
      const std::string item = trim(text.substr(1));
      if (is_mapping_item(item)) continue;
      card.fields[key].push_back(unquote(item));
      continue;
    }
    if (indented) continue;  // inside a nested mapping
    const auto colon = text.find(':');
    if (colon == std::string::npos) {
      key.clear();
      continue;
    }
    key = unquote(text.substr(0, colon));
    const std::string value = trim(text.substr(colon + 1));
    auto& values = card.fields[key];
    values.clear();
    if (value.empty() || value == "|" || value == ">") continue;
    if (value.front() == '[' && value.back() == ']') values = flow_list(value);
    else if (value.front() != '{') values.push_back(unquote(value));
    if (!values.empty() || value.front() == '{') key.clear();
  }
  // Keys left without any value (a nested mapping) say nothing.
  for (auto it = card.fields.begin(); it != card.fields.end();) it = it->second.empty() ? card.fields.erase(it) : std::next(it);
  return card;
}

ModelCard read_model_card(const std::filesystem::path& dir) {
  const auto path = dir / "README.md";
  if (!std::filesystem::is_regular_file(path)) return {};
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '{}'", path.string());
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return parse_model_card(text);
}

SamplingDefaults read_sampling_defaults(const std::filesystem::path& dir) {
  const auto path = dir / "generation_config.json";
  SamplingDefaults sampling;
  if (!std::filesystem::is_regular_file(path)) return sampling;
  const nlohmann::json config = read_json_file(path);
  if (!config.is_object()) fail("'{}' is not a JSON object", path.string());
  const auto number = [&](const char* key) -> std::optional<float> {
    if (!config.contains(key) || config[key].is_null()) return std::nullopt;
    if (!config[key].is_number()) fail("'{}': '{}' must be a number, got {}", path.string(), key, config[key].dump());
    const double value = config[key].get<double>();
    if (!(std::fabs(value) <= std::numeric_limits<float>::max()))
      fail("'{}': '{}' is out of range: {}", path.string(), key, config[key].dump());
    return static_cast<float>(value);
  };
  sampling.temperature = number("temperature");
  sampling.top_p = number("top_p");
  sampling.min_p = number("min_p");
  sampling.penalty_repeat = number("repetition_penalty");
  if (const auto own = number("penalty_repeat")) sampling.penalty_repeat = own;  // llama.cpp's own name wins
  if (const auto top_k = number("top_k")) {
    if (!(*top_k >= 0 && *top_k < 2147483648.0f) || *top_k != static_cast<float>(static_cast<int32_t>(*top_k)))
      fail("'{}': 'top_k' must be a non-negative whole number, got {}", path.string(), config["top_k"].dump());
    sampling.top_k = static_cast<int32_t>(*top_k);
  }
  return sampling;
}

}  // namespace mlx2gguf
