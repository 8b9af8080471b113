//! What a transport needs to know about a device besides its queue work: identity,
//! queue sizes, features, config space, and how to forget a driver's session.

use crate::worker::QueueHandler;

/// A virtio device model served by [`crate::worker::Worker`].
pub trait DeviceModel: QueueHandler {
    /// virtio device id (1 net, 2 block, 4 rng, 19 vsock, 26 fs).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Feature bits offered, VIRTIO_F_VERSION_1 included.
    fn features(&self) -> u64;
    /// The driver accepted `features` (a subset of [`DeviceModel::features`]).
    fn ack_features(&mut self, _features: u64) {}
    /// The config space. Fixed for the device's life, so the transport can answer
    /// reads while the device runs on its worker thread.
    fn config_space(&self) -> Vec<u8>;
    /// The driver reset the device: drop its session state (streams, open files).
    fn reset(&mut self);
}

/// Copies `cfg[offset..]` into `data`; bytes beyond the config space read as zero.
pub fn read_config_bytes(cfg: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i as u64)
            .and_then(|o| cfg.get(usize::try_from(o).ok()?))
            .copied()
            .unwrap_or(0);
    }
}
