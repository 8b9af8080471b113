//! A tiny guest drives a virtio-mmio device through the library API: identification
//! registers, feature negotiation, queue setup, activation, ioeventfd notification
//! and the interrupt status register.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use hull_vmm::virtio::{ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt, INT_VRING};
use hull_vmm::{ConsoleConfig, Vm, VmConfig, VmExit};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

const DEVICE_ID: u32 = 42;
const BASE: u32 = 0xd000_0000;

#[derive(Default, Clone)]
struct Seen {
    features: Arc<Mutex<Option<u64>>>,
    notify: Arc<Mutex<Vec<EventFd>>>,
}

struct TestDevice {
    seen: Seen,
}

impl VirtioDevice for TestDevice {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[8]
    }
    fn features(&self) -> u64 {
        0
    }
    fn ack_features(&mut self, f: u64) {
        *self.seen.features.lock().unwrap() = Some(f);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = *b"hullcfg!";
        for (i, b) in data.iter_mut().enumerate() {
            *b = cfg.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        irq: Arc<VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let mut n = self.seen.notify.lock().unwrap();
        for q in queues {
            n.push(q.notify);
        }
        irq.trigger(INT_VRING)
            .map_err(|e| ActivateError::Failed(e.to_string()))
    }
}

fn reg(off: u32) -> u32 {
    BASE + off
}

fn guest() -> Vec<u8> {
    let mut a = Asm::new();
    a.load_eax(reg(0x000)).cmp_eax(0x7472_6976).jne("fail"); // magic
    a.load_eax(reg(0x004)).cmp_eax(2).jne("fail"); // version
    a.load_eax(reg(0x008)).cmp_eax(DEVICE_ID).jne("fail"); // device id
    a.load_eax(reg(0x100))
        .cmp_eax(u32::from_le_bytes(*b"hull"))
        .jne("fail"); // config
    a.store(reg(0x070), 1)
        .load_eax(reg(0x070))
        .cmp_eax(1)
        .jne("fail"); // ACK
    a.store(reg(0x070), 3);
    a.store(reg(0x014), 1)
        .load_eax(reg(0x010))
        .cmp_eax(1)
        .jne("fail"); // VERSION_1
    a.store(reg(0x024), 1).store(reg(0x020), 1); // accept VERSION_1
    a.store(reg(0x024), 0).store(reg(0x020), 0);
    a.store(reg(0x070), 0xb)
        .load_eax(reg(0x070))
        .cmp_eax(0xb)
        .jne("fail"); // FEATURES_OK
    a.store(reg(0x030), 0)
        .load_eax(reg(0x034))
        .cmp_eax(8)
        .jne("fail"); // QueueNumMax
    a.store(reg(0x038), 8);
    a.store(reg(0x080), 0x20_0000).store(reg(0x084), 0);
    a.store(reg(0x090), 0x20_1000).store(reg(0x094), 0);
    a.store(reg(0x0a0), 0x20_2000).store(reg(0x0a4), 0);
    a.store(reg(0x044), 1)
        .load_eax(reg(0x044))
        .cmp_eax(1)
        .jne("fail"); // ready
    a.store(reg(0x070), 0xf)
        .load_eax(reg(0x070))
        .cmp_eax(0xf)
        .jne("fail"); // DRIVER_OK
    a.load_eax(reg(0x060)).cmp_eax(1).jne("fail"); // interrupt raised at activation
    a.store(reg(0x064), 1)
        .load_eax(reg(0x060))
        .cmp_eax(0)
        .jne("fail"); // ack
    a.load_eax(reg(0x0fc)).cmp_eax(0).jne("fail"); // config generation
    a.store(reg(0x050), 0); // notify queue 0 (ioeventfd)
    a.print("virtio ok\n").reset();
    a.label("fail").print("virtio bad\n").reset();
    a.finish()
}

#[test]
fn guest_drives_a_virtio_mmio_device() {
    if should_skip("guest_drives_a_virtio_mmio_device") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_guest(dir.path(), "virtio.elf", &guest());
    let fds_before = open_fds();
    let console = dir.path().join("console");
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 16;
    cfg.console = ConsoleConfig::File(console.clone());
    let mut vm = Vm::new(cfg).unwrap();
    let seen = Seen::default();
    let base = vm
        .add_virtio_device(Box::new(TestDevice { seen: seen.clone() }))
        .unwrap();
    assert_eq!(base, u64::from(BASE));

    // Watchdog: stop the VM if the guest hangs.
    let stop = vm.stop_handle().unwrap();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            stop.write(1).unwrap();
        }
    });
    let exit = vm.run();
    done_tx.send(()).unwrap();
    watchdog.join().unwrap();

    let out = std::fs::read_to_string(&console).unwrap();
    assert_eq!(exit.unwrap(), VmExit::Reset, "console: {out}");
    assert_eq!(out, "virtio ok\n");
    assert_eq!(
        *seen.features.lock().unwrap(),
        Some(hull_vmm::virtio::VIRTIO_F_VERSION_1)
    );
    let notify = seen.notify.lock().unwrap();
    assert_eq!(notify.len(), 1, "queue 0 activated");
    assert_eq!(notify[0].read().unwrap(), 1, "ioeventfd caught QueueNotify");
    drop(notify);
    drop(seen);
    assert_eq!(open_fds(), fds_before, "the VM leaked file descriptors");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
