//! Builds the guest initramfs.
