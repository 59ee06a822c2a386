//! Counts this thread's system calls exactly: a perf counter on the
//! `raw_syscalls:sys_enter` tracepoint, opened for the calling thread only.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const TRACEFS: &str = "/sys/kernel/tracing";
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// The first fields of `struct perf_event_attr` (PERF_ATTR_SIZE_VER0, 64 bytes): enough
/// for a plain counting event that starts enabled.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// A running count of the system calls the thread that opened it makes.
pub struct SyscallCounter {
    fd: OwnedFd,
    /// What one read of the counter adds (the read itself).
    overhead: u64,
}

fn tracepoint_id() -> io::Result<u64> {
    let path = format!("{TRACEFS}/events/raw_syscalls/sys_enter/id");
    if std::fs::metadata(&path).is_err() {
        // SAFETY: mounting tracefs at its usual place; arguments are valid C strings.
        let rc = unsafe {
            libc::mount(
                c"nodev".as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let text = std::fs::read_to_string(&path)?;
    text.trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))
}

impl SyscallCounter {
    /// Starts counting the calling thread's system calls.
    pub fn for_this_thread() -> io::Result<Self> {
        let attr = PerfEventAttr {
            kind: PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: tracepoint_id()?,
            ..PerfEventAttr::default()
        };
        // SAFETY: perf_event_open reads `attr` (valid, `size` bytes); pid 0 and cpu -1
        // mean this thread on any CPU; no group, no flags.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                0,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut c = Self { fd, overhead: 0 };
        let a = c.read()?;
        let b = c.read()?;
        c.overhead = b - a;
        Ok(c)
    }

    /// The count so far.
    fn read(&self) -> io::Result<u64> {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into `v`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        if n != 8 {
            return Err(io::Error::last_os_error());
        }
        Ok(v)
    }

    /// Runs `f` and returns what it returned and the system calls it made.
    pub fn count<T>(&self, f: impl FnOnce() -> T) -> io::Result<(T, u64)> {
        let before = self.read()?;
        let out = f();
        let after = self.read()?;
        Ok((out, after - before - self.overhead))
    }
}
