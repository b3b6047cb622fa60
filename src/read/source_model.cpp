#include "read/source_model.h"

#include <fmt/ranges.h>

#include "encode/dequant.h"
#include "util/error.h"

namespace mlx2gguf {

namespace {

std::string strip_suffix(const std::string& name, const std::string& suffix) {
  return name.ends_with(suffix) ? name.substr(0, name.size() - suffix.size()) : name;
}

}  // namespace

SourceTensor SourceTensor::plain(const StoredTensor& stored) {
  if (stored.dtype != DType::F32 && stored.dtype != DType::F16 && stored.dtype != DType::BF16)
    fail("tensor '{}' in '{}' is {} but has no quantization scales: expected a float tensor", stored.name,
         stored.file.string(), dtype_name(stored.dtype));
  SourceTensor tensor;
  tensor.name_ = stored.name;
  tensor.shape_ = stored.shape;
  tensor.value_dtype_ = stored.dtype;
  tensor.weight_ = &stored;
  return tensor;
}

SourceTensor SourceTensor::quantized(const StoredTensor& weight, const StoredTensor& scales, const StoredTensor* biases,
                                     const QuantSpec& spec) {
  const std::string where = fmt::format("'{}' in '{}'", weight.name, weight.file.string());
  if (weight.dtype != DType::U32)
    fail("{} is quantized ({}-bit {}) but stored as {}, not U32 packed codes", where, spec.bits,
         quant_mode_name(spec.mode), dtype_name(weight.dtype));
  if (weight.shape.empty() || scales.shape.size() != weight.shape.size())
    fail("{}: scales shape {} does not match weight shape {}", where, fmt::join(scales.shape, "x"),
         fmt::join(weight.shape, "x"));
  const int64_t packed = weight.shape.back();
  const int64_t length = packed * 32 / spec.bits;
  if (length * spec.bits != packed * 32)
    fail("{}: {} packed words per row do not hold a whole number of {}-bit codes", where, packed, spec.bits);
  for (size_t d = 0; d + 1 < weight.shape.size(); ++d) {
    if (scales.shape[d] != weight.shape[d])
      fail("{}: scales shape {} does not match weight shape {}", where, fmt::join(scales.shape, "x"),
           fmt::join(weight.shape, "x"));
  }
  if (scales.shape.back() * spec.group_size != length)
    fail("{}: {} scales per row do not match {} weights in groups of {} (config.json quantization says {}-bit {} "
         "group_size {})",
         where, scales.shape.back(), length, spec.group_size, spec.bits, quant_mode_name(spec.mode), spec.group_size);
  SourceTensor tensor;
  tensor.name_ = weight.name;
  tensor.shape_ = weight.shape;
  tensor.shape_.back() = length;
  tensor.quant_ = spec;
  tensor.weight_ = &weight;
  tensor.scales_ = &scales;
  if (spec.mode == QuantMode::Affine) {
    if (biases == nullptr) fail("{} is affine-quantized but '{}' is missing", where, strip_suffix(weight.name, ".weight") + ".biases");
    if (biases->shape != scales.shape || biases->dtype != scales.dtype)
      fail("{}: biases ({} {}) differ from scales ({} {})", where, dtype_name(biases->dtype), fmt::join(biases->shape, "x"),
           dtype_name(scales.dtype), fmt::join(scales.shape, "x"));
    if (scales.dtype != DType::F32 && scales.dtype != DType::F16 && scales.dtype != DType::BF16)
      fail("{}: affine scales must be float, found {}", where, dtype_name(scales.dtype));
    tensor.biases_ = biases;
    tensor.value_dtype_ = scales.dtype;
  } else {
    if (scales.dtype != DType::U8) fail("{}: {} scales must be U8, found {}", where, quant_mode_name(spec.mode), dtype_name(scales.dtype));
    if (biases != nullptr)
      fail("{} is {}-quantized, which has no zero points, but '{}' exists (is config.json quantization wrong?)", where,
           quant_mode_name(spec.mode), biases->name);
    tensor.value_dtype_ = DType::U8;
  }
  return tensor;
}

SourceTensor SourceTensor::reshaped(const std::vector<int64_t>& shape) const {
  int64_t elements = 1;
  for (int64_t d : shape) elements *= d;
  if (elements != element_count() || shape.empty() || (quant_ && shape.back() != row_length()))
    fail("tensor '{}' of shape [{}] cannot be read as [{}]", name_, fmt::join(shape_, ", "), fmt::join(shape, ", "));
  SourceTensor view = *this;
  view.shape_ = shape;
  return view;
}

int64_t SourceTensor::row_count() const {
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < shape_.size(); ++d) rows *= shape_[d];
  return rows;
}

void SourceTensor::read_rows(int64_t first, int64_t count, float* out) const {
  if (first < 0 || count < 0 || first + count > row_count())
    fail("internal error: rows [{}, {}) requested from tensor '{}', which has {} rows", first, first + count, name_,
         row_count());
  if (count == 0) return;
  const int64_t length = row_length();
  if (!quant_) {
    const size_t size = dtype_size(value_dtype_);
    load_floats(weight_->bytes.data() + static_cast<size_t>(first * length) * size, value_dtype_, count * length, out);
    return;
  }
  for (int64_t r = first; r < first + count; ++r) {
    const PackedRow row = packed_row(r);
    dequantize_row(*quant_, row.codes, row.scales, row.biases, value_dtype_, length, out + (r - first) * length);
  }
}

SourceTensor::PackedRow SourceTensor::packed_row(int64_t row) const {
  if (!quant_) fail("internal error: packed row requested from unquantized tensor '{}'", name_);
  const size_t scale_bytes = static_cast<size_t>(row * groups_per_row()) * dtype_size(scales_->dtype);
  return {weight_->bytes.data() + row * packed_row_bytes(), scales_->bytes.data() + scale_bytes,
          biases_ ? biases_->bytes.data() + scale_bytes : nullptr};
}

SourceModel SourceModel::open(const std::filesystem::path& dir) {
  SourceModel model;
  model.folder_ = ModelFolder::open(dir);
  model.quant_config_ = QuantConfig::from_config(model.folder_.config());
  const auto& stored = model.folder_.tensors();
  for (const auto& [name, tensor] : stored) {
    if (name.ends_with(".scales") || name.ends_with(".biases")) {
      const std::string module = name.substr(0, name.size() - 7);
      if (!stored.contains(module + ".weight"))
        fail("'{}' in '{}' has no matching '{}'", name, tensor.file.string(), module + ".weight");
      if (!stored.contains(module + ".scales"))
        fail("'{}' in '{}' holds affine zero points, but '{}' is not quantized: '{}' is missing", name,
             tensor.file.string(), module, module + ".scales");
      continue;  // part of the quantized weight
    }
    if (name.ends_with(".weight")) {
      const std::string module = strip_suffix(name, ".weight");
      const auto scales = stored.find(module + ".scales");
      const bool has_scales = scales != stored.end();
      const auto spec = model.quant_config_.for_module(module, has_scales);
      if (spec) {
        if (!has_scales)
          fail("config.json quantization says '{}' is quantized, but '{}.scales' is missing", module, module);
        const auto biases = stored.find(module + ".biases");
        model.tensors_.emplace(
            name, SourceTensor::quantized(tensor, scales->second, biases == stored.end() ? nullptr : &biases->second, *spec));
        continue;
      }
      if (has_scales)
        fail("'{}.scales' exists but config.json quantization marks '{}' as not quantized", module, module);
    }
    model.tensors_.emplace(name, SourceTensor::plain(tensor));
  }
  return model;
}

const SourceTensor* SourceModel::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const SourceTensor& SourceModel::require(const std::string& name) const {
  const SourceTensor* tensor = find(name);
  if (tensor == nullptr) fail("tensor '{}' is missing from the weights in '{}'", name, folder_.dir().string());
  return *tensor;
}

}  // namespace mlx2gguf
