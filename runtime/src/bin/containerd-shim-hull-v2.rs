//! containerd's shim v2 for hull: `--runtime io.containerd.hull.v2`.

fn main() {
    hull_runtime::shim::run();
}
