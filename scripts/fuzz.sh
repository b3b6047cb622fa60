#!/usr/bin/env bash
# Fuzzes every reader of untrusted input with libFuzzer: builds the targets of fuzz/ with clang, AddressSanitizer
# and UndefinedBehaviorSanitizer into build-fuzz/ (again only when sources changed), writes their seed corpora from
# the test models, then runs the targets one after another for SECONDS each (default 60) and prints, per target, the
# inputs executed and the failures found (crashes, sanitizer reports, leaks, out-of-memory, timeouts).
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: config safetensors tokenizer_json sentencepiece adapter gguf
#                                             gguf_split imatrix metadata
# Failing inputs are kept in build-fuzz/findings/TARGET/; replay one with build-fuzz/fuzz_TARGET FILE. The corpus
# each run grows is kept in build-fuzz/corpus/TARGET/ and reused by the next run. Exit status 1 when anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(config safetensors tokenizer_json sentencepiece adapter gguf gguf_split imatrix metadata)

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ is needed (Debian: apt-get install clang)" >&2; exit 1; }
build=build-fuzz
# The compiler is chosen once, when the build folder is created (naming it again would make CMake start over).
compiler=()
[[ -f $build/CMakeCache.txt ]] || compiler=(-DCMAKE_CXX_COMPILER=clang++)
cmake -S . -B "$build" "${compiler[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMLX2GGUF_FUZZ=ON -DMLX2GGUF_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz >/dev/null

rm -rf "$build/seeds" "$build/tmp"
mkdir -p "$build/tmp"
TMPDIR=$PWD/$build/tmp "$build/mlx2gguf-fuzz-seeds" . "$build/seeds" 2>/dev/null

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=0
printf '\n%-16s %12s %10s %s\n' target executions failures "(oom/timeout/crash counted by libFuzzer)"
for target in "${targets[@]}"; do
  binary=$build/fuzz_$target
  [[ -x $binary ]] || { echo "fuzz.sh: no target '$target'" >&2; exit 2; }
  corpus=$build/corpus/$target findings=$build/findings/$target log=$build/logs/$target.log
  mkdir -p "$corpus" "$findings" "$build/logs" "$build/tmp/$target"
  inputs=("$corpus" "$build/seeds/$target")
  for extra in "fuzz/corpus/$target" "tests/data/fuzz-regressions/$target"; do
    [[ -d $extra ]] && inputs+=("$extra")
  done
  before=$(find "$findings" -type f | wc -l)
  # -fork=1: one input at a time in a child process, so that the run goes on after a failure and counts them all.
  TMPDIR=$PWD/$build/tmp/$target "$binary" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -max_total_time="$seconds" -timeout=10 -print_funcs=0 -rss_limit_mb=2048 -max_len=262144 \
    -artifact_prefix="$findings/" "${inputs[@]}" >"$log" 2>&1 || true
  rm -rf "${build:?}/tmp/$target"
  last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -n 1 || true)
  executions=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
  counts=$(sed -E 's|.*oom/timeout/crash: ([0-9]+/[0-9]+/[0-9]+).*|\1|' <<<"$last")
  [[ -n $last ]] || { executions="?"; counts="?/?/?"; }
  # Failing inputs saved by this run (the job counters can miss a failure in the last job).
  total=$(( $(find "$findings" -type f | wc -l) - before ))
  [[ -n $last ]] || { echo "fuzz.sh: $target did not run as expected, see $log" >&2; failed=1; }
  ((total == 0)) || failed=1
  printf '%-16s %12s %10s (%s)\n' "$target" "$executions" "$total" "$counts"
done
((failed == 0)) || echo "failing inputs: $build/findings/ (logs in $build/logs/)"
exit "$failed"
