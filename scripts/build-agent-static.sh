#!/usr/bin/env bash
# Builds the static hull-agent that the guest initramfs runs as /init, and prints its
# path. glibc + crt-static (musl cannot link Debian's libseccomp.a), release profile,
# own target dir so the normal debug build is not invalidated by the RUSTFLAGS.
#
# usage: scripts/build-agent-static.sh   (env: CARGO, CARGO_BUILD_JOBS as usual)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=x86_64-unknown-linux-gnu
target_dir="$root/target/guest"
agent="$target_dir/$target/release/hull-agent"
libdir=/usr/lib/x86_64-linux-gnu

[ -f "$libdir/libseccomp.a" ] ||
  { echo "build-agent-static: $libdir/libseccomp.a missing (apt-get install libseccomp-dev)" >&2; exit 1; }

cd "$root"
# libseccomp-sys reads LIBSECCOMP_*; the rest of RUSTFLAGS is kept.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$libdir" \
  "${CARGO:-cargo}" build --release -p hull-agent --bin hull-agent \
  --target "$target" --target-dir "$target_dir" >&2

# /init runs before any dynamic loader exists: refuse anything that is not static.
desc=$(file -b "$agent")
if ! echo "$desc" | grep -qE 'statically linked|static-pie linked'; then
  echo "build-agent-static: $agent is not static: $desc" >&2
  exit 1
fi
if ldd "$agent" 2>&1 | grep -q '=>'; then
  echo "build-agent-static: ldd lists shared libraries for $agent:" >&2
  ldd "$agent" >&2
  exit 1
fi
echo "build-agent-static: $agent ($(stat -c %s "$agent") bytes): ${desc%%,*}, $(echo "$desc" | grep -oE 'static(-pie)? linked')" >&2
echo "$agent"
