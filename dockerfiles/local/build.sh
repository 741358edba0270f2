#!/usr/bin/env bash
# Build dockerfiles/<name>.dockerfile here, without a Docker daemon or a registry
# (`make images`): buildah builds the unchanged Dockerfiles; only the pulls are replaced.
#
#   dockerfiles/local/build.sh [train|serve|serve-lite|ui|base ...]   (default: all four; base: only the base)
#
# * FROM python:3.11-slim-bookworm -> a local image of the same name: Debian bookworm
#   (debootstrap, minbase) + Debian's python3.11, with python/python3 in /usr/local/bin
#   as in the official image. Its root filesystem is cached in $IMAGE_CACHE/base.tar.
# * COPY --from=ghcr.io/astral-sh/uv:X -> a FROM-scratch image holding the uv binary
#   from PyPI's uv X wheel (the version the Dockerfiles pin).
# * uv cannot reach the package index from inside a build here: the build mounts the
#   machine's uv cache (filled first by `uv sync --frozen` of each group into a throwaway
#   venv) and passes --build-arg UV_OFFLINE=1.
# Images are tagged brain-mri-<name>:local; GIT_COMMIT is the checked-out commit.
# Variables: IMAGE_CACHE [.cache/images], UV_CACHE_DIR [uv's own], MAR (serve's .mar,
# relative to the repo) [model_store/brain_mri.mar; if absent, a smoke-config model is
# trained for it into model_store/smoke/], BUILDAH [buildah --storage-driver vfs].
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${IMAGE_CACHE:-.cache/images}
BUILDAH=${BUILDAH:-buildah --storage-driver vfs}
PODMAN=${PODMAN:-podman --storage-driver vfs}
BASE=docker.io/library/python:3.11-slim-bookworm
MAR=${MAR:-}
UV=${UV:-uv}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

log() { printf '[images] %s\n' "$*" >&2; }
have_image() { $BUILDAH inspect --type image "$1" >/dev/null 2>&1; }

base_image() {
  have_image "$BASE" && return 0
  if [ ! -s "$CACHE/base.tar" ]; then
    log "debootstrap bookworm (minbase) + python3.11 -> $CACHE/base.tar"
    local root="$CACHE/rootfs"
    rm -rf "$root"
    debootstrap --variant=minbase --include=python3.11,ca-certificates,netbase,tzdata \
      bookworm "$root" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
    ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
    # the official image's sources (deb822) so that apt-get update inside builds works
    rm -f "$root/etc/apt/sources.list"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      >"$root/etc/apt/sources.list.d/debian.sources"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    tar -C "$root" -cf "$CACHE/base.tar.partial" . && mv "$CACHE/base.tar.partial" "$CACHE/base.tar"
    rm -rf "$root"
  fi
  log "import $CACHE/base.tar as $BASE"
  $PODMAN import --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$CACHE/base.tar" "$BASE" >/dev/null
}

uv_image() {
  local version="$1" ref="ghcr.io/astral-sh/uv:$1"
  have_image "$ref" && return 0
  local dir="$CACHE/uv-$version"
  if [ ! -x "$dir/uv" ]; then
    log "uv $version from PyPI's wheel -> $dir"
    mkdir -p "$dir/wheel"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      --python-version 3.11 -d "$dir/wheel" "uv==$version"
    python3 - "$dir" <<'PY'
import sys, zipfile, pathlib
d = pathlib.Path(sys.argv[1])
wheel = next((d / "wheel").glob("uv-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith((".data/scripts/uv", ".data/scripts/uvx")):
            target = d / pathlib.PurePosixPath(name).name
            target.write_bytes(z.read(name))
            target.chmod(0o755)
PY
  fi
  printf 'FROM scratch\nCOPY uv uvx /\n' >"$dir/Containerfile"
  $BUILDAH bud --quiet --isolation chroot --pull=false -f "$dir/Containerfile" -t "$ref" "$dir" >/dev/null
}

fill_uv_cache() {  # the wheels and the build backend a group's `uv sync --frozen` needs
  log "uv cache for group $1 ($UV_CACHE)"
  UV_CACHE_DIR="$UV_CACHE" UV_PROJECT_ENVIRONMENT="$CACHE/venv-$1" \
    $UV sync --quiet --frozen --no-default-groups --group "$1"
}

smoke_mar() {  # a smoke-config model, when there is no model_store/brain_mri.mar (CI)
  local out=model_store/smoke/brain_mri.mar data=data/br35h
  [ -s "$out" ] && return 0
  log "no model_store/brain_mri.mar: training a smoke-config model for the serve image -> $out"
  if [ ! -s "$data/split.csv" ]; then
    data="$CACHE/br35h"
    [ -s "$data/split.csv" ] || $UV run --frozen python -m lightning_app.data prepare --root "$data" --embedded >&2
  fi
  rm -rf "$CACHE/smoke-runs"
  WANDB_MODE=offline $UV run --frozen python -m lightning_app fit --config configs/smoke.yaml \
    --data.data_dir "$data" --trainer.default_root_dir "$CACHE/smoke-runs" \
    --trainer.logger false --trainer.enable_progress_bar false >"$CACHE/smoke-fit.log" 2>&1 \
    || { tail -20 "$CACHE/smoke-fit.log" >&2; exit 1; }
  $UV run --frozen python -m lightning_app.export --runs "$CACHE/smoke-runs" --out model_store/smoke --data "$data" >&2
}

build() {
  local name="$1" file="dockerfiles/$1.dockerfile" args=()
  [ -f "$file" ] || { echo "error: no $file" >&2; exit 2; }
  grep -o 'ghcr.io/astral-sh/uv:[0-9.]*' "$file" | sort -u | while read -r ref; do uv_image "${ref##*:}"; done
  fill_uv_cache "$(grep -o -- '--group [a-z-]*' "$file" | head -1 | cut -d' ' -f2)"
  if [ "$name" = serve ] || [ "$name" = serve-lite ]; then
    local mar=$MAR
    if [ -z "$mar" ]; then
      mar=model_store/brain_mri.mar
      [ -s "$mar" ] || { smoke_mar; mar=model_store/smoke/brain_mri.mar; }
    fi
    [ -s "$mar" ] || { echo "error: no $mar: build it with make mar" >&2; exit 2; }
    args+=(--build-arg "MAR=$mar")
    echo "$mar" >"$CACHE/serve.mar"  # which archive the image holds (make image-test reads it)
  fi
  log "build $file -> brain-mri-$name:local"
  local start=$SECONDS
  $BUILDAH bud --isolation chroot --pull=false --layers=false \
    -v "$UV_CACHE:/root/.cache/uv" --build-arg UV_OFFLINE=1 \
    --build-arg "GIT_COMMIT=$COMMIT" \
    "${args[@]}" -f "$file" -t "brain-mri-$name:local" . >"$CACHE/build-$name.log" 2>&1 \
    || { tail -30 "$CACHE/build-$name.log" >&2; exit 1; }
  $BUILDAH rmi --prune >/dev/null 2>&1 || true
  local size
  size=$($BUILDAH inspect --type image --format '{{.OCIv1.Config.Labels}}' "brain-mri-$name:local" >/dev/null 2>&1; \
    $BUILDAH images --format '{{.Name}}:{{.Tag}} {{.Size}}' | awk -v n="localhost/brain-mri-$name:local" '$1==n {print $2, $3}')
  log "built brain-mri-$name:local in $((SECONDS - start)) s, size $size"
}

# the commit the images are built from, as lightning_app.training.runinfo.git_commit() names it
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ "$COMMIT" = unknown ] || [ -z "$(git status --porcelain --untracked-files=no)" ] || COMMIT="$COMMIT+dirty"
echo "$COMMIT" >"$CACHE/git-commit"
UV_CACHE=${UV_CACHE_DIR:-$($UV cache dir)}
mkdir -p "$UV_CACHE"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(train serve serve-lite ui)
base_image
for name in "${names[@]}"; do [ "$name" = base ] || build "$name"; done
