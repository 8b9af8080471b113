//! The i8042 keyboard controller, present only so that the guest's reset command
//! (0xfe to port 0x64, Linux `reboot=k`) ends the VM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// Raises `stop` before signalling the event: the writing vCPU then stops before
/// running another guest instruction. Otherwise Linux moves on from the keyboard
/// controller to its next reboot method (ending in a triple fault) while the event
/// loop is still waking up.
#[derive(Debug)]
pub struct ResetTrigger {
    evt: EventFd,
    stop: Arc<AtomicBool>,
}

impl Trigger for ResetTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::Release);
        self.evt.write(1)
    }
}

/// Data port; the command/status port is at +4.
pub const I8042_PORT_BASE: u64 = 0x60;
/// Window covering 0x60..=0x64 (0x61 is served by KVM's PIT speaker stub first).
pub const I8042_PORT_SIZE: u64 = 0x5;

/// The controller as a bus device; `reset_evt` fires when the guest resets.
pub struct I8042 {
    dev: I8042Device<ResetTrigger>,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042").finish_non_exhaustive()
    }
}

impl I8042 {
    /// A controller that sets `stop` and signals `reset_evt` on a guest reset.
    pub fn new(reset_evt: EventFd, stop: Arc<AtomicBool>) -> Self {
        Self {
            dev: I8042Device::new(ResetTrigger {
                evt: reset_evt,
                stop,
            }),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty (never busy).
        let v = self.dev.read(offset as u8);
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [b] = data {
            if let Err(e) = self.dev.write(offset as u8, *b) {
                log::error!("i8042: cannot signal reset: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_stops_and_fires_event() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut dev = I8042::new(evt.try_clone().unwrap(), stop.clone());
        dev.write(0, &[0xfe]);
        assert!(evt.read().is_err(), "data port does not reset");
        dev.write(4, &[0xaa]);
        assert!(evt.read().is_err(), "other commands do not reset");
        assert!(!stop.load(Ordering::Acquire));
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
        assert!(stop.load(Ordering::Acquire));
    }

    #[test]
    fn status_reads_idle() {
        let mut dev = I8042::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Arc::new(AtomicBool::new(false)),
        );
        let mut b = [0xffu8];
        dev.read(4, &mut b);
        assert_eq!(b[0] & 0x3, 0);
    }
}
