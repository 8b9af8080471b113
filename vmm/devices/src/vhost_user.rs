//! Serves any [`DeviceModel`] to QEMU as a vhost-user backend, one device per process:
//! the same `QueueHandler::process` that hull-vmm's worker calls runs here on the queues
//! the front-end hands over, with guest memory from SET_MEM_TABLE's memfd regions.
//! The device's host fds (vsock sockets, a tap) join the daemon's epoll loop.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::model::{read_config_bytes, DeviceModel};
use crate::worker::QueueRef;

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
    #[error("cannot watch the device's host fds: {0}")]
    Register(io::Error),
}

pub struct VhostUserDevice<D: DeviceModel> {
    dev: D,
    mem: Option<Mem>,
    protocol: VhostUserProtocolFeatures,
    queue_sizes: Vec<u16>,
    config: Vec<u8>,
}

impl<D: DeviceModel> VhostUserDevice<D> {
    /// `protocol`: what the front-end may use beyond the basics (CONFIG when the backend
    /// owns the config space, MQ when the front-end asks how many queues there are).
    pub fn new(dev: D, protocol: VhostUserProtocolFeatures) -> Self {
        VhostUserDevice {
            queue_sizes: dev.queue_max_sizes(),
            config: dev.config_space(),
            dev,
            mem: None,
            protocol,
        }
    }

    /// Event ids past the queues and the exit event: the device's host fds.
    fn host_event(&self) -> u16 {
        self.queue_sizes.len() as u16 + 1
    }
}

impl<D: DeviceModel + Sync> VhostUserBackendMut for VhostUserDevice<D> {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.queue_sizes.len()
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.queue_sizes.iter().copied().max().unwrap_or(0))
    }

    fn features(&self) -> u64 {
        self.dev.features() | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&mut self, features: u64) {
        self.dev.ack_features(features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    fn reset_device(&mut self) {
        self.dev.reset();
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // The vrings' queues track EVENT_IDX themselves.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut buf = vec![0u8; size.min(256) as usize];
        read_config_bytes(&self.config, offset.into(), &mut buf);
        buf
    }

    fn update_memory(&mut self, mem: Mem) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if usize::from(device_event) >= vrings.len() && device_event != self.host_event() {
            return Err(io::Error::other(format!("unknown event {device_event}")));
        }
        let Some(mem) = &self.mem else {
            // No memory table yet: only host-side work can be done.
            self.dev.process_host_only();
            return Ok(());
        };
        let mem = mem.memory();
        let used = {
            let mut guards: Vec<_> = vrings.iter().map(|v| v.get_mut()).collect();
            let mut refs: Vec<QueueRef<'_>> = guards
                .iter_mut()
                .enumerate()
                .filter(|(_, g)| g.get_queue().ready())
                .map(|(index, g)| QueueRef {
                    index,
                    queue: g.get_queue_mut(),
                })
                .collect();
            self.dev.process(&*mem, &mut refs)
        };
        for index in used {
            if let Some(v) = vrings.get(index) {
                v.signal_used_queue()?;
            }
        }
        Ok(())
    }
}

/// Serves `dev` on the vhost-user socket `socket` until the front-end disconnects.
pub fn serve<D: DeviceModel + Sync>(
    name: &str,
    dev: D,
    protocol: VhostUserProtocolFeatures,
    socket: &Path,
) -> Result<(), VhostUserError> {
    let host_fds = dev.host_fds();
    let backend = VhostUserDevice::new(dev, protocol);
    let host_event = backend.host_event();
    let mut daemon = VhostUserDaemon::new(
        name.to_string(),
        Arc::new(RwLock::new(backend)),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    if !host_fds.is_empty() {
        let handlers = daemon.get_epoll_handlers();
        let handler = handlers
            .first()
            .ok_or_else(|| VhostUserError::Daemon("no worker thread".into()))?;
        for (fd, events) in host_fds {
            handler
                .register_listener(fd, events, u64::from(host_event))
                .map_err(VhostUserError::Register)?;
        }
    }
    daemon
        .serve(socket)
        .map_err(|e| VhostUserError::Daemon(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
    use vm_memory::{Address, ByteValued, Bytes, GuestAddress};

    use super::*;
    use crate::fs::{Fs, FsConfig, NUM_QUEUES, QUEUE_MAX_SIZE};
    use crate::test_utils::{test_memory, Buf, BufAlloc, TestQueue};

    #[test]
    fn fs_queues_reach_the_device_through_vhost_user_vrings() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = VhostUserDevice::new(
            Fs::new(FsConfig::new(dir.path(), "t")).unwrap(),
            VhostUserProtocolFeatures::MQ,
        );
        assert_eq!(b.num_queues(), NUM_QUEUES);
        assert_ne!(
            b.features() & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
            0
        );
        let mem = test_memory(1 << 20);
        let atomic = GuestMemoryAtomic::new(mem.clone());
        let vrings: Vec<VringRwLock> = (0..NUM_QUEUES)
            .map(|_| VringRwLock::new(atomic.clone(), QUEUE_MAX_SIZE).unwrap())
            .collect();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let v = &vrings[1];
        v.set_queue_size(16);
        v.set_queue_info(
            tq.desc_table().raw_value(),
            tq.avail_addr().raw_value(),
            tq.used_addr().raw_value(),
        )
        .unwrap();
        v.set_queue_ready(true);

        let hdr = InHeader {
            len: size_of::<InHeader>() as u32,
            opcode: 7, // a hole in the opcode space
            unique: 3,
            ..Default::default()
        };
        let mut alloc = BufAlloc::new(tq.end(), GuestAddress(1 << 20));
        let (ra, wa) = (alloc.alloc(64), alloc.alloc(64));
        mem.write_slice(hdr.as_slice(), ra).unwrap();
        tq.add_chain(&[Buf::readable(ra, hdr.len), Buf::writable(wa, 64)])
            .unwrap();

        // Kicks before SET_MEM_TABLE find nothing to read; unknown events are errors.
        b.handle_event(1, EventSet::IN, &vrings, 0).unwrap();
        assert_eq!(tq.used_idx(), 0);
        assert!(b.handle_event(9, EventSet::IN, &vrings, 0).is_err());
        // Event 3 is the device's host fds (queues 0-1, exit event 2): accepted.
        b.handle_event(3, EventSet::IN, &vrings, 0).unwrap();

        b.update_memory(atomic).unwrap();
        b.handle_event(1, EventSet::IN, &vrings, 0).unwrap();
        assert_eq!(tq.take_used().len(), 1);
        let out: OutHeader = mem.read_obj(wa).unwrap();
        assert_eq!((out.unique, out.error), (3, -libc::ENOSYS));
        b.reset_device();
    }
}
