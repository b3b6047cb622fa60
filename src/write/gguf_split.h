#pragma once
// Split GGUF outputs in llama.cpp's layout (gguf-split, convert_hf_to_gguf.py --split-max-size): files
// `<prefix>-00001-of-0000N.gguf`, the first holding all metadata, every file holding `split.no` (u16, 0-based),
// `split.count` (u16) and `split.tensors.count` (i32, the tensors of the whole set) and its own tensors with offsets
// into its own data section. llama.cpp loads the set from the first file.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "write/gguf_file.h"

namespace mlx2gguf {

struct SplitLimits {
  uint64_t max_bytes = 0;    // tensor data per file (0: no limit)
  int64_t max_tensors = 0;   // tensors per file (0: no limit)
  bool active() const { return max_bytes > 0 || max_tensors > 0; }
};

// "50G", "500M", "300K" or a byte count, as llama.cpp's --split-max-size reads it (decimal units).
uint64_t parse_split_size(const std::string& text);

// The file of each tensor, in order: as llama.cpp splits, a new file starts when the current one holds a tensor
// already and either has `max_tensors` or would grow past `max_bytes` of tensor data with this one.
std::vector<size_t> assign_split_parts(const std::vector<GgufTensorInfo>& tensors, const SplitLimits& limits);

// `<outfile without .gguf>-%05d-of-%05d.gguf` for part `index` (0-based) of `count`.
std::filesystem::path split_part_path(const std::filesystem::path& outfile, size_t index, size_t count);

// Writes one file, or a split set when the limits call for more than one (a set of one is the plain file, as in
// llama.cpp). Every part is written to its own temporary file; commit() flushes them all and only then renames
// them, the first file last, so llama.cpp never finds a set whose first file is published before the others; on
// any failure, cancellation included, the temporary files are removed and parts already renamed are removed again.
class GgufSplitWriter {
 public:
  GgufSplitWriter(const std::filesystem::path& outfile, const GgufMetadata& metadata,
                  std::vector<GgufTensorInfo> tensors, const SplitLimits& limits);
  ~GgufSplitWriter();
  GgufSplitWriter(const GgufSplitWriter&) = delete;
  GgufSplitWriter& operator=(const GgufSplitWriter&) = delete;

  size_t part_count() const { return parts_.size(); }
  const std::vector<std::filesystem::path>& paths() const { return paths_; }
  uint64_t file_size() const;  // all parts together

  // Writes `bytes` at `offset` within tensor `index` (its index in the tensors given). Thread-safe as GgufWriter.
  void write(size_t index, uint64_t offset, std::span<const uint8_t> bytes);
  void commit();

 private:
  std::vector<std::filesystem::path> paths_;
  std::vector<std::unique_ptr<GgufWriter>> parts_;
  std::vector<std::pair<size_t, size_t>> location_;  // tensor → (part, index within the part)
};

// A GGUF file or a whole split set opened from any of its files' names (normally the first): every part read and
// checked against the first (split.no, split.count, total tensor count, no tensor twice).
struct GgufSplitSet {
  struct Tensor {
    GgufTensorInfo info;
    size_t part = 0;
    uint64_t file_offset = 0;  // of its data, from the start of its part's file
  };
  std::vector<std::filesystem::path> paths;
  std::vector<GgufFile> parts;
  std::vector<Tensor> tensors;  // in set order
  const GgufMetadata& metadata() const { return parts.front().metadata; }
  uint64_t total_bytes() const;

  static GgufSplitSet open(const std::filesystem::path& path);
};

}  // namespace mlx2gguf
