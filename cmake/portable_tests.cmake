# The unit tests that need no x86-64-only oracle (the prebuilt llama.cpp libraries, the built converter binary):
# one binary, mlx2gguf_portable_tests, that builds for any architecture (scripts/test-arm64.sh runs it on aarch64).
# A test file is left out when it uses the oracle, the end-to-end support or the converter binary (the tests run it as
# a native program); the list is written to oracle-tests.txt in the build folder. Test data in the checkout is found
# through tests/test_paths.cpp, as in the full suite.
find_package(GTest REQUIRED)
include(${CMAKE_SOURCE_DIR}/cmake/test_paths.cmake)
file(GLOB_RECURSE MLX2GGUF_PORTABLE_CANDIDATES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/*_test.cpp)
set(MLX2GGUF_PORTABLE_TEST_SOURCES)
set(MLX2GGUF_ORACLE_TEST_LIST "")
foreach(test_file ${MLX2GGUF_PORTABLE_CANDIDATES})
  file(STRINGS ${test_file} oracle_uses REGEX "llama_oracle|\"oracle/|e2e_support|test_paths::(binary|test_work_dir|man_page)|MLX2GGUF_(BINARY|TEST_WORK_DIR)")
  if(oracle_uses)
    file(RELATIVE_PATH relative ${CMAKE_SOURCE_DIR} ${test_file})
    string(APPEND MLX2GGUF_ORACLE_TEST_LIST "  ${relative}\n")
  else()
    list(APPEND MLX2GGUF_PORTABLE_TEST_SOURCES ${test_file})
  endif()
endforeach()
file(WRITE ${CMAKE_BINARY_DIR}/oracle-tests.txt "${MLX2GGUF_ORACLE_TEST_LIST}")
add_executable(mlx2gguf_portable_tests ${MLX2GGUF_PORTABLE_TEST_SOURCES} ${MLX2GGUF_TEST_PATHS_SOURCE})
target_include_directories(mlx2gguf_portable_tests PRIVATE ${CMAKE_SOURCE_DIR}/tests)
target_link_libraries(mlx2gguf_portable_tests PRIVATE mlx2gguf_testkit GTest::gtest GTest::gtest_main)
