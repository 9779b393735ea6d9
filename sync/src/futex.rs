//! Thin wrappers over the Linux `futex(2)` system call, shared by
//! [`FutexMutex`](crate::FutexMutex) and [`FutexEvent`](crate::FutexEvent).
//!
//! Reached through the [`loom`](crate::loom) facade, which swaps in an
//! emulation under `cfg(loom)`.
//!
//! Only the process-private operations are used: pinion's futex words never
//! live in shared memory, and private futexes skip the kernel's mm lookup.

use core::ptr;
use core::sync::atomic::AtomicU32;

use crate::loom::futex::WaitOutcome;

/// Sleeps while `*word == expected`, at most `timeout_ns` nanoseconds when
/// given. The kernel compares and enqueues atomically, so a change made to
/// `word` before a `FUTEX_WAKE` can never be missed.
#[inline]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) -> WaitOutcome {
    let ts = timeout_ns.map(relative_timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, 4-aligned `AtomicU32` for the whole call (we
    // hold a reference), which is all FUTEX_WAIT reads; `ts_ptr` is null or
    // points at `ts`, alive on this frame until the call returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
        )
    };
    if r == 0 {
        return WaitOutcome::Woken;
    }
    match errno() {
        libc::EAGAIN => WaitOutcome::Changed,
        libc::ETIMEDOUT => WaitOutcome::TimedOut,
        // EINTR: a signal handler ran. Report it as a (spurious) wake-up.
        _ => WaitOutcome::Woken,
    }
}

/// Wakes up to `n` threads sleeping in [`wait`] on `word`.
#[inline]
pub(crate) fn wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key; the
    // reference keeps it valid. Errors (none are possible with a valid
    // private address) are ignored, as Asio ignores pthread_cond_signal's.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

/// Converts a nanosecond count into FUTEX_WAIT's relative timeout,
/// saturating rather than wrapping on 32-bit `time_t`.
fn relative_timespec(ns: u64) -> libc::timespec {
    const NS_PER_SEC: u64 = 1_000_000_000;
    let secs = ns / NS_PER_SEC;
    let tv_sec = if secs > libc::time_t::MAX as u64 {
        libc::time_t::MAX
    } else {
        secs as libc::time_t
    };
    // SAFETY: `timespec` is plain integers (plus, on some 32-bit targets,
    // private padding), for which all-zero bytes are a valid value. Zeroing
    // rather than a struct literal keeps those padded layouts compiling.
    let mut ts: libc::timespec = unsafe { core::mem::zeroed() };
    ts.tv_sec = tv_sec;
    ts.tv_nsec = (ns % NS_PER_SEC) as _;
    ts
}

/// The calling thread's `errno`.
#[inline]
fn errno() -> i32 {
    // SAFETY: `__errno_location` takes no arguments and returns a pointer to
    // the calling thread's errno, valid for the thread's lifetime.
    unsafe { *libc::__errno_location() }
}
