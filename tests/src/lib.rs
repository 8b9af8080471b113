//! Fixtures shared by the end-to-end tests.
pub mod bundle;
pub mod containerd;
pub mod guest;
pub mod hull_cli;
pub mod netns;
pub mod oci_image;
pub mod qemu;
pub mod sandbox;
