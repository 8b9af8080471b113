#!/usr/bin/env bash
# Installs everything hull's build, demo and tests need on Debian/Ubuntu. Idempotent:
# a second run only checks. Needs root (or sudo) for apt-get.
set -euo pipefail

need_root() { if [ "$(id -u)" -ne 0 ]; then echo sudo; fi; }
SUDO=$(need_root)

. /etc/os-release
codename=${VERSION_CODENAME:-bookworm}

# Debian bookworm ships linux-source-6.1 and QEMU 7.2; the 6.12 source and a QEMU that
# matches the installed qemu-utils come from backports.
if [ "${ID:-}" = debian ] && [ "$codename" = bookworm ]; then
  list=/etc/apt/sources.list.d/hull-backports.list
  if ! grep -qs bookworm-backports "$list"; then
    echo 'deb http://deb.debian.org/debian bookworm-backports main' | $SUDO tee "$list" >/dev/null
    APT_UPDATE=1
  fi
  BACKPORTS=(-t bookworm-backports)
else
  BACKPORTS=()
fi

packages=(
  # container set-up, tests and the OS-level sandbox
  busybox-static libseccomp-dev iproute2 pkg-config
  # guest kernel build
  bc bison flex libelf-dev libssl-dev cpio xz-utils make gcc
  # peers and containerd integration
  containerd runc crun
)
missing=()
for p in "${packages[@]}" qemu-system-x86; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ! dpkg-query -W -f='${Status}' linux-source-6.12 2>/dev/null | grep -q 'install ok installed' \
   && [ -z "${HULL_KERNEL_SOURCE:-}" ]; then
  missing+=(linux-source-6.12)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ -n "${APT_UPDATE:-}" ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
    $SUDO apt-get update -qq
  fi
  export DEBIAN_FRONTEND=noninteractive
  # QEMU first and from backports where qemu-utils came from there (they must match).
  for p in "${missing[@]}"; do
    case "$p" in
      qemu-system-x86|linux-source-6.12)
        $SUDO apt-get install -y -qq "${BACKPORTS[@]}" "$p" >/dev/null ||
          $SUDO apt-get install -y -qq "$p" >/dev/null ;;
    esac
  done
  rest=()
  for p in "${missing[@]}"; do
    case "$p" in qemu-system-x86|linux-source-6.12) ;; *) rest+=("$p") ;; esac
  done
  if [ ${#rest[@]} -gt 0 ]; then
    $SUDO apt-get install -y -qq "${rest[@]}" >/dev/null
  fi
fi

if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  # Test guests (vsock device tests) are small static musl programs.
  rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
    rustup target add x86_64-unknown-linux-musl
fi
echo "setup: ok"
