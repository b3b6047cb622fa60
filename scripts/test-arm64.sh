#!/usr/bin/env bash
# Builds mlx2gguf for 64-bit ARM (the CPUs of Apple Silicon Macs) with Debian's cross compiler and runs the unit,
# encoder and repack tests under qemu-user: the NEON kernels must write the scalar kernels' bytes, and everything
# else must behave as on x86-64. Tests that need the llama.cpp oracle are not built: its prebuilt libraries are
# x86-64 only (on x86-64, those tests prove the scalar kernels against ggml). Run as root on Debian 12; safe to
# run again (it installs only what is missing and rebuilds incrementally in build-arm64/).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++-aarch64-linux-gnu qemu-user cmake nlohmann-json3-dev libcli11-dev
          libfmt-dev:arm64 libtbb-dev:arm64 libgtest-dev:arm64)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -qq
fi
installed=$(dpkg-query -W -f='${Package}:${Architecture} ${Status}\n' 2>/dev/null | awk '/ install ok installed$/ {print $1}')
missing=()
for package in "${packages[@]}"; do
  name=${package%%:*}
  arch=${package#*:}
  [[ $arch == "$package" ]] && arch='amd64 all arm64'
  # Fixed-string matches: package names such as g++-aarch64-linux-gnu are not regular expressions.
  found=
  for candidate in $arch; do
    grep -qxF "$name:$candidate" <<<"$installed" && found=1
  done
  [[ -n $found ]] || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== cross-building for aarch64 into build-arm64/"
cmake -S . -B build-arm64 -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake \
  -DMLX2GGUF_TESTS=OFF -DMLX2GGUF_PORTABLE_TESTS=ON >/dev/null
cmake --build build-arm64 -j"$(nproc)" --target mlx2gguf mlx2gguf_portable_tests
file build-arm64/mlx2gguf_portable_tests | grep -q 'ARM aarch64' || { echo "not an aarch64 binary" >&2; exit 1; }

echo "== tests left out on arm64 (they need the x86-64 llama.cpp oracle):"
cat build-arm64/oracle-tests.txt
echo "== running the portable tests under qemu-aarch64"
# The loader and libc must come from the same glibc build: -L / takes both from the arm64 multiarch packages (the
# ones the binary was linked against through libfmt/libtbb). The cross toolchain's own copies in
# /usr/aarch64-linux-gnu are an older build of glibc; its loader with the multiarch libc hangs in the first
# pthread_create.
qemu-aarch64 -L / build-arm64/mlx2gguf_portable_tests "$@"
