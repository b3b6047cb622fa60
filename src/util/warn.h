#pragma once
// Warnings: something in the input that does not stop the conversion but that the user should know about.
#include <fmt/format.h>

#include <cstdio>
#include <string>

namespace mlx2gguf {

inline void warn(const std::string& message) { fmt::print(stderr, "mlx2gguf: warning: {}\n", message); }

}  // namespace mlx2gguf
