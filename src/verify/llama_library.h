#pragma once
// llama.cpp as a shared library loaded at run time (dlopen), for `verify`'s logits check. mlx2gguf never links
// llama.cpp: a user points at the libllama.so of their installation, and without it nothing here is needed.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mlx2gguf {

// Where `verify` looks for libllama when no --llama-lib is given, in this order:
//   1. the file $MLX2GGUF_LLAMA_LIB names (set but missing is an error: it was asked for);
//   2. next to each llama.cpp program found on $PATH (llama-cli, llama-server): its folder and ../lib, both as
//      found and with symlinks resolved (Homebrew links bin/llama-cli into its Cellar);
//   3. the usual library folders: /opt/homebrew/lib, /usr/local/lib, /usr/lib/<multiarch>, /usr/lib64, /usr/lib.
// In each folder: libllama.so, then libllama.dylib.
struct LlamaSearch {
  std::optional<std::string> env_library;  // $MLX2GGUF_LLAMA_LIB
  std::string path;                        // $PATH
  std::vector<std::filesystem::path> system_dirs;

  // The current process's environment and the platform's library folders.
  static LlamaSearch from_environment();
};

struct FoundLlamaLibrary {
  std::filesystem::path path;
  std::string how;  // e.g. "next to llama-cli on PATH (/usr/bin/llama-cli)"
};

// The first libllama of the search order. Fails listing every place it looked.
FoundLlamaLibrary find_llama_library(const LlamaSearch& search);

class LlamaLibrary {
 public:
  // Loads `path` (libllama.so; a symlink is followed, so that the ggml libraries beside the real file are found) and
  // the ggml CPU backends found next to it. Fails naming the file and dlerror().
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
