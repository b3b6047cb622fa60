#pragma once
// The source model as logical tensors: every MLX quantized triplet (weight, scales, biases) becomes one tensor
// with its logical (dequantized) shape, read row by row as float32, or as raw packed rows for lossless repacking.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "read/merge.h"
#include "read/model_folder.h"
#include "read/quant_config.h"

namespace mlx2gguf {

class Adapter;

class SourceTensor {
 public:
  static SourceTensor plain(const StoredTensor& stored);
  // A 2-D float tensor read as its transpose (rows of the result are columns of the stored matrix), e.g. an
  // mlx-lm LoRA factor in the orientation llama.cpp wants.
  static SourceTensor transposed(const StoredTensor& stored);
  static SourceTensor quantized(const StoredTensor& weight, const StoredTensor& scales, const StoredTensor* biases,
                                const QuantSpec& spec);

  // The same data under another logical shape with the same element count (e.g. conv kernels [C, K, 1] read
  // as [C, K]). Quantized tensors keep their last dimension, since codes are grouped along it.
  SourceTensor reshaped(const std::vector<int64_t>& shape) const;

  const std::string& name() const { return name_; }
  // Logical row-major shape, e.g. [out, in] for a linear layer, [E, out, in] for stacked experts.
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t row_length() const { return shape_.empty() ? 1 : shape_.back(); }
  int64_t row_count() const;
  int64_t element_count() const { return row_count() * row_length(); }

  // The MLX quantization of the values read_rows returns: what packed_row() holds. A tensor merged in float32
  // with an adapter has none, whatever its base's storage.
  const std::optional<QuantSpec>& quant() const { return quant_; }
  // Storage type of the values (plain tensors) or of the scales/biases (affine).
  DType value_dtype() const { return value_dtype_; }

  // Rows [first, first + count) as float32: dequantized when the tensor is quantized, merged with its adapter
  // module when it has one.
  void read_rows(int64_t first, int64_t count, float* out) const;

  // Packed codes, scales and biases of one row, for lossless repacking. Usually views of the stored tensors;
  // rows re-quantized after a merge are computed into `buffer` (valid until its next use).
  struct PackedRow {
    const uint8_t* codes;   // LSB-first bit stream of row_length() codes
    const uint8_t* scales;  // groups_per_row() values (value_dtype() for affine, U8 codes for the fp modes)
    const uint8_t* biases;  // affine only, else null
  };
  struct PackedRowBuffer {
    std::vector<float> values;
    std::vector<uint8_t> codes, scales, biases;
  };
  PackedRow packed_row(int64_t row, PackedRowBuffer& buffer) const;
  const StoredTensor& weight() const { return *weight_; }
  const StoredTensor* scales() const { return scales_; }
  const StoredTensor* biases() const { return biases_; }
  int64_t packed_row_bytes() const { return weight_->bytes.size() / static_cast<size_t>(row_count()); }
  int64_t groups_per_row() const { return quant_ ? row_length() / quant_->group_size : 0; }

  // How the stored bytes are quantized (differs from quant() once merged in float32).
  const std::optional<QuantSpec>& stored_quant() const { return stored_quant_; }

  // The adapter merge applied to this tensor's rows, if any.
  const RowMerge* merge() const { return merge_.get(); }
  // Merges `merge`'s module into this tensor (SourceModel::apply_adapter does this for every module).
  void set_merge(std::shared_ptr<const RowMerge> merge);

  // The stored bytes of row `row` when they are exactly the row's values in value_dtype() (a plain float tensor,
  // not transposed, not merged), so that writing that type can copy them; else null.
  const uint8_t* verbatim_row(int64_t row) const;

 private:
  std::string name_;
  std::vector<int64_t> shape_;
  std::optional<QuantSpec> quant_;
  std::optional<QuantSpec> stored_quant_;  // how the stored bytes are quantized (quant_ unless merged)
  DType value_dtype_ = DType::F32;
  DType stored_value_dtype_ = DType::F32;
  bool transposed_ = false;
  std::shared_ptr<const RowMerge> merge_;
  const StoredTensor* weight_ = nullptr;
  const StoredTensor* scales_ = nullptr;
  const StoredTensor* biases_ = nullptr;

  void read_stored_rows(int64_t first, int64_t count, float* out) const;
  PackedRow requantized_row(int64_t row, PackedRowBuffer& buffer) const;
};

class SourceModel {
 public:
  static SourceModel open(const std::filesystem::path& dir);

  const ModelFolder& folder() const { return folder_; }
  const nlohmann::json& config() const { return folder_.text_config(); }
  const QuantConfig& quant_config() const { return quant_config_; }

  const std::map<std::string, SourceTensor>& tensors() const { return tensors_; }
  const SourceTensor* find(const std::string& name) const;
  const SourceTensor& require(const std::string& name) const;
  bool has(const std::string& name) const { return find(name) != nullptr; }

  // Applies a fine-tune of this model: LoRA / DoRA modules are merged into their base tensors under `rule`
  // (rows computed as they are read), a full fine-tune's tensors replace the base's. `adapter` must outlive the
  // model and must have been opened against it.
  void apply_adapter(const Adapter& adapter, MergeRule rule);

 private:
  ModelFolder folder_;
  QuantConfig quant_config_;
  std::map<std::string, SourceTensor> tensors_;
};

}  // namespace mlx2gguf
