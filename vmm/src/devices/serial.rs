//! The 8250 UART at 0x3f8 (COM1): console output to a writer, input from the host.

use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// COM1 port base.
pub const SERIAL_PORT_BASE: u64 = 0x3f8;
/// COM1 register window.
pub const SERIAL_PORT_SIZE: u64 = 0x8;
/// COM1 interrupt line.
pub const SERIAL_IRQ: u32 = 4;

/// An interrupt line raised by writing an eventfd (registered as a KVM irqfd).
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where the console goes.
pub type ConsoleOut = Box<dyn Write + Send>;

/// The UART as a bus device.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, ConsoleOut>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART writing to `out` and raising `irq`.
    pub fn new(irq: EventFd, out: ConsoleOut) -> Self {
        Self {
            serial: Serial::new(EventFdTrigger(irq), out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.serial
            .enqueue_raw_bytes(bytes)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    /// Free room in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.serial.fifo_capacity()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let [b] = data {
            *b = self.serial.read(offset as u8);
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [b] = data {
            if let Err(e) = self.serial.write(offset as u8, *b) {
                // A closed console must not stop the guest.
                log::debug!("serial output: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const THR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;

    #[test]
    fn output_reaches_the_writer() {
        let out = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        for b in b"hi\n" {
            dev.write(THR, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        let mut lsr = [0u8];
        dev.read(LSR, &mut lsr);
        // Transmitter empty, holding register empty.
        assert_eq!(lsr[0] & 0x60, 0x60);
    }

    #[test]
    fn input_raises_interrupt_when_enabled() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq.try_clone().unwrap(), Box::new(io::sink()));
        // Enable "received data available" interrupts.
        dev.write(IER, &[0x1]);
        let _ = irq.read();
        assert_eq!(dev.enqueue_input(b"ab").unwrap(), 2);
        assert_eq!(irq.read().unwrap(), 1);
        let mut lsr = [0u8];
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut b = [0u8];
        dev.read(THR, &mut b);
        assert_eq!(b[0], b'a');
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let mut dev = SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Box::new(io::sink()),
        );
        let mut w = [0xffu8; 2];
        dev.read(0, &mut w);
        assert_eq!(w, [0, 0]);
        dev.write(0, &[1, 2]);
    }
}
