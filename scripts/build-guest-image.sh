#!/usr/bin/env bash
# Builds the guest initramfs (/init = static hull-agent)
# through the content-keyed cache and installs it as
# ${HULL_ASSETS:-/var/lib/hull}/initramfs.img, with the agent beside it as hull-agent.
#
# usage: scripts/build-guest-image.sh
#   env: HULL_AGENT   a static hull-agent to pack (default: scripts/build-agent-static.sh)
#        HULL_BUSYBOX a static busybox to add as /hull/busybox-rootfs (default: none)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="${HULL_ASSETS:-/var/lib/hull}/initramfs.img"

agent=${HULL_AGENT:-}
if [ -z "$agent" ]; then
  agent=$("$root/scripts/build-agent-static.sh")
fi

cd "$root"
extra=()
[ -n "${HULL_BUSYBOX:-}" ] && extra=(--busybox "$HULL_BUSYBOX")
"${CARGO:-cargo}" run -q --release -p hull-guest-image -- \
  build --agent "$agent" --out "$out" "${extra[@]}"

# The runtime rebuilds the image from this agent on first use if the image is gone.
install -D -m 0755 "$agent" "$(dirname "$out")/hull-agent"
