//! `hull-guest-image`: builds (through the cache) and installs the guest initramfs, or
//! lists an archive.

use clap::{Parser, Subcommand};
use hull_guest_image::{cpio, default_cache_dir, find_static_busybox, install, ImageSpec};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Builds hull's guest initramfs (/init = static hull-agent)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the image (cached by content) and install it.
    Build {
        /// The static hull-agent (scripts/build-agent-static.sh).
        #[arg(long)]
        agent: PathBuf,
        /// Add a busybox rootfs at /hull/busybox-rootfs, from this static busybox.
        #[arg(long, conflicts_with = "with_busybox")]
        busybox: Option<PathBuf>,
        /// Add a busybox rootfs from $HULL_BUSYBOX, /usr/bin/busybox or /bin/busybox.
        #[arg(long)]
        with_busybox: bool,
        /// Where to install the image, e.g. /var/lib/hull/initramfs.img.
        #[arg(long)]
        out: PathBuf,
        /// Cache directory (default: ${XDG_CACHE_HOME:-$HOME/.cache}/hull/initramfs).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// List an archive's entries, like `cpio -tv`.
    List { archive: PathBuf },
}

fn main() -> ExitCode {
    match run(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hull-guest-image: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        Cmd::Build {
            agent,
            busybox,
            with_busybox,
            out,
            cache_dir,
        } => {
            let busybox = match (busybox, with_busybox) {
                (Some(b), _) => Some(b),
                (None, true) => Some(find_static_busybox().ok_or(
                    "--with-busybox: no static busybox (install busybox-static or set HULL_BUSYBOX)",
                )?),
                (None, false) => None,
            };
            let spec = ImageSpec { agent, busybox };
            let cached = spec.build_cached(&cache_dir.unwrap_or_else(default_cache_dir))?;
            install(&cached, &out)?;
            let size = std::fs::metadata(&out)?.len();
            eprintln!(
                "hull-guest-image: {} ({size} bytes, {:.1} MiB; cached as {})",
                out.display(),
                size as f64 / 1048576.0,
                cached.display()
            );
            Ok(())
        }
        Cmd::List { archive } => {
            for e in cpio::read_all(&std::fs::read(&archive)?)? {
                let h = &e.header;
                let extra = match h.mode & cpio::S_IFMT {
                    cpio::S_IFLNK => format!(" -> {}", String::from_utf8_lossy(&e.data)),
                    cpio::S_IFCHR | cpio::S_IFBLK => {
                        format!(" ({}, {})", h.rdev_major, h.rdev_minor)
                    }
                    _ => String::new(),
                };
                println!("{:07o} {:>10} {}{extra}", h.mode, h.file_size, h.name);
            }
            Ok(())
        }
    }
}
