//! Virtual CPUs: register, CPUID, MSR and LAPIC setup, and the run loop.

pub mod cpuid;
pub mod lapic;
pub mod msrs;
pub mod regs;
pub mod vcpu;

pub use vcpu::{Vcpu, VcpuError, VcpuOutcome};
