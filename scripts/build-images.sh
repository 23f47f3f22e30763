#!/usr/bin/env bash
# Build (and optionally push) the imgsearch container images. `make images` runs this.
#
#   scripts/build-images.sh            build every image with the local Docker engine
#   scripts/build-images.sh --push     build, then push to $REGISTRY
#   scripts/build-images.sh --list     print the image references it builds (no Docker needed)
#
# Images (VERSION from pyproject.toml, REGISTRY defaults to `imgsearch`, the
# name the Kubernetes manifests use; set REGISTRY=ghcr.io/you/imgsearch to push):
#   $REGISTRY/embedder:$VERSION-cuda   Embedder, CUDA torch (production, GPU nodes)
#   $REGISTRY/embedder:$VERSION-cpu    Embedder, CPU-only torch (laptops, kind)
#   $REGISTRY/search:$VERSION          Search service (no torch)
#   $REGISTRY/web:$VERSION             HTTP gateway and web page (no torch)
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-imgsearch}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
[[ -n "$VERSION" ]] || { echo "build-images: no version in pyproject.toml" >&2; exit 1; }

EMBEDDER_CUDA="$REGISTRY/embedder:$VERSION-cuda"
EMBEDDER_CPU="$REGISTRY/embedder:$VERSION-cpu"
SEARCH="$REGISTRY/search:$VERSION"
WEB="$REGISTRY/web:$VERSION"

push=false
case "${1:-}" in
  --list) printf '%s\n' "$EMBEDDER_CUDA" "$EMBEDDER_CPU" "$SEARCH" "$WEB"; exit 0 ;;
  --push) push=true ;;
  "") ;;
  *) echo "usage: $0 [--list | --push]" >&2; exit 2 ;;
esac

if ! command -v docker >/dev/null 2>&1; then
  echo "build-images: 'make images' needs a Docker engine, and there is no 'docker' command here." >&2
  echo "  Install Docker (or run this on a machine or CI runner that has it)." >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "build-images: 'make images' needs a running Docker engine; 'docker info' cannot reach one." >&2
  echo "  Start the Docker daemon (or point DOCKER_HOST at one), then run 'make images' again." >&2
  exit 1
fi

# BuildKit: the Dockerfiles use cache mounts for pip.
export DOCKER_BUILDKIT=1
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
build() {  # build TAG DOCKERFILE [extra docker build args...]
  local tag=$1 dockerfile=$2
  shift 2
  echo "build-images: building $tag"
  docker build --file "$dockerfile" --tag "$tag" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$revision" \
    "$@" .
}

build "$SEARCH" services/search/Dockerfile
build "$WEB" services/web/Dockerfile
build "$EMBEDDER_CPU" services/embedder/Dockerfile --build-arg VARIANT=cpu
build "$EMBEDDER_CUDA" services/embedder/Dockerfile --build-arg VARIANT=cuda

if $push; then
  for image in "$SEARCH" "$WEB" "$EMBEDDER_CPU" "$EMBEDDER_CUDA"; do
    docker push "$image"
  done
  echo "build-images: pushed; pin the digests in your overlay with 'kustomize edit set image' (docs/deploy.md)"
fi
echo "build-images: built $SEARCH $WEB $EMBEDDER_CPU $EMBEDDER_CUDA"
