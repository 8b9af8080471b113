#!/usr/bin/env bash
# The main job: run a bundled busybox container. It uses the VM sandbox where this
# build and host can start one, else the OS-level sandbox, and says which.
set -euo pipefail
cd "$(dirname "$0")/.."

hull=target/debug/hull
[ -x "$hull" ] || cargo build -q -p hull-runtime
busybox=/usr/bin/busybox
[ -x "$busybox" ] || { echo "demo: $busybox is missing (scripts/setup.sh installs busybox-static)" >&2; exit 1; }

work=$(mktemp -d /tmp/hull-demo.XXXXXX)
root="$work/state"
id="hull-demo-$$"
cleanup() { "$hull" --root "$root" delete --force "$id" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# A busybox rootfs: the static binary plus one symlink per applet.
mkdir -p "$work/bundle/rootfs"/{bin,proc,sys,dev,tmp,etc}
cp "$busybox" "$work/bundle/rootfs/bin/busybox"
for applet in $("$busybox" --list | grep -vx busybox); do
  ln -sf busybox "$work/bundle/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' > "$work/bundle/rootfs/etc/passwd"
"$hull" spec --bundle "$work/bundle"
# Non-interactive: no terminal, a command that shows where it runs.
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/sh", "-c",
    "echo \"hello from busybox: pid $$ in its own pid namespace, hostname $(hostname)\"; uname -sr"]
json.dump(c, open(p, "w"), indent=2)
PY

# The VM sandbox first; where it cannot start here the runtime says why before it
# creates anything, and the demo falls back to the OS-level sandbox.
if out=$("$hull" --root "$root" --debug --sandbox vm run --bundle "$work/bundle" "$id" 2>"$work/vm.err"); then
  # --debug says which hypervisor `--vmm auto` picked and why.
  why=$(grep -o 'picked [^"]*' "$work/vm.err" | head -n1 | sed 's/\\"/"/g')
  echo "demo: ran busybox in a microVM (VM sandbox; hypervisor: ${why:-unknown})"
  echo "$out"
  exit 0
fi
echo "demo: the VM sandbox cannot run here: $(grep -v 'level=debug' "$work/vm.err" | head -n1)"
echo "demo: running busybox with the OS-level sandbox (namespaces + cgroups on the host, no VM)"
status=0
"$hull" --root "$root" --sandbox os run --bundle "$work/bundle" "$id" || status=$?
echo "demo: container exited with status $status"
exit "$status"
