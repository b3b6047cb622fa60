#pragma once
// `mlx2gguf verify`: checks a GGUF file tensor by tensor against the model folder it was converted from.
//
// The plan of the conversion says what every GGUF tensor must hold: source rows (MLX-dequantized, merged with an
// adapter, reordered, offset) and a type. Each tensor of the file is decoded and compared with what its type allows
// the planned values to become:
//   * a tensor the plan repacks (MLX codes moved into the same GGUF type) must decode exactly to the repacked
//     blocks; those equal the MLX-dequantized source values, so it is reported `lossless`;
//   * any other tensor of type T must decode exactly to decode_T(encode_T(expected)): for F32 the expected values
//     themselves, for F16 / BF16 their rounding to the type, for quantized types what mlx2gguf's encoders (which
//     write the same bytes as ggml's quantizers) make of them.
// Every tensor also gets its error against the source values: relative RMSE and maximum absolute difference.
// Rows are read in chunks, so memory does not grow with the model.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan/planner.h"
#include "read/adapter.h"
#include "read/merge.h"

namespace mlx2gguf {

struct VerifyOptions {
  std::filesystem::path gguf;
  std::filesystem::path model_dir;
  std::optional<AdapterLocation> adapter;     // the fine-tune merged into the file
  MergeRule merge_rule = MergeRule::Float32;  // LikeMlxFuse: the file was written with --fuse-requantize
  // The --outtype the file was written with; nullopt: the first whose plan gives every tensor the file's type.
  std::optional<OutType> out_type;
  int threads = 0;  // 0 = all hardware threads
};

struct TensorVerdict {
  std::string name;
  GgmlType type = GgmlType::F32;  // in the file
  bool repacked = false;          // the plan moves MLX codes into this type
  bool checked = false;           // false when the file's type cannot be decoded
  bool lossless = false;          // every value equals the source value bit for bit
  bool passed = false;            // every value equals what the type allows (see above)
  int64_t elements = 0;
  int64_t wrong_values = 0;       // values differing from what the type allows
  int64_t first_wrong_row = -1;
  double rel_rmse = 0;            // sqrt(Σ(file − source)² / Σ source²) over finite values
  double max_abs = 0;             // max |file − source| over finite values
};

struct VerifyReport {
  std::filesystem::path gguf, model_dir;
  std::string out_type;                 // the --outtype whose plan the file was compared with
  std::vector<TensorVerdict> tensors;   // file order; tensors the plan also has, with the planned shape
  std::vector<std::string> missing;     // planned tensors the file lacks
  std::vector<std::string> extra;       // file tensors the plan lacks
  std::vector<std::string> layout_differences;    // shape or type differing from the plan, one line each
  std::vector<std::string> metadata_differences;  // metadata keys differing from the plan (reported, not judged)

  // Names of the tensors that make the check fail: wrong values, missing, extra, other shape or type.
  std::vector<std::string> failing_tensors() const;
  bool passed() const { return failing_tensors().empty(); }
};

VerifyReport verify_file(const VerifyOptions& options);

// Human-readable report: one line per tensor, a summary per type and the verdict.
std::string format_report(const VerifyReport& report);
nlohmann::json report_json(const VerifyReport& report);

}  // namespace mlx2gguf
