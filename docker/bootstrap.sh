#!/bin/sh
# Run inside an image build (Dockerfile.cpu, .cuda, .server): the system packages, a Python that
# satisfies requires-python (>=3.11,<3.13), and uv from PyPI (no image registry needed).
#   bootstrap.sh UV_VERSION [APT_PACKAGE...]
# Works on the official python images (Python present), a plain Debian bookworm base such as
# scripts/docker-base.sh's (python3 3.11 from apt) and Ubuntu 24.04 CUDA images (python3 3.12).
# A CA bundle passed as the BuildKit secret "ca" (docker/README.md) is used for pip's https; the
# Dockerfiles' RUN lines point uv at it too.
set -eu
UV_VERSION=$1
shift
export DEBIAN_FRONTEND=noninteractive

suitable() { # a python3 on PATH with 3.11 <= version < 3.13 that can make a venv
    command -v python3 >/dev/null &&
        python3 -c 'import sys, ensurepip, venv; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' 2>/dev/null
}
pkgs="ca-certificates $*"
suitable || pkgs="$pkgs python3 python3-venv"
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $pkgs
rm -rf /var/lib/apt/lists/*
suitable || {
    echo "bootstrap: no Python >=3.11,<3.13 in this base image ($(python3 --version 2>&1))" >&2
    exit 1
}

# uv from PyPI into a throwaway venv; its binaries are static, so they are copied out.
[ -s /run/secrets/ca ] && export PIP_CERT=/run/secrets/ca
python3 -m venv /tmp/uv-bootstrap
/tmp/uv-bootstrap/bin/pip install --quiet --no-cache-dir --disable-pip-version-check "uv==$UV_VERSION" || {
    echo "bootstrap: pip could not install uv==$UV_VERSION from PyPI; behind a TLS-inspecting" \
        "proxy pass its CA bundle: docker build --secret id=ca,src=/path/to/ca-bundle.crt" >&2
    exit 1
}
cp /tmp/uv-bootstrap/bin/uv /tmp/uv-bootstrap/bin/uvx /usr/local/bin/
rm -rf /tmp/uv-bootstrap
echo "bootstrap: $(python3 --version), $(uv --version)"
