#!/usr/bin/env bash
# Wheels bench/gpu_check.py needs on a CUDA machine that has torch, transformers, scikit-learn,
# pandas, matplotlib, tqdm and safetensors but not the project's .venv (Python 3.12 there, no
# network): pydantic (pipeline/training/train_config.py) and its dependencies, at uv.lock's versions, for
# CPython 3.12 on manylinux x86_64. typing-extensions is carried too: pydantic-core needs a recent
# one, and installing with --target keeps it from touching the image's own.
#
#   bash scripts/gpu-wheels.sh [DIR]     # default .gpu-wheels (ignored by git), ~2.5 MiB
#
# Then carry DIR in the device `run` (the docstring of bench/gpu_check.py has the command).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.gpu-wheels}
lock_version() {  # the version uv.lock pins for package $1
    awk -v n="$1" '$0 == "name = \"" n "\"" {getline; gsub(/version = |"/, ""); print; exit}' uv.lock
}
pkgs=()
for name in pydantic pydantic-core annotated-types typing-inspection typing-extensions; do
    v=$(lock_version "$name")
    [ -n "$v" ] || { echo "uv.lock: no version for $name" >&2; exit 1; }
    pkgs+=("$name==$v")
done
mkdir -p "$dir"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir" "${pkgs[@]}"
ls -l "$dir"
du -sh "$dir"
