//! The virtio-fs device served over vhost-user (QEMU's `vhost-user-fs-device`).
//!
//! QEMU owns the config space (the tag is its `tag=` property) and hands the backend the
//! high-priority queue and the request queues. Guest memory arrives as the memfd regions
//! of SET_MEM_TABLE.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::{Fs, FsError, NUM_QUEUES, QUEUE_MAX_SIZE};

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    #[error(transparent)]
    Device(#[from] FsError),
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
}

pub struct VhostUserFs {
    dev: Fs,
    mem: Option<Mem>,
}

impl VhostUserFs {
    pub fn new(dev: Fs) -> Self {
        VhostUserFs { dev, mem: None }
    }
}

impl VhostUserBackendMut for VhostUserFs {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_MAX_SIZE as usize
    }

    fn features(&self) -> u64 {
        Fs::features() | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // MQ: QEMU asks how many queues we serve.
        VhostUserProtocolFeatures::MQ
    }

    fn reset_device(&mut self) {
        if let Err(e) = self.dev.reset() {
            log::error!("virtio-fs: reset: {e}");
        }
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // The queues track EVENT_IDX themselves.
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
        let Some(vring) = vrings.get(usize::from(device_event)) else {
            return Err(io::Error::other(format!("unknown event {device_event}")));
        };
        let Some(mem) = &self.mem else {
            // No memory table yet: nothing can be read.
            return Ok(());
        };
        let mem = mem.memory();
        let notify = self
            .dev
            .process(&*mem, vring.get_mut().get_queue_mut())
            .map_err(io::Error::other)?;
        if notify {
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}

/// Serves `dev` on the vhost-user socket `socket` until the front-end disconnects.
pub fn serve(dev: Fs, socket: &Path) -> Result<(), VhostUserError> {
    raise_fd_limit();
    let backend = Arc::new(RwLock::new(VhostUserFs::new(dev)));
    let mut daemon = VhostUserDaemon::new(
        "hull-vhost-user-fs".to_string(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    daemon
        .serve(socket)
        .map_err(|e| VhostUserError::Daemon(e.to_string()))
}

/// Every inode the guest has looked up holds an fd here: allow as many as the hard limit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one is allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        log::warn!(
            "virtio-fs: cannot raise the open-file limit: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
    use vm_memory::{Address, ByteValued, Bytes, GuestAddress};

    use super::*;
    use crate::fs::FsConfig;
    use crate::test_utils::{test_memory, Buf, BufAlloc, TestQueue};

    #[test]
    fn queues_reach_the_device_through_vhost_user_vrings() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = VhostUserFs::new(Fs::new(FsConfig::new(dir.path(), "t")).unwrap());
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

        b.update_memory(atomic).unwrap();
        b.handle_event(1, EventSet::IN, &vrings, 0).unwrap();
        assert_eq!(tq.take_used().len(), 1);
        let out: OutHeader = mem.read_obj(wa).unwrap();
        assert_eq!((out.unique, out.error), (3, -libc::ENOSYS));
        b.reset_device();
    }
}
