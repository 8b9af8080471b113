//! hull's virtio devices, independent of the transport that carries their queues: the
//! same device runs in-process behind hull-vmm's virtio-mmio (on [`worker::Worker`]), or
//! in a vhost-user backend process for QEMU (`hull-vhost-user`).

pub mod blk;
pub mod fs;
pub mod model;
pub mod net;
pub mod queue_drain;
pub mod rng;
pub mod vhost_user;
pub mod vsock;
pub mod worker;

#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
