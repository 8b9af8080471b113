//! The drain loop shared by devices that complete every chain as soon as it is popped
//! (blk, rng, fs, net TX): pop, serve, add to the used ring, and re-check after turning
//! notifications back on so a buffer added in between is not missed.

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemory;

/// Serves every chain available on `q` with `serve`, which returns the bytes written to
/// the chain; returns whether the driver must be notified. A queue that is not ready or
/// whose rings lie outside guest memory is left alone.
pub fn drain_queue<'m, M, F>(
    mem: &'m M,
    q: &mut Queue,
    mut serve: F,
) -> Result<bool, virtio_queue::Error>
where
    M: GuestMemory,
    F: FnMut(DescriptorChain<&'m M>) -> u32,
{
    if !q.ready() || !q.is_valid(mem) {
        return Ok(false);
    }
    let mut used = false;
    loop {
        q.disable_notification(mem)?;
        let mut popped = false;
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            popped = true;
            let head = chain.head_index();
            let len = serve(chain);
            q.add_used(mem, head, len)?;
            used = true;
        }
        // "More available" with nothing poppable means a bogus avail index: stop.
        if !q.enable_notification(mem)? || !popped {
            break;
        }
    }
    Ok(used && q.needs_notification(mem)?)
}
