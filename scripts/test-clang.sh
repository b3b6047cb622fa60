#!/usr/bin/env bash
# The test suite built with clang++ (against the system's libstdc++) into build-clang/, so that the code stays
# portable between compilers: gcc builds build/, this builds the same sources with clang's stricter and different
# diagnostics and code generation, and runs the tests on that build.
#   scripts/test-clang.sh          every test except the long end-to-end comparisons in llama.cpp
#   scripts/test-clang.sh --all    the whole suite
# Further arguments are passed to ctest. CXX picks another clang (e.g. CXX=clang++-16).
set -euo pipefail
cd "$(dirname "$0")/.."

# The suites that convert and evaluate whole models in llama.cpp many times over (shared with test-sanitized.sh):
# they run the same readers and encoders as the unit and bad-input tests.
slow=$(grep -v '^#' scripts/slow-suites.txt | paste -sd '|')
selection=(-E "$slow")
if [[ ${1:-} == --all ]]; then
  selection=()
  shift
fi

cxx=${CXX:-clang++}
command -v "$cxx" >/dev/null || { echo "test-clang.sh: $cxx is needed (Debian: apt-get install clang)" >&2; exit 1; }
scripts/setup.sh
cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
cmake --build build-clang -j"$(nproc)"
ctest --test-dir build-clang --output-on-failure -j"$(nproc)" "${selection[@]}" "$@"
