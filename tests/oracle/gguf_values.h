#pragma once
// Metadata values as ggml's own GGUF reader (libggml-base) reads them, typed: what tests compare mlx2gguf's keys
// with, so that neither the expected type nor the value comes from mlx2gguf's reader.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct gguf_context;

namespace oracle {

class GgufValues {
 public:
  // Throws std::runtime_error when ggml rejects the file.
  explicit GgufValues(const std::string& path);
  ~GgufValues();
  GgufValues(const GgufValues&) = delete;
  GgufValues& operator=(const GgufValues&) = delete;

  bool has(const std::string& key) const;
  // ggml's type name of a key ("f32", "i32", "u16", "str", "arr[str]", ...); throws when absent.
  std::string type(const std::string& key) const;
  // Each getter throws when the key is absent or of another type.
  std::string str(const std::string& key) const;
  std::vector<std::string> str_array(const std::string& key) const;
  float f32(const std::string& key) const;
  int32_t i32(const std::string& key) const;
  uint32_t u32(const std::string& key) const;
  uint16_t u16(const std::string& key) const;
  int64_t n_tensors() const;

 private:
  int64_t require(const std::string& key, int type) const;
  std::string path_;
  gguf_context* gguf_ = nullptr;
};

}  // namespace oracle
