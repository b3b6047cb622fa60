# libFuzzer targets (fuzz/fuzz_<target>.cpp, one per reader) and the seed generator, see scripts/fuzz.sh.
file(GLOB MLX2GGUF_FUZZ_TARGET_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/fuzz/fuzz_*.cpp)

set(MLX2GGUF_FUZZ_TARGETS "")
foreach(source IN LISTS MLX2GGUF_FUZZ_TARGET_SOURCES)
  get_filename_component(name ${source} NAME_WE)
  add_executable(${name} ${source})
  target_link_libraries(${name} PRIVATE mlx2gguf_fuzz_inputs)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  list(APPEND MLX2GGUF_FUZZ_TARGETS ${name})
endforeach()

add_executable(mlx2gguf-fuzz-seeds ${CMAKE_SOURCE_DIR}/fuzz/make_seeds.cpp)
target_link_libraries(mlx2gguf-fuzz-seeds PRIVATE mlx2gguf_fuzz_inputs)

add_custom_target(fuzz DEPENDS ${MLX2GGUF_FUZZ_TARGETS} mlx2gguf-fuzz-seeds)
