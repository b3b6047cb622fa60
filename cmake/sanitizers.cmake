# Instrumented builds. Included before any target is defined, so that every library and executable of the build
# is compiled and linked alike.
#  - MLX2GGUF_SANITIZE: AddressSanitizer (with leak detection) and UndefinedBehaviorSanitizer; the first finding
#    aborts. float-cast-overflow is part of clang's "undefined" but not of gcc's, so it is named explicitly.
#  - MLX2GGUF_FUZZ: the same plus libFuzzer's coverage instrumentation (clang only), and the targets in fuzz/.
option(MLX2GGUF_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(MLX2GGUF_FUZZ "Build the libFuzzer targets in fuzz/ (clang; implies MLX2GGUF_SANITIZE)" OFF)

if(MLX2GGUF_SANITIZE OR MLX2GGUF_FUZZ)
  set(MLX2GGUF_SANITIZER_FLAGS -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all
                               -fno-omit-frame-pointer)
  add_compile_options(${MLX2GGUF_SANITIZER_FLAGS})
  add_link_options(${MLX2GGUF_SANITIZER_FLAGS})
endif()

if(MLX2GGUF_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "MLX2GGUF_FUZZ needs clang (libFuzzer), not ${CMAKE_CXX_COMPILER_ID}: configure with "
                        "-DCMAKE_CXX_COMPILER=clang++, or use scripts/fuzz.sh")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
