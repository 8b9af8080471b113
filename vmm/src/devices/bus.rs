//! Address-range dispatch of port I/O and MMIO exits to device models.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// A device model reachable through a bus.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset` into the device's window.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write at `offset` into the device's window.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors building a bus.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// The new window overlaps an existing one or is empty.
    #[error("bus window {base:#x}+{len:#x} overlaps another device or is empty")]
    Overlap {
        /// Window base.
        base: u64,
        /// Window length.
        len: u64,
    },
}

/// Shared handle to a device on a bus.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// A set of non-overlapping windows. Built before the vCPUs start, then only read.
#[derive(Default)]
pub struct Bus {
    windows: BTreeMap<u64, (u64, SharedDevice)>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.windows.iter().map(|(b, (l, _))| (*b, *l)))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(BusError::Overlap { base, len });
        };
        if let Some((b, (l, _))) = self.windows.range(..end).next_back() {
            if b + l > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.windows.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &SharedDevice)> {
        let (base, (len, dev)) = self.windows.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset + size as u64 <= *len).then_some((offset, dev))
    }

    /// Dispatches a read; false if no device covers the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; false if no device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_offset() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f8, b"x"));
        assert_eq!(dev.lock().unwrap().last, vec![(0, vec![b'x'])]);
        assert!(!bus.read(0x3f7, &mut b));
        assert!(!bus.read(0x400, &mut b));
        // An access running past the window is not dispatched.
        let mut w = [0u8; 4];
        assert!(!bus.read(0x3fe, &mut w));
    }

    #[test]
    fn rejects_overlaps() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x60, 5, dev.clone()).unwrap();
        assert!(bus.insert(0x64, 1, dev.clone()).is_err());
        assert!(bus.insert(0x5f, 2, dev.clone()).is_err());
        assert!(bus.insert(0x10, 0, dev.clone()).is_err());
        bus.insert(0x65, 1, dev.clone()).unwrap();
        bus.insert(0x50, 0x10, dev).unwrap();
    }
}
