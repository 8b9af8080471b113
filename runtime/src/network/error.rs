//! Errors of the host side of container networking; each names the namespace,
//! interface or command at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network namespace {0} does not exist")]
    NetnsMissing(PathBuf),
    #[error("{path} is not a network namespace: {why}")]
    NotNetns { path: PathBuf, why: String },
    #[error(
        "interface {iface} in network namespace {netns} cannot be redirected to the VM: {why}"
    )]
    Unredirectable {
        netns: PathBuf,
        iface: String,
        why: String,
    },
    /// Setting up or removing taps and tc filters failed.
    #[error("network namespace {netns}: {msg}")]
    Setup { netns: PathBuf, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;
