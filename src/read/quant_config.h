#pragma once
// Which modules of an MLX model are quantized, and how: mlx-lm's own resolution of config.json "quantization".
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace mlx2gguf {

enum class QuantMode { Affine, MXFP4, NVFP4, MXFP8 };

const char* quant_mode_name(QuantMode mode);

struct QuantSpec {
  QuantMode mode = QuantMode::Affine;
  int bits = 4;
  int group_size = 64;
  bool operator==(const QuantSpec&) const = default;
};

class QuantConfig {
 public:
  // Reads config["quantization"]; a config without it describes an unquantized model (a stale MLX
  // "quantization_config" copy alone is ignored, as the tensors are authoritative).
  static QuantConfig from_config(const nlohmann::json& config);

  // Spec of the module at `module_path` (no ".weight" suffix). `has_scales` tells whether the weights hold
  // `<module_path>.scales`: a module with no entry of its own is quantized exactly when they do.
  std::optional<QuantSpec> for_module(const std::string& module_path, bool has_scales) const;

  bool any() const { return !top_.is_null(); }

 private:
  static QuantSpec parse_entry(const nlohmann::json& entry, const std::string& where);
  nlohmann::json top_;
};

}  // namespace mlx2gguf
