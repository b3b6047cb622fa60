#pragma once
// Shared by the libFuzzer targets and the seed generator: a scratch directory per process, the way inputs become
// files (the readers take paths and memory-map them), the small generated models that inputs are bound to, and the
// rule every target checks: a hostile input may only end in mlx2gguf::Error, the one exception type whose message
// names the file and what is wrong. Any other exception, a crash, a leak, undefined behaviour or an allocation far
// beyond the input's size is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gen/tiny_adapter.h"
#include "gen/tiny_model.h"
#include "util/error.h"

namespace mlx2gguf::fuzz {

// A directory private to this process under $TMPDIR, created on first use and removed at exit.
const std::filesystem::path& scratch_dir();

// Replaces `path` with exactly these bytes.
void write_file(const std::filesystem::path& path, std::string_view bytes);

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Inputs that carry two files: the text before the first NUL byte and the bytes after it (JSON never holds a raw
// NUL, so a JSON file can lead). Without a NUL the second part is absent.
struct TwoParts {
  std::string_view first;
  std::string_view second;
  bool has_second = false;
};
TwoParts split_at_nul(std::string_view input);

// Inputs that carry several text files: the pieces between NUL bytes, at most `count` (the last piece keeps any
// further NULs); missing pieces are absent (std::nullopt), an empty piece is an empty file.
std::vector<std::optional<std::string_view>> split_pieces(std::string_view input, size_t count);

// Runs `body` on one input: mlx2gguf::Error is the expected way to refuse it; anything else escaping is reported
// and aborts, so libFuzzer records the input.
template <typename Body>
void expect_clean_outcome(Body&& body) {
  try {
    body();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "escaped exception that is not mlx2gguf::Error: %s\n", e.what());
    std::abort();
  }
}

// The generated model folders inputs are bound to. Config inputs are written into a copy of the folder of their
// model_type (quantized or not), adapter inputs are bound to a dense or a mixture-of-experts base.
gen::TinyModelSpec config_base_spec(const std::string& model_type, bool quantized);
gen::TinyModelSpec adapter_base_spec(bool experts);

// The three files of a split GGUF set converted from a one-layer generated llama, made on first use.
const std::vector<std::string>& generated_split_set();

// The folder of `spec` under scratch_dir(), written on first use (`key` names it).
const std::filesystem::path& generated_model(const std::string& key, const gen::TinyModelSpec& spec);

}  // namespace mlx2gguf::fuzz
