#include "read/source_model.h"

#include <fmt/ranges.h>

#include <cstring>

#include "read/dequant.h"
#include "read/mlx_quantize.h"
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
  tensor.value_dtype_ = tensor.stored_value_dtype_ = stored.dtype;
  tensor.weight_ = &stored;
  return tensor;
}

SourceTensor SourceTensor::transposed(const StoredTensor& stored) {
  if (stored.shape.size() != 2) fail("internal error: transposed view of '{}', which is not a matrix", stored.name);
  SourceTensor tensor = plain(stored);
  tensor.shape_ = {stored.shape[1], stored.shape[0]};
  tensor.transposed_ = true;
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
    tensor.value_dtype_ = tensor.stored_value_dtype_ = scales.dtype;
  } else {
    if (scales.dtype != DType::U8) fail("{}: {} scales must be U8, found {}", where, quant_mode_name(spec.mode), dtype_name(scales.dtype));
    if (biases != nullptr)
      fail("{} is {}-quantized, which has no zero points, but '{}' exists (is config.json quantization wrong?)", where,
           quant_mode_name(spec.mode), biases->name);
    tensor.value_dtype_ = tensor.stored_value_dtype_ = DType::U8;
  }
  tensor.stored_quant_ = spec;
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
  read_stored_rows(first, count, out);
  if (!merge_) return;
  merge_->apply(first, count, out);
  if (!merge_->requantize()) return;
  // The values the re-quantized rows hold.
  PackedRowBuffer buffer;
  for (int64_t r = first; r < first + count; ++r) {
    const PackedRow row = requantized_row(r, buffer);
    dequantize_row(*quant_, row.codes, row.scales, row.biases, value_dtype_, row_length(), out + (r - first) * row_length());
  }
}

void SourceTensor::read_stored_rows(int64_t first, int64_t count, float* out) const {
  const int64_t length = row_length();
  if (transposed_) {  // output row r is stored column r
    const int64_t stored_cols = shape_[0];
    for (int64_t r = first; r < first + count; ++r)
      for (int64_t c = 0; c < length; ++c)
        out[(r - first) * length + c] = load_float(weight_->bytes.data(), stored_value_dtype_, c * stored_cols + r);
    return;
  }
  if (!stored_quant_) {
    const size_t size = dtype_size(stored_value_dtype_);
    load_floats(weight_->bytes.data() + static_cast<size_t>(first * length) * size, stored_value_dtype_, count * length, out);
    return;
  }
  const size_t scale_size = dtype_size(scales_->dtype);
  const int64_t groups = length / stored_quant_->group_size;
  for (int64_t r = first; r < first + count; ++r) {
    const size_t scale_offset = static_cast<size_t>(r * groups) * scale_size;
    dequantize_row(*stored_quant_, weight_->bytes.data() + r * packed_row_bytes(), scales_->bytes.data() + scale_offset,
                   biases_ ? biases_->bytes.data() + scale_offset : nullptr, stored_value_dtype_, length,
                   out + (r - first) * length);
  }
}

const uint8_t* SourceTensor::verbatim_row(int64_t row) const {
  if (quant_ || stored_quant_ || transposed_ || merge_) return nullptr;
  return weight_->bytes.data() + static_cast<size_t>(row * row_length()) * dtype_size(stored_value_dtype_);
}

SourceTensor::PackedRow SourceTensor::packed_row(int64_t row, PackedRowBuffer& buffer) const {
  if (!quant_) fail("internal error: packed row requested from unquantized tensor '{}'", name_);
  if (merge_) return requantized_row(row, buffer);
  const size_t scale_bytes = static_cast<size_t>(row * groups_per_row()) * dtype_size(scales_->dtype);
  return {weight_->bytes.data() + row * packed_row_bytes(), scales_->bytes.data() + scale_bytes,
          biases_ ? biases_->bytes.data() + scale_bytes : nullptr};
}

// One merged row re-quantized with MLX's quantizer, as the folder mlx_lm.fuse writes stores it.
SourceTensor::PackedRow SourceTensor::requantized_row(int64_t row, PackedRowBuffer& buffer) const {
  const int64_t length = row_length();
  buffer.values.resize(static_cast<size_t>(length));
  read_stored_rows(row, 1, buffer.values.data());
  merge_->apply(row, 1, buffer.values.data());
  QuantizedRows q = quant_->mode == QuantMode::Affine
                        ? quantize_affine(buffer.values.data(), 1, length, quant_->bits, quant_->group_size, value_dtype_)
                        : quantize_fp(buffer.values.data(), 1, length, quant_->mode);
  buffer.codes.resize(q.packed.size() * sizeof(uint32_t));
  std::memcpy(buffer.codes.data(), q.packed.data(), buffer.codes.size());
  buffer.scales = std::move(q.scales);
  buffer.biases = std::move(q.biases);
  return {buffer.codes.data(), buffer.scales.data(), buffer.biases.empty() ? nullptr : buffer.biases.data()};
}

void SourceTensor::set_merge(std::shared_ptr<const RowMerge> merge) {
  merge_ = std::move(merge);
  if (merge_->rule() == MergeRule::Float32) {
    quant_.reset();  // merged values are no longer on the quantization grid
    value_dtype_ = stored_quant_ ? (stored_quant_->mode == QuantMode::Affine ? stored_value_dtype_ : DType::BF16)
                                 : stored_value_dtype_;
    return;
  }
  // Like mlx_lm.fuse: the merged module keeps the base's quantization, its scales in the merged values' dtype.
  if (!quant_ || quant_->mode == QuantMode::Affine) value_dtype_ = merge_->fused_dtype();
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

void SourceModel::apply_adapter(const Adapter& adapter, MergeRule rule) {
  for (const auto& [name, replacement] : adapter.replacements()) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail("internal error: full fine-tune tensor '{}' has no base tensor", name);
    it->second = SourceTensor::plain(replacement);
  }
  for (const AdapterModule& module : adapter.modules()) {
    auto it = tensors_.find(module.weight_name());
    if (it == tensors_.end()) fail("internal error: adapter module '{}' has no base tensor", module.module());
    SourceTensor& tensor = it->second;
    if (tensor.merge()) fail("internal error: '{}' is merged twice", tensor.name());
    // The dtype mlx_lm.fuse computes in: the stored float type, the scales' type (affine), bfloat16 (fp modes).
    const DType dtype = !tensor.quant() ? tensor.value_dtype()
                        : tensor.quant()->mode == QuantMode::Affine ? tensor.value_dtype() : DType::BF16;
    std::optional<QuantSpec> requantize;
    if (rule == MergeRule::LikeMlxFuse) requantize = tensor.quant();
    tensor.set_merge(std::make_shared<RowMerge>(module, rule, dtype, requantize));
  }
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
