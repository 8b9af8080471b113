//! A virtqueue test harness: lays out split rings in a `GuestMemoryMmap`, builds
//! descriptor chains the way a driver would (or the way a hostile one might), and reads
//! back the used ring. Any device test can drive its queues through it.
//!
//! Enabled for this crate's tests and, for other crates, with the `test-utils` feature.

use std::collections::HashMap;
use std::num::Wrapping;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// Descriptor flags (split ring).
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// Guest memory of `size` bytes at guest address 0.
pub fn test_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("test memory")
}

/// One buffer of a chain.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: GuestAddress,
    pub len: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE).
    pub writable: bool,
}

impl Buf {
    pub fn readable(addr: GuestAddress, len: u32) -> Self {
        Buf {
            addr,
            len,
            writable: false,
        }
    }

    pub fn writable(addr: GuestAddress, len: u32) -> Self {
        Buf {
            addr,
            len,
            writable: true,
        }
    }
}

/// Hands out guest memory for buffers, with reuse of freed ones of the same size.
pub struct BufAlloc {
    next: u64,
    end: u64,
    free: HashMap<u32, Vec<GuestAddress>>,
}

impl BufAlloc {
    /// Allocates from `[start, end)`.
    pub fn new(start: GuestAddress, end: GuestAddress) -> Self {
        BufAlloc {
            next: start.raw_value(),
            end: end.raw_value(),
            free: HashMap::new(),
        }
    }

    /// A 16-byte aligned buffer of `len` bytes. Panics when out of memory (a test bug).
    pub fn alloc(&mut self, len: u32) -> GuestAddress {
        if let Some(a) = self.free.get_mut(&len).and_then(Vec::pop) {
            return a;
        }
        let a = (self.next + 15) & !15;
        assert!(
            a + u64::from(len) <= self.end,
            "test guest memory exhausted"
        );
        self.next = a + u64::from(len);
        GuestAddress(a)
    }

    pub fn free(&mut self, addr: GuestAddress, len: u32) {
        self.free.entry(len).or_default().push(addr);
    }
}

/// A split virtqueue laid out in guest memory, driven from the driver side.
pub struct TestQueue {
    mem: GuestMemoryMmap,
    size: u16,
    desc_table: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    free_slots: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    avail_idx: Wrapping<u16>,
    used_seen: Wrapping<u16>,
}

impl TestQueue {
    /// Lays out a queue of `size` entries (a power of two) at `base` (16-byte aligned).
    pub fn new(mem: &GuestMemoryMmap, base: GuestAddress, size: u16) -> Self {
        assert!(size.is_power_of_two() && base.raw_value() & 15 == 0);
        let n = u64::from(size);
        let desc_table = base;
        let avail = desc_table.unchecked_add(16 * n);
        // The used ring needs 4-byte alignment.
        let used = GuestAddress((avail.raw_value() + 6 + 2 * n + 3) & !3);
        let q = TestQueue {
            mem: mem.clone(),
            size,
            desc_table,
            avail,
            used,
            free_slots: (0..size).rev().collect(),
            chains: HashMap::new(),
            avail_idx: Wrapping(0),
            used_seen: Wrapping(0),
        };
        // Zero the rings: flags, indices, event fields.
        let zero = vec![0u8; (q.end().raw_value() - base.raw_value()) as usize];
        q.mem.write_slice(&zero, base).expect("rings in memory");
        q
    }

    /// First address after the rings.
    pub fn end(&self) -> GuestAddress {
        self.used.unchecked_add(6 + 8 * u64::from(self.size))
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn desc_table(&self) -> GuestAddress {
        self.desc_table
    }

    pub fn avail_addr(&self) -> GuestAddress {
        self.avail
    }

    pub fn used_addr(&self) -> GuestAddress {
        self.used
    }

    /// A device-side `Queue` configured for these rings and marked ready.
    pub fn queue(&self, event_idx: bool) -> Queue {
        let mut q = Queue::new(self.size).expect("queue size");
        self.configure(&mut q);
        q.set_event_idx(event_idx);
        q
    }

    /// Points an existing `Queue` at these rings again (after a reset).
    pub fn configure(&self, q: &mut Queue) {
        let split = |a: GuestAddress| {
            let v = a.raw_value();
            (Some(v as u32), Some((v >> 32) as u32))
        };
        q.set_size(self.size);
        let (l, h) = split(self.desc_table);
        q.set_desc_table_address(l, h);
        let (l, h) = split(self.avail);
        q.set_avail_ring_address(l, h);
        let (l, h) = split(self.used);
        q.set_used_ring_address(l, h);
        q.set_ready(true);
    }

    /// Writes a raw descriptor, for chains no honest driver would build.
    pub fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc_table.unchecked_add(16 * u64::from(index));
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&raw, at).expect("descriptor table");
    }

    /// Free descriptor slots.
    pub fn free_descriptors(&self) -> usize {
        self.free_slots.len()
    }

    /// Builds a chain from `bufs` in free slots and makes it available. Returns the head
    /// index, or `None` when the table has no room.
    pub fn add_chain(&mut self, bufs: &[Buf]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.free_slots.len() {
            return None;
        }
        let slots: Vec<u16> = (0..bufs.len())
            .map(|_| self.free_slots.pop().expect("checked"))
            .collect();
        for (i, b) in bufs.iter().enumerate() {
            let mut flags = if b.writable { F_WRITE } else { 0 };
            let next = slots.get(i + 1).copied();
            if next.is_some() {
                flags |= F_NEXT;
            }
            self.write_desc(
                slots[i],
                b.addr.raw_value(),
                b.len,
                flags,
                next.unwrap_or(0),
            );
        }
        let head = slots[0];
        self.chains.insert(head, slots);
        self.publish(head);
        Some(head)
    }

    /// Puts `head` in the available ring and bumps its index.
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx.0 % self.size);
        let at = self.avail.unchecked_add(4 + 2 * slot);
        self.mem.write_obj(head, at).expect("avail ring");
        self.avail_idx += Wrapping(1);
        self.set_avail_idx(self.avail_idx.0);
    }

    /// Writes the avail ring's `idx` field (the driver's publish step) directly.
    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx, self.avail.unchecked_add(2))
            .expect("avail idx");
    }

    /// Writes the avail ring's `flags` (e.g. VRING_AVAIL_F_NO_INTERRUPT).
    pub fn set_avail_flags(&self, flags: u16) {
        self.mem.write_obj(flags, self.avail).expect("avail flags");
    }

    /// The device's `used->idx`.
    pub fn used_idx(&self) -> u16 {
        self.mem
            .read_obj(self.used.unchecked_add(2))
            .expect("used idx")
    }

    /// The device's `avail_event` (EVENT_IDX), after the used ring.
    pub fn avail_event(&self) -> u16 {
        self.mem
            .read_obj(self.used.unchecked_add(4 + 8 * u64::from(self.size)))
            .expect("avail event")
    }

    /// Used entries (head, length) since the last call; their slots become free again.
    pub fn take_used(&mut self) -> Vec<(u16, u32)> {
        let idx = Wrapping(self.used_idx());
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = u64::from(self.used_seen.0 % self.size);
            let at = self.used.unchecked_add(4 + 8 * slot);
            let id: u32 = self.mem.read_obj(at).expect("used ring");
            let len: u32 = self.mem.read_obj(at.unchecked_add(4)).expect("used ring");
            let head = id as u16;
            if let Some(slots) = self.chains.remove(&head) {
                self.free_slots.extend(slots);
            }
            out.push((head, len));
            self.used_seen += Wrapping(1);
        }
        out
    }

    /// Forgets all outstanding chains (the driver reset the queue).
    pub fn reset(&mut self) {
        self.free_slots = (0..self.size).rev().collect();
        self.chains.clear();
        self.avail_idx = Wrapping(0);
        self.used_seen = Wrapping(0);
        let zero = vec![0u8; (self.end().raw_value() - self.desc_table.raw_value()) as usize];
        self.mem
            .write_slice(&zero, self.desc_table)
            .expect("rings in memory");
    }
}

/// An RX and a TX queue in one guest memory, with an allocator for their buffers: the
/// rig of devices that use both at once (net, vsock).
pub struct RxTxQueues {
    pub mem: GuestMemoryMmap,
    pub rxq: TestQueue,
    pub txq: TestQueue,
    pub rx: Queue,
    pub tx: Queue,
    pub alloc: BufAlloc,
}

impl RxTxQueues {
    /// `mem_size` bytes of memory with `size`-entry rings at `rx_at` and `tx_at`;
    /// buffers come from `bufs_at` to the end of memory.
    pub fn new(
        mem_size: usize,
        size: u16,
        rx_at: GuestAddress,
        tx_at: GuestAddress,
        bufs_at: GuestAddress,
        event_idx: bool,
    ) -> Self {
        let mem = test_memory(mem_size);
        let rxq = TestQueue::new(&mem, rx_at, size);
        let txq = TestQueue::new(&mem, tx_at, size);
        let (rx, tx) = (rxq.queue(event_idx), txq.queue(event_idx));
        RxTxQueues {
            alloc: BufAlloc::new(bufs_at, GuestAddress(mem_size as u64)),
            mem,
            rxq,
            txq,
            rx,
            tx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::QueueOwnedT;

    #[test]
    fn chains_round_trip_through_a_device_queue() {
        let mem = test_memory(1 << 20);
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 8);
        let mut alloc = BufAlloc::new(tq.end(), GuestAddress(1 << 20));
        let a = alloc.alloc(64);
        let b = alloc.alloc(128);
        mem.write_slice(&[7u8; 64], a).unwrap();
        let head = tq
            .add_chain(&[Buf::readable(a, 64), Buf::writable(b, 128)])
            .unwrap();
        let mut q = tq.queue(false);
        assert!(q.is_valid(&mem));
        let chain = q.iter(&mem).unwrap().next().unwrap();
        assert_eq!(chain.head_index(), head);
        let descs: Vec<_> = chain.collect();
        assert_eq!(descs.len(), 2);
        assert_eq!(descs[0].addr(), a);
        assert!(!descs[0].is_write_only());
        assert!(descs[1].is_write_only());
        q.add_used(&mem, head, 99).unwrap();
        assert_eq!(tq.take_used(), vec![(head, 99)]);
        assert_eq!(tq.free_descriptors(), 8);
    }
}
