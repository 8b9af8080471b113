//! One process of a task (the container's init or an exec): its pid, status and
//! exit, which Wait blocks on.

use std::sync::{Condvar, Mutex};

use containerd_shim::api::Status;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;

use super::process_io::{ProcessIo, StdioPaths};

#[derive(Debug, Clone)]
pub struct Exit {
    pub status: u32,
    pub at: Timestamp,
}

struct ProcessState {
    pid: u32,
    status: Status,
    exit: Option<Exit>,
    io: Option<ProcessIo>,
}

pub struct Process {
    pub container_id: String,
    /// Empty for the container's init.
    pub exec_id: String,
    pub stdio: StdioPaths,
    state: Mutex<ProcessState>,
    exited: Condvar,
    /// Held while a start is in flight, and by the exit monitor before it reports,
    /// so that an exit is never reported before the start that caused it.
    pub start_lock: Mutex<()>,
}

impl Process {
    pub fn new(container_id: &str, exec_id: &str, stdio: StdioPaths) -> Process {
        Process {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            stdio,
            state: Mutex::new(ProcessState {
                pid: 0,
                status: Status::CREATED,
                exit: None,
                io: None,
            }),
            exited: Condvar::new(),
            start_lock: Mutex::new(()),
        }
    }

    /// The id events and replies use: the exec id, or the container id for init.
    pub fn event_id(&self) -> &str {
        if self.exec_id.is_empty() {
            &self.container_id
        } else {
            &self.exec_id
        }
    }

    pub fn pid(&self) -> u32 {
        self.state.lock().unwrap().pid
    }

    pub fn status(&self) -> Status {
        self.state.lock().unwrap().status
    }

    pub fn exit(&self) -> Option<Exit> {
        self.state.lock().unwrap().exit.clone()
    }

    /// Its process is running under hull: the pid to report and wait on.
    pub fn set_created(&self, pid: u32, io: ProcessIo) {
        let mut s = self.state.lock().unwrap();
        s.pid = pid;
        s.io = Some(io);
    }

    /// A status change (Running, Paused); ignored once the process has exited.
    pub fn set_status(&self, status: Status) {
        let mut s = self.state.lock().unwrap();
        if s.exit.is_none() {
            s.status = status;
        }
    }

    /// Records the exit and closes the stdio; returns the exit as recorded.
    pub fn set_exited(&self, status: u32) -> Exit {
        let io = self.state.lock().unwrap().io.take();
        // Outside the lock: draining a tty's output may take a moment.
        if let Some(io) = io {
            io.finish();
        }
        let mut s = self.state.lock().unwrap();
        let exit = Exit {
            status,
            at: Timestamp::now(),
        };
        s.status = Status::STOPPED;
        s.exit = Some(exit.clone());
        self.exited.notify_all();
        exit
    }

    /// Blocks until the process has exited.
    pub fn wait(&self) -> Exit {
        let mut s = self.state.lock().unwrap();
        loop {
            if let Some(e) = &s.exit {
                return e.clone();
            }
            s = self.exited.wait(s).unwrap();
        }
    }

    pub fn with_io<T>(&self, f: impl FnOnce(&ProcessIo) -> T) -> Option<T> {
        self.state.lock().unwrap().io.as_ref().map(f)
    }
}
