#!/usr/bin/env bash
# Builds the Debian package of mlx2gguf and checks it the way a user gets it:
#   1. `cmake --install` into a fresh prefix puts the binary and its man page there;
#   2. the .deb, unpacked into an empty root (dpkg-deb -x) once the build tree is deleted, runs `--version` and
#      converts a generated tiny 4-bit model into a file that the package's own `inspect` reads;
#   3. with --chroot: a minimal Debian 12 root is made with mmdebstrap (Debian's packages only, through apt), the
#      .deb is installed there with apt (which brings in exactly the dependencies it declares) and the same
#      commands run inside it.
# The package is left in out/. Usage: scripts/package.sh [--chroot]
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
chroot_test=false
[[ "${1:-}" == "--chroot" ]] && chroot_test=true

build="$repo_root/build-package"
work=$(mktemp -d -t mlx2gguf-package.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

step() { echo "package.sh: $*"; }
fail() { echo "package.sh: FAILED: $*" >&2; exit 1; }

step "building in $build (the tool only, no tests)"
rm -rf "$build"
log="$work/build.log"
{
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMLX2GGUF_TESTS=OFF &&
    cmake --build "$build" -j"$(nproc)" --target mlx2gguf mlx2gguf_man mlx2gguf-make-tiny-model &&
    (cd "$build" && cpack -G DEB)
} >"$log" 2>&1 || { tail -n 40 "$log" >&2; fail "the build or cpack failed"; }
debs=("$build"/mlx2gguf_*.deb)
[[ -f "${debs[0]}" ]] || fail "cpack made no .deb"
mkdir -p out
cp "${debs[0]}" out/
deb="$repo_root/out/$(basename "${debs[0]}")"
step "made $deb"
dpkg-deb --info "$deb" | sed -n 's/^ *\(Package\|Version\|Architecture\|Depends\):/  \1:/p'

# A test model from the generator, made before the build tree goes away.
"$build/mlx2gguf-make-tiny-model" --type llama --quant affine:4:64 --seed 5 --out "$work/model" >/dev/null

step "cmake --install into a fresh prefix"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
[[ -x "$work/prefix/bin/mlx2gguf" ]] || fail "no bin/mlx2gguf under the prefix"
[[ -s "$work/prefix/share/man/man1/mlx2gguf.1" ]] || fail "no share/man/man1/mlx2gguf.1 under the prefix"
"$work/prefix/bin/mlx2gguf" --version

step "deleting the build tree; the unpacked package must work on its own"
rm -rf "$build"
dpkg-deb -x "$deb" "$work/root"
for path in usr/bin/mlx2gguf usr/share/man/man1/mlx2gguf.1; do
  [[ -e "$work/root/$path" ]] || fail "the package has no /$path"
done
if ldd "$work/root/usr/bin/mlx2gguf" | grep -q "not found"; then
  fail "unresolved libraries: $(ldd "$work/root/usr/bin/mlx2gguf" | grep 'not found')"
fi

# Runs the packaged binary (under `root` when given a chroot) on the generated model.
check_run() {
  local label=$1 run=$2 model=$3 out=$4
  local version
  version=$($run --version)
  [[ "$version" =~ ^mlx2gguf\ [0-9]+\.[0-9]+\.[0-9]+\ \(revision\ [0-9a-f]{12}(-dirty)?\)$ ]] ||
    fail "$label: unexpected --version output '$version'"
  echo "  $label: $version"
  $run convert "$model" -o "$out" --quiet || fail "$label: convert failed"
  local tensors
  tensors=$($run inspect "$out" | sed -n 's/.* metadata keys, \([0-9]*\) tensors.*/\1/p')
  [[ "$tensors" == 21 ]] || fail "$label: the converted file has '$tensors' tensors, expected 21"
  echo "  $label: converted the tiny 4-bit llama (21 tensors)"
}
check_run "unpacked package" "$work/root/usr/bin/mlx2gguf" "$work/model" "$work/model.gguf"

if $chroot_test; then
  command -v mmdebstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq mmdebstrap >/dev/null; }
  step "making a minimal Debian 12 root and installing the package there with apt"
  mmdebstrap --quiet --variant=apt bookworm "$work/debian12" >/dev/null
  cp "$deb" "$work/debian12/tmp/"
  cp -r "$work/model" "$work/debian12/tmp/model"
  # mmdebstrap leaves no package lists behind: fetch them, then let apt resolve the package's dependencies.
  chroot "$work/debian12" apt-get update -qq >/dev/null || fail "apt-get update failed in the Debian 12 root"
  chroot "$work/debian12" apt-get install -y -qq "/tmp/$(basename "$deb")" >/dev/null ||
    fail "apt could not install the package in a fresh Debian 12 root"
  check_run "fresh Debian 12 root" "chroot $work/debian12 mlx2gguf" /tmp/model /tmp/model.gguf
fi
step "ok"
