//! Seccomp filters, one per kind of hull-vmm thread, installed by each thread on itself
//! once set-up is done: the main thread (event loop, teardown), vCPU threads (KVM_RUN
//! and device register accesses) and device threads (queue work and host I/O).
//!
//! A forbidden system call raises SIGSYS; the handler writes one line naming the thread
//! and the call to stderr and ends the process with status 159 (128 + SIGSYS), so the
//! runtime sees the VMM die with the reason in its log.

use std::collections::BTreeMap;
use std::sync::Once;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

/// Exit status after a forbidden system call.
pub const SECCOMP_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// Which filter a thread gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The event loop and teardown.
    Main,
    /// A vCPU: KVM_RUN and the port/MMIO devices it calls into.
    Vcpu,
    /// A virtio device thread: queues, files, sockets, a tap.
    Device,
}

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("cannot build the {0:?} seccomp filter: {1}")]
    Build(ThreadKind, String),
    #[error("cannot install the {0:?} seccomp filter: {1}")]
    Install(ThreadKind, String),
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

/// (number, `SYS_` name) pairs; the names are for the SIGSYS report.
type Calls = &'static [(libc::c_long, &'static str)];

macro_rules! calls {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name, stringify!($name))),*]
    };
}

/// What every thread needs: memory, locks, signals, time, its own exit, logging.
const COMMON: Calls = calls![
    SYS_brk,
    SYS_mmap,
    SYS_munmap,
    SYS_mremap,
    SYS_madvise,
    SYS_mprotect,
    SYS_futex,
    SYS_rt_sigreturn,
    SYS_rt_sigprocmask,
    SYS_sigaltstack,
    SYS_sched_yield,
    SYS_sched_getaffinity,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_nanosleep,
    SYS_getpid,
    SYS_gettid,
    SYS_getrandom,
    SYS_read,
    SYS_write,
    SYS_close,
    SYS_fcntl,
    SYS_dup,
    SYS_prctl,
    SYS_exit,
    SYS_exit_group,
    SYS_rseq,
];

const MAIN: Calls = calls![
    SYS_epoll_wait,
    SYS_epoll_pwait,
    SYS_epoll_ctl,
    SYS_ioctl,  // restoring the terminal's mode
    SYS_tgkill, // kicking vCPUs out of KVM_RUN
    SYS_tkill,
    SYS_readv,
    SYS_writev,
];

const VCPU: Calls = calls![
    SYS_ioctl, // KVM_RUN and friends
    SYS_writev,
];

const DEVICE: Calls = calls![
    // The event loop.
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_wait,
    SYS_epoll_pwait,
    // Block images and the tap.
    SYS_readv,
    SYS_writev,
    SYS_pread64,
    SYS_pwrite64,
    SYS_preadv,
    SYS_pwritev,
    SYS_preadv2,
    SYS_pwritev2,
    SYS_lseek,
    SYS_fsync,
    SYS_fdatasync,
    SYS_fallocate,
    SYS_ftruncate,
    // vsock: host Unix sockets.
    SYS_socket,
    SYS_connect,
    SYS_accept4,
    SYS_sendto,
    SYS_recvfrom,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_shutdown,
    SYS_getsockopt,
    SYS_setsockopt,
    SYS_timerfd_settime,
    SYS_timerfd_gettime,
    SYS_unlink,
    // virtio-fs: the passthrough file system, as the requesting guest user.
    SYS_openat,
    SYS_newfstatat,
    SYS_fstat,
    SYS_statx,
    SYS_fstatfs,
    SYS_statfs,
    SYS_mkdirat,
    SYS_mknodat,
    SYS_symlinkat,
    SYS_readlinkat,
    SYS_linkat,
    SYS_unlinkat,
    SYS_renameat,
    SYS_renameat2,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchown,
    SYS_fchownat,
    SYS_utimensat,
    SYS_getdents64,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fgetxattr,
    SYS_fsetxattr,
    SYS_flistxattr,
    SYS_fremovexattr,
    SYS_getxattr,
    SYS_lgetxattr,
    SYS_setxattr,
    SYS_lsetxattr,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_removexattr,
    SYS_lremovexattr,
    SYS_setresuid,
    SYS_setresgid,
    SYS_setfsuid,
    SYS_setfsgid,
    SYS_capget,
    SYS_capset,
    SYS_umask,
    SYS_copy_file_range,
    SYS_flock,
    SYS_dup3,
    SYS_name_to_handle_at,
];

/// Calls no thread may make that are worth naming when one tries.
const NOTABLE: Calls = calls![
    SYS_execve,
    SYS_execveat,
    SYS_fork,
    SYS_vfork,
    SYS_clone,
    SYS_clone3,
    SYS_ptrace,
    SYS_personality,
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_chroot,
    SYS_unshare,
    SYS_setns,
    SYS_bpf,
    SYS_init_module,
    SYS_finit_module,
    SYS_kexec_load,
    SYS_reboot,
    SYS_bind,
    SYS_listen,
    SYS_open,
    SYS_kill,
];

fn allowed(kind: ThreadKind) -> Vec<(libc::c_long, &'static str)> {
    let own = match kind {
        ThreadKind::Main => MAIN,
        ThreadKind::Vcpu => VCPU,
        ThreadKind::Device => DEVICE,
    };
    COMMON.iter().chain(own).copied().collect()
}

/// ioctl requests a device thread may make: FIONBIO (std's `set_nonblocking` on sockets
/// the vsock muxer accepts or connects).
const DEVICE_IOCTLS: &[u64] = &[libc::FIONBIO];

/// The BPF program for `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let build = |e: seccompiler::BackendError| SeccompError::Build(kind, e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = allowed(kind)
        .into_iter()
        .map(|(nr, _)| (nr, Vec::new()))
        .collect();
    if kind == ThreadKind::Device {
        let ioctls = DEVICE_IOCTLS
            .iter()
            .map(|&req| {
                let c = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)?;
                SeccompRule::new(vec![c])
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(build)?;
        rules.insert(libc::SYS_ioctl, ioctls);
    }
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(build)?;
    BpfProgram::try_from(f).map_err(|e| SeccompError::Build(kind, e.to_string()))
}

/// Installs `kind`'s filter on the calling thread (and the SIGSYS report, once).
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    install_sigsys_handler()?;
    let bpf = filter(kind)?;
    seccompiler::apply_filter(&bpf).map_err(|e| SeccompError::Install(kind, e.to_string()))
}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
            .map_err(|e| SeccompError::Handler(std::io::Error::from_raw_os_error(e.errno())));
    });
    result
}

/// Makes a call no filter allows, for the seccomp self-test (`--seccomp-selftest`).
pub fn forbidden_call_for_selftest() {
    // personality(0xffffffff) only queries, so without a filter nothing changes.
    // SAFETY: a query with no pointers.
    unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) };
}

fn name_of(nr: libc::c_long) -> Option<&'static str> {
    COMMON
        .iter()
        .chain(MAIN)
        .chain(VCPU)
        .chain(DEVICE)
        .chain(NOTABLE)
        .find(|(n, _)| *n == nr)
        .map(|(_, name)| name.strip_prefix("SYS_").unwrap_or(name))
}

/// A fixed buffer for composing the report without allocating in a signal handler.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_number(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // For SIGSYS the union after the 16-byte header holds `void *_call_addr; int _syscall`.
    // SAFETY: the kernel hands SA_SIGINFO handlers a valid siginfo_t.
    let nr = unsafe {
        info.cast::<u8>()
            .add(24)
            .cast::<libc::c_int>()
            .read_unaligned()
    };
    let mut thread = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, thread.as_mut_ptr()) };
    let thread_len = thread.iter().position(|&b| b == 0).unwrap_or(thread.len());
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    line.push(b"hull-vmm: seccomp: thread '");
    line.push(&thread[..thread_len]);
    line.push(b"' made the forbidden system call ");
    if let Some(name) = name_of(libc::c_long::from(nr)) {
        line.push(name.as_bytes());
        line.push(b" (");
        line.push_number(nr as u64);
        line.push(b")");
    } else {
        line.push_number(nr as u64);
    }
    line.push(b"; the VMM stops\n");
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is a live local.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(SECCOMP_EXIT_STATUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_builds_and_names_its_calls() {
        for kind in [ThreadKind::Main, ThreadKind::Vcpu, ThreadKind::Device] {
            assert!(!filter(kind).unwrap().is_empty());
        }
        assert_eq!(name_of(libc::SYS_personality), Some("personality"));
        assert_eq!(name_of(libc::SYS_openat), Some("openat"));
        assert!(allowed(ThreadKind::Device)
            .iter()
            .all(|(nr, _)| *nr != libc::SYS_execve));
        assert!(!allowed(ThreadKind::Vcpu)
            .iter()
            .any(|(nr, _)| *nr == libc::SYS_openat));
    }

    #[test]
    fn report_numbers() {
        let mut l = Line {
            buf: [0; 256],
            len: 0,
        };
        l.push(b"n=");
        l.push_number(0);
        l.push(b",");
        l.push_number(335);
        assert_eq!(&l.buf[..l.len], b"n=0,335");
    }
}
