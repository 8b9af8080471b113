#!/usr/bin/env bash
# Builds hull's guest kernel (vmlinux) from allnoconfig + hull-guest.config, caches it
# keyed by the fragment, the kernel source and the compiler, and installs it as
# ${HULL_ASSETS:-/var/lib/hull}/vmlinux.
#
# usage: guest-kernel-config/build.sh [--source DIR|TARBALL] [--config-only] [--force]
#                                     [--no-install]
#   --source       kernel tree or tarball (default: $HULL_KERNEL_SOURCE, else Debian's
#                  linux-source-6.12, installed with the build dependencies if missing)
#   --config-only  merge and check the .config, do not build
#   --force        rebuild even if the cache has this kernel
#   --no-install   leave the assets directory alone; print the cached path
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment="$here/hull-guest.config"
# Bump when the way the kernel is built changes (not the fragment: that is hashed).
recipe=1

source_arg=${HULL_KERNEL_SOURCE:-}
config_only=0
force=0
install=1
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_arg=${2:?--source needs a path}; shift 2 ;;
    --source=*) source_arg=${1#--source=}; shift ;;
    --config-only) config_only=1; shift ;;
    --force) force=1; shift ;;
    --no-install) install=0; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "guest-kernel: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "guest-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/hull/kernel
assets=${HULL_ASSETS:-/var/lib/hull}
debian_pkg=linux-source-6.12
debian_tarball=/usr/src/$debian_pkg.tar.xz
jobs=${JOBS:-$(nproc)}

sudo_if_needed() { if [ "$(id -u)" -ne 0 ]; then sudo "$@"; else "$@"; fi; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Build dependencies, and the Debian source package when no source was named.
ensure_packages() {
  command -v dpkg-query >/dev/null || return 0
  local want=(make gcc bc bison flex libelf-dev libssl-dev xz-utils) missing=() p
  [ -z "$source_arg" ] && want+=("$debian_pkg")
  for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get update -qq
  for p in "${missing[@]}"; do
    # linux-source-6.12 comes from bookworm-backports on Debian 12.
    sudo_if_needed apt-get install -y -qq -t bookworm-backports "$p" >/dev/null 2>&1 ||
      sudo_if_needed apt-get install -y -qq "$p" >/dev/null ||
      die "could not install $p (scripts/setup.sh adds bookworm-backports for $debian_pkg)"
  done
}

# Prints an identifier of the source: what the cache key and the tree cache use.
source_id() {
  local src=$1
  if [ -d "$src" ]; then
    local ver rev
    ver=$(make -s -C "$src" kernelversion 2>/dev/null) || die "$src is not a kernel tree"
    # A git tree is named by its commit; any other tree by its path (--force after
    # editing it).
    if [ -e "$src/.git" ]; then
      rev=$(git -C "$src" describe --always --dirty)
    else
      rev="tree:$(cd "$src" && pwd)"
    fi
    echo "linux-$ver-$rev"
  elif [ "$src" = "$debian_tarball" ] && installed "$debian_pkg"; then
    echo "$debian_pkg-$(dpkg-query -W -f='${Version}' "$debian_pkg")"
  else
    echo "$(basename "$src")-$(sha256sum "$src" | cut -c1-16)"
  fi
}

ensure_packages
src=${source_arg:-$debian_tarball}
[ -e "$src" ] || die "kernel source $src not found"
src_id=$(source_id "$src" | tr -c 'A-Za-z0-9._+\n-' '_')

# A tarball is unpacked once into the cache, keyed by its identity.
if [ -f "$src" ]; then
  tree="$cache/src/$src_id"
  if [ ! -f "$tree/Makefile" ]; then
    log "unpacking $src"
    mkdir -p "$cache/src"
    tmp=$(mktemp -d "$cache/src/.unpack.XXXXXX")
    tar -xf "$src" -C "$tmp"
    top=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d)
    [ "$(echo "$top" | wc -l)" = 1 ] && [ -f "$top/Makefile" ] ||
      die "$src does not hold one kernel tree"
    rm -rf "$tree"
    mv "$top" "$tree"
    rm -rf "$tmp"
  fi
else
  tree=$(cd "$src" && pwd)
fi

cc_version=$(gcc --version | head -1)
key=$( { echo "recipe $recipe"; echo "source $src_id"; echo "cc $cc_version"; cat "$fragment"; } |
  sha256sum | cut -c1-16)
out="$cache/$key"
# One object tree per source, shared by every fragment: changing the fragment
# rebuilds only what the new .config touches. A lock keeps two builds apart.
build="$cache/build/$src_id"

install_kernel() {
  local img=$1
  if [ "$install" = 1 ]; then
    sudo_if_needed mkdir -p "$assets"
    sudo_if_needed cp "$img" "$assets/.vmlinux.tmp.$$"
    sudo_if_needed mv -f "$assets/.vmlinux.tmp.$$" "$assets/vmlinux"
    log "installed $assets/vmlinux"
  fi
  echo "$img"
}

size_of() { local b; b=$(stat -c %s "$1"); echo "$b bytes ($(awk "BEGIN{printf \"%.1f\", $b/1048576}") MiB)"; }

if [ "$force" = 0 ] && [ "$config_only" = 0 ] && [ -f "$out/vmlinux" ]; then
  log "cached: $out/vmlinux, $(size_of "$out/vmlinux") [$(cat "$out/build-time" 2>/dev/null || echo '?') s to build]"
  install_kernel "$out/vmlinux"
  exit 0
fi

# Configure: allnoconfig + the fragment, in an out-of-tree build directory.
mkdir -p "$build" "$out"
exec 9>"$build.lock"
flock 9
log "configuring $src_id (key $key) in $build"
(cd "$tree" && ARCH=x86_64 scripts/kconfig/merge_config.sh -n -O "$build" "$fragment") \
  >"$out/merge.log" 2>&1 || { cat "$out/merge.log" >&2; die "merge_config.sh failed"; }

# Every option of the fragment must have survived the merge with its value.
lost=()
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*)
      grep -qxF "$line" "$build/.config" ||
        lost+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$build/.config" || echo 'absent'))") ;;
    "# CONFIG_"*" is not set")
      opt=${line#\# }; opt=${opt%% *}
      ! grep -q "^$opt=" "$build/.config" || lost+=("$line (got: $(grep "^$opt=" "$build/.config"))") ;;
  esac
done <"$fragment"
if [ ${#lost[@]} -gt 0 ]; then
  for l in "${lost[@]}"; do log "option did not survive the merge: $l"; done
  die "${#lost[@]} option(s) of $(basename "$fragment") did not survive (missing dependency?)"
fi
log "all $(grep -cE '^(CONFIG_|# CONFIG_.* is not set)' "$fragment") options of the fragment survived"
[ "$config_only" = 1 ] && { echo "$build/.config"; exit 0; }

log "building vmlinux with $jobs jobs (log: $out/build.log)"
start=$(date +%s)
if ! make -C "$tree" O="$build" ARCH=x86_64 -j"$jobs" vmlinux >"$out/build.log" 2>&1; then
  tail -n 40 "$out/build.log" >&2
  die "kernel build failed (full log: $out/build.log)"
fi
secs=$(( $(date +%s) - start ))
cp "$build/vmlinux" "$out/vmlinux.tmp"
mv -f "$out/vmlinux.tmp" "$out/vmlinux"
cp "$build/.config" "$out/config"
echo "$secs" >"$out/build-time"
log "built in ${secs} s: $out/vmlinux, $(size_of "$out/vmlinux")"
install_kernel "$out/vmlinux"
