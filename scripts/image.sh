#!/usr/bin/env bash
# The container image (Containerfile), with docker or podman, whichever runs here.
#
#   scripts/image.sh build [CONTEXT]  # build CONTEXT (default: the repository) as $IMAGE
#   scripts/image.sh base             # podman: $BASE_IMAGE from Debian's mmdebstrap (no registry)
#   scripts/image.sh tools            # apt-get install podman, runc and mmdebstrap when missing
#
# Env:
#   IMAGE             the tag (default localhost/orchestra:latest; deploy/ manifests name it)
#   IMAGE_BUILD_ARGS  more build arguments, e.g. '--build-arg BASE=localhost/debian-python:bookworm'
#   IMAGE_TOOL        docker | podman (default: docker when its daemon answers, else podman)
#   IMAGE_HOST_PIP    1 (default): with podman, mount into the build what makes pip fast and
#                     possible here: a pip cache kept between builds, the host pip's find-links
#                     folders (local wheels, e.g. torch's CPU build) and its CA bundle. 0: none
#                     of it, the Containerfile alone. (The cache saves downloads only where the
#                     index's replies carry cache headers; through a proxy that strips them, pip
#                     stores nothing.)
#   IMAGE_PIP_CACHE   that pip cache (default ${XDG_CACHE_HOME:-~/.cache}/orchestra-image/pip)
#   BASE_IMAGE        the `base` image name (default localhost/debian-python:bookworm)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-localhost/orchestra:latest}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian-python:bookworm}"

say() { echo "[image] $*" >&2; }
die() { echo "[image] ERROR: $*" >&2; exit 1; }

pick_tool() {
    if [[ -n "${IMAGE_TOOL:-}" ]]; then
        echo "$IMAGE_TOOL"
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        echo docker
    elif command -v podman >/dev/null 2>&1; then
        echo podman
    else
        die "neither docker (with a running daemon) nor podman found; install one (scripts/image.sh tools)"
    fi
}

# The host pip's settings, as `pip config list` prints them (`global.find-links='/a /b'`).
host_pip_setting() {
    python3 -m pip config list 2>/dev/null | sed -n "s/^[a-z:.]*\.$1='\(.*\)'$/\1/p" | tail -n 1
}

host_pip_args() {
    local cache="${IMAGE_PIP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orchestra-image/pip}"
    mkdir -p "$cache"
    local args=(-v "$cache:/root/.cache/pip" --build-arg PIP_NO_CACHE_DIR=)
    local links="${PIP_FIND_LINKS:-$(host_pip_setting find-links)}" mounted=() i=0 dir
    for dir in $links; do
        [[ -d "$dir" ]] || continue
        args+=(-v "$dir:/host-wheels/$i:ro")
        mounted+=("/host-wheels/$i")
        i=$((i + 1))
    done
    if ((${#mounted[@]})); then
        # The host's own wheels replace PyTorch's index (what `make engine` uses here).
        args+=(--build-arg "PIP_FIND_LINKS=${mounted[*]}" --build-arg PIP_EXTRA_INDEX_URL=)
    fi
    local cert="${PIP_CERT:-$(host_pip_setting cert)}"
    if [[ -z "$cert" ]]; then
        cert="$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")')"
    fi
    if [[ -n "$cert" && -f "$cert" ]]; then
        args+=(-v "$(realpath "$cert"):/etc/ssl/certs/ca-certificates.crt:ro"
            --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
    fi
    printf '%s\n' "${args[@]}"
}

build() {
    local context="${1:-$REPO_ROOT}" tool args=()
    tool="$(pick_tool)"
    if [[ "$tool" == podman ]]; then
        # docker format keeps HEALTHCHECK (OCI images have no field for it).
        args+=(--format docker --network host)
        if [[ "${IMAGE_HOST_PIP:-1}" == 1 ]]; then
            mapfile -t extra < <(host_pip_args)
            args+=("${extra[@]}")
        fi
    fi
    # shellcheck disable=SC2206  # IMAGE_BUILD_ARGS is a list of words by design
    args+=(${IMAGE_BUILD_ARGS:-})
    say "$tool build -t $IMAGE ${args[*]} $context"
    "$tool" build -f "$context/Containerfile" -t "$IMAGE" "${args[@]}" "$context"
    say "built $IMAGE: $("$tool" image inspect --format '{{.Size}}' "$IMAGE") bytes"
}

base() {
    if podman image exists "$BASE_IMAGE"; then
        say "$BASE_IMAGE present"
        return
    fi
    command -v mmdebstrap >/dev/null || die "mmdebstrap missing (scripts/image.sh tools)"
    local tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    say "building $BASE_IMAGE with mmdebstrap (Debian bookworm, minbase + python3)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$tmp/rootfs.tar"
    podman import "$tmp/rootfs.tar" "$BASE_IMAGE" >/dev/null
    say "imported $BASE_IMAGE"
}

tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    ((${#missing[@]})) || return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
        say "missing ${missing[*]} and no root apt-get to install them"
        return 0  # the test skips with the reason
    fi
    say "installing ${missing[*]} with apt-get"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

case "${1:-}" in
    build) shift; build "$@" ;;
    base) base ;;
    tools) tools ;;
    *) die "usage: scripts/image.sh build [CONTEXT] | base | tools" ;;
esac
