#pragma once
// The whole conversion: read the MLX folder → plan the GGUF → encode tensors in parallel → write.
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "plan/adapter_plan.h"
#include "plan/planner.h"
#include "read/adapter.h"
#include "write/gguf_split.h"
#include "report/plan_table.h"

namespace mlx2gguf {

struct ImportanceMatrix;

struct ConvertOptions {
  std::filesystem::path model_dir;
  std::filesystem::path outfile;  // empty: llama.cpp's default name from the metadata, in the current directory
  PlanOptions plan;
  std::optional<AdapterLocation> adapter;  // a fine-tune to merge (--adapter-path / --adapter-file)
  MergeRule merge_rule = MergeRule::Float32;  // LikeMlxFuse: --fuse-requantize
  int threads = 0;  // 0 = all hardware threads
  std::function<void(const std::string&)> log;  // progress and summary lines (nullptr = silent)
  bool allow_non_finite = false;  // write NaN / infinite weights instead of refusing them (--allow-non-finite)
  SplitLimits split;  // --split-max-size / --split-max-tensors: a split set in llama.cpp's layout
  bool dry_run = false;  // plan only: the summary describes the file without writing it (--dry-run)
  // An importance matrix from llama-imatrix (--imatrix): quantized tensors are weighted by it as llama-quantize does.
  std::optional<std::filesystem::path> imatrix;
};

// Tensors written in one GGUF type.
struct TypeSummary {
  int tensors = 0;
  int64_t elements = 0;
  uint64_t bytes = 0;
  std::map<std::string, int> notes;  // why tensors got this type (lossless repack, fallback reasons) → count
};

// What merging an adapter did to the file.
struct MergeSummary {
  int tensors = 0;                 // GGUF tensors holding merged values
  uint64_t bytes = 0;              // their size in the file
  int float_from_quantized = 0;    // of those, float tensors whose base was MLX-quantized
  uint64_t float_from_quantized_bytes = 0;
  uint64_t requantized_bytes = 0;  // what those would take re-quantized at the base's quantization (--fuse-requantize)
};

struct ConvertSummary {
  std::map<std::string, TypeSummary> types;  // "Q4_1" → its tensors
  MergeSummary merge;
  uint64_t file_bytes = 0;
  int64_t parameters = 0;
  double seconds = 0;
  std::filesystem::path outfile;  // the file written (the default name when none was given)
  std::vector<std::filesystem::path> files;  // every file written: outfile, or the parts of a split set
  std::vector<PlannedTensor> tensors;  // every tensor of the file, in file order
  bool written = false;                // false for a dry run
  double bits_per_weight() const { return parameters ? 8.0 * static_cast<double>(file_bytes) / static_cast<double>(parameters) : 0; }
};

ConvertSummary convert(const ConvertOptions& options);

// Records an adapter merged into the weights in the plan's general.* metadata (description, finetune, base model).
void describe_merged_adapter(const Adapter& adapter, PlanOptions& options);

struct ConvertAdapterOptions {
  std::filesystem::path base_dir;  // the model folder the adapter was trained on
  AdapterLocation adapter;
  std::filesystem::path outfile;
  AdapterPlanOptions plan;
  int threads = 0;
  std::function<void(const std::string&)> log;
  bool allow_non_finite = false;
  bool dry_run = false;
};

// Writes an mlx-lm LoRA fine-tune as a GGUF LoRA adapter for the GGUF `convert` writes from the base folder.
ConvertSummary convert_adapter(const ConvertAdapterOptions& options);

// Encodes and writes a plan (the second half of convert): tensors in parallel, atomic publish. A NaN or infinite
// value is an error naming its source tensor unless `allow_non_finite`. A SIGINT / SIGTERM (util/cancel.h) stops
// the workers and throws Cancelled; the temporary file is removed either way. With `importance`, tensors encoded
// from floats into a type with a weighted search use its entry of the same name (per expert for stacked experts).
ConvertSummary write_plan(const ConversionPlan& plan, const std::filesystem::path& outfile, int threads,
                          const std::function<void(const std::string&)>& log, bool allow_non_finite = false,
                          const SplitLimits& split = {}, const ImportanceMatrix* importance = nullptr);

// Rows [first, first + count) of the recipe's output, as float32 (row maps, column maps and value ops applied).
void read_recipe_rows(const TensorRecipe& recipe, int64_t first, int64_t count, float* out);
// The same rows of a repacked recipe as GGUF blocks (recipe.repack).
void repack_recipe_rows(const TensorRecipe& recipe, int64_t first, int64_t count, uint8_t* out);

// Whether the recipe's output bytes are its sources' stored bytes rearranged: float sources stored in the output
// type, with no value op. Those rows are copied (copy_recipe_rows) instead of read as floats and encoded.
bool copies_stored_bytes(const TensorRecipe& recipe);
// Rows [first, first + count) of such a recipe: the same bytes as encode_rows(read_recipe_rows(...)) for finite
// values. A view of the mapped source when the rows are one stretch of it, else gathered into `buffer`.
std::span<const uint8_t> copy_recipe_rows(const TensorRecipe& recipe, int64_t first, int64_t count,
                                          std::vector<uint8_t>& buffer);

}  // namespace mlx2gguf
