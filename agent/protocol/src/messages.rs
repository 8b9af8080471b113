//! Requests, responses and the types they carry.

use std::collections::HashMap;

use oci_spec::runtime::{LinuxResources, Process, Spec};
use serde::{Deserialize, Serialize};

/// A request from the host runtime to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// First frame on every connection: the client's protocol version.
    Hello {
        version: u32,
    },
    /// Creates a container and holds its process before exec (OCI `create`).
    Create(Box<CreateContainer>),
    /// Releases the held process (OCI `start`).
    Start {
        id: String,
    },
    /// Starts an additional process in a running container.
    Exec(Box<ExecProcess>),
    /// Sends `signal` to the container's init (`exec_id` None), to one exec'd process,
    /// or with `all` to every process of the container.
    Signal {
        id: String,
        exec_id: Option<String>,
        signal: i32,
        all: bool,
    },
    /// Blocks until the process exits, then answers `Exited`.
    Wait {
        id: String,
        exec_id: Option<String>,
    },
    State {
        id: String,
    },
    List,
    Ps {
        id: String,
    },
    /// The container's processes with what `ps -ef` shows of them, for hosts that
    /// cannot see them (the VM sandbox); answered `Processes`.
    ProcessList {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Update {
        id: String,
        resources: Box<LinuxResources>,
    },
    Stats {
        id: String,
    },
    ResizeTerminal {
        id: String,
        exec_id: Option<String>,
        rows: u16,
        cols: u16,
    },
    CloseStdin {
        id: String,
        exec_id: Option<String>,
    },
    /// Removes a stopped container (`force`: kill it first).
    Delete {
        id: String,
        force: bool,
    },
    /// Turns this connection into the raw byte stream `stream` of one process.
    AttachStream {
        id: String,
        exec_id: Option<String>,
        stream: StreamKind,
    },
    /// Ends the agent (in the guest: powers the VM off).
    Shutdown,
    /// Configures the guest's NICs like the container's network namespace had them
    /// (guest agent only; answered `Ok`). Each NIC is found by its MAC.
    ConfigureNetwork {
        interfaces: Vec<NetInterface>,
    },
}

/// One interface of the container's network namespace, as the guest must mirror it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    /// Its name in the container's netns (for messages; the guest NIC keeps its own).
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`: the VMM gives the guest NIC this MAC, the agent finds the
    /// NIC by it.
    pub mac: String,
    pub mtu: u32,
    /// CIDR, e.g. `10.88.0.2/16` or `fd00::2/64` (link-local ones are left out: the
    /// guest kernel makes its own from the same MAC).
    pub addresses: Vec<String>,
    /// Routes through this interface, in the order they must be added.
    pub routes: Vec<Route>,
}

/// One route through a [`NetInterface`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// CIDR, or `default` (IPv4, or IPv6 when `gateway` is IPv6; `::/0` also works).
    pub dest: String,
    /// None: the destination is on the link.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Preferred source address.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub metric: Option<u32>,
}

/// What `Create` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateContainer {
    pub id: String,
    /// The bundle directory as the agent sees it.
    pub bundle: String,
    /// The rootfs as the agent sees it; `None` means `spec.root.path` relative to
    /// `bundle`.
    pub rootfs: Option<String>,
    pub spec: Spec,
    pub stdio: StdioMode,
    /// runc `--no-pivot`: use MS_MOVE + chroot instead of pivot_root.
    #[serde(default)]
    pub no_pivot: bool,
    /// runc `--preserve-fds`: pass this many extra fds (3, 4, ...) to the process
    /// (host-side agent only).
    #[serde(default)]
    pub preserve_fds: u32,
}

/// What `Exec` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecProcess {
    pub id: String,
    pub exec_id: String,
    pub process: Process,
    pub stdio: StdioMode,
}

/// How a process's stdio is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdioMode {
    /// Pipes (or a pty when the process asks for a terminal) that the client attaches
    /// with `AttachStream`. Output written before the attach waits in the pipe.
    Streams,
    /// The agent's own stdin/stdout/stderr (host-side agent only: the OS-level
    /// sandbox's supervisor hands the caller's fds straight to the container).
    Inherit,
    /// A pty whose master is sent over this Unix socket (runc `--console-socket`;
    /// host-side agent only).
    ConsoleSocket(String),
    /// No stdio: /dev/null.
    Null,
}

/// One stdio stream of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
    /// The pty master, both directions (processes with `terminal: true`).
    Terminal,
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Handshake accepted; the version both sides now speak.
    Hello {
        version: u32,
    },
    Ok,
    /// The process exists (held before exec for `Create`); its pid as the agent sees it.
    Created {
        pid: i32,
    },
    Exited(ExitStatus),
    State(ContainerState),
    List(Vec<ContainerState>),
    Pids(Vec<i32>),
    Processes(Vec<ProcessInfo>),
    Stats(Stats),
    /// From now on the connection carries raw bytes.
    StreamAttached,
    Error(AgentError),
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention runc uses for its own exit status: the code, or
    /// 128 + signal number.
    pub fn as_exit_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// One process as `ps -ef` shows it, read from the agent's /proc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    /// Start time, seconds since the epoch.
    pub start_time: u64,
    /// CPU time (user + system) in seconds.
    pub cpu_seconds: u64,
    /// The command line, or `[comm]` for a process without one.
    pub cmd: String,
}

/// OCI lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// A container as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    /// Init's pid in the agent's pid namespace; 0 once stopped.
    pub pid: i32,
    pub bundle: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Set once init has exited.
    pub exit: Option<ExitStatus>,
}

/// Cgroup counters of one container. Fields a hierarchy does not offer are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu_usage_usec: Option<u64>,
    pub cpu_user_usec: Option<u64>,
    pub cpu_system_usec: Option<u64>,
    pub memory_current: Option<u64>,
    pub memory_max: Option<u64>,
    pub memory_oom_kills: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_max: Option<u64>,
}

/// A typed error whose message names the field, id or value at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct AgentError {
    pub kind: ErrorKind,
    pub message: String,
}

impl AgentError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AgentError {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request itself is malformed or out of order.
    InvalidRequest,
    /// The OCI spec is invalid; the message names the field.
    InvalidSpec,
    NotFound,
    AlreadyExists,
    /// The container or process is in the wrong state for this request.
    InvalidState,
    Unsupported,
    VersionMismatch,
    /// Setting up or running the container failed.
    Runtime,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::InvalidSpec => "invalid spec",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidState => "invalid state",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::VersionMismatch => "version mismatch",
            ErrorKind::Runtime => "runtime error",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_follows_the_shell_convention() {
        assert_eq!(ExitStatus::Code(3).as_exit_code(), 3);
        assert_eq!(ExitStatus::Signal(9).as_exit_code(), 137);
    }

    #[test]
    fn create_round_trips_with_a_default_spec() {
        let req = Request::Create(Box::new(CreateContainer {
            id: "c".into(),
            bundle: "/b".into(),
            rootfs: None,
            spec: Spec::default(),
            stdio: StdioMode::Streams,
            no_pivot: false,
            preserve_fds: 0,
        }));
        let json = serde_json::to_string(&req).unwrap();
        let back: Request = serde_json::from_str(&json).unwrap();
        match back {
            Request::Create(c) => {
                assert_eq!(c.id, "c");
                assert_eq!(c.spec, Spec::default());
                assert_eq!(c.stdio, StdioMode::Streams);
            }
            other => panic!("got {other:?}"),
        }
    }

    #[test]
    fn configure_network_round_trips() {
        let req = Request::ConfigureNetwork {
            interfaces: vec![NetInterface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: 1400,
                addresses: vec!["10.0.0.2/24".into(), "fd00::2/64".into()],
                routes: vec![Route {
                    dest: "default".into(),
                    gateway: Some("10.0.0.1".into()),
                    source: None,
                    metric: None,
                }],
            }],
        };
        let json = serde_json::to_string(&req).unwrap();
        match serde_json::from_str::<Request>(&json).unwrap() {
            Request::ConfigureNetwork { interfaces } => {
                assert_eq!(interfaces.len(), 1);
                assert_eq!(interfaces[0].mtu, 1400);
                assert_eq!(interfaces[0].routes[0].gateway.as_deref(), Some("10.0.0.1"));
            }
            other => panic!("got {other:?}"),
        }
        // Optional route fields may be left out by other writers.
        let r: Route = serde_json::from_str(r#"{"dest":"10.1.0.0/16"}"#).unwrap();
        assert_eq!(r.gateway, None);
    }

    #[test]
    fn status_serializes_as_the_oci_words() {
        assert_eq!(
            serde_json::to_string(&Status::Paused).unwrap(),
            "\"paused\""
        );
        assert_eq!(Status::Created.to_string(), "created");
    }
}
