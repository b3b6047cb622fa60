#pragma once
// llama.cpp as a shared library loaded at run time (dlopen), for `verify`'s logits check. mlx2gguf never links
// llama.cpp: a user points at the libllama.so of their installation, and without it nothing here is needed.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace mlx2gguf {

class LlamaLibrary {
 public:
  // Loads `path` (libllama.so) and the ggml CPU backends found next to it. Fails naming the file and dlerror().
  static std::unique_ptr<LlamaLibrary> open(const std::filesystem::path& path);
  ~LlamaLibrary();
  LlamaLibrary(const LlamaLibrary&) = delete;
  LlamaLibrary& operator=(const LlamaLibrary&) = delete;

  // llama.cpp's logits at every position of `tokens` (positions 0..n-1, one sequence, one batch), row-major
  // [tokens][vocab]; `vocab` receives the vocabulary size. Fails with llama.cpp's last error message.
  std::vector<float> logits(const std::filesystem::path& gguf, const std::vector<int32_t>& tokens, int64_t& vocab);

  struct Api;

 private:
  LlamaLibrary() = default;
  void* handle_ = nullptr;
  std::unique_ptr<Api> api_;
};

}  // namespace mlx2gguf
