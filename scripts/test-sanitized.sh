#!/usr/bin/env bash
# The test suite built with AddressSanitizer (leak detection included) and UndefinedBehaviorSanitizer into
# build-asan/; the first finding fails the test that triggered it. The llama.cpp oracle libraries come prebuilt from
# npm and are not instrumented: they run inside the instrumented tests unchanged (the sanitizer runtime is part of
# the test executable, so nothing needs preloading).
#   scripts/test-sanitized.sh          every test except the long end-to-end comparisons in llama.cpp (what CI runs)
#   scripts/test-sanitized.sh --all    the whole suite
# Further arguments are passed to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Suites whose tests convert and evaluate whole models in llama.cpp many times over: they exercise the same readers
# and encoders as the unit and bad-input tests, at many times the cost under the sanitizers.
slow=$(grep -v '^#' scripts/slow-suites.txt | paste -sd '|')
selection=(-E "$slow")
if [[ ${1:-} == --all ]]; then
  selection=()
  shift
fi

scripts/setup.sh
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DMLX2GGUF_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)" --target mlx2gguf mlx2gguf_tests

export ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure -j"$(nproc)" "${selection[@]}" "$@"
