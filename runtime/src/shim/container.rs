//! One container of the shim: its bundle, the hull that runs it, its init and its
//! exec processes, and the lifecycle operations the Task service maps onto `hull`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use containerd_shim::api::Status;
use containerd_shim_protos::types::mount::Mount;
use serde::{Deserialize, Serialize};

use super::error::ShimError;
use super::events::{Event, Events};
use super::hull_command::{CommandIo, Hull};
use super::process::{Exit, Process};
use super::process_io::{PendingIo, StdioPaths};
use super::reaper::reaper;
use super::rootfs::mount_rootfs;
pub use super::rootfs::unmount_rootfs;

/// What `containerd-shim-hull-v2 delete` needs to clean up after a shim that died:
/// written into the bundle at Create.
pub const SHIM_STATE_FILE: &str = "hull-shim.json";
const INIT_PID_FILE: &str = "init.pid";

#[derive(Debug, Serialize, Deserialize)]
pub struct ShimState {
    pub binary: PathBuf,
    pub root: PathBuf,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub hull: Hull,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// process.json of execs added but not started yet.
    exec_specs: Mutex<HashMap<String, PathBuf>>,
    rootfs_mounted: bool,
    events: Arc<Events>,
}

/// What Create needs besides the request's stdio.
pub struct CreateSpec<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a [Mount],
    pub stdio: StdioPaths,
    pub hull: Hull,
}

/// Reaps `pid` on a thread, then records the exit and tells containerd.
fn watch_exit(process: Arc<Process>, pid: u32, events: Arc<Events>) {
    thread::spawn(move || {
        let code = reaper().wait_for(pid as i32);
        let _started = process.start_lock.lock().unwrap();
        let exit = process.set_exited(code as u32);
        events.send(Event::Exit {
            id: process.container_id.clone(),
            exec_id: process.event_id().to_string(),
            pid,
            status: exit.status,
            at: exit.at,
        });
    });
}

fn read_pid(path: &Path) -> Result<u32, ShimError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ShimError::internal(format!("reading {}: {e}", path.display())))?;
    text.trim().parse().map_err(|_| {
        ShimError::internal(format!("{}: not a pid: {:?}", path.display(), text.trim()))
    })
}

impl Container {
    /// Mounts the rootfs and runs `hull create`; on failure nothing is left.
    pub fn create(spec: CreateSpec, events: Arc<Events>) -> Result<Arc<Container>, ShimError> {
        let CreateSpec {
            id,
            bundle,
            rootfs,
            stdio,
            hull,
        } = spec;
        let state = ShimState {
            binary: hull.binary.clone(),
            root: hull.root.clone(),
        };
        let state_json = serde_json::to_vec(&state).expect("serializing the shim state");
        std::fs::write(bundle.join(SHIM_STATE_FILE), state_json).map_err(|e| {
            ShimError::internal(format!(
                "writing {}: {e}",
                bundle.join(SHIM_STATE_FILE).display()
            ))
        })?;
        let mut pending = PendingIo::prepare(&stdio).map_err(ShimError::invalid)?;
        mount_rootfs(rootfs, bundle).map_err(ShimError::internal)?;
        let undo = |hull: &Hull, created: bool| {
            if created {
                let _ = hull.run(bundle, &["delete", "--force", id], CommandIo::default());
            }
            unmount_rootfs(bundle);
        };
        let pid_file = bundle.join(INIT_PID_FILE);
        let mut args: Vec<String> = vec![
            "create".into(),
            "--bundle".into(),
            bundle.display().to_string(),
            "--pid-file".into(),
            pid_file.display().to_string(),
        ];
        if let Some(sock) = &pending.console_socket {
            args.push("--console-socket".into());
            args.push(sock.display().to_string());
        }
        args.push(id.into());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = hull.run(bundle, &argv, pending.command_io()) {
            undo(&hull, false);
            return Err(ShimError::internal(e.to_string()));
        }
        let attached = read_pid(&pid_file)
            .and_then(|pid| Ok((pid, pending.attach().map_err(ShimError::internal)?)));
        let (pid, io) = match attached {
            Ok(v) => v,
            Err(e) => {
                undo(&hull, true);
                return Err(e);
            }
        };
        let init = Arc::new(Process::new(id, "", stdio.clone()));
        init.set_created(pid, io);
        watch_exit(init.clone(), pid, events.clone());
        events.send(Event::Create {
            id: id.into(),
            bundle: bundle.display().to_string(),
            pid,
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            terminal: stdio.terminal,
        });
        Ok(Arc::new(Container {
            id: id.into(),
            bundle: bundle.to_path_buf(),
            hull,
            init,
            execs: Mutex::new(HashMap::new()),
            exec_specs: Mutex::new(HashMap::new()),
            rootfs_mounted: !rootfs.is_empty(),
            events,
        }))
    }

    fn hull(&self, args: &[&str]) -> Result<String, ShimError> {
        self.hull
            .run(&self.bundle, args, CommandIo::default())
            .map_err(|e| ShimError::internal(e.to_string()))
    }

    /// The init (empty `exec_id`) or an exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>, ShimError> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .unwrap()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                ShimError::not_found(format!(
                    "exec {exec_id:?} of container {:?} does not exist",
                    self.id
                ))
            })
    }

    pub fn start(&self, exec_id: &str) -> Result<u32, ShimError> {
        if !exec_id.is_empty() {
            return self.start_exec(exec_id);
        }
        let init = &self.init;
        let _starting = init.start_lock.lock().unwrap();
        if init.status() != Status::CREATED {
            return Err(ShimError::precondition(format!(
                "container {:?} is not created (it is {:?})",
                self.id,
                init.status()
            )));
        }
        self.hull(&["start", &self.id])?;
        init.set_status(Status::RUNNING);
        let pid = init.pid();
        self.events.send(Event::Start {
            id: self.id.clone(),
            pid,
        });
        Ok(pid)
    }

    /// Exec: remembers the process spec (JSON, as containerd sends it) for Start.
    pub fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioPaths,
        spec_json: &[u8],
    ) -> Result<(), ShimError> {
        if exec_id.is_empty() || exec_id.contains('/') {
            return Err(ShimError::invalid(format!("invalid exec id {exec_id:?}")));
        }
        if self.init.exit().is_some() {
            return Err(ShimError::precondition(format!(
                "container {:?} has stopped",
                self.id
            )));
        }
        let mut execs = self.execs.lock().unwrap();
        if execs.contains_key(exec_id) {
            return Err(ShimError::exists(format!(
                "exec {exec_id:?} already exists in container {:?}",
                self.id
            )));
        }
        serde_json::from_slice::<serde_json::Value>(spec_json)
            .map_err(|e| ShimError::invalid(format!("exec {exec_id:?}: process spec: {e}")))?;
        let path = self.bundle.join(format!("exec-{exec_id}.json"));
        std::fs::write(&path, spec_json)
            .map_err(|e| ShimError::internal(format!("writing {}: {e}", path.display())))?;
        execs.insert(
            exec_id.to_string(),
            Arc::new(Process::new(&self.id, exec_id, stdio)),
        );
        self.exec_specs
            .lock()
            .unwrap()
            .insert(exec_id.to_string(), path);
        self.events.send(Event::ExecAdded {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
        });
        Ok(())
    }

    fn start_exec(&self, exec_id: &str) -> Result<u32, ShimError> {
        let process = self.process(exec_id)?;
        let _starting = process.start_lock.lock().unwrap();
        let spec = self
            .exec_specs
            .lock()
            .unwrap()
            .remove(exec_id)
            .ok_or_else(|| ShimError::precondition(format!("exec {exec_id:?} already started")))?;
        let res = self.run_exec(&process, &spec);
        let _ = std::fs::remove_file(&spec);
        let pid = res?;
        process.set_status(Status::RUNNING);
        self.events.send(Event::ExecStarted {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            pid,
        });
        Ok(pid)
    }

    fn run_exec(&self, process: &Arc<Process>, spec: &Path) -> Result<u32, ShimError> {
        let mut pending = PendingIo::prepare(&process.stdio).map_err(ShimError::invalid)?;
        let pid_file = self.bundle.join(format!("exec-{}.pid", process.exec_id));
        let mut args: Vec<String> = vec![
            "exec".into(),
            "--process".into(),
            spec.display().to_string(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.display().to_string(),
        ];
        if let Some(sock) = &pending.console_socket {
            args.push("--console-socket".into());
            args.push(sock.display().to_string());
        }
        args.push(self.id.clone());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.hull
            .run(&self.bundle, &argv, pending.command_io())
            .map_err(|e| ShimError::internal(e.to_string()))?;
        let pid = read_pid(&pid_file);
        let _ = std::fs::remove_file(&pid_file);
        let pid = pid?;
        // The detached process is re-parented to us; make sure the reaper looks.
        reaper().note_new_child();
        let io = match pending.attach() {
            Ok(io) => io,
            Err(e) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(ShimError::internal(e));
            }
        };
        process.set_created(pid, io);
        watch_exit(process.clone(), pid, self.events.clone());
        Ok(pid)
    }

    pub fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), ShimError> {
        let process = self.process(exec_id)?;
        if process.exit().is_some() {
            return Err(ShimError::not_found(format!(
                "process {:?} already finished",
                process.event_id()
            )));
        }
        if !exec_id.is_empty() {
            // The exec's pid is hull's attached process, which forwards signals.
            let pid = process.pid();
            if pid == 0 {
                return Err(ShimError::precondition(format!(
                    "exec {exec_id:?} has not started"
                )));
            }
            let sig = nix::sys::signal::Signal::try_from(signal as i32)
                .map_err(|_| ShimError::invalid(format!("invalid signal {signal}")))?;
            return nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
                .map_err(|e| ShimError::internal(format!("signalling exec {exec_id:?}: {e}")));
        }
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([self.id.as_str(), sig.as_str()]);
        match self.hull(&args) {
            // It exited while we were at it: what the signal was for.
            Err(_) if process.exit().is_some() => Ok(()),
            res => res.map(drop),
        }
    }

    /// Delete of an exec: forgets it once it has exited.
    pub fn delete_exec(&self, exec_id: &str) -> Result<(u32, Exit), ShimError> {
        let process = self.process(exec_id)?;
        let Some(exit) = process.exit().or_else(|| {
            // Never started: nothing runs, nothing to wait for.
            (process.pid() == 0).then(|| process.set_exited(0))
        }) else {
            return Err(ShimError::precondition(format!(
                "exec {exec_id:?} is still running"
            )));
        };
        self.execs.lock().unwrap().remove(exec_id);
        if let Some(spec) = self.exec_specs.lock().unwrap().remove(exec_id) {
            let _ = std::fs::remove_file(spec);
        }
        Ok((process.pid(), exit))
    }

    /// Delete of the container: `hull delete` (forced unless it has exited), the
    /// rootfs unmounted.
    pub fn delete(&self) -> Result<(u32, Exit), ShimError> {
        let init = &self.init;
        if init.exit().is_some() {
            self.hull(&["delete", &self.id])?;
        } else {
            self.hull(&["delete", "--force", &self.id])?;
        }
        // The host process is gone now; its exit arrives through the reaper.
        let exit = init.wait();
        if self.rootfs_mounted {
            unmount_rootfs(&self.bundle);
        }
        let _ = std::fs::remove_file(self.bundle.join(SHIM_STATE_FILE));
        for spec in self.exec_specs.lock().unwrap().drain() {
            let _ = std::fs::remove_file(spec.1);
        }
        self.events.send(Event::Delete {
            id: self.id.clone(),
            pid: init.pid(),
            status: exit.status,
            at: exit.at.clone(),
        });
        Ok((init.pid(), exit))
    }

    pub fn pause(&self) -> Result<(), ShimError> {
        self.hull(&["pause", &self.id])?;
        self.init.set_status(Status::PAUSED);
        self.events.send(Event::Paused {
            id: self.id.clone(),
        });
        Ok(())
    }

    pub fn resume(&self) -> Result<(), ShimError> {
        self.hull(&["resume", &self.id])?;
        self.init.set_status(Status::RUNNING);
        self.events.send(Event::Resumed {
            id: self.id.clone(),
        });
        Ok(())
    }

    /// The container's pids, from `hull ps --format json`.
    pub fn pids(&self) -> Result<Vec<u32>, ShimError> {
        let out = self.hull(&["ps", "--format", "json", &self.id])?;
        serde_json::from_str(out.trim())
            .map_err(|e| ShimError::internal(format!("hull ps printed {out:?}: {e}")))
    }

    /// Update: the resources are containerd's JSON `LinuxResources`.
    pub fn update(&self, resources_json: &[u8]) -> Result<(), ShimError> {
        serde_json::from_slice::<serde_json::Value>(resources_json)
            .map_err(|e| ShimError::invalid(format!("update: resources: {e}")))?;
        let mut f = tempfile::Builder::new()
            .prefix("update-")
            .suffix(".json")
            .tempfile_in(&self.bundle)
            .map_err(|e| ShimError::internal(format!("update: {e}")))?;
        std::io::Write::write_all(&mut f, resources_json)
            .map_err(|e| ShimError::internal(format!("update: {e}")))?;
        let path = f.path().display().to_string();
        self.hull(&["update", "--resources", &path, &self.id])
            .map(drop)
    }

    /// `hull events --stats` as JSON.
    pub fn stats(&self) -> Result<serde_json::Value, ShimError> {
        let out = self.hull(&["events", "--stats", &self.id])?;
        serde_json::from_str(out.trim())
            .map_err(|e| ShimError::internal(format!("hull events printed {out:?}: {e}")))
    }
}
