//! Boot-timer port: the guest writes a magic byte once it is up, the VMM records and
//! logs the time since the VMM started.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hull_protocol::guest::{BOOT_TIMER_MAGIC, BOOT_TIMER_PORT};

use super::bus::BusDevice;

/// Port base.
pub const BOOT_TIMER_BASE: u64 = BOOT_TIMER_PORT as u64;
/// Window size.
pub const BOOT_TIMER_SIZE: u64 = 1;

/// The device; `elapsed` is shared with whoever wants the result.
#[derive(Debug)]
pub struct BootTimer {
    start: Instant,
    elapsed: Arc<Mutex<Option<Duration>>>,
}

impl BootTimer {
    /// A timer counting from `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            elapsed: Arc::default(),
        }
    }

    /// Handle to the first recorded time.
    pub fn result(&self) -> Arc<Mutex<Option<Duration>>> {
        self.elapsed.clone()
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.first() != Some(&BOOT_TIMER_MAGIC) {
            return;
        }
        let t = self.start.elapsed();
        let mut slot = self.elapsed.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(t);
        }
        log::info!(
            "boot-timer: guest ready {:.3} ms after VMM start",
            t.as_secs_f64() * 1000.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_first_magic_write_only() {
        let mut t = BootTimer::new(Instant::now());
        let r = t.result();
        t.write(0, &[BOOT_TIMER_MAGIC.wrapping_add(1)]);
        assert!(r.lock().unwrap().is_none());
        t.write(0, &[BOOT_TIMER_MAGIC]);
        let first = r.lock().unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        t.write(0, &[BOOT_TIMER_MAGIC]);
        assert_eq!(r.lock().unwrap().unwrap(), first);
    }
}
