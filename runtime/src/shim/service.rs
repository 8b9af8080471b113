//! The Task service containerd calls over ttrpc: each request is checked, mapped
//! to its container and answered; the work is in `container`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim::api::{self, Status};
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use containerd_shim_protos::protobuf::EnumOrUnknown;

use super::container::{Container, CreateSpec};
use super::error::ShimError;
use super::events::Events;
use super::hull_command::{find_hull_binary, Hull};
use super::options::{ShimOptions, DEFAULT_ROOT};
use super::pod::{self, HULL_SANDBOX};
use super::process_io::StdioPaths;
use super::stats::metrics_any;
use crate::state::validate_id;

pub struct Service {
    namespace: String,
    events: Arc<Events>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    exit: Arc<ExitSignal>,
}

impl Service {
    pub fn new(namespace: &str, events: Events, exit: Arc<ExitSignal>) -> Service {
        Service {
            namespace: namespace.to_string(),
            events: Arc::new(events),
            containers: Mutex::new(HashMap::new()),
            exit,
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>, ShimError> {
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::not_found(format!("container {id:?} does not exist")))
    }

    /// The hull that runs a new container: the shim options, the default root for
    /// this namespace, and `--sandbox` only when the container has no annotation.
    fn hull_for(&self, opts: &ShimOptions, annotations: &HashMap<String, String>) -> Hull {
        Hull {
            binary: opts.binary.clone().unwrap_or_else(find_hull_binary),
            root: opts
                .root
                .clone()
                .unwrap_or_else(|| default_root(&self.namespace)),
            sandbox: if annotations.contains_key(HULL_SANDBOX) {
                None
            } else {
                opts.sandbox
            },
        }
    }

    fn do_create(&self, req: &api::CreateTaskRequest) -> Result<u32, ShimError> {
        validate_id(&req.id).map_err(|e| ShimError::invalid(e.to_string()))?;
        if !req.checkpoint.is_empty() {
            return Err(ShimError::unimplemented(
                "hull cannot restore checkpoints".to_string(),
            ));
        }
        if self.containers.lock().unwrap().contains_key(&req.id) {
            return Err(ShimError::exists(format!(
                "container {:?} already exists",
                req.id
            )));
        }
        let bundle = PathBuf::from(&req.bundle);
        let annotations = pod::read_annotations(&bundle).map_err(ShimError::invalid)?;
        let opts = match req.options.as_ref() {
            Some(any) => ShimOptions::from_any(any).map_err(ShimError::invalid)?,
            None => ShimOptions::default(),
        };
        let hull = self.hull_for(&opts, &annotations);
        let container = Container::create(
            CreateSpec {
                id: &req.id,
                bundle: &bundle,
                rootfs: &req.rootfs,
                stdio: StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
                hull,
            },
            self.events.clone(),
        )?;
        let pid = container.init.pid();
        self.containers
            .lock()
            .unwrap()
            .insert(req.id.clone(), container);
        Ok(pid)
    }
}

pub fn default_root(namespace: &str) -> PathBuf {
    Path::new(DEFAULT_ROOT).join(namespace)
}

fn status_of(status: Status) -> EnumOrUnknown<Status> {
    EnumOrUnknown::new(status)
}

impl Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let pid = self.do_create(&req).inspect_err(|e| {
            log::error!("create {:?}: {e}", req.id);
        })?;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let pid = self.container(&req.id)?.start(&req.exec_id)?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let exit = p.exit();
        Ok(api::StateResponse {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: p.pid(),
            status: status_of(p.status()),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.as_ref().map_or(0, |e| e.status),
            exited_at: exit.map(|e| e.at).into(),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.container(&req.id)?
            .kill(&req.exec_id, req.signal, req.all)?;
        Ok(api::Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        let spec = req.spec.as_ref().ok_or_else(|| {
            ShimError::invalid(format!("exec {:?}: no process spec", req.exec_id))
        })?;
        c.add_exec(
            &req.exec_id,
            StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            &spec.value,
        )?;
        Ok(api::Empty::new())
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        match p.with_io(|io| io.resize(req.width, req.height)) {
            Some(Err(e)) => Err(ShimError::precondition(e).into()),
            _ => Ok(api::Empty::new()),
        }
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        if req.stdin {
            p.with_io(|io| io.close_stdin());
        }
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let c = self.container(&req.id)?;
        let (pid, exit) = if req.exec_id.is_empty() {
            let res = c.delete()?;
            self.containers.lock().unwrap().remove(&req.id);
            res
        } else {
            c.delete_exec(&req.exec_id)?
        };
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let pids = self.container(&req.id)?.pids()?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| containerd_shim_protos::api::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.container(&req.id)?.pause()?;
        Ok(api::Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.container(&req.id)?.resume()?;
        Ok(api::Empty::new())
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(ShimError::unimplemented("hull cannot checkpoint containers").into())
    }

    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        let resources = req
            .resources
            .as_ref()
            .ok_or_else(|| ShimError::invalid("update: no resources"))?;
        c.update(&resources.value)?;
        Ok(api::Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let p = self.container(&req.id)?.process(&req.exec_id)?;
        let exit = p.wait();
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let stats = self.container(&req.id)?.stats()?;
        Ok(api::StatsResponse {
            stats: Some(metrics_any(&stats)).into(),
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.container(&req.id).map_or(0, |c| c.init.pid());
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // A pod's shim serves several containers: it goes with the last one.
        if self.containers.lock().unwrap().is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
