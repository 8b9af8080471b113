//! The container's seccomp filter for exec'd processes.
//!
//! libcontainer 0.7 builds an exec'd process's spec from the namespaces and cgroup of
//! the container only, so `linux.seccomp` would not apply to it (runc applies it). An
//! executor that loads the filter right before exec closes that gap.

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{LinuxSeccomp, Spec};

#[derive(Clone)]
pub struct SeccompExecutor {
    seccomp: LinuxSeccomp,
}

impl SeccompExecutor {
    pub fn new(seccomp: LinuxSeccomp) -> Self {
        SeccompExecutor { seccomp }
    }

    fn load(&self) -> Result<(), ExecutorError> {
        let fail = |e: &dyn std::fmt::Display| {
            ExecutorError::Other(format!("loading the container's seccomp filter: {e}"))
        };
        match libcontainer::seccomp::initialize_seccomp(&self.seccomp) {
            Ok(notify) => {
                // A notify listener only serves the init process; never leak the fd.
                if let Some(fd) = notify {
                    // SAFETY: the fd was just created for us and is owned by nobody else.
                    unsafe { libc::close(fd) };
                }
                Ok(())
            }
            Err(first) => {
                // Without CAP_SYS_ADMIN the kernel demands no_new_privs for a filter.
                // Running unfiltered would be worse than losing setuid in execs.
                // SAFETY: prctl with integer arguments only.
                if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                    return Err(fail(&first));
                }
                match libcontainer::seccomp::initialize_seccomp(&self.seccomp) {
                    Ok(Some(fd)) => {
                        // SAFETY: as above.
                        unsafe { libc::close(fd) };
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(fail(&e)),
                }
            }
        }
    }
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        self.load()?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
