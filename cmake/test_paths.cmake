# The paths of this checkout reach one test source only, tests/test_paths.cpp: the other test sources compile to the
# same objects in every checkout and build folder (which lets a compiler cache share them). Included by
# cmake/tests.cmake and cmake/portable_tests.cmake (once, when both test binaries are built).
include_guard(GLOBAL)
set(MLX2GGUF_TEST_PATHS_SOURCE ${CMAKE_SOURCE_DIR}/tests/test_paths.cpp)
set_property(SOURCE ${MLX2GGUF_TEST_PATHS_SOURCE} APPEND PROPERTY COMPILE_DEFINITIONS
  MLX2GGUF_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
  MLX2GGUF_PROJECT_VERSION="${PROJECT_VERSION}"
  MLX2GGUF_MAN_PAGE="${MLX2GGUF_MAN_PAGE}"
  MLX2GGUF_BINARY="$<TARGET_FILE:mlx2gguf>"
  MLX2GGUF_TEST_WORK_DIR="${CMAKE_BINARY_DIR}/test-work")
