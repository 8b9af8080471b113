//! Task events for containerd, published in order from one thread so that, say, a
//! fast container's TaskExit never overtakes its TaskStart.

use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::thread;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::topics;

/// Something that happened to a task or one of its processes.
pub enum Event {
    Create {
        id: String,
        bundle: String,
        pid: u32,
        stdin: String,
        stdout: String,
        stderr: String,
        terminal: bool,
    },
    Start {
        id: String,
        pid: u32,
    },
    ExecAdded {
        id: String,
        exec_id: String,
    },
    ExecStarted {
        id: String,
        exec_id: String,
        pid: u32,
    },
    /// `exec_id` is the container id for init, as containerd expects.
    Exit {
        id: String,
        exec_id: String,
        pid: u32,
        status: u32,
        at: Timestamp,
    },
    Delete {
        id: String,
        pid: u32,
        status: u32,
        at: Timestamp,
    },
    Paused {
        id: String,
    },
    Resumed {
        id: String,
    },
}

impl Event {
    fn into_message(self) -> (&'static str, Box<dyn MessageDyn>) {
        match self {
            Event::Create {
                id,
                bundle,
                pid,
                stdin,
                stdout,
                stderr,
                terminal,
            } => (
                topics::TASK_CREATE_EVENT_TOPIC,
                Box::new(TaskCreate {
                    container_id: id,
                    bundle,
                    pid,
                    io: Some(TaskIO {
                        stdin,
                        stdout,
                        stderr,
                        terminal,
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                }),
            ),
            Event::Start { id, pid } => (
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: id,
                    pid,
                    ..Default::default()
                }),
            ),
            Event::ExecAdded { id, exec_id } => (
                topics::TASK_EXEC_ADDED_EVENT_TOPIC,
                Box::new(TaskExecAdded {
                    container_id: id,
                    exec_id,
                    ..Default::default()
                }),
            ),
            Event::ExecStarted { id, exec_id, pid } => (
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: id,
                    exec_id,
                    pid,
                    ..Default::default()
                }),
            ),
            Event::Exit {
                id,
                exec_id,
                pid,
                status,
                at,
            } => (
                topics::TASK_EXIT_EVENT_TOPIC,
                Box::new(TaskExit {
                    container_id: id,
                    id: exec_id,
                    pid,
                    exit_status: status,
                    exited_at: Some(at).into(),
                    ..Default::default()
                }),
            ),
            Event::Delete {
                id,
                pid,
                status,
                at,
            } => (
                topics::TASK_DELETE_EVENT_TOPIC,
                Box::new(TaskDelete {
                    container_id: id.clone(),
                    id,
                    pid,
                    exit_status: status,
                    exited_at: Some(at).into(),
                    ..Default::default()
                }),
            ),
            Event::Paused { id } => (
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id: id,
                    ..Default::default()
                }),
            ),
            Event::Resumed { id } => (
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id: id,
                    ..Default::default()
                }),
            ),
        }
    }
}

/// Queues events for the publishing thread.
pub struct Events {
    tx: Mutex<Sender<Event>>,
}

impl Events {
    pub fn start(publisher: RemotePublisher, namespace: String) -> Events {
        let (tx, rx) = channel::<Event>();
        thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for ev in rx {
                    let (topic, msg) = ev.into_message();
                    if let Err(e) = publisher.publish(Context::default(), topic, &namespace, msg) {
                        log::warn!("publishing {topic}: {e}");
                    }
                }
            })
            .expect("spawning the events thread");
        Events { tx: Mutex::new(tx) }
    }

    pub fn send(&self, ev: Event) {
        let _ = self.tx.lock().unwrap().send(ev);
    }
}
