//! virtio-mmio transport, version 2 (virtio 1.x, section 4.2.2).

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{status, ActiveQueue, VirtioDevice, VirtioInterrupt, INT_CONFIG, VIRTIO_F_VERSION_1};
use crate::devices::bus::BusDevice;

/// "virt" little-endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// Non-legacy transport.
pub const MMIO_VERSION: u32 = 2;
/// Vendor id ("HULL").
pub const MMIO_VENDOR: u32 = 0x4c4c_5548;

/// Register offsets.
pub mod reg {
    #![allow(missing_docs)]
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// A virtio device behind an MMIO window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// Wraps `device`; `irq` becomes its interrupt line.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: EventFd,
    ) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        let mut queue_evts = Vec::new();
        for &max in device.queue_max_sizes() {
            queues.push(Queue::new(max).map_err(|e| std::io::Error::other(e.to_string()))?);
            queue_evts.push(EventFd::new(libc::EFD_NONBLOCK)?);
        }
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(VirtioInterrupt::new(irq)),
            queues,
            queue_evts,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            activated: false,
        })
    }

    /// Per-queue notification eventfds, to register as ioeventfds on QueueNotify with
    /// the queue index as datamatch.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The interrupt (its eventfd is the irqfd).
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// Device status as the driver last set it.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The device changed its configuration: bump the generation and tell the driver.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if let Err(e) = self.interrupt.trigger(INT_CONFIG) {
            log::error!("virtio-mmio: config interrupt: {e}");
        }
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only while negotiating, before DRIVER_OK, and only
    /// for a queue that is not live.
    fn queue_configurable(&self) -> bool {
        self.status & status::FEATURES_OK != 0
            && self.status & status::DRIVER_OK == 0
            && self.status & status::FAILED == 0
    }

    fn update_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if !self.queue_configurable() {
            log::debug!(
                "virtio-mmio: queue write in status {:#x} ignored",
                self.status
            );
            return;
        }
        if let Some(q) = self.selected_queue() {
            if !q.ready() {
                f(q);
            }
        }
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.activated = false;
        self.interrupt.ack(u32::MAX);
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // Bits are only ever added (2.1.1); anything else is a driver bug.
        if value & self.status != self.status {
            log::warn!(
                "virtio-mmio: status {:#x} -> {:#x} clears bits, ignored",
                self.status,
                value
            );
            return;
        }
        let added = value & !self.status;
        if added & status::FEATURES_OK != 0 {
            let ok = self.status & status::DRIVER != 0
                && self.driver_features & !self.device_features() == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !ok {
                // Leave FEATURES_OK clear so the driver sees the failure (3.1.1 step 6).
                self.status = value & !status::FEATURES_OK;
                return;
            }
            self.device.ack_features(self.driver_features);
        }
        if added & status::DRIVER_OK != 0 {
            if value & status::FEATURES_OK == 0 {
                log::warn!("virtio-mmio: DRIVER_OK without FEATURES_OK, ignored");
                return;
            }
            self.status = value;
            self.activate();
            return;
        }
        self.status = value;
    }

    fn activate(&mut self) {
        let mut active = Vec::new();
        for (index, q) in self.queues.iter().enumerate() {
            if !q.ready() {
                continue;
            }
            if !q.is_valid(&self.mem) {
                log::warn!("virtio-mmio: queue {index} is not valid, device needs reset");
                self.status |= status::DEVICE_NEEDS_RESET;
                return;
            }
            let notify = match self.queue_evts[index].try_clone() {
                Ok(e) => e,
                Err(e) => {
                    log::error!("virtio-mmio: {e}");
                    self.status |= status::DEVICE_NEEDS_RESET;
                    return;
                }
            };
            // The device gets its own copy; the transport keeps the registers.
            let queue = match Queue::try_from(q.state()) {
                Ok(q) => q,
                Err(e) => {
                    log::warn!("virtio-mmio: queue {index}: {e}");
                    self.status |= status::DEVICE_NEEDS_RESET;
                    return;
                }
            };
            active.push(ActiveQueue {
                index,
                queue,
                notify,
            });
        }
        match self
            .device
            .activate(self.mem.clone(), self.interrupt.clone(), active)
        {
            Ok(()) => self.activated = true,
            Err(e) => {
                log::error!("{e}");
                self.status |= status::DEVICE_NEEDS_RESET;
            }
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC => MMIO_MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => MMIO_VENDOR,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                let negotiating =
                    self.status & status::DRIVER != 0 && self.status & status::FEATURES_OK == 0;
                if !negotiating {
                    log::debug!("virtio-mmio: feature write outside negotiation ignored");
                    return;
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM => self.update_queue(|q| q.set_size(v as u16)),
            reg::QUEUE_READY => self.update_queue(|q| q.set_ready(v == 1)),
            reg::QUEUE_DESC_LOW => self.update_queue(|q| q.set_desc_table_address(Some(v), None)),
            reg::QUEUE_DESC_HIGH => self.update_queue(|q| q.set_desc_table_address(None, Some(v))),
            reg::QUEUE_DRIVER_LOW => self.update_queue(|q| q.set_avail_ring_address(Some(v), None)),
            reg::QUEUE_DRIVER_HIGH => {
                self.update_queue(|q| q.set_avail_ring_address(None, Some(v)))
            }
            reg::QUEUE_DEVICE_LOW => self.update_queue(|q| q.set_used_ring_address(Some(v), None)),
            reg::QUEUE_DEVICE_HIGH => self.update_queue(|q| q.set_used_ring_address(None, Some(v))),
            reg::QUEUE_NOTIFY => {
                // Normally consumed by the ioeventfd in KVM; this is the fallback path.
                if let Some(evt) = self.queue_evts.get(v as usize) {
                    if let Err(e) = evt.write(1) {
                        log::error!("virtio-mmio: queue notify: {e}");
                    }
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            _ => log::debug!("virtio-mmio: write of unknown register {offset:#x}"),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!("virtio-mmio: unaligned read {offset:#x}/{}", data.len());
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!("virtio-mmio: unaligned write {offset:#x}/{}", data.len());
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg(offset, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    /// A device that records what the transport tells it.
    #[derive(Default)]
    struct Probe {
        acked: Arc<Mutex<Option<u64>>>,
        activated: Arc<Mutex<Vec<usize>>>,
        resets: Arc<Mutex<u32>>,
        config: [u8; 8],
    }

    impl VirtioDevice for Probe {
        fn device_type(&self) -> u32 {
            4
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn features(&self) -> u64 {
            1 << 3
        }
        fn ack_features(&mut self, f: u64) {
            *self.acked.lock().unwrap() = Some(f);
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            let o = offset as usize;
            data.copy_from_slice(&self.config[o..o + data.len()]);
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            let o = offset as usize;
            self.config[o..o + data.len()].copy_from_slice(data);
        }
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            _irq: Arc<VirtioInterrupt>,
            queues: Vec<ActiveQueue>,
        ) -> Result<(), super::super::ActivateError> {
            *self.activated.lock().unwrap() = queues.iter().map(|q| q.index).collect();
            Ok(())
        }
        fn reset(&mut self) {
            *self.resets.lock().unwrap() += 1;
        }
    }

    struct Harness {
        t: MmioTransport,
        acked: Arc<Mutex<Option<u64>>>,
        activated: Arc<Mutex<Vec<usize>>>,
        resets: Arc<Mutex<u32>>,
    }

    fn harness() -> Harness {
        let probe = Probe {
            config: *b"hullcfg\0",
            ..Default::default()
        };
        let (acked, activated, resets) = (
            probe.acked.clone(),
            probe.activated.clone(),
            probe.resets.clone(),
        );
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        Harness {
            t: MmioTransport::new(Box::new(probe), mem, irq).unwrap(),
            acked,
            activated,
            resets,
        }
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn negotiate(t: &mut MmioTransport) {
        w(t, reg::STATUS, status::ACKNOWLEDGE);
        w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(t, reg::DRIVER_FEATURES_SEL, 0);
        w(t, reg::DRIVER_FEATURES, 1 << 3);
        w(t, reg::DRIVER_FEATURES_SEL, 1);
        w(t, reg::DRIVER_FEATURES, 1);
        w(
            t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    fn setup_queue(t: &mut MmioTransport, index: u32, base: u32) {
        w(t, reg::QUEUE_SEL, index);
        w(t, reg::QUEUE_NUM, 8);
        w(t, reg::QUEUE_DESC_LOW, base);
        w(t, reg::QUEUE_DESC_HIGH, 0);
        w(t, reg::QUEUE_DRIVER_LOW, base + 0x1000);
        w(t, reg::QUEUE_DRIVER_HIGH, 0);
        w(t, reg::QUEUE_DEVICE_LOW, base + 0x2000);
        w(t, reg::QUEUE_DEVICE_HIGH, 0);
        w(t, reg::QUEUE_READY, 1);
    }

    #[test]
    fn identification_registers() {
        let mut h = harness();
        assert_eq!(r(&mut h.t, reg::MAGIC), MMIO_MAGIC);
        assert_eq!(r(&mut h.t, reg::VERSION), 2);
        assert_eq!(r(&mut h.t, reg::DEVICE_ID), 4);
        assert_eq!(r(&mut h.t, reg::VENDOR_ID), MMIO_VENDOR);
    }

    #[test]
    fn device_features_by_selector() {
        let mut h = harness();
        assert_eq!(r(&mut h.t, reg::DEVICE_FEATURES), 1 << 3);
        w(&mut h.t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut h.t, reg::DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
        w(&mut h.t, reg::DEVICE_FEATURES_SEL, 2);
        assert_eq!(r(&mut h.t, reg::DEVICE_FEATURES), 0);
    }

    #[test]
    fn feature_negotiation_succeeds() {
        let mut h = harness();
        negotiate(&mut h.t);
        assert_ne!(r(&mut h.t, reg::STATUS) & status::FEATURES_OK, 0);
        assert_eq!(
            *h.acked.lock().unwrap(),
            Some((1 << 3) | VIRTIO_F_VERSION_1)
        );
    }

    #[test]
    fn unknown_features_fail_negotiation() {
        let mut h = harness();
        w(&mut h.t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut h.t, reg::DRIVER_FEATURES, 1 << 5);
        w(&mut h.t, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut h.t, reg::DRIVER_FEATURES, 1);
        w(
            &mut h.t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r(&mut h.t, reg::STATUS) & status::FEATURES_OK, 0);
        assert!(h.acked.lock().unwrap().is_none());
    }

    #[test]
    fn legacy_driver_without_version_1_fails() {
        let mut h = harness();
        w(&mut h.t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut h.t, reg::DRIVER_FEATURES, 1 << 3);
        w(
            &mut h.t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r(&mut h.t, reg::STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn features_are_frozen_after_features_ok() {
        let mut h = harness();
        negotiate(&mut h.t);
        w(&mut h.t, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut h.t, reg::DRIVER_FEATURES, 0);
        assert_eq!(h.t.driver_features, (1 << 3) | VIRTIO_F_VERSION_1);
    }

    #[test]
    fn status_bits_cannot_be_cleared_except_by_reset() {
        let mut h = harness();
        w(&mut h.t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut h.t, reg::STATUS, status::ACKNOWLEDGE);
        assert_eq!(
            r(&mut h.t, reg::STATUS),
            status::ACKNOWLEDGE | status::DRIVER
        );
        w(&mut h.t, reg::STATUS, 0);
        assert_eq!(r(&mut h.t, reg::STATUS), 0);
    }

    #[test]
    fn queue_setup_and_activation() {
        let mut h = harness();
        w(&mut h.t, reg::QUEUE_SEL, 0);
        assert_eq!(r(&mut h.t, reg::QUEUE_NUM_MAX), 16);
        w(&mut h.t, reg::QUEUE_SEL, 1);
        assert_eq!(r(&mut h.t, reg::QUEUE_NUM_MAX), 8);
        w(&mut h.t, reg::QUEUE_SEL, 2);
        assert_eq!(r(&mut h.t, reg::QUEUE_NUM_MAX), 0, "no such queue");

        // Before FEATURES_OK queue writes are ignored.
        setup_queue(&mut h.t, 0, 0x10000);
        assert_eq!(r(&mut h.t, reg::QUEUE_READY), 0);

        negotiate(&mut h.t);
        setup_queue(&mut h.t, 0, 0x10000);
        assert_eq!(r(&mut h.t, reg::QUEUE_READY), 1);
        assert_eq!(h.t.queues[0].size(), 8);
        assert_eq!(h.t.queues[0].desc_table(), 0x10000);
        assert_eq!(h.t.queues[0].avail_ring(), 0x11000);
        assert_eq!(h.t.queues[0].used_ring(), 0x12000);
        // A live queue's registers are frozen.
        w(&mut h.t, reg::QUEUE_NUM, 4);
        assert_eq!(h.t.queues[0].size(), 8);

        w(
            &mut h.t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert_eq!(*h.activated.lock().unwrap(), vec![0]);
        assert_eq!(r(&mut h.t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn invalid_queue_needs_reset() {
        let mut h = harness();
        negotiate(&mut h.t);
        // Rings beyond the 1 MiB of guest memory.
        setup_queue(&mut h.t, 0, 0x20_0000);
        w(
            &mut h.t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert_ne!(r(&mut h.t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert!(h.activated.lock().unwrap().is_empty());
    }

    #[test]
    fn reset_clears_state_and_tells_device() {
        let mut h = harness();
        negotiate(&mut h.t);
        setup_queue(&mut h.t, 0, 0x10000);
        w(
            &mut h.t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        h.t.interrupt().trigger(1).unwrap();
        w(&mut h.t, reg::STATUS, 0);
        assert_eq!(*h.resets.lock().unwrap(), 1);
        assert_eq!(r(&mut h.t, reg::STATUS), 0);
        assert_eq!(r(&mut h.t, reg::INTERRUPT_STATUS), 0);
        w(&mut h.t, reg::QUEUE_SEL, 0);
        assert_eq!(r(&mut h.t, reg::QUEUE_READY), 0);
    }

    #[test]
    fn interrupt_status_and_ack() {
        let mut h = harness();
        h.t.interrupt().trigger(super::super::INT_VRING).unwrap();
        assert_eq!(h.t.interrupt().eventfd().read().unwrap(), 1);
        assert_eq!(r(&mut h.t, reg::INTERRUPT_STATUS), 1);
        w(&mut h.t, reg::INTERRUPT_ACK, 1);
        assert_eq!(r(&mut h.t, reg::INTERRUPT_STATUS), 0);
    }

    #[test]
    fn config_space_and_generation() {
        let mut h = harness();
        let mut b = [0u8; 4];
        h.t.read(reg::CONFIG, &mut b);
        assert_eq!(&b, b"hull");
        h.t.write(reg::CONFIG + 4, b"CFG");
        h.t.read(reg::CONFIG + 4, &mut b[..3]);
        assert_eq!(&b[..3], b"CFG");
        assert_eq!(r(&mut h.t, reg::CONFIG_GENERATION), 0);
        h.t.config_changed();
        assert_eq!(r(&mut h.t, reg::CONFIG_GENERATION), 1);
        assert_eq!(r(&mut h.t, reg::INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
    }

    #[test]
    fn queue_notify_fallback_signals_eventfd() {
        let mut h = harness();
        w(&mut h.t, reg::QUEUE_NOTIFY, 1);
        assert_eq!(h.t.queue_evts()[1].read().unwrap(), 1);
        assert!(h.t.queue_evts()[0].read().is_err());
        w(&mut h.t, reg::QUEUE_NOTIFY, 7);
    }

    #[test]
    fn narrow_register_accesses_are_ignored() {
        let mut h = harness();
        let mut b = [0xffu8; 2];
        h.t.read(reg::MAGIC, &mut b);
        assert_eq!(b, [0, 0]);
        h.t.write(reg::STATUS, &[1]);
        assert_eq!(r(&mut h.t, reg::STATUS), 0);
    }
}
