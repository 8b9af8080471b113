//! What a VM is made of, as the CLI and the runtime describe it.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use thiserror::Error;

use crate::device_config::DeviceConfig;

/// Command line used when none is given: serial console, i8042 reset ends the VM,
/// no PCI probing.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";
/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u64 = 128;

/// Where the serial console goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ConsoleConfig {
    /// The VMM's stdout; stdin feeds the guest when it is a terminal.
    #[default]
    Stdio,
    /// Appended to a file.
    File(PathBuf),
    /// Discarded.
    None,
}

/// Errors parsing configuration values.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Unknown console spec.
    #[error("invalid console '{0}': expected stdio, file:PATH or none")]
    Console(String),
}

impl FromStr for ConsoleConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdio" => Ok(Self::Stdio),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(Self::File(PathBuf::from(p))),
                _ => Err(ConfigError::Console(s.to_string())),
            },
        }
    }
}

/// Everything needed to build and boot a VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u16,
    /// Serial console destination.
    pub console: ConsoleConfig,
    /// Back guest RAM with a shared memfd instead of private anonymous memory
    /// (needed to hand it to vhost-user backends).
    pub memfd: bool,
    /// virtio devices (vsock, fs, blk, net, rng).
    pub devices: DeviceConfig,
    /// Give every thread its seccomp filter once set up (the CLI's default; off for
    /// library users whose own thread runs the VM).
    pub seccomp: bool,
    /// Test only: device threads make a forbidden call when the driver activates them.
    pub seccomp_selftest: bool,
    /// When the VMM started, for the boot-timer.
    pub start_time: Instant,
}

impl VmConfig {
    /// A config with defaults for everything but the kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: 1,
            console: ConsoleConfig::Stdio,
            memfd: false,
            devices: DeviceConfig::default(),
            seccomp: false,
            seccomp_selftest: false,
            start_time: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_specs() {
        assert_eq!("stdio".parse(), Ok(ConsoleConfig::Stdio));
        assert_eq!("none".parse(), Ok(ConsoleConfig::None));
        assert_eq!(
            "file:/tmp/x".parse(),
            Ok(ConsoleConfig::File(PathBuf::from("/tmp/x")))
        );
        assert!("file:".parse::<ConsoleConfig>().is_err());
        assert!("tty".parse::<ConsoleConfig>().is_err());
    }

    #[test]
    fn defaults() {
        let c = VmConfig::new("/k");
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.memory_mib, DEFAULT_MEMORY_MIB);
        assert!(c.cmdline.contains("console=ttyS0"));
    }
}
