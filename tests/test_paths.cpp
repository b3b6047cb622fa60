#include "test_paths.h"

namespace test_paths {

std::filesystem::path source_dir() { return MLX2GGUF_SOURCE_DIR; }
std::filesystem::path binary() { return MLX2GGUF_BINARY; }
std::filesystem::path test_work_dir() { return MLX2GGUF_TEST_WORK_DIR; }

}  // namespace test_paths
