#pragma once
// One exception type for every user-facing failure: the message names the file or tensor and what is wrong.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace mlx2gguf {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace mlx2gguf
