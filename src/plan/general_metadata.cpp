#include "plan/general_metadata.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <map>
#include <regex>
#include <set>

#include "read/json_input.h"
#include "read/model_card.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::string current;
  for (char c : text) {
    if (c == separator) {
      parts.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  parts.push_back(current);
  return parts;
}

std::string join(const std::vector<std::string>& parts, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) {
    if (!out.empty()) out += '-';
    out += parts[i];
  }
  return out;
}

bool is_conversion_suffix(const std::string& part) {
  static const std::regex pattern(R"((\d+bits?|mlx|bf16|fp16|f16|f32|fp32|q\d(_\w+)?|mxfp4|nvfp4|mxfp8|dwq|awq|gptq|mixed(_\d_\d)?))",
                                  std::regex::icase);
  return std::regex_match(part, pattern);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
// Letters as Python's str.isalpha sees them; bytes of multi-byte UTF-8 characters count as letters (names in other
// scripts start with one).
bool is_alpha(char c) { return is_lower(c) || is_upper(c) || static_cast<unsigned char>(c) >= 0x80; }
char to_upper(char c) { return is_lower(c) ? static_cast<char>(c - 'a' + 'A') : c; }
char to_lower(char c) { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }

bool matches(const std::string& text, const char* pattern, bool ignore_case = true) {
  const std::regex re(pattern, ignore_case ? std::regex::ECMAScript | std::regex::icase : std::regex::ECMAScript);
  return std::regex_match(text, re);
}

// llama.cpp's normalisation of a size part: "7b1" (BLOOM's notation) → "7.1B", "1_5b" → "1.5B", "7b" → "7B".
std::string normalize_size_label(std::string label) {
  for (char& c : label)
    if (c == '_') c = '.';
  if (label.size() >= 2 && is_digit(label.back())) {
    const char digit = label.back(), suffix = label[label.size() - 2];
    label = label.substr(0, label.size() - 2) + "." + digit + suffix;
  }
  if (label.size() > 1 && is_digit(label[label.size() - 2])) label.back() = to_upper(label.back());
  return label;
}

// The parameter count a size part stands for ("7.2B" → 7.2e9); nullopt when its number is not plain ("8x7B",
// "A3B", "small"), where llama.cpp keeps the part as a size label without comparing.
std::optional<double> size_label_parameters(const std::string& label) {
  if (label.size() < 2) return std::nullopt;
  static const std::string scales = " KMBT";
  const std::string number = label.substr(0, label.size() - 1);
  if (!matches(number, R"(\d+(\.\d+)?)")) return std::nullopt;
  const auto scale = scales.find(label.back());
  const double power = scale == std::string::npos ? -1.0 : static_cast<double>(scale);
  return std::stod(number) * std::pow(1000.0, power);
}

enum Role : unsigned { kBasename = 1, kSizeLabel = 2, kFinetune = 4, kVersion = 8, kType = 16 };

}  // namespace

ModelNameParts model_id_components(const std::string& model_id, int64_t total_parameters) {
  ModelNameParts result;
  if (model_id.empty()) return result;
  if (model_id.find(' ') != std::string::npos) {  // a sentence, not an id
    result.name = model_id;
    return result;
  }
  std::string name = model_id;
  if (const auto slash = model_id.find('/'); slash != std::string::npos) {
    result.organization = model_id.substr(0, slash);
    name = model_id.substr(slash + 1);
    if (!result.organization.empty() && result.organization.front() == '.') result.organization.clear();  // "./x"
  }
  result.name = name;
  std::vector<std::string> parts;
  for (auto& part : split(name, '-'))
    if (!part.empty()) parts.push_back(part);
  std::vector<unsigned> roles(parts.size(), 0);
  const double total = static_cast<double>(total_parameters);
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string& part = parts[i];
    if (matches(part, R"((v|iter)?\d+([.]\d+)*)")) {
      roles[i] |= kVersion;
    } else if (matches(part, R"(i?q\d(_\w)*|b?fp?(16|32))")) {
      roles[i] |= kType;
      for (char& c : part) c = to_upper(c);
    } else if (i > 0 && matches(part, R"((([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl))")) {
      std::string label = normalize_size_label(part);
      const auto label_params = size_label_parameters(label);
      if (total_parameters != 0 && label_params) {
        // "35B-A3B": a total followed by the active count that matches the model stays a size label.
        bool followed_by_active = false;
        if (i + 1 < parts.size() && parts[i + 1].size() >= 2) {
          const std::string next = normalize_size_label(parts[i + 1]);
          const auto active = size_label_parameters(next.substr(1));
          followed_by_active = matches(next, R"(A\d+([._]\d+)?[KMBT][\d]?)") && active &&
                               std::fabs(*active - std::fabs(total)) <= std::floor(7.0 * std::fabs(total) / 8.0);
        }
        const bool far_off = (total < 0 && *label_params < std::floor(std::fabs(total) / 8.0)) ||
                             (total > 0 && std::fabs(*label_params - total) > std::floor(7.0 * total / 8.0));
        if (!followed_by_active && far_off) {
          roles[i] |= kFinetune;  // most likely a context length ("1M")
          label.back() = to_lower(label.back());
        }
      }
      if (roles[i] == 0) roles[i] |= kSizeLabel;
      part = label;
    } else if (i > 0 && matches(part, "chat|instruct|vision|lora")) {
      roles[i] |= kFinetune;
    }
  }
  // Word sizes ("small") give way to a numeric one.
  bool numeric_size = false;
  for (size_t i = 0; i < parts.size(); ++i)
    if (roles[i] & kSizeLabel)
      for (char c : parts[i]) numeric_size |= is_digit(c);
  if (numeric_size)
    for (size_t i = 0; i < parts.size(); ++i) {
      bool all_letters = true;
      for (char c : parts[i]) all_letters &= is_alpha(c);
      if ((roles[i] & kSizeLabel) && all_letters) roles[i] &= ~kSizeLabel;
    }
  // The basename: the leading words (and versions) before the first part of another role; later unmarked words
  // are finetune.
  bool at_start = true;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (at_start && ((roles[i] == 0 && is_alpha(parts[i].front())) || (roles[i] & kVersion))) {
      roles[i] |= kBasename;
    } else {
      at_start = false;
      if (roles[i] == 0) roles[i] |= kFinetune;
    }
  }
  // A version that ends the name belongs to it, not to the basename.
  for (size_t i = parts.size(); i-- > 0;) {
    if ((roles[i] & kBasename) && roles[i] != kBasename) roles[i] &= ~kBasename;
    else break;
  }
  std::vector<std::string> basename, sizes, finetune, version;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (roles[i] & kBasename) basename.push_back(parts[i]);
    if ((roles[i] & kSizeLabel) && std::find(sizes.begin(), sizes.end(), parts[i]) == sizes.end()) sizes.push_back(parts[i]);
    if (roles[i] & kFinetune) finetune.push_back(parts[i]);
    if ((roles[i] & kVersion) && !(roles[i] & kBasename)) version.push_back(parts[i]);
  }
  result.size_label = join(sizes, 0, sizes.size());
  result.finetune = join(finetune, 0, finetune.size());
  result.version = join(version, 0, version.size());
  // Too ambiguous to split: no basename either.
  if (!result.size_label.empty() || !result.finetune.empty() || !result.version.empty())
    result.basename = join(basename, 0, basename.size());
  return result;
}

ModelNameParts parse_model_name(const std::string& folder_name, int64_t total_parameters) {
  std::vector<std::string> parts = split(folder_name, '-');
  while (!parts.empty() && is_conversion_suffix(parts.back())) parts.pop_back();
  return model_id_components(join(parts, 0, parts.size()), total_parameters);
}

std::string id_to_title(const std::string& id) {
  std::string spaced = id;
  for (char& c : spaced)
    if (c == '-') c = ' ';
  std::vector<std::string> words;
  for (const auto& word : split(spaced, ' '))
    if (!word.empty()) words.push_back(word);
  std::string out;
  for (std::string word : words) {
    bool has_lower = false, has_upper = false;
    for (char c : word) {
      has_lower |= is_lower(c);
      has_upper |= is_upper(c);
    }
    const bool version_or_number = matches(word, R"(v\d+(\.\d+)*)", false) || is_digit(word.front());
    if (has_lower && !has_upper && !version_or_number) {
      // Python's str.title(): a letter after a letter is lowercase, any other letter uppercase ("qwen3b" → "Qwen3B").
      bool after_letter = false;
      for (char& c : word) {
        const bool letter = is_lower(c) || is_upper(c);
        if (letter) c = after_letter ? to_lower(c) : to_upper(c);
        after_letter = letter;
      }
    }
    if (!out.empty()) out += ' ';
    out += word;
  }
  return out;
}

// As llama.cpp's converter writes it: the largest scale the count reaches, and decimals only until the rounded
// value shows two significant digits ("7.6B", "35B", "10B" for 9.96e9, "0.50M").
std::string format_parameter_count(double count) {
  struct Scale {
    double value;
    const char* suffix;
  };
  static const Scale scales[] = {{1e12, "T"}, {1e9, "B"}, {1e6, "M"}, {1e3, "K"}};
  Scale chosen = scales[3];
  for (const auto& scale : scales) {
    if (count >= scale.value) {
      chosen = scale;
      break;
    }
  }
  const double scaled = count / chosen.value;
  const long long rounded = std::llround(scaled);
  const int digits = rounded == 0 ? 0 : static_cast<int>(std::to_string(rounded).size());
  const int decimals = std::max(0, 2 - digits);
  return fmt::format("{:.{}f}{}", scaled, decimals, chosen.suffix);
}

std::string size_label(int64_t total_parameters, int64_t expert_parameters, int64_t expert_count) {
  if (expert_count <= 1) return format_parameter_count(static_cast<double>(total_parameters));
  const double per_expert = static_cast<double>(total_parameters - expert_parameters) +
                            static_cast<double>(expert_parameters) / static_cast<double>(expert_count);
  return fmt::format("{}x{}", expert_count, format_parameter_count(per_expert));
}

uint32_t file_type_code(const ConversionPlan& plan) {
  std::map<GgmlType, int64_t> elements;
  for (const auto& tensor : plan.tensors) {
    if (tensor.shape.size() < 2 || tensor.keep_f32) continue;
    int64_t n = 1;
    for (int64_t d : tensor.shape) n *= d;
    elements[tensor.type] += n;
  }
  GgmlType dominant = GgmlType::F32;
  int64_t most = -1;
  for (const auto& [type, n] : elements) {
    if (n > most) {
      most = n;
      dominant = type;
    }
  }
  switch (dominant) {
    case GgmlType::F32: return 0;
    case GgmlType::F16: return 1;
    case GgmlType::Q4_0: return 2;
    case GgmlType::Q4_1: return 3;
    case GgmlType::Q8_0: return 7;
    case GgmlType::Q5_0: return 8;
    case GgmlType::Q5_1: return 9;
    case GgmlType::Q2_K: return 10;
    case GgmlType::Q3_K: return 12;
    case GgmlType::Q4_K: return 15;
    case GgmlType::Q5_K: return 17;
    case GgmlType::Q6_K: return 18;
    case GgmlType::BF16: return 32;
    case GgmlType::MXFP4: return 38;
    case GgmlType::NVFP4: return 39;
    default: return 1;
  }
}

// llama_ftype names (include/llama.h, LLAMA_FTYPE_MOSTLY_<name>).
std::string file_type_label(uint32_t code) {
  static const std::map<uint32_t, const char*> names = {
      {0, "F32"},     {1, "F16"},     {2, "Q4_0"},    {3, "Q4_1"},    {7, "Q8_0"},    {8, "Q5_0"},
      {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"}, {14, "Q4_K_S"},
      {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"}, {18, "Q6_K"},   {32, "BF16"},   {38, "MXFP4_MOE"},
      {39, "NVFP4"}};
  const auto it = names.find(code);
  return it == names.end() ? fmt::format("FTYPE{}", code) : it->second;
}

namespace {

// One entry of general.base_model.* or general.dataset.*: name, author, version, organization, description, url,
// doi, uuid, repo_url.
using SourceEntry = std::map<std::string, std::string>;

const char* const kSourceFields[] = {"name", "author", "version", "organization", "description",
                                     "url",  "doi",    "uuid",    "repo_url"};

// The authorship keys being assembled. As in llama.cpp, each heuristic only fills what is still unknown
// (offer), in order of trust: model card, config.json's _name_or_path, folder name; overrides replace (set).
struct Authorship {
  std::map<std::string, GgufValue> values;  // full GGUF key → value
  std::optional<std::vector<SourceEntry>> base_models, datasets;

  bool has(const std::string& key) const { return values.count(key) != 0; }
  void offer(const std::string& key, const std::string& text) {
    if (!text.empty()) values.try_emplace(key, GgufValue::str(text));
  }
  std::string text(const std::string& key) const {
    const auto it = values.find(key);
    return it == values.end() ? "" : it->second.strings.at(0);
  }
  void offer_parts(const ModelNameParts& parts) {
    if (!parts.name.empty()) offer("general.name", id_to_title(parts.name));
    if (!parts.organization.empty()) offer("general.organization", id_to_title(parts.organization));
    offer("general.basename", parts.basename);
    offer("general.finetune", parts.finetune);
    offer("general.version", parts.version);
    offer("general.size_label", parts.size_label);
  }
};

bool starts_with(const std::string& text, const char* prefix) { return text.rfind(prefix, 0) == 0; }

// A base model or dataset named by the model card: a Hugging Face id ("Qwen/Qwen3-8B") or a URL.
SourceEntry source_from_card(const std::string& id, int64_t total_parameters) {
  SourceEntry entry;
  const auto describe = [&](const std::string& model_id) {
    const ModelNameParts parts = model_id_components(model_id, total_parameters);
    if (!parts.name.empty()) entry["name"] = id_to_title(parts.name);
    if (!parts.organization.empty()) entry["organization"] = id_to_title(parts.organization);
    if (!parts.version.empty()) entry["version"] = parts.version;
    return parts;
  };
  if (starts_with(id, "http://") || starts_with(id, "https://") || starts_with(id, "ssh://")) {
    entry["repo_url"] = id;
    static const std::regex hub(R"(https?://huggingface.co/([^/]+/[^/]+))");
    std::smatch match;
    if (std::regex_match(id, match, hub)) describe(match[1].str());
  } else {
    const ModelNameParts parts = describe(id);
    if (!parts.organization.empty() && !parts.name.empty())
      entry["repo_url"] = fmt::format("https://huggingface.co/{}/{}", parts.organization, parts.name);
  }
  return entry;
}

std::vector<SourceEntry> sources_from_card(const ModelCard& card, std::initializer_list<const char*> keys,
                                           int64_t total_parameters) {
  std::vector<SourceEntry> entries;
  for (const char* key : keys) {
    if (const auto* values = card.get(key)) {
      for (const auto& id : *values) entries.push_back(source_from_card(id, total_parameters));
      break;  // the first key present is the list
    }
  }
  return entries;
}

void read_card(const ModelCard& card, int64_t total_parameters, Authorship& out) {
  // llama.cpp's own keys first, then their model_* forms, then other conventions seen on cards.
  const std::pair<const char*, std::vector<const char*>> scalars[] = {
      {"general.name", {"name", "model_name"}},
      {"general.author", {"author", "model_author", "model_creator"}},
      {"general.version", {"version", "model_version"}},
      {"general.organization", {"organization", "model_organization"}},
      {"general.description", {"description", "model_description"}},
      {"general.finetune", {"finetune", "model_finetune"}},
      {"general.basename", {"basename", "model_basename", "model_type"}},
      {"general.size_label", {"size_label", "model_size_label"}},
      {"general.source.url", {"url", "model_url"}},
      {"general.source.doi", {"doi", "model_doi"}},
      {"general.source.uuid", {"uuid", "model_uuid"}},
      {"general.source.repo_url", {"repo_url", "model_repo_url"}},
      {"general.license.name", {"license_name"}},
      {"general.license.link", {"license_link"}},
  };
  for (const auto& [key, card_keys] : scalars)
    for (const char* card_key : card_keys)
      if (const auto value = card.scalar(card_key)) out.offer(key, *value);
  if (const auto* license = card.get("license")) {
    std::string joined;
    for (const auto& item : *license) joined += (joined.empty() ? "" : ",") + item;
    out.offer("general.license", joined);
  }
  if (card.get("base_model") || card.get("base_models") || card.get("base_model_sources"))
    out.base_models = sources_from_card(card, {"base_model", "base_models", "base_model_sources"}, total_parameters);
  if (card.get("datasets") || card.get("dataset") || card.get("dataset_sources"))
    out.datasets = sources_from_card(card, {"datasets", "dataset", "dataset_sources"}, total_parameters);
  const auto list = [&](const char* key, std::initializer_list<const char*> card_keys) {
    std::vector<std::string> items;
    for (const char* card_key : card_keys)
      if (const auto* values = card.get(card_key)) items.insert(items.end(), values->begin(), values->end());
    if (!items.empty()) out.values.try_emplace(key, GgufValue::str_array(items));
  };
  list("general.tags", {"tags", "pipeline_tag"});
  list("general.languages", {"languages", "language"});
}

// The folder's name, or its parent's when the folder is named only by its conversion ("models/Qwen3-8B/mlx").
ModelNameParts folder_name_parts(const std::filesystem::path& dir, int64_t total_parameters) {
  // parent_path() drops the empty last element a trailing separator leaves ("models/Foo/" names "Foo").
  std::filesystem::path folder = std::filesystem::absolute(dir).lexically_normal();
  if (folder.filename().empty()) folder = folder.parent_path();
  ModelNameParts parts = parse_model_name(folder.filename().string(), total_parameters);
  if (parts.name.empty() && folder.has_parent_path() && !folder.parent_path().filename().empty())
    parts = parse_model_name(folder.parent_path().filename().string(), total_parameters);
  return parts;
}

void add_sampling(const SamplingDefaults& sampling, std::map<std::string, GgufValue>& values) {
  if (sampling.top_k) values["general.sampling.top_k"] = GgufValue::i32(*sampling.top_k);
  if (sampling.top_p) values["general.sampling.top_p"] = GgufValue::f32(*sampling.top_p);
  if (sampling.min_p) values["general.sampling.min_p"] = GgufValue::f32(*sampling.min_p);
  if (sampling.temperature) values["general.sampling.temp"] = GgufValue::f32(*sampling.temperature);
  if (sampling.penalty_repeat) values["general.sampling.penalty_repeat"] = GgufValue::f32(*sampling.penalty_repeat);
}

// ---- llama.cpp's --metadata override file --------------------------------------------------------------------

enum class OverrideKind { Text, Integer, Number, Sources, TextList };

const std::map<std::string, OverrideKind>& override_keys() {
  static const std::map<std::string, OverrideKind> keys = [] {
    std::map<std::string, OverrideKind> k;
    for (const char* text : {"name", "author", "version", "organization", "finetune", "basename", "description",
                             "quantized_by", "size_label", "license", "license.name", "license.link", "url", "doi",
                             "uuid", "repo_url", "source.url", "source.doi", "source.uuid", "source.repo_url",
                             "sampling.sequence"})
      k[std::string("general.") + text] = OverrideKind::Text;
    for (const char* integer : {"top_k", "penalty_last_n", "mirostat"})
      k[std::string("general.sampling.") + integer] = OverrideKind::Integer;
    for (const char* number : {"top_p", "min_p", "xtc_probability", "xtc_threshold", "temp", "penalty_repeat",
                               "mirostat_tau", "mirostat_eta"})
      k[std::string("general.sampling.") + number] = OverrideKind::Number;
    k["general.base_models"] = OverrideKind::Sources;
    k["general.datasets"] = OverrideKind::Sources;
    k["general.tags"] = OverrideKind::TextList;
    k["general.languages"] = OverrideKind::TextList;
    return k;
  }();
  return keys;
}

std::vector<SourceEntry> override_sources(const nlohmann::json& value, const std::string& where) {
  if (!value.is_array()) fail("{} must be a list of objects", where);
  std::vector<SourceEntry> entries;
  for (const auto& item : value) {
    if (!item.is_object()) fail("{} must be a list of objects, got {}", where, item.dump());
    SourceEntry entry;
    for (const auto& [field, text] : item.items()) {
      if (std::find(std::begin(kSourceFields), std::end(kSourceFields), field) == std::end(kSourceFields))
        fail("{}: unknown field '{}' (known: {})", where, field, fmt::join(kSourceFields, ", "));
      if (!text.is_string()) fail("{}: '{}' must be a string, got {}", where, field, text.dump());
      entry[field] = text.get<std::string>();
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

void apply_overrides(const std::filesystem::path& file, Authorship& out) {
  const nlohmann::json overrides = read_json_file(file);
  if (!overrides.is_object()) fail("'{}' must be a JSON object of GGUF keys", file.string());
  for (const auto& [key, value] : overrides.items()) {
    const auto known = override_keys().find(key);
    if (known == override_keys().end())
      fail("'{}': '{}' is not a key llama.cpp's metadata overrides know (general.name, general.sampling.temp, "
           "general.base_models, general.tags, ...)", file.string(), key);
    const std::string where = fmt::format("'{}': '{}'", file.string(), key);
    switch (known->second) {
      case OverrideKind::Text:
        if (!value.is_string()) fail("{} must be a string, got {}", where, value.dump());
        out.values[key] = GgufValue::str(value.get<std::string>());
        break;
      case OverrideKind::Integer: {
        if (!value.is_number_integer() || value.get<int64_t>() < INT32_MIN || value.get<int64_t>() > INT32_MAX)
          fail("{} must be a 32-bit integer, got {}", where, value.dump());
        out.values[key] = GgufValue::i32(static_cast<int32_t>(value.get<int64_t>()));
        break;
      }
      case OverrideKind::Number:
        if (!value.is_number() || !(std::fabs(value.get<double>()) <= std::numeric_limits<float>::max()))
          fail("{} must be a number, got {}", where, value.dump());
        out.values[key] = GgufValue::f32(value.get<float>());
        break;
      case OverrideKind::Sources:
        (key == "general.base_models" ? out.base_models : out.datasets) = override_sources(value, where);
        break;
      case OverrideKind::TextList: {
        std::vector<std::string> items;
        if (!value.is_array()) fail("{} must be a list of strings, got {}", where, value.dump());
        for (const auto& item : value) {
          if (!item.is_string()) fail("{} must be a list of strings, got {}", where, item.dump());
          items.push_back(item.get<std::string>());
        }
        out.values[key] = GgufValue::str_array(items);
        break;
      }
    }
  }
}

void write_sources(const char* prefix, const std::vector<SourceEntry>& entries, GgufMetadata& meta) {
  meta.set(fmt::format("general.{}.count", prefix), GgufValue::u32(static_cast<uint32_t>(entries.size())));
  for (size_t i = 0; i < entries.size(); ++i)
    for (const char* field : kSourceFields)
      if (const auto it = entries[i].find(field); it != entries[i].end() && !it->second.empty())
        meta.set(fmt::format("general.{}.{}.{}", prefix, i, field), GgufValue::str(it->second));
}

struct ParameterCount {
  int64_t total = 0, experts = 0, expert_count = 0;
};

ParameterCount count_parameters(const ConversionPlan& plan) {
  ParameterCount count;
  for (const auto& tensor : plan.tensors) {
    int64_t n = 1;
    for (int64_t d : tensor.shape) n *= d;
    count.total += n;
    if (tensor.name.find("_exps.") != std::string::npos) {
      count.experts += n;
      count.expert_count = tensor.shape.front();
    }
  }
  return count;
}

}  // namespace

void add_general_metadata(const SourceModel& model, const GeneralMetadataOptions& options, ConversionPlan& plan) {
  const ParameterCount params = count_parameters(plan);
  const std::filesystem::path& dir = model.folder().dir();
  Authorship authorship;
  read_card(read_model_card(dir), params.total, authorship);
  const nlohmann::json& config = model.folder().config();
  if (config.contains("_name_or_path") && config["_name_or_path"].is_string()) {
    const std::string id = config["_name_or_path"].get<std::string>();
    if (std::count(id.begin(), id.end(), '/') <= 1) {  // a Hub id, not a path on someone's disk
      const auto slash = id.find('/');
      ModelNameParts parts = parse_model_name(slash == std::string::npos ? id : id.substr(slash + 1), params.total);
      if (slash != std::string::npos) parts.organization = id.substr(0, slash);
      authorship.offer_parts(parts);
    }
  }
  authorship.offer_parts(options.source_name.empty() ? folder_name_parts(dir, params.total)
                                                     : parse_model_name(options.source_name, params.total));
  add_sampling(read_sampling_defaults(dir), authorship.values);

  if (!options.merged_adapter.empty()) {
    // The weights are the base's plus the adapter: the base becomes the first base model, the adapter is named.
    SourceEntry base{{"name", authorship.text("general.name")}};
    if (authorship.has("general.organization")) base["organization"] = authorship.text("general.organization");
    std::vector<SourceEntry> bases{base};
    if (authorship.base_models) bases.insert(bases.end(), authorship.base_models->begin(), authorship.base_models->end());
    authorship.base_models = bases;
    authorship.values["general.description"] = GgufValue::str(options.merged_adapter);
    if (!options.merged_adapter_name.empty()) {
      const std::string finetune = authorship.text("general.finetune");
      authorship.values["general.finetune"] =
          GgufValue::str(finetune.empty() ? options.merged_adapter_name : finetune + "-" + options.merged_adapter_name);
    }
  }
  if (!options.metadata_file.empty()) apply_overrides(options.metadata_file, authorship);
  if (!options.name.empty()) authorship.values["general.name"] = GgufValue::str(options.name);
  if (!authorship.has("general.name")) {  // a folder named only by its conversion, in a folder named so too
    std::filesystem::path folder = std::filesystem::absolute(dir).lexically_normal();
    if (folder.filename().empty()) folder = folder.parent_path();
    authorship.values["general.name"] =
        GgufValue::str(options.source_name.empty() ? folder.filename().string() : options.source_name);
  }
  if (!authorship.has("general.size_label"))
    authorship.values["general.size_label"] = GgufValue::str(size_label(params.total, params.experts, params.expert_count));

  auto& meta = plan.metadata;
  meta.set("general.type", GgufValue::str("model"));
  // llama.cpp's order: sampling, then authorship, then lineage and tags.
  static const char* const ordered[] = {
      "general.sampling.sequence", "general.sampling.top_k", "general.sampling.top_p", "general.sampling.min_p",
      "general.sampling.xtc_probability", "general.sampling.xtc_threshold", "general.sampling.temp",
      "general.sampling.penalty_last_n", "general.sampling.penalty_repeat", "general.sampling.mirostat",
      "general.sampling.mirostat_tau", "general.sampling.mirostat_eta", "general.name", "general.author",
      "general.version", "general.organization", "general.finetune", "general.basename", "general.description",
      "general.quantized_by", "general.size_label", "general.license", "general.license.name", "general.license.link",
      "general.url", "general.doi", "general.uuid", "general.repo_url", "general.source.url", "general.source.doi",
      "general.source.uuid", "general.source.repo_url"};
  for (const char* key : ordered)
    if (const auto it = authorship.values.find(key); it != authorship.values.end()) meta.set(key, it->second);
  if (authorship.base_models) write_sources("base_model", *authorship.base_models, meta);
  if (authorship.datasets) write_sources("dataset", *authorship.datasets, meta);
  for (const char* key : {"general.tags", "general.languages"})
    if (const auto it = authorship.values.find(key); it != authorship.values.end()) meta.set(key, it->second);
  meta.set("general.file_type", GgufValue::u32(file_type_code(plan)));
  meta.set("general.quantization_version", GgufValue::u32(2));
}

std::string default_output_name(const GgufMetadata& metadata) {
  const auto text = [&](const char* key) -> std::string {
    const GgufValue* value = metadata.get(key);
    return value == nullptr || value->type != GgufType::STRING ? "" : value->strings.at(0);
  };
  const auto dashed = [](std::string part) {
    for (char& c : part)
      if (c == ' ' || c == '/') c = '-';
    return part;
  };
  std::string name = text("general.basename").empty() ? text("general.name") : text("general.basename");
  name = name.empty() ? "ggml-model" : dashed(name);
  for (const char* key : {"general.size_label", "general.finetune", "general.version"})
    if (!text(key).empty()) name += "-" + dashed(text(key));
  if (const GgufValue* type = metadata.get("general.file_type"))
    name += "-" + file_type_label(static_cast<uint32_t>(type->ints.at(0)));
  return name + ".gguf";
}

}  // namespace mlx2gguf
