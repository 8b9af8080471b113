//! Guest-side facts the host and the guest must agree on: ports, kernel arguments and
//! the boot-timer.

/// vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// I/O port the agent writes [`BOOT_TIMER_MAGIC`] to once it is ready to serve; the
/// VMM timestamps that write (time since the VMM started).
pub const BOOT_TIMER_PORT: u16 = 0x0440;
/// The byte written to [`BOOT_TIMER_PORT`].
pub const BOOT_TIMER_MAGIC: u8 = 123;

/// Kernel argument that puts the agent in self-test mode (`hull.selftest=1`).
pub const SELFTEST_ARG: &str = "hull.selftest";
/// Kernel argument carrying the guest hostname.
pub const HOSTNAME_ARG: &str = "hull.hostname";
/// Kernel argument carrying the host's wall clock at boot, seconds since the epoch.
pub const CLOCK_ARG: &str = "hull.clock";

/// Exact line the self-test prints on success.
pub const SELFTEST_PASS: &str = "hull-selftest: PASS";
/// Prefix of the line the self-test prints on failure, followed by the reason.
pub const SELFTEST_FAIL_PREFIX: &str = "hull-selftest: FAIL";

/// Kernel argument naming the virtio-fs tag the host shares its container files
/// through (`hull.share=<tag>`); the agent mounts it at [`GUEST_SHARED_DIR`].
pub const SHARE_ARG: &str = "hull.share";
/// Where the host's shared directory appears in the guest. A container `<id>` has its
/// rootfs at `<this>/<id>/rootfs` and its bind-mount sources under `<this>/<id>/mounts`.
pub const GUEST_SHARED_DIR: &str = "/run/hull/shared";
