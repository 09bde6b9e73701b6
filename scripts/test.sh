#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test.
#   scripts/test.sh [ctest arguments]                   Debian's LibTorch, in build/
#   scripts/test.sh --libtorch DIR [ctest arguments]    another LibTorch, in its own build-libtorch-<version>-<hash>/
# DIR is a LibTorch root (DIR/share/cmake/Torch: an unpacked libtorch zip) or a torch wheel's package folder
# (e.g. venv/lib/python3.11/site-packages/torch).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
if [ "${1:-}" = "--libtorch" ] || [[ "${1:-}" == --libtorch=* ]]; then
  if [ "$1" = "--libtorch" ]; then
    [ $# -ge 2 ] || { echo "scripts/test.sh: --libtorch needs a folder (a LibTorch root or a torch wheel's package folder)" >&2; exit 2; }
    libtorch=$2; shift 2
  else
    libtorch=${1#--libtorch=}; shift
  fi
  root=$(cd "$libtorch" 2>/dev/null && pwd -P) || { echo "scripts/test.sh: --libtorch $libtorch: no such folder" >&2; exit 2; }
  config="$root/share/cmake/Torch/TorchConfig.cmake"
  [ -f "$config" ] || {
    echo "scripts/test.sh: --libtorch $libtorch: $config not found (expected a LibTorch root, e.g. libtorch/, or a torch wheel's package folder, e.g. site-packages/torch)" >&2
    exit 2
  }
  # The folder's name: the version TorchConfigVersion.cmake declares and a hash of the root, one per LibTorch.
  version=$(sed -n 's/^set(PACKAGE_VERSION "\([^"]*\)").*/\1/p' "$root/share/cmake/Torch/TorchConfigVersion.cmake" 2>/dev/null | head -1)
  build="build-libtorch-${version:-unknown}-$(printf '%s' "$root" | sha256sum | cut -c1-8)"
  export REGLAGE_BUILD_DIR="$build"
  export REGLAGE_CMAKE_ARGS="${REGLAGE_CMAKE_ARGS:-} -DTorch_DIR=$root/share/cmake/Torch"
  echo "LibTorch $root (${version:-version unknown}): building into $build/"
fi
scripts/bootstrap.sh
# Open MPI refuses to run as root without these (CI runs as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@"
