//! hull's virtio devices, independent of the transport that carries their queues: the
//! same device runs in-process behind hull-vmm's virtio-mmio, or in a vhost-user backend
//! process for QEMU (`hull-vhost-user`).

pub mod fs;
pub mod vsock;

#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
