#include "plan/general_metadata.h"

#include <cmath>
#include <map>
#include <regex>

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

}  // namespace

ModelNameParts parse_model_name(const std::string& folder_name) {
  std::vector<std::string> parts = split(folder_name, '-');
  while (parts.size() > 1 && is_conversion_suffix(parts.back())) parts.pop_back();
  ModelNameParts result;
  result.name = join(parts, 0, parts.size());
  static const std::regex size(R"((\d+x)?\d+(\.\d+)?[KMBT])", std::regex::icase);
  static const std::regex active(R"(A\d+(\.\d+)?B)", std::regex::icase);
  static const std::regex version(R"(v\d+(\.\d+)*)", std::regex::icase);
  size_t size_at = parts.size();
  for (size_t i = 1; i < parts.size(); ++i) {
    if (std::regex_match(parts[i], size)) {
      size_at = i;
      break;
    }
  }
  if (size_at == parts.size()) {
    result.basename = result.name;
    return result;
  }
  result.basename = join(parts, 0, size_at);
  size_t next = size_at + 1;
  result.size_label = parts[size_at];
  if (next < parts.size() && std::regex_match(parts[next], active)) result.size_label += "-" + parts[next++];
  std::vector<std::string> finetune;
  for (size_t i = next; i < parts.size(); ++i) {
    if (std::regex_match(parts[i], version)) result.version = parts[i];
    else finetune.push_back(parts[i]);
  }
  result.finetune = join(finetune, 0, finetune.size());
  return result;
}

// As llama.cpp's converter writes it: the largest scale the count exceeds, and decimals only until the rounded
// value shows two significant digits ("7.6B", "35B", "10B" for 9.96e9, "0.50M").
std::string format_parameter_count(double count) {
  struct Scale {
    double value;
    const char* suffix;
  };
  static const Scale scales[] = {{1e12, "T"}, {1e9, "B"}, {1e6, "M"}, {1e3, "K"}};
  Scale chosen = scales[3];
  for (const auto& scale : scales) {
    if (count > scale.value) {
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

void add_general_metadata(const SourceModel& model, const std::string& name_override, ConversionPlan& plan,
                          const std::string& source_name) {
  // parent_path() drops the empty last element a trailing separator leaves ("models/Foo/" names "Foo").
  std::filesystem::path folder = std::filesystem::absolute(model.folder().dir()).lexically_normal();
  if (folder.filename().empty()) folder = folder.parent_path();
  const std::string folder_name = source_name.empty() ? folder.filename().string() : source_name;
  ModelNameParts parts = parse_model_name(name_override.empty() ? folder_name : name_override);
  if (!name_override.empty()) parts.name = name_override;

  int64_t total = 0, experts = 0, expert_count = 0;
  for (const auto& tensor : plan.tensors) {
    int64_t n = 1;
    for (int64_t d : tensor.shape) n *= d;
    total += n;
    if (tensor.name.find("_exps.") != std::string::npos) {
      experts += n;
      expert_count = tensor.shape.front();
    }
  }
  auto& meta = plan.metadata;
  meta.set("general.type", GgufValue::str("model"));
  if (!parts.name.empty()) meta.set("general.name", GgufValue::str(parts.name));
  if (!parts.basename.empty()) meta.set("general.basename", GgufValue::str(parts.basename));
  meta.set("general.size_label", GgufValue::str(parts.size_label.empty() ? size_label(total, experts, expert_count) : parts.size_label));
  if (!parts.finetune.empty()) meta.set("general.finetune", GgufValue::str(parts.finetune));
  if (!parts.version.empty()) meta.set("general.version", GgufValue::str(parts.version));
  meta.set("general.file_type", GgufValue::u32(file_type_code(plan)));
  meta.set("general.quantization_version", GgufValue::u32(2));
}

}  // namespace mlx2gguf
