#pragma once
// The conversion plan: every output tensor as a recipe over source tensors, and all GGUF metadata, decided
// before a single weight byte is read or written.
#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "read/source_model.h"
#include "gguf/gguf_types.h"

namespace mlx2gguf {

// Elementwise transforms some architectures need on the way to GGUF.
enum class ValueOp {
  None,
  AddOne,       // zero-centred RMSNorm weights stored as w, GGUF wants 1 + w
  NegExp,       // Gated DeltaNet A_log → ssm_a = -exp(A_log)
};

// How one output tensor is made. Rows are the last-dimension vectors of the logical row-major shape; all layout
// fixes (q/k rope permutation, head reorders, expert stacking or splitting) are row and column maps, so they
// apply identically to float rows, packed quantized rows and adapter factors.
struct TensorRecipe {
  std::string name;               // GGUF tensor name
  std::vector<int64_t> shape;     // logical row-major shape of the output; GGUF ne is its reverse
  GgmlType type = GgmlType::F32;  // decided by the type planner
  bool keep_f32 = false;          // must stay F32 whatever the output type (norms, routers, conv kernels ...)

  std::vector<const SourceTensor*> sources;  // their rows are concatenated in this order
  std::vector<int64_t> row_map;     // output row r = concatenated source row row_map[r]; empty = identity
  std::vector<int64_t> column_map;  // output column c = source column column_map[c]; empty = identity
  ValueOp op = ValueOp::None;
  std::vector<float> generated;     // values of a tensor computed by the converter (no sources), e.g. rope_freqs

  // Set by the type planner when the rows are moved from the MLX packed codes rather than encoded from floats.
  bool repack = false;
  std::vector<int64_t> repack_groups;  // column_map expressed in whole quantization groups (empty = identity)
  std::string type_note;               // why this type, for the run summary (lossless repack, or why not)

  // Set by the type planner when a K-type is encoded from MLX affine values with the search that keeps their codes
  // (encode/mlx_aware_k_quants.h): the MLX quantization of the source.
  std::optional<QuantSpec> mlx_aware_source;

  int64_t row_length() const { return shape.empty() ? 1 : shape.back(); }
  int64_t row_count() const;
  std::vector<int64_t> ne() const { return {shape.rbegin(), shape.rend()}; }
};

struct ConversionPlan {
  GgufMetadata metadata;
  // In file order. A deque: the recipe references PlanBuilder hands out stay valid while more tensors are mapped.
  std::deque<TensorRecipe> tensors;
  std::deque<SourceTensor> views;  // reshaped views of source tensors that recipes point to
};

// What the architecture files use to describe their mapping. It checks shapes, records which source tensors
// were used, and refuses to finish while a source tensor was neither mapped nor explicitly dropped, so that
// nothing is silently lost. The recipes it returns stay valid for the plan's life.
class PlanBuilder {
 public:
  PlanBuilder(const SourceModel& model, ConversionPlan& plan) : model_(model), plan_(plan) {}

  const SourceModel& model() const { return model_; }
  const nlohmann::json& config() const { return model_.config(); }
  GgufMetadata& metadata() { return plan_.metadata; }
  std::string arch() const;  // general.architecture, once set

  bool has(const std::string& source) const { return model_.has(source); }

  // Maps a whole source tensor to an output tensor, checking its shape ({} = no check).
  TensorRecipe& map(const std::string& gguf_name, const std::string& source, const std::vector<int64_t>& expected_shape);
  // Same, only when the source exists; returns nullptr otherwise.
  TensorRecipe* map_optional(const std::string& gguf_name, const std::string& source,
                             const std::vector<int64_t>& expected_shape);
  // Maps a source tensor read under another shape (same elements), e.g. conv kernels [C, K, 1] → [C, K].
  TensorRecipe& map_reshaped(const std::string& gguf_name, const std::string& source,
                             const std::vector<int64_t>& stored_shape, const std::vector<int64_t>& shape);
  // Output tensor whose values the converter computes.
  TensorRecipe& generate(const std::string& gguf_name, std::vector<float> values);
  // Output tensor stacking several sources along a new leading axis (legacy per-expert tensors).
  TensorRecipe& stack(const std::string& gguf_name, const std::vector<std::string>& sources,
                      const std::vector<int64_t>& expected_item_shape);

  // Source tensors that have no place in the GGUF file (e.g. rotary frequency buffers, vision towers).
  void drop_if(const std::function<bool(const std::string&)>& predicate);

  // Fails naming every source tensor that was neither mapped nor dropped.
  void check_all_used() const;

  // Hyper-parameter helpers: read from the config (clear error when missing), write GGUF keys.
  int64_t cfg_int(const std::string& key) const;
  int64_t cfg_int(const std::string& key, int64_t fallback) const;
  // A size or count of the model's structure (widths, heads, layers, experts): an error unless 1 ≤ value ≤ 2^24, so
  // that no zero divides and no absurd value sizes an allocation.
  int64_t cfg_count(const std::string& key) const;
  int64_t cfg_count(const std::string& key, int64_t fallback) const;
  double cfg_float(const std::string& key) const;
  double cfg_float(const std::string& key, double fallback) const;
  bool cfg_bool(const std::string& key, bool fallback) const;
  void kv_u32(const std::string& key_suffix, int64_t value);  // "{arch}." + suffix
  void kv_f32(const std::string& key_suffix, double value);
  void kv_str(const std::string& key_suffix, const std::string& value);

 private:
  const SourceModel& model_;
  ConversionPlan& plan_;
  std::set<std::string> used_;
};

}  // namespace mlx2gguf
