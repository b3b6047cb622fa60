#include "read/quant_config.h"

#include "util/error.h"

namespace mlx2gguf {

const char* quant_mode_name(QuantMode mode) {
  switch (mode) {
    case QuantMode::Affine: return "affine";
    case QuantMode::MXFP4: return "mxfp4";
    case QuantMode::NVFP4: return "nvfp4";
    case QuantMode::MXFP8: return "mxfp8";
  }
  return "?";
}

namespace {

// mlx-lm's defaults when a field is missing or null.
QuantSpec mode_defaults(QuantMode mode) {
  switch (mode) {
    case QuantMode::Affine: return {QuantMode::Affine, 4, 64};
    case QuantMode::MXFP4: return {QuantMode::MXFP4, 4, 32};
    case QuantMode::NVFP4: return {QuantMode::NVFP4, 4, 16};
    case QuantMode::MXFP8: return {QuantMode::MXFP8, 8, 32};
  }
  return {};
}

void check_supported(const QuantSpec& spec, const std::string& where) {
  if (spec.mode == QuantMode::Affine) {
    if (spec.bits != 2 && spec.bits != 3 && spec.bits != 4 && spec.bits != 5 && spec.bits != 6 && spec.bits != 8)
      fail("config.json quantization{}: affine bits {} is not one MLX produces (2, 3, 4, 5, 6, 8)", where, spec.bits);
    if (spec.group_size != 32 && spec.group_size != 64 && spec.group_size != 128)
      fail("config.json quantization{}: affine group_size {} is not one MLX produces (32, 64, 128)", where, spec.group_size);
    return;
  }
  const QuantSpec expected = mode_defaults(spec.mode);
  if (spec.bits != expected.bits || spec.group_size != expected.group_size)
    fail("config.json quantization{}: {} needs bits {} and group_size {}, found bits {} and group_size {}", where,
         quant_mode_name(spec.mode), expected.bits, expected.group_size, spec.bits, spec.group_size);
}

// An integer field of a quantization entry; nullopt when absent or null (= the mode's default).
std::optional<int> int_field(const nlohmann::json& entry, const char* key, const std::string& where) {
  if (!entry.contains(key) || entry[key].is_null()) return std::nullopt;
  const auto& value = entry[key];
  if (!value.is_number_integer() || value.get<int64_t>() <= 0 || value.get<int64_t>() > 1024)
    fail("config.json quantization{}: {} is {}, expected a positive integer", where, key, value.dump());
  return static_cast<int>(value.get<int64_t>());
}

}  // namespace

QuantSpec QuantConfig::parse_entry(const nlohmann::json& entry, const std::string& where) {
  QuantMode mode = QuantMode::Affine;  // entries without "mode" predate it, or come from per-model predicates
  if (entry.contains("mode") && !entry["mode"].is_null()) {
    if (!entry["mode"].is_string()) fail("config.json quantization{}: mode {} is not a string", where, entry["mode"].dump());
    const std::string name = entry["mode"].get<std::string>();
    if (name == "affine") mode = QuantMode::Affine;
    else if (name == "mxfp4") mode = QuantMode::MXFP4;
    else if (name == "nvfp4") mode = QuantMode::NVFP4;
    else if (name == "mxfp8") mode = QuantMode::MXFP8;
    else fail("config.json quantization{}: unknown mode '{}'", where, name);
  }
  QuantSpec spec = mode_defaults(mode);
  if (const auto bits = int_field(entry, "bits", where)) spec.bits = *bits;
  if (const auto group_size = int_field(entry, "group_size", where)) spec.group_size = *group_size;
  check_supported(spec, where);
  return spec;
}

QuantConfig QuantConfig::from_config(const nlohmann::json& config) {
  QuantConfig result;
  if (config.contains("quantization") && config["quantization"].is_object()) result.top_ = config["quantization"];
  return result;
}

std::optional<QuantSpec> QuantConfig::for_module(const std::string& module_path, bool has_scales) const {
  if (top_.is_null()) {
    if (has_scales) fail("'{}.scales' exists but config.json has no \"quantization\" entry", module_path);
    return std::nullopt;
  }
  if (top_.contains(module_path)) {
    const auto& entry = top_[module_path];
    if (entry.is_boolean()) {
      if (entry.get<bool>()) return parse_entry(top_, "");
      return std::nullopt;
    }
    if (entry.is_object()) return parse_entry(entry, "[\"" + module_path + "\"]");
    fail("config.json quantization[\"{}\"] is neither false nor an object", module_path);
  }
  if (!has_scales) return std::nullopt;
  return parse_entry(top_, "");
}

}  // namespace mlx2gguf
