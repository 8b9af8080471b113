//! `hull-vhost-user`: serves hull's devices to QEMU as vhost-user backends, one device per
//! process: `hull-vhost-user vsock --socket <vhost-user.sock> --uds-path <uds> --guest-cid 3`,
//! `hull-vhost-user fs --socket <vhost-user.sock> --shared-dir <dir> [--tag <tag>] [--readonly]
//! [--cache auto|never|metadata|always]`,
//! `hull-vhost-user blk --socket <vhost-user.sock> --path <image> [--readonly] [--id <serial>]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hull_devices::blk::{BlkConfig, Block};
use hull_devices::fs::{raise_fd_limit, CachePolicy, Fs, FsConfig};
use hull_devices::vhost_user::serve;
use hull_devices::vsock::Vsock;
use vhost::vhost_user::message::VhostUserProtocolFeatures as Protocol;

#[derive(Parser)]
#[command(version, about = "hull's virtio devices as vhost-user backends")]
struct Cli {
    #[command(subcommand)]
    device: Device,
}

#[derive(Subcommand)]
enum Device {
    /// virtio-vsock, exposed on the host as a hybrid-vsock Unix socket.
    Vsock {
        /// The vhost-user socket to listen on (QEMU's chardev connects to it).
        #[arg(long)]
        socket: PathBuf,
        /// Host side: `CONNECT <port>` here reaches the guest; guest connections to port P
        /// reach `<uds-path>_P`.
        #[arg(long)]
        uds_path: PathBuf,
        #[arg(long, default_value_t = 3)]
        guest_cid: u64,
    },
    /// virtio-fs: shares a host directory with the guest (FUSE passthrough).
    Fs {
        /// The vhost-user socket to listen on (QEMU's chardev connects to it).
        #[arg(long)]
        socket: PathBuf,
        /// The host directory to share (a bundle's rootfs, a volume).
        #[arg(long)]
        shared_dir: PathBuf,
        /// Mount tag; QEMU's `tag=` property is what the guest sees, keep them equal.
        #[arg(long, default_value = "rootfs")]
        tag: String,
        /// Refuse every change to the shared directory (EROFS).
        #[arg(long)]
        readonly: bool,
        /// Guest caching: auto (close-to-open), never (for dirs the host changes too),
        /// metadata, always.
        #[arg(long, default_value = "auto")]
        cache: CachePolicy,
    },
    /// virtio-blk on a raw image file (QEMU's `vhost-user-blk`).
    Blk {
        /// The vhost-user socket to listen on (QEMU's chardev connects to it).
        #[arg(long)]
        socket: PathBuf,
        /// The raw image (or block device) to serve.
        #[arg(long)]
        path: PathBuf,
        /// Refuse writes and discards; the guest sees a read-only disk.
        #[arg(long)]
        readonly: bool,
        /// Serial the guest reads with GET_ID (at most 20 bytes).
        #[arg(long)]
        id: Option<String>,
    },
}

/// Logs to stderr at the level named by `HULL_LOG` (error, warn, info, debug, trace).
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("hull-vhost-user: {}: {}", r.level(), r.args());
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    let level = std::env::var("HULL_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    let _ = log::set_logger(&StderrLog);
    log::set_max_level(level);

    let cli = Cli::parse();
    let result = match cli.device {
        Device::Vsock {
            socket,
            uds_path,
            guest_cid,
        } => Vsock::new(guest_cid, &uds_path)
            .map_err(|e| e.to_string())
            .and_then(|dev| {
                // The backend owns the config space (the CID).
                let protocol = Protocol::CONFIG | Protocol::RESET_DEVICE;
                serve("hull-vhost-user-vsock", dev, protocol, &socket).map_err(|e| e.to_string())
            }),
        Device::Fs {
            socket,
            shared_dir,
            tag,
            readonly,
            cache,
        } => {
            let mut cfg = FsConfig::new(shared_dir, tag);
            cfg.readonly = readonly;
            cfg.cache = cache;
            // Every inode the guest looks up holds an fd.
            raise_fd_limit();
            // QEMU owns the config space (its `tag=`); MQ: it asks how many queues we serve.
            Fs::new(cfg).map_err(|e| e.to_string()).and_then(|dev| {
                serve("hull-vhost-user-fs", dev, Protocol::MQ, &socket).map_err(|e| e.to_string())
            })
        }
        Device::Blk {
            socket,
            path,
            readonly,
            id,
        } => Block::new(BlkConfig { path, readonly, id })
            .map_err(|e| e.to_string())
            .and_then(|dev| {
                // QEMU reads the capacity with GET_CONFIG.
                let protocol = Protocol::CONFIG | Protocol::MQ | Protocol::RESET_DEVICE;
                serve("hull-vhost-user-blk", dev, protocol, &socket).map_err(|e| e.to_string())
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hull-vhost-user: {e}");
            ExitCode::FAILURE
        }
    }
}
