# Shared by .ci/wheels, .ci/pythons and .ci/crossarch (sourced, not run): timed stages, Debian
# packages installed on demand, the pyenv CPythons, and the emulated arm64 rootfs.
# shellcheck shell=bash

STAGE_TIMES=()
CURRENT_STAGE=""
CURRENT_START=0

# stage NAME CMD...: runs CMD (with errexit in force: not under `||`, which would switch it off
# inside functions), prints how long it took and remembers it for print_stage_times.
stage() {
  CURRENT_STAGE=$1
  shift
  echo "==> $CURRENT_STAGE" >&2
  CURRENT_START=$(date +%s)
  "$@"
  STAGE_TIMES+=("$(printf '%6ss  %s' "$(($(date +%s) - CURRENT_START))" "$CURRENT_STAGE")")
  CURRENT_STAGE=""
}

# print_stage_times TITLE: the timings so far; a stage that did not finish is shown as FAILED.
# Meant for an EXIT trap, so a failing run still shows where its time went.
print_stage_times() {
  local title=$1 line
  [ -z "$CURRENT_STAGE" ] \
    || STAGE_TIMES+=("$(printf '%6ss  %s  FAILED' "$(($(date +%s) - CURRENT_START))" "$CURRENT_STAGE")")
  echo "---- $title: stage timings ----" >&2
  for line in "${STAGE_TIMES[@]}"; do echo "$line" >&2; done
}

die() { echo "$(basename "$0"): ERROR: $*" >&2; exit 1; }
say() { echo "$(basename "$0"): $*" >&2; }

# need_debs CMD=PKG ...: installs PKG from Debian's packages unless CMD is on the PATH.
need_debs() {
  local spec missing=()
  for spec in "$@"; do
    command -v "${spec%%=*}" >/dev/null 2>&1 || missing+=("${spec#*=}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} from Debian packages"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q -o DPkg::Lock::Timeout=600 "${missing[@]}"
}

# cpython MINOR (e.g. 3.12): prints the path of that CPython's interpreter. Takes the newest pyenv
# build of it; if there is none it asks pyenv to build one (which works offline only when pyenv has
# the source in its cache) and otherwise fails saying what is missing. Never skips.
PYENV_ROOT=${PYENV_ROOT:-/root/.pyenv}
cpython() {
  local minor=$1 found
  found=$(ls -d "$PYENV_ROOT/versions/$minor".* 2>/dev/null | grep -E "/$minor\.[0-9]+$" | sort -V | tail -1 || true)
  if [ -z "$found" ]; then
    command -v pyenv >/dev/null 2>&1 || [ -x "$PYENV_ROOT/bin/pyenv" ] \
      || die "CPython $minor is missing and so is pyenv ($PYENV_ROOT): install CPython $minor (e.g. pyenv install $minor)"
    local latest
    latest=$("$PYENV_ROOT/bin/pyenv" install --list | tr -d ' ' | grep -E "^$minor\.[0-9]+$" | sort -V | tail -1)
    say "CPython $minor is not installed; trying: pyenv install $latest"
    "$PYENV_ROOT/bin/pyenv" install -s "$latest" >&2 \
      || die "CPython $minor is missing: 'pyenv install $latest' failed (it needs the source tarball from python.org or in $PYENV_ROOT/cache)"
    found="$PYENV_ROOT/versions/$latest"
  fi
  [ -x "$found/bin/python3" ] || die "CPython $minor: $found/bin/python3 is not an interpreter"
  echo "$found/bin/python3"
}

# The arm64 Debian rootfs, kept outside the repo so that repeated runs reuse it.
ARM64_CACHE=${FASTBOOK_ARM64_CACHE:-/var/cache/fastbook-arm64}
ARM64_SUITE=bookworm   # Raspberry Pi OS bookworm: Python 3.11, glibc 2.36
ARM64_ROOTFS=$ARM64_CACHE/rootfs-$ARM64_SUITE
ARM64_PY=3.11          # the rootfs's python3

# binfmt_misc mounted and qemu-aarch64 enabled, so arm64 binaries run on this x86_64 host.
enable_qemu_aarch64() {
  need_debs qemu-aarch64-static=qemu-user-static update-binfmts=binfmt-support
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc (needs root and a kernel with binfmt_misc)"
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 \
    || die "update-binfmts --enable qemu-aarch64 failed"
  grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 binfmt is registered but disabled"
}

# A minimal arm64 rootfs with python3, venv and the headers (the headers serve the cross build).
# Made once with debootstrap (a few minutes); a rootfs left half made is made again.
ensure_arm64_rootfs() {
  enable_qemu_aarch64
  need_debs debootstrap=debootstrap
  if [ -f "$ARM64_ROOTFS/.fastbook-complete" ]; then
    say "arm64 rootfs cached at $ARM64_ROOTFS"
    return 0
  fi
  say "making the arm64 $ARM64_SUITE rootfs at $ARM64_ROOTFS (debootstrap, a few minutes)"
  rm -rf "$ARM64_ROOTFS"
  mkdir -p "$ARM64_CACHE"
  debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-dev,ca-certificates \
    "$ARM64_SUITE" "$ARM64_ROOTFS" http://deb.debian.org/debian >"$ARM64_CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$ARM64_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $ARM64_CACHE/debootstrap.log)"; }
  chroot "$ARM64_ROOTFS" /usr/bin/python3 -c 'import platform, sys; assert platform.machine() == "aarch64", platform.machine(); print(sys.version)' >&2 \
    || die "the arm64 rootfs's python3 does not run under qemu"
  touch "$ARM64_ROOTFS/.fastbook-complete"
}

ROOTFS_MOUNTS=()
# Mounts /proc, /dev and /dev/shm into the rootfs and gives it the host's DNS and CA bundle;
# rootfs_unmount (called from a trap) undoes the mounts.
rootfs_mount() {
  local target
  for target in proc dev dev/shm; do
    mountpoint -q "$ARM64_ROOTFS/$target" && continue
    case $target in
      proc) mount -t proc proc "$ARM64_ROOTFS/proc" ;;
      dev) mount --bind /dev "$ARM64_ROOTFS/dev" ;;
      dev/shm) mount -t tmpfs shm "$ARM64_ROOTFS/dev/shm" ;;
    esac
    ROOTFS_MOUNTS=("$ARM64_ROOTFS/$target" "${ROOTFS_MOUNTS[@]}")
  done
  cp /etc/resolv.conf "$ARM64_ROOTFS/etc/resolv.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$ARM64_ROOTFS/etc/ssl/certs/host-ca-bundle.crt"
}

rootfs_unmount() {
  local target
  for target in "${ROOTFS_MOUNTS[@]}"; do
    umount "$target" 2>/dev/null || umount -l "$target" || echo "could not unmount $target" >&2
  done
  ROOTFS_MOUNTS=()
}

# in_rootfs CMD...: runs CMD inside the rootfs (under qemu) in a clean environment: the host's
# variables (pip's config, the venv) mean nothing there; pip trusts the host's CA bundle.
in_rootfs() {
  chroot "$ARM64_ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "$@"
}

# native_modules: the dotted names (e.g. engine._engine) of the native modules CMakeLists.txt builds.
native_modules() {
  sed -n '/set(NATIVE_MODULES/,/)/p' CMakeLists.txt | grep -oE '"[a-z_]+\.[A-Za-z0-9_]+=' | tr -d '"='
}
