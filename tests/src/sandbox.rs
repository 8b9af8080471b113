//! The two sandboxes every end-to-end case runs over.

/// Where a container runs: `Os` (namespaces + cgroups on the host) or `Vm` (a
/// microVM per container or pod: hull-vmm on hardware KVM, QEMU elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sandbox {
    Os,
    Vm,
}

impl Sandbox {
    /// The value of `--sandbox` and of the `io.hull.sandbox` annotation.
    pub fn name(self) -> &'static str {
        match self {
            Sandbox::Os => "os",
            Sandbox::Vm => "vm",
        }
    }
}
