//! The container engine: a registry of containers and their processes, with one
//! method per protocol request. youki's libcontainer does the container setup; each
//! libcontainer call runs in a forked helper (see `helper.rs`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use hull_protocol::{
    AgentError, ContainerState, CreateContainer, ErrorKind, ExecProcess, ExitStatus, Stats, Status,
    StdioMode, StreamKind,
};
use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container as LcContainer;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::{LinuxResources, Process, Spec};
use serde::{Deserialize, Serialize};

use crate::stdio::{self, AgentSide, ChildSide, StdinHandle};
use crate::{cgroups, helper, reaper};

/// Where our own per-container files live, under the state root. '@' cannot occur in
/// a container id, so this never collides with libcontainer's `<state_root>/<id>`.
const OWN_DIR: &str = "@hull";

/// How long `Delete` waits for a killed container's init to exit.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where libcontainer keeps its state (`<state_root>/<id>`) and the engine its
    /// own files (`<state_root>/@hull/<id>`).
    pub state_root: PathBuf,
    /// cgroupsPath for specs without one: `<default_cgroup_parent>/<id>`.
    pub default_cgroup_parent: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            state_root: PathBuf::from("/run/hull-agent"),
            default_cgroup_parent: "/hull".into(),
        }
    }
}

/// The container registry. Cheap to clone; all clones share the containers.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: EngineConfig,
    containers: Mutex<HashMap<String, Arc<Container>>>,
}

/// Cgroup directories any container of this process created (parents shared by
/// several containers included): removed once empty, whoever created them. Global
/// because cgroups are: engines in one process share parents.
static OWNED_CGROUP_DIRS: LazyLock<Mutex<HashSet<PathBuf>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

/// Creates hold it shared, removal of cgroup dirs exclusively, so that a parent is
/// never removed between its creation and its child's.
static CGROUP_RW: RwLock<()> = RwLock::new(());

struct Container {
    id: String,
    bundle: String,
    annotations: HashMap<String, String>,
    record: Record,
    init: Arc<Proc>,
    /// Serializes state-changing operations on this container.
    op: Mutex<()>,
    st: Mutex<CState>,
}

struct CState {
    /// Our view while init lives: Created, Running or Paused.
    status: Status,
    execs: HashMap<String, Arc<Proc>>,
}

/// What must survive the agent to clean up after a container (see `host::cleanup`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: String,
    pub cgroup_path: PathBuf,
    /// Cgroup directories (ancestors included) that did not exist before create.
    pub created_cgroup_dirs: Vec<PathBuf>,
}

/// One process: a container's init or an exec'd process.
pub(crate) struct Proc {
    pub pid: i32,
    /// Reaper stamp taken before the process was forked.
    since: u64,
    io: Mutex<ProcIo>,
    streams: Mutex<usize>,
    streams_done: Condvar,
}

#[derive(Default)]
struct ProcIo {
    stdin: Option<StdinHandle>,
    stdout: Option<File>,
    stderr: Option<File>,
    pty: Option<Arc<File>>,
    pty_attached: bool,
}

/// One attached stdio stream, handed to the server. While it lives the process counts
/// as having an attached stream (see [`Engine::wait_streams`]).
pub struct AttachedStream {
    pub endpoint: StreamEndpoint,
    _guard: StreamGuard,
}

pub enum StreamEndpoint {
    /// stdout or stderr: read until EOF.
    Output(File),
    /// stdin: write, then set to `None` (closing it) at the client's EOF.
    Input(StdinHandle),
    /// pty master, both directions.
    Terminal(Arc<File>),
}

struct StreamGuard(Arc<Proc>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut n = lock(&self.0.streams);
        *n = n.saturating_sub(1);
        self.0.streams_done.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> AgentError {
    AgentError::new(kind, msg)
}

impl Proc {
    fn new(pid: i32, since: u64, agent: AgentSide, pty: Option<File>) -> Arc<Proc> {
        reaper::global().watch(pid);
        Arc::new(Proc {
            pid,
            since,
            io: Mutex::new(ProcIo {
                stdin: agent.stdin.map(|f| Arc::new(Mutex::new(Some(f)))),
                stdout: agent.stdout,
                stderr: agent.stderr,
                pty: pty.map(Arc::new),
                pty_attached: false,
            }),
            streams: Mutex::new(0),
            streams_done: Condvar::new(),
        })
    }

    fn exit(&self) -> Option<ExitStatus> {
        reaper::global().try_get(self.pid, self.since)
    }

    fn wait(&self) -> ExitStatus {
        reaper::global().wait(self.pid, self.since)
    }
}

/// Checks an id the way libcontainer does, but with our error.
fn check_id(what: &str, id: &str) -> Result<(), AgentError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(err(
            ErrorKind::InvalidRequest,
            format!("invalid {what} {id:?}: use 1-1024 of [A-Za-z0-9_+-.], not \".\" or \"..\""),
        ))
    }
}

/// The full cause chain of a libcontainer error (its Display alone is often vague).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

fn lc_err(op: &str, id: &str, e: LibcontainerError) -> AgentError {
    let kind = match &e {
        LibcontainerError::IncorrectStatus(_) => ErrorKind::InvalidState,
        LibcontainerError::Exist => ErrorKind::AlreadyExists,
        LibcontainerError::NoDirectory => ErrorKind::NotFound,
        LibcontainerError::InvalidID(_) => ErrorKind::InvalidRequest,
        LibcontainerError::MissingSpec(_)
        | LibcontainerError::InvalidSpec(_)
        | LibcontainerError::Spec(_) => ErrorKind::InvalidSpec,
        _ => ErrorKind::Runtime,
    };
    err(kind, format!("{op} container {id}: {}", chain(&e)))
}

/// `HOME` from the rootfs's /etc/passwd (read here, so that the container's NSS
/// modules are never loaded by the agent), or "/".
fn home_for(rootfs: &Path, uid: u32) -> String {
    std::fs::read_to_string(rootfs.join("etc/passwd"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

fn ensure_home(process: &mut Process, rootfs: &Path) {
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_for(rootfs, process.user().uid())));
        process.set_env(Some(env));
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), AgentError> {
    let body = serde_json::to_vec_pretty(v)
        .map_err(|e| err(ErrorKind::Runtime, format!("{}: {e}", path.display())))?;
    std::fs::write(path, body).map_err(|e| {
        err(
            ErrorKind::Runtime,
            format!("writing {}: {e}", path.display()),
        )
    })
}

impl Engine {
    /// Creates the state root and makes this process a child subreaper, so that
    /// container processes (children of short-lived helpers) are reparented here.
    pub fn new(cfg: EngineConfig) -> Result<Engine, AgentError> {
        std::fs::create_dir_all(cfg.state_root.join(OWN_DIR)).map_err(|e| {
            err(
                ErrorKind::Runtime,
                format!("state root {}: {e}", cfg.state_root.display()),
            )
        })?;
        let state_root = cfg.state_root.canonicalize().map_err(|e| {
            err(
                ErrorKind::Runtime,
                format!("state root {}: {e}", cfg.state_root.display()),
            )
        })?;
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 && nix::unistd::getpid().as_raw() != 1 {
            return Err(err(
                ErrorKind::Runtime,
                format!(
                    "PR_SET_CHILD_SUBREAPER: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        reaper::global();
        Ok(Engine {
            inner: Arc::new(Inner {
                cfg: EngineConfig { state_root, ..cfg },
                containers: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    fn state_root(&self) -> &Path {
        &self.inner.cfg.state_root
    }

    fn own_dir(&self, id: &str) -> PathBuf {
        own_dir(self.state_root(), id)
    }

    fn get(&self, id: &str) -> Result<Arc<Container>, AgentError> {
        lock(&self.inner.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("container {id} does not exist"),
                )
            })
    }

    fn proc(&self, id: &str, exec_id: Option<&str>) -> Result<Arc<Proc>, AgentError> {
        let c = self.get(id)?;
        match exec_id {
            None => Ok(c.init.clone()),
            Some(e) => lock(&c.st).execs.get(e).cloned().ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("process {e} does not exist in container {id}"),
                )
            }),
        }
    }

    /// Creates the container with its init held before exec; returns init's pid.
    pub fn create(&self, req: CreateContainer) -> Result<i32, AgentError> {
        let id = req.id.clone();
        check_id("container id", &id)?;
        {
            let map = lock(&self.inner.containers);
            if map.contains_key(&id) {
                return Err(err(
                    ErrorKind::AlreadyExists,
                    format!("container {id} already exists"),
                ));
            }
        }
        let own = self.own_dir(&id);
        // Creating our directory is the reservation of the id, also against a
        // concurrent create of the same id and against leftovers of a crashed agent.
        if self.state_root().join(&id).exists() {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!(
                    "container {id} already exists (state in {})",
                    self.state_root().join(&id).display()
                ),
            ));
        }
        if let Err(e) = std::fs::create_dir(&own) {
            let kind = if e.kind() == std::io::ErrorKind::AlreadyExists {
                ErrorKind::AlreadyExists
            } else {
                ErrorKind::Runtime
            };
            return Err(err(kind, format!("container {id}: {}: {e}", own.display())));
        }
        let guard = CGROUP_RW.read().unwrap_or_else(|e| e.into_inner());
        let res = self.create_in(&own, req);
        drop(guard);
        match res {
            Ok(pid) => Ok(pid),
            Err(e) => {
                if let Ok(rec) = read_record(&own) {
                    self.release_cgroups(&rec);
                }
                let _ = std::fs::remove_dir_all(&own);
                Err(e)
            }
        }
    }

    fn create_in(&self, own: &Path, req: CreateContainer) -> Result<i32, AgentError> {
        let id = req.id.clone();
        let mut spec = req.spec;
        let version = spec.version().clone();
        if !version.starts_with("1.") {
            return Err(err(
                ErrorKind::InvalidSpec,
                format!("ociVersion: {version:?} is not 1.x"),
            ));
        }
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| err(ErrorKind::InvalidSpec, "process: missing"))?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(err(ErrorKind::InvalidSpec, "process.args: empty"));
        }
        let mut linux = spec
            .linux()
            .clone()
            .ok_or_else(|| err(ErrorKind::InvalidSpec, "linux: missing"))?;
        let root = spec
            .root()
            .clone()
            .ok_or_else(|| err(ErrorKind::InvalidSpec, "root: missing"))?;
        let rootfs = match &req.rootfs {
            Some(r) => PathBuf::from(r),
            None => Path::new(&req.bundle).join(root.path()),
        };
        if !rootfs.is_dir() {
            return Err(err(
                ErrorKind::InvalidSpec,
                format!("root.path: rootfs {} is not a directory", rootfs.display()),
            ));
        }
        let rootfs = rootfs.canonicalize().map_err(|e| {
            err(
                ErrorKind::InvalidSpec,
                format!("root.path: {}: {e}", rootfs.display()),
            )
        })?;
        let mut root = root;
        root.set_path(rootfs.clone());
        spec.set_root(Some(root));
        ensure_home(&mut process, &rootfs);
        let terminal = process.terminal().unwrap_or(false);
        spec.set_process(Some(process));
        let cgroup_path = linux.cgroups_path().clone().unwrap_or_else(|| {
            PathBuf::from(format!(
                "{}/{id}",
                self.inner.cfg.default_cgroup_parent.trim_end_matches('/')
            ))
        });
        linux.set_cgroups_path(Some(cgroup_path.clone()));
        spec.set_linux(Some(linux));
        let annotations = spec.annotations().clone().unwrap_or_default();

        let record = Record {
            id: id.clone(),
            created_cgroup_dirs: cgroups::missing_dirs(&cgroup_path),
            cgroup_path,
        };
        lock(&OWNED_CGROUP_DIRS).extend(record.created_cgroup_dirs.iter().cloned());
        write_json(&own.join("record.json"), &record)?;
        // libcontainer reads the spec from `<bundle>/config.json`: our own dir is the
        // bundle it sees, with the rootfs made absolute.
        write_json(&own.join("config.json"), &spec)?;

        let (child, agent) = stdio::prepare(&req.stdio, terminal, &own.join("console.sock"))?;
        let mut keep = child.raw_fds();
        let preserve = if req.preserve_fds > 0 {
            if req.stdio != StdioMode::Inherit && nix::unistd::getpid().as_raw() == 1 {
                return Err(err(
                    ErrorKind::Unsupported,
                    "preserve_fds: only the host-side agent can pass extra fds",
                ));
            }
            keep.extend((0..req.preserve_fds as RawFd).map(|i| 3 + i));
            req.preserve_fds as i32
        } else {
            0
        };
        let since = reaper::global().mark();
        let state_root = self.state_root().to_path_buf();
        let bundle_dir = own.to_path_buf();
        let no_pivot = req.no_pivot;
        let cid = id.clone();
        let pid = helper::run("create", &keep, move || {
            let mut b = base_builder(&cid, &state_root, child)?;
            b = b.with_preserved_fds(preserve);
            let c = b
                .as_init(&bundle_dir)
                .with_systemd(false)
                .with_detach(true)
                .with_no_pivot(no_pivot)
                .build()
                .map_err(|e| lc_err("create", &cid, e))?;
            c.pid().map(|p| p.as_raw()).ok_or_else(|| {
                err(
                    ErrorKind::Runtime,
                    format!("create container {cid}: no pid"),
                )
            })
        })?;
        let pty = match &agent.console {
            Some((l, p)) => match stdio::receive_pty(l, p) {
                Ok(f) => Some(f),
                Err(e) => {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = self.lc_delete(&id);
                    return Err(e);
                }
            },
            None => None,
        };
        let init = Proc::new(pid, since, agent, pty);
        let c = Arc::new(Container {
            id: id.clone(),
            bundle: req.bundle,
            annotations,
            record,
            init,
            op: Mutex::new(()),
            st: Mutex::new(CState {
                status: Status::Created,
                execs: HashMap::new(),
            }),
        });
        lock(&self.inner.containers).insert(id, c);
        Ok(pid)
    }

    /// Releases the held init (OCI start).
    pub fn start(&self, id: &str) -> Result<(), AgentError> {
        let c = self.get(id)?;
        let _op = lock(&c.op);
        let status = self.status_of(&c);
        if status != Status::Created {
            return Err(err(
                ErrorKind::InvalidState,
                format!("container {id} is {status}, not created"),
            ));
        }
        let root = self.state_root().join(id);
        let cid = id.to_string();
        helper::run("start", &[], move || {
            let mut lc = LcContainer::load(root).map_err(|e| lc_err("start", &cid, e))?;
            lc.start().map_err(|e| lc_err("start", &cid, e))
        })?;
        lock(&c.st).status = Status::Running;
        Ok(())
    }

    /// Starts an additional process in a running container; returns its pid.
    pub fn exec(&self, req: ExecProcess) -> Result<i32, AgentError> {
        let id = req.id.clone();
        let c = self.get(&id)?;
        check_id("exec id", &req.exec_id)?;
        let _op = lock(&c.op);
        let status = self.status_of(&c);
        if status != Status::Running {
            return Err(err(
                ErrorKind::InvalidState,
                format!("container {id} is {status}, not running: cannot exec"),
            ));
        }
        if lock(&c.st).execs.contains_key(&req.exec_id) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("process {} already exists in container {id}", req.exec_id),
            ));
        }
        let mut process = req.process;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(err(ErrorKind::InvalidSpec, "process.args: empty"));
        }
        let spec = self.spec_of(&id);
        let rootfs = spec
            .as_ref()
            .and_then(|s| s.root().as_ref().map(|r| r.path().clone()))
            .unwrap_or_else(|| PathBuf::from("/"));
        let seccomp = spec.and_then(|s| s.linux().as_ref().and_then(|l| l.seccomp().clone()));
        ensure_home(&mut process, &rootfs);
        let terminal = process.terminal().unwrap_or(false);
        let own = self.own_dir(&id);
        let pfile = own.join(format!("exec-{}.json", req.exec_id));
        write_json(&pfile, &process)?;
        let console = own.join(format!("exec-{}.sock", req.exec_id));
        let prepared = stdio::prepare(&req.stdio, terminal, &console);
        let (child, agent) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&pfile);
                return Err(e);
            }
        };
        let keep = child.raw_fds();
        let since = reaper::global().mark();
        let state_root = self.state_root().to_path_buf();
        let cid = id.clone();
        let pf = pfile.clone();
        let res = helper::run("exec", &keep, move || {
            let mut b = base_builder(&cid, &state_root, child)?;
            if let Some(seccomp) = seccomp {
                b = b.with_executor(crate::seccomp::SeccompExecutor::new(seccomp));
            }
            let pid = b
                .as_tenant()
                .with_process(Some(&pf))
                .with_detach(true)
                .build()
                .map_err(|e| lc_err("exec in", &cid, e))?;
            Ok(pid.as_raw())
        });
        let _ = std::fs::remove_file(&pfile);
        let pid = res?;
        let pty = match &agent.console {
            Some((l, p)) => match stdio::receive_pty(l, p) {
                Ok(f) => Some(f),
                Err(e) => {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return Err(e);
                }
            },
            None => None,
        };
        let p = Proc::new(pid, since, agent, pty);
        lock(&c.st).execs.insert(req.exec_id, p);
        Ok(pid)
    }

    fn spec_of(&self, id: &str) -> Option<Spec> {
        std::fs::read(self.own_dir(id).join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Spec>(&b).ok())
    }

    /// Sends a signal to init, to one exec'd process, or (`all`) to every process in
    /// the container's cgroup.
    pub fn signal(
        &self,
        id: &str,
        exec_id: Option<&str>,
        signal: i32,
        all: bool,
    ) -> Result<(), AgentError> {
        let c = self.get(id)?;
        let sig = nix::sys::signal::Signal::try_from(signal).map_err(|_| {
            err(
                ErrorKind::InvalidRequest,
                format!("signal {signal} is not a valid signal number"),
            )
        })?;
        if let Some(e) = exec_id {
            let p = self.proc(id, Some(e))?;
            if p.exit().is_some() {
                return Err(err(
                    ErrorKind::InvalidState,
                    format!("process {e} in container {id} has exited"),
                ));
            }
            return kill(p.pid, sig);
        }
        let status = self.status_of(&c);
        if all {
            for pid in cgroups::pids(&c.record.cgroup_path) {
                let _ = kill(pid, sig);
            }
        } else {
            if status == Status::Stopped {
                return Err(err(
                    ErrorKind::InvalidState,
                    format!("container {id} is stopped"),
                ));
            }
            kill(c.init.pid, sig)?;
        }
        if status == Status::Paused && sig == nix::sys::signal::Signal::SIGKILL {
            // A frozen v1 task cannot die until thawed.
            let _ = self.freeze(&c, libcgroups::common::FreezerState::Thawed);
        }
        Ok(())
    }

    /// Blocks until the process has exited.
    pub fn wait(&self, id: &str, exec_id: Option<&str>) -> Result<ExitStatus, AgentError> {
        let p = self.proc(id, exec_id)?;
        Ok(p.wait())
    }

    fn status_of(&self, c: &Container) -> Status {
        if c.init.exit().is_some() {
            Status::Stopped
        } else {
            lock(&c.st).status
        }
    }

    fn state_of(&self, c: &Container) -> ContainerState {
        let exit = c.init.exit();
        let status = self.status_of(c);
        ContainerState {
            id: c.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                c.init.pid
            },
            bundle: c.bundle.clone(),
            annotations: c.annotations.clone(),
            exit,
        }
    }

    pub fn state(&self, id: &str) -> Result<ContainerState, AgentError> {
        let c = self.get(id)?;
        Ok(self.state_of(&c))
    }

    pub fn list(&self) -> Vec<ContainerState> {
        let cs: Vec<Arc<Container>> = lock(&self.inner.containers).values().cloned().collect();
        let mut out: Vec<ContainerState> = cs.iter().map(|c| self.state_of(c)).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Pids of every process in the container's cgroup.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>, AgentError> {
        let c = self.get(id)?;
        Ok(cgroups::pids(&c.record.cgroup_path))
    }

    pub fn pause(&self, id: &str) -> Result<(), AgentError> {
        self.pause_resume(id, true)
    }

    pub fn resume(&self, id: &str) -> Result<(), AgentError> {
        self.pause_resume(id, false)
    }

    fn pause_resume(&self, id: &str, pause: bool) -> Result<(), AgentError> {
        let c = self.get(id)?;
        let _op = lock(&c.op);
        let status = self.status_of(&c);
        let (need, op, next) = if pause {
            (Status::Running, "pause", Status::Paused)
        } else {
            (Status::Paused, "resume", Status::Running)
        };
        if status != need {
            return Err(err(
                ErrorKind::InvalidState,
                format!("container {id} is {status}, not {need}: cannot {op}"),
            ));
        }
        let root = self.state_root().join(id);
        let cid = id.to_string();
        helper::run(op, &[], move || {
            let mut lc = LcContainer::load(root).map_err(|e| lc_err(op, &cid, e))?;
            if pause { lc.pause() } else { lc.resume() }.map_err(|e| lc_err(op, &cid, e))
        })?;
        lock(&c.st).status = next;
        Ok(())
    }

    fn cgroup_manager(
        &self,
        c: &Container,
    ) -> Result<libcgroups::common::AnyCgroupManager, AgentError> {
        libcgroups::common::create_cgroup_manager(CgroupConfig {
            cgroup_path: c.record.cgroup_path.clone(),
            systemd_cgroup: false,
            container_name: c.id.clone(),
        })
        .map_err(|e| {
            err(
                ErrorKind::Runtime,
                format!("cgroups of container {}: {}", c.id, chain(&e)),
            )
        })
    }

    fn freeze(
        &self,
        c: &Container,
        state: libcgroups::common::FreezerState,
    ) -> Result<(), AgentError> {
        self.cgroup_manager(c)?.freeze(state).map_err(|e| {
            err(
                ErrorKind::Runtime,
                format!("freezer of container {}: {}", c.id, chain(&e)),
            )
        })
    }

    /// Applies new cgroup limits.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), AgentError> {
        let c = self.get(id)?;
        let _op = lock(&c.op);
        let status = self.status_of(&c);
        if status == Status::Stopped {
            return Err(err(
                ErrorKind::InvalidState,
                format!("container {id} is stopped: cannot update"),
            ));
        }
        let opt = ControllerOpt {
            resources,
            disable_oom_killer: resources
                .memory()
                .as_ref()
                .and_then(|m| m.disable_oom_killer())
                .unwrap_or(false),
            oom_score_adj: None,
            freezer_state: None,
        };
        self.cgroup_manager(&c)?.apply(&opt).map_err(|e| {
            err(
                ErrorKind::InvalidSpec,
                format!("linux.resources for container {id}: {}", chain(&e)),
            )
        })
    }

    pub fn stats(&self, id: &str) -> Result<Stats, AgentError> {
        let c = self.get(id)?;
        Ok(cgroups::stats(&c.record.cgroup_path))
    }

    pub fn resize(
        &self,
        id: &str,
        exec_id: Option<&str>,
        rows: u16,
        cols: u16,
    ) -> Result<(), AgentError> {
        let p = self.proc(id, exec_id)?;
        let pty = lock(&p.io).pty.clone();
        match pty {
            Some(pty) => stdio::resize(&pty, rows, cols),
            None => Err(err(
                ErrorKind::InvalidState,
                format!(
                    "process {} of container {id} has no terminal",
                    exec_id.unwrap_or("init")
                ),
            )),
        }
    }

    /// Closes the process's stdin (for a terminal: sends EOF, ^D).
    pub fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Result<(), AgentError> {
        let p = self.proc(id, exec_id)?;
        let io = lock(&p.io);
        if let Some(stdin) = &io.stdin {
            *lock(stdin) = None;
            return Ok(());
        }
        if let Some(pty) = &io.pty {
            let _ = (&**pty).write_all(&[4]);
            return Ok(());
        }
        Ok(())
    }

    /// Hands one stdio stream of a process to a client. Each stream can be attached
    /// once; a terminal stream replaces stdin and stdout.
    pub fn attach(
        &self,
        id: &str,
        exec_id: Option<&str>,
        kind: StreamKind,
    ) -> Result<AttachedStream, AgentError> {
        let p = self.proc(id, exec_id)?;
        let who = format!("process {} of container {id}", exec_id.unwrap_or("init"));
        let mut io = lock(&p.io);
        let endpoint = match kind {
            StreamKind::Stdin => io.stdin.clone().map(StreamEndpoint::Input),
            StreamKind::Stdout => io.stdout.take().map(StreamEndpoint::Output),
            StreamKind::Stderr => io.stderr.take().map(StreamEndpoint::Output),
            StreamKind::Terminal if !io.pty_attached => {
                let t = io.pty.clone().map(StreamEndpoint::Terminal);
                io.pty_attached = t.is_some();
                t
            }
            StreamKind::Terminal => None,
        };
        drop(io);
        let endpoint = endpoint.ok_or_else(|| {
            err(
                ErrorKind::InvalidState,
                format!("{who} has no {kind:?} stream to attach (not Streams stdio, a terminal mismatch, or already attached)"),
            )
        })?;
        *lock(&p.streams) += 1;
        Ok(AttachedStream {
            endpoint,
            _guard: StreamGuard(p),
        })
    }

    /// Waits (up to `timeout`) until no attached stream of the container's processes
    /// is still being pumped. Returns false on timeout.
    pub fn wait_streams(&self, id: &str, timeout: Duration) -> bool {
        let Ok(c) = self.get(id) else {
            return true;
        };
        let mut procs = vec![c.init.clone()];
        procs.extend(lock(&c.st).execs.values().cloned());
        let deadline = std::time::Instant::now() + timeout;
        for p in procs {
            let mut n = lock(&p.streams);
            while *n > 0 {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return false;
                }
                n = p
                    .streams_done
                    .wait_timeout(n, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        true
    }

    /// Removes a container. A running one needs `force` (it is killed first); a created
    /// one is killed without.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), AgentError> {
        let c = self.get(id)?;
        let _op = lock(&c.op);
        let status = self.status_of(&c);
        if matches!(status, Status::Running | Status::Paused) && !force {
            return Err(err(
                ErrorKind::InvalidState,
                format!("container {id} is {status}: stop it first or delete with force"),
            ));
        }
        if status != Status::Stopped {
            for pid in cgroups::pids(&c.record.cgroup_path) {
                let _ = kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = kill(c.init.pid, nix::sys::signal::Signal::SIGKILL);
            if status == Status::Paused {
                let _ = self.freeze(&c, libcgroups::common::FreezerState::Thawed);
            }
            if reaper::global()
                .wait_timeout(c.init.pid, c.init.since, KILL_TIMEOUT)
                .is_none()
            {
                return Err(err(
                    ErrorKind::Runtime,
                    format!(
                        "delete container {id}: init (pid {}) did not die",
                        c.init.pid
                    ),
                ));
            }
        }
        let res = self.lc_delete(id);
        self.release_cgroups(&c.record);
        let _ = std::fs::remove_dir_all(self.own_dir(id));
        lock(&self.inner.containers).remove(id);
        reaper::global().unwatch(c.init.pid);
        for p in lock(&c.st).execs.values() {
            reaper::global().unwatch(p.pid);
        }
        res
    }

    /// Removes the cgroup dirs the container's create added, and parents that another
    /// container of this process added and left because this one still used them.
    fn release_cgroups(&self, rec: &Record) {
        let _g = CGROUP_RW.write().unwrap_or_else(|e| e.into_inner());
        let mine = cgroups::paths(&rec.cgroup_path);
        let mut owned = lock(&OWNED_CGROUP_DIRS);
        let mut dirs: Vec<PathBuf> = rec.created_cgroup_dirs.clone();
        dirs.extend(
            owned
                .iter()
                .filter(|d| mine.iter().any(|m| m.starts_with(d)))
                .cloned(),
        );
        cgroups::remove_dirs(&dirs);
        owned.retain(|d| d.exists());
    }

    /// libcontainer's delete of a stopped container: its cgroup and state dir.
    fn lc_delete(&self, id: &str) -> Result<(), AgentError> {
        lc_delete(self.state_root(), id)
    }

    /// True when no container is registered.
    pub fn is_empty(&self) -> bool {
        lock(&self.inner.containers).is_empty()
    }
}

pub(crate) fn own_dir(state_root: &Path, id: &str) -> PathBuf {
    state_root.join(OWN_DIR).join(id)
}

pub(crate) fn read_record(own: &Path) -> Result<Record, AgentError> {
    let p = own.join("record.json");
    let b =
        std::fs::read(&p).map_err(|e| err(ErrorKind::NotFound, format!("{}: {e}", p.display())))?;
    serde_json::from_slice(&b).map_err(|e| err(ErrorKind::Runtime, format!("{}: {e}", p.display())))
}

pub(crate) fn lc_delete(state_root: &Path, id: &str) -> Result<(), AgentError> {
    let root = state_root.join(id);
    if !root.exists() {
        return Ok(());
    }
    let cid = id.to_string();
    helper::run("delete", &[], move || {
        let mut lc = LcContainer::load(root).map_err(|e| lc_err("delete", &cid, e))?;
        lc.delete(true).map_err(|e| lc_err("delete", &cid, e))
    })
}

fn kill(pid: i32, sig: nix::sys::signal::Signal) -> Result<(), AgentError> {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(err(ErrorKind::Runtime, format!("kill({pid}, {sig}): {e}"))),
    }
}

/// A ContainerBuilder with the stdio of `child` (runs in the helper).
fn base_builder(
    id: &str,
    state_root: &Path,
    child: ChildSide,
) -> Result<ContainerBuilder, AgentError> {
    let mut b = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(state_root)
        .map_err(|e| lc_err("set up", id, e))?
        .with_console_socket(child.console_socket.as_ref());
    if let Some(f) = child.stdin {
        b = b.with_stdin(f);
    }
    if let Some(f) = child.stdout {
        b = b.with_stdout(f);
    }
    if let Some(f) = child.stderr {
        b = b.with_stderr(f);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_like_libcontainer() {
        assert!(check_id("id", "abc-1_2+x.y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a@b"] {
            let e = check_id("container id", bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidRequest);
            assert!(e.message.contains("container id"), "{}", e.message);
        }
    }

    #[test]
    fn home_comes_from_the_rootfs_passwd() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(home_for(d.path(), 0), "/root");
        assert_eq!(home_for(d.path(), 1000), "/home/u");
        assert_eq!(home_for(d.path(), 5), "/");
    }
}
