#!/usr/bin/env bash
# Build the project's images with BuildKit, passing a CA bundle to pip/uv as a build secret.
#   scripts/docker-build.sh [cpu] [server] [postgres] [cuda]     # default: cpu server
# Environment:
#   ERC_LOCAL_BASE=1      no image registry: build erc-base:bookworm (scripts/docker-base.sh) and
#                         use it as the base of every image (python3 3.11 from Debian)
#   ERC_PYTHON_IMAGE      base of cpu/server (default python:3.11-slim-bookworm)
#   ERC_CUDA_IMAGE_BASE   base of cuda (default nvidia/cuda:13.0.1-base-ubuntu24.04)
#   ERC_CA_BUNDLE         CA bundle for https inside the build (default $SSL_CERT_FILE when that
#                         file exists; "none" for none): needed behind a TLS-inspecting proxy
#   ERC_BUILD_NETWORK     docker build --network (e.g. host)
#   ERC_BUILD_TIMES       append "image<TAB>seconds<TAB>bytes" lines to this file
#   DOCKER                the docker CLI (default: the first one with BuildKit)
set -euo pipefail
cd "$(dirname "$0")/.."

# A CLI that builds with BuildKit: one with the buildx plugin, or a 20.10-22.x client (BuildKit
# built in; Debian bookworm's docker.io). Newer clients without buildx only have the legacy
# builder, which has no RUN --mount and no secrets.
buildkit_cli() {
    local d major
    for d in ${DOCKER:-} docker /usr/bin/docker; do
        command -v "$d" >/dev/null || continue
        if "$d" buildx version >/dev/null 2>&1; then echo "$d" && return; fi
        major=$("$d" version -f '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)
        if [[ $major =~ ^[0-9]+$ ]] && ((major >= 19 && major < 23)); then echo "$d" && return; fi
    done
    echo "docker-build: no docker CLI with BuildKit (install docker-buildx, or Debian's docker.io)" >&2
    return 1
}
DOCKER=$(buildkit_cli)
export DOCKER DOCKER_BUILDKIT=1

targets=("$@")
((${#targets[@]})) || targets=(cpu server)

python_image=${ERC_PYTHON_IMAGE:-python:3.11-slim-bookworm}
cuda_image=${ERC_CUDA_IMAGE_BASE:-nvidia/cuda:13.0.1-base-ubuntu24.04}
postgres_base=debian:bookworm-slim
if [[ -n ${ERC_LOCAL_BASE:-} ]]; then
    scripts/docker-base.sh erc-base:bookworm
    python_image=erc-base:bookworm cuda_image=erc-base:bookworm postgres_base=erc-base:bookworm
fi

ca=${ERC_CA_BUNDLE:-${SSL_CERT_FILE:-none}}
common=(--progress plain)
if [[ $ca != none ]]; then
    [[ -s $ca ]] || {
        echo "docker-build: CA bundle $ca not found or empty (ERC_CA_BUNDLE)" >&2
        exit 1
    }
    common+=(--secret "id=ca,src=$ca")
fi
[[ -n ${ERC_BUILD_NETWORK:-} ]] && common+=(--network "$ERC_BUILD_NETWORK")

mkdir -p "${TMPDIR:-/tmp}/erc-docker"
for t in "${targets[@]}"; do
    case $t in
        cpu) tag=${ERC_IMAGE:-ada2i-erc:cpu} args=(-f docker/Dockerfile.cpu --build-arg "PYTHON_IMAGE=$python_image") ;;
        server) tag=${ERC_SERVER_IMAGE:-ada2i-erc:server} args=(-f docker/Dockerfile.server --build-arg "PYTHON_IMAGE=$python_image") ;;
        cuda) tag=${ERC_CUDA_IMAGE:-ada2i-erc:cuda} args=(-f docker/Dockerfile.cuda --build-arg "CUDA_IMAGE=$cuda_image") ;;
        postgres) tag=${ERC_POSTGRES_IMAGE:-erc-postgres:15} args=(-f docker/Dockerfile.postgres --build-arg "BASE_IMAGE=$postgres_base") ;;
        *) echo "docker-build: unknown image '$t' (cpu, server, postgres, cuda)" >&2 && exit 2 ;;
    esac
    log="${TMPDIR:-/tmp}/erc-docker/build-$t.log"
    echo "docker-build: $tag (log: $log)"
    t0=$(date +%s)
    if ! "$DOCKER" build "${common[@]}" "${args[@]}" -t "$tag" . >"$log" 2>&1; then
        tail -30 "$log" >&2
        echo "docker-build: building $tag failed (log: $log)" >&2
        exit 1
    fi
    secs=$(($(date +%s) - t0))
    bytes=$("$DOCKER" image inspect -f '{{.Size}}' "$tag")
    echo "docker-build: $tag built in ${secs} s, $(awk -v b="$bytes" 'BEGIN{printf "%.2f GB", b/1e9}')"
    [[ -n ${ERC_BUILD_TIMES:-} ]] && printf '%s\t%s\t%s\n' "$tag" "$secs" "$bytes" >>"$ERC_BUILD_TIMES"
done
