# Test oracles: the real llama.cpp (prebuilt CPU binaries shipped by the npm package node-llama-cpp) and the
# real Hugging Face tokenizers (npm @anush008/tokenizers), all installed into tests/oracle/node_modules by
# scripts/setup.sh. Nothing here builds llama.cpp: its headers come from the source bundle of the very same
# release as the binaries, so declarations always match the libraries we link.

set(MLX2GGUF_ORACLE_DIR ${CMAKE_SOURCE_DIR}/tests/oracle)
set(MLX2GGUF_ORACLE_NODE_MODULES ${MLX2GGUF_ORACLE_DIR}/node_modules)
set(MLX2GGUF_LLAMA_BIN_DIR ${MLX2GGUF_ORACLE_NODE_MODULES}/@node-llama-cpp/linux-x64/bins/linux-x64)
set(MLX2GGUF_LLAMA_BUNDLE ${MLX2GGUF_ORACLE_NODE_MODULES}/node-llama-cpp/llama/gitRelease.bundle)

if(NOT IS_DIRECTORY ${MLX2GGUF_ORACLE_NODE_MODULES})
  message(FATAL_ERROR "Test oracles are not installed (${MLX2GGUF_ORACLE_NODE_MODULES} is missing): "
                      "run scripts/setup.sh, or configure with -DMLX2GGUF_TESTS=OFF.")
endif()
if(NOT IS_DIRECTORY ${MLX2GGUF_LLAMA_BIN_DIR} OR NOT EXISTS ${MLX2GGUF_LLAMA_BUNDLE})
  message(FATAL_ERROR "node-llama-cpp is incomplete in ${MLX2GGUF_ORACLE_NODE_MODULES} "
                      "(no prebuilt linux-x64 binaries or no llama.cpp source bundle): run scripts/setup.sh.")
endif()

# Re-run the checks below whenever npm reinstalls a different release.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${MLX2GGUF_LLAMA_BUNDLE} ${MLX2GGUF_ORACLE_DIR}/package-lock.json)

# --- llama.cpp headers, from the bundle (cloned once; cloned again only if the bundle's revision changes) ---
find_package(Git REQUIRED)
set(MLX2GGUF_LLAMA_SRC ${CMAKE_BINARY_DIR}/llama.cpp-src)
execute_process(COMMAND ${GIT_EXECUTABLE} bundle list-heads ${MLX2GGUF_LLAMA_BUNDLE} HEAD
                OUTPUT_VARIABLE bundle_heads RESULT_VARIABLE bundle_rc ERROR_VARIABLE bundle_err)
if(NOT bundle_rc EQUAL 0)
  message(FATAL_ERROR "Cannot read the llama.cpp source bundle ${MLX2GGUF_LLAMA_BUNDLE}: ${bundle_err}")
endif()
string(REGEX MATCH "^[0-9a-f]+" bundle_revision "${bundle_heads}")

set(checked_out_revision "")
if(EXISTS ${MLX2GGUF_LLAMA_SRC}/include/llama.h)
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${MLX2GGUF_LLAMA_SRC} rev-parse HEAD
                  OUTPUT_VARIABLE checked_out_revision OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
if(NOT checked_out_revision STREQUAL bundle_revision)
  message(STATUS "Extracting llama.cpp ${bundle_revision} headers from ${MLX2GGUF_LLAMA_BUNDLE}")
  # Clone next to the final place and rename, so an interrupted clone never looks complete.
  file(REMOVE_RECURSE ${MLX2GGUF_LLAMA_SRC} ${MLX2GGUF_LLAMA_SRC}.partial)
  execute_process(COMMAND ${GIT_EXECUTABLE} clone --quiet ${MLX2GGUF_LLAMA_BUNDLE} ${MLX2GGUF_LLAMA_SRC}.partial
                  RESULT_VARIABLE clone_rc ERROR_VARIABLE clone_err)
  if(NOT clone_rc EQUAL 0 OR NOT EXISTS ${MLX2GGUF_LLAMA_SRC}.partial/include/llama.h)
    message(FATAL_ERROR "git clone of ${MLX2GGUF_LLAMA_BUNDLE} failed: ${clone_err}")
  endif()
  file(RENAME ${MLX2GGUF_LLAMA_SRC}.partial ${MLX2GGUF_LLAMA_SRC})
endif()

# --- prebuilt libraries (their file names carry the llama.cpp release, e.g. libllama.v0.4.0.so) ---
function(mlx2gguf_find_prebuilt out_var)
  set(candidates "")
  foreach(pattern IN LISTS ARGN)
    file(GLOB found ${MLX2GGUF_LLAMA_BIN_DIR}/${pattern})
    list(APPEND candidates ${found})
  endforeach()
  list(REMOVE_DUPLICATES candidates)
  list(LENGTH candidates count)
  if(NOT count EQUAL 1)
    message(FATAL_ERROR "Expected exactly one of [${ARGN}] in ${MLX2GGUF_LLAMA_BIN_DIR}, found: '${candidates}'")
  endif()
  set(${out_var} ${candidates} PARENT_SCOPE)
endfunction()
mlx2gguf_find_prebuilt(llama_so libllama.so libllama.v*.so)
mlx2gguf_find_prebuilt(ggml_so libggml.so libggml.v*.so)
mlx2gguf_find_prebuilt(ggml_base_so libggml-base.so)
file(GLOB cpu_backends ${MLX2GGUF_LLAMA_BIN_DIR}/libggml-cpu-*.so)
if(NOT cpu_backends)
  message(FATAL_ERROR "No CPU backend (libggml-cpu-*.so) in ${MLX2GGUF_LLAMA_BIN_DIR}")
endif()

foreach(lib IN ITEMS llama ggml ggml_base)
  add_library(mlx2gguf_prebuilt_${lib} SHARED IMPORTED)
  set_target_properties(mlx2gguf_prebuilt_${lib} PROPERTIES IMPORTED_LOCATION ${${lib}_so})
endforeach()

find_program(MLX2GGUF_NODE_EXECUTABLE node REQUIRED)

# --- the oracle library ---
file(GLOB MLX2GGUF_ORACLE_SOURCES CONFIGURE_DEPENDS ${MLX2GGUF_ORACLE_DIR}/*.cpp)
list(FILTER MLX2GGUF_ORACLE_SOURCES EXCLUDE REGEX ".*_test\\.cpp$")
add_library(llama_oracle STATIC ${MLX2GGUF_ORACLE_SOURCES})
target_include_directories(llama_oracle PUBLIC ${MLX2GGUF_ORACLE_DIR})
# SYSTEM: llama.cpp's headers are not held to this project's warning flags.
target_include_directories(llama_oracle SYSTEM PUBLIC
                           ${MLX2GGUF_LLAMA_SRC}/include ${MLX2GGUF_LLAMA_SRC}/ggml/include)
target_link_libraries(llama_oracle
  PUBLIC mlx2gguf_prebuilt_llama mlx2gguf_prebuilt_ggml mlx2gguf_prebuilt_ggml_base
  PRIVATE nlohmann_json::nlohmann_json Threads::Threads)
# The libraries live inside node_modules: bake their directory into every executable linking the oracle so
# tests run without LD_LIBRARY_PATH (the libraries find each other through their own $ORIGIN run path).
target_link_options(llama_oracle INTERFACE "LINKER:-rpath,${MLX2GGUF_LLAMA_BIN_DIR}")
target_compile_definitions(llama_oracle PRIVATE
  MLX2GGUF_ORACLE_DIR="${MLX2GGUF_ORACLE_DIR}"
  MLX2GGUF_ORACLE_NODE_MODULES="${MLX2GGUF_ORACLE_NODE_MODULES}"
  # The CPU backend is not linked in: ggml picks the best libggml-cpu-<variant>.so for this CPU at run time.
  MLX2GGUF_ORACLE_BACKEND_DIR="${MLX2GGUF_LLAMA_BIN_DIR}"
  MLX2GGUF_NODE_EXECUTABLE="${MLX2GGUF_NODE_EXECUTABLE}")
