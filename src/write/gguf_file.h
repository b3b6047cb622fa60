#pragma once
// GGUF v3 files. The writer lays out the whole file first (metadata, tensor infos, aligned offsets), then
// takes tensor bytes in any order and from any thread, and publishes the file by renaming a temporary file
// only when every byte is written. The reader parses a file for `inspect` and for tests.
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "gguf/gguf_types.h"

namespace mlx2gguf {

constexpr uint64_t kGgufAlignment = 32;

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order: ne[0] is the contiguous dimension
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;      // relative to the data section
  uint64_t size_bytes() const;
  int64_t element_count() const;
};

// The size of the file GgufWriter would write for these tensors, without writing anything.
uint64_t gguf_file_size(const GgufMetadata& metadata, std::vector<GgufTensorInfo> tensors);

class GgufWriter {
 public:
  // Computes the layout and creates a uniquely named `<path>.XXXXXX.partial` next to the output, with the whole
  // file's space reserved up front (a full disk fails here) and the header written.
  GgufWriter(std::filesystem::path path, const GgufMetadata& metadata, std::vector<GgufTensorInfo> tensors);
  ~GgufWriter();  // removes the temporary file unless commit() succeeded
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  uint64_t file_size() const { return data_start_ + data_size_; }
  const std::filesystem::path& temp_path() const { return temp_path_; }

  // Writes `bytes` at `offset` within tensor `index`. Safe to call concurrently for disjoint ranges.
  void write(size_t index, uint64_t offset, std::span<const uint8_t> bytes);
  // Flushes and atomically renames the temporary file to the final path, then flushes the directory entry.
  void commit();
  // commit() in two steps, for a set of files published together (split outputs): flush every file first, then
  // rename them all. publish() also flushes the directory entry.
  void flush();
  void publish();
  // Removes a published file again (a later file of its set could not be published).
  void unpublish();

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  std::vector<GgufTensorInfo> tensors_;
  uint64_t data_start_ = 0;
  uint64_t data_size_ = 0;
  int fd_ = -1;
  bool committed_ = false;
};

struct GgufFile {
  uint32_t version = 0;
  GgufMetadata metadata;
  std::vector<GgufTensorInfo> tensors;
  uint64_t data_start = 0;
  uint64_t file_size = 0;

  // Parses header, metadata and tensor infos (tensor data is not read).
  static GgufFile read(const std::filesystem::path& path);
};

}  // namespace mlx2gguf
