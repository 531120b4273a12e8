#!/usr/bin/env bash
# Build a local Debian bookworm base image for the Dockerfiles, for machines that reach Debian's
# package mirror but no image registry (Docker Hub, ghcr.io). Idempotent: does nothing when the
# image already exists (ERC_BASE_FORCE=1 rebuilds it).
#   scripts/docker-base.sh [IMAGE]          # default erc-base:bookworm
# Then: docker build --build-arg PYTHON_IMAGE=erc-base:bookworm ... (see docker/README.md).
# Needs root (debootstrap), debootstrap and a running Docker engine.
set -euo pipefail

IMAGE=${1:-${ERC_BASE_IMAGE:-erc-base:bookworm}}
SUITE=${ERC_BASE_SUITE:-bookworm}
MIRROR=${ERC_BASE_MIRROR:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-docker}

if [[ -z ${ERC_BASE_FORCE:-} ]] && $DOCKER image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "docker-base: $IMAGE exists (ERC_BASE_FORCE=1 rebuilds it)"
    exit 0
fi
command -v debootstrap >/dev/null || {
    echo "docker-base: debootstrap not found (apt-get install debootstrap)" >&2
    exit 1
}
[[ $(id -u) == 0 ]] || {
    echo "docker-base: debootstrap needs root" >&2
    exit 1
}

ROOTFS=$(mktemp -d /tmp/erc-base.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
t0=$(date +%s)
# minbase: essential packages + apt only; the Dockerfiles add python3 etc. with apt.
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
    tail -20 "$ROOTFS.log" >&2
    echo "docker-base: debootstrap failed (log: $ROOTFS.log)" >&2
    exit 1
}
rm -f "$ROOTFS.log"
# Like the official debian images: security updates in the sources, no apt caches in the image.
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb
tar -C "$ROOTFS" -c . | $DOCKER import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $SUITE" - "$IMAGE" >/dev/null
echo "docker-base: built $IMAGE in $(($(date +%s) - t0)) s," \
    "$($DOCKER image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
