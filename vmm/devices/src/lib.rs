//! hull virtio devices.
