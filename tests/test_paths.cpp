#include "test_paths.h"

namespace test_paths {

std::filesystem::path source_dir() { return MLX2GGUF_SOURCE_DIR; }
std::filesystem::path binary() { return MLX2GGUF_BINARY; }
std::filesystem::path test_work_dir() { return MLX2GGUF_TEST_WORK_DIR; }
std::filesystem::path man_page() { return MLX2GGUF_MAN_PAGE; }
std::string project_version() { return MLX2GGUF_PROJECT_VERSION; }

}  // namespace test_paths
