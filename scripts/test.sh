#!/usr/bin/env bash
# The whole test suite: set-up, build, then every unit, oracle and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
