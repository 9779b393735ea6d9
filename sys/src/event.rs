//! eventfd (the backends' interrupter) and timerfd (the epoll reactor's
//! timer), both close-on-exec.
//!
//! ```
//! use pinion_sys::event;
//!
//! let efd = event::eventfd(true).unwrap();
//! event::eventfd_signal(efd.raw()).unwrap();
//! event::eventfd_signal(efd.raw()).unwrap();
//! assert_eq!(event::eventfd_drain(efd.raw()), 2);
//! assert_eq!(event::eventfd_drain(efd.raw()), 0);
//!
//! # #[cfg(not(miri))] { // miri has no timerfd
//! let tfd = event::timerfd_create().unwrap();
//! event::timerfd_set_abs(tfd.raw(), Some(u64::MAX)).unwrap(); // armed
//! event::timerfd_set_abs(tfd.raw(), None).unwrap(); // disarmed
//! # }
//! ```
//!
//! The monotonic clock the timerfd deadlines are on is read with
//! `pinion_sync::monotonic_now_ns`.

use core::mem::size_of;

use crate::{Errno, Fd};

/// Nanoseconds per second.
const NS: u64 = 1_000_000_000;

/// A new eventfd with its counter at 0 (`eventfd(2)`, `EFD_CLOEXEC`, and
/// `EFD_NONBLOCK` when `nonblocking`).
///
/// The epoll backend wants it non-blocking; the io_uring backend blocking
/// (io_uring fails a read of an `O_NONBLOCK` file with `EAGAIN` instead
/// of waiting for it).
pub fn eventfd(nonblocking: bool) -> Result<Fd, Errno> {
    let mut flags = libc::EFD_CLOEXEC;
    if nonblocking {
        flags |= libc::EFD_NONBLOCK;
    }
    // SAFETY: plain integers.
    let fd = syscall!(eventfd(0, flags))?;
    // SAFETY: `eventfd` just returned this descriptor; nobody else has it.
    Ok(unsafe { Fd::from_raw(fd) })
}

/// Adds 1 to the eventfd's counter, making it readable (waking a pending
/// read or poll). Retries `EINTR`.
///
/// A counter already at its maximum answers `EAGAIN` on a non-blocking
/// eventfd; that is `Ok` here, since the eventfd is readable already. (A
/// blocking one would wait instead, but the counter never gets near its
/// maximum when reads reset it.)
pub fn eventfd_signal(fd: i32) -> Result<(), Errno> {
    let one: u64 = 1;
    // SAFETY: `one` is 8 readable bytes, the size an eventfd write takes.
    match syscall_retry!(write(
        fd,
        &one as *const u64 as *const libc::c_void,
        size_of::<u64>()
    )) {
        Ok(_) | Err(Errno::AGAIN) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads and resets the eventfd's counter: how many signals arrived since
/// the last drain. Retries `EINTR`.
///
/// 0 when there was nothing to read (a non-blocking eventfd at 0) or the
/// read failed (a descriptor that is not an eventfd): either way nothing
/// was drained. On a blocking eventfd at 0 this waits for a signal.
pub fn eventfd_drain(fd: i32) -> u64 {
    let mut count: u64 = 0;
    // SAFETY: `count` is 8 writable bytes, the size an eventfd read takes.
    match syscall_retry!(read(
        fd,
        &mut count as *mut u64 as *mut libc::c_void,
        size_of::<u64>()
    )) {
        Ok(8) => count,
        _ => 0,
    }
}

/// A new timerfd on `CLOCK_MONOTONIC` (`timerfd_create(2)`, close-on-exec
/// and non-blocking), disarmed.
pub fn timerfd_create() -> Result<Fd, Errno> {
    // SAFETY: plain integers.
    let fd = syscall!(timerfd_create(
        libc::CLOCK_MONOTONIC,
        libc::TFD_CLOEXEC | libc::TFD_NONBLOCK
    ))?;
    // SAFETY: `timerfd_create` just returned this descriptor; nobody
    // else has it.
    Ok(unsafe { Fd::from_raw(fd) })
}

/// Arms the timerfd to expire once at the absolute monotonic time
/// `deadline_ns`, or disarms it (`None`). Replaces any earlier setting.
///
/// An all-zero deadline would disarm, so deadlines below 1 ns become 1 ns
/// (long past: the timer expires at once). A deadline past the target's
/// `time_t` is set to the latest second it holds (32-bit targets).
pub fn timerfd_set_abs(fd: i32, deadline_ns: Option<u64>) -> Result<(), Errno> {
    let spec = abs_spec(deadline_ns);
    // SAFETY: `spec` is a valid itimerspec that lives across the call; a
    // null old value asks for none.
    syscall!(timerfd_settime(
        fd,
        libc::TFD_TIMER_ABSTIME,
        &spec,
        core::ptr::null_mut()
    ))
    .map(drop)
}

/// The one-shot `itimerspec` for [`timerfd_set_abs`].
// `i32::MAX.into()` is a no-op where time_t is i32.
#[allow(clippy::useless_conversion)]
fn abs_spec(deadline_ns: Option<u64>) -> libc::itimerspec {
    // Zeroed rather than a literal: some targets' timespec has private
    // padding fields (time64 on 32-bit).
    // SAFETY: itimerspec is plain integers, for which zero is valid; all
    // zero is also "disarmed, no interval".
    let mut spec: libc::itimerspec = unsafe { core::mem::zeroed() };
    if let Some(d) = deadline_ns {
        let d = d.max(1);
        // Written against the field, not `libc::time_t`, which libc marks
        // deprecated on musl (it is to become 64-bit there). Only a 32-bit
        // time_t can refuse `d / NS` (below 2^35), and i32::MAX is its
        // latest second.
        spec.it_value.tv_sec = (d / NS).try_into().unwrap_or_else(|_| i32::MAX.into());
        // Below 10^9: fits the field's type on every target.
        spec.it_value.tv_nsec = (d % NS) as _;
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    // Both fields are i32 on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    fn sec_nsec(t: libc::timespec) -> (i64, i64) {
        (i64::from(t.tv_sec), i64::from(t.tv_nsec))
    }

    #[test]
    fn abs_spec_never_disarms_by_accident() {
        let spec = |d| {
            let s = abs_spec(d);
            assert_eq!(sec_nsec(s.it_interval), (0, 0), "one-shot");
            sec_nsec(s.it_value)
        };
        assert_eq!(spec(None), (0, 0));
        assert_eq!(spec(Some(0)), (0, 1));
        assert_eq!(spec(Some(1)), (0, 1));
        assert_eq!(spec(Some(999_999_999)), (0, 999_999_999));
        assert_eq!(spec(Some(1_500_000_000)), (1, 500_000_000));
        // SAFETY: plain integers.
        let t: libc::timespec = unsafe { core::mem::zeroed() };
        let max_sec = match core::mem::size_of_val(&t.tv_sec) {
            4 => i32::MAX as u64,
            _ => u64::MAX / NS,
        };
        assert_eq!(spec(Some(u64::MAX)), (max_sec as i64, 709_551_615));
    }

    fn flags(fd: i32) -> (i32, i32) {
        // SAFETY: F_GETFD and F_GETFL touch no memory.
        let fd_flags = syscall!(fcntl(fd, libc::F_GETFD)).unwrap();
        // SAFETY: as above.
        let fl = syscall!(fcntl(fd, libc::F_GETFL)).unwrap();
        (fd_flags & libc::FD_CLOEXEC, fl & libc::O_NONBLOCK)
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn eventfd_counts_signals_until_drained() {
        let efd = eventfd(true).unwrap();
        assert_eq!(flags(efd.raw()), (libc::FD_CLOEXEC, libc::O_NONBLOCK));
        assert_eq!(eventfd_drain(efd.raw()), 0);
        for _ in 0..3 {
            eventfd_signal(efd.raw()).unwrap();
        }
        assert_eq!(eventfd_drain(efd.raw()), 3);
        assert_eq!(eventfd_drain(efd.raw()), 0);

        // Blocking: a drain after a signal does not wait.
        let blocking = eventfd(false).unwrap();
        assert_eq!(flags(blocking.raw()), (libc::FD_CLOEXEC, 0));
        eventfd_signal(blocking.raw()).unwrap();
        assert_eq!(eventfd_drain(blocking.raw()), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn eventfd_signal_on_a_full_counter_is_ok() {
        let efd = eventfd(true).unwrap();
        let max: u64 = u64::MAX - 1;
        // SAFETY: `max` is 8 readable bytes.
        syscall!(write(
            efd.raw(),
            &max as *const u64 as *const libc::c_void,
            8
        ))
        .unwrap();
        assert_eq!(eventfd_signal(efd.raw()), Ok(()));
        assert_eq!(eventfd_drain(efd.raw()), max);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn eventfd_errors() {
        assert_eq!(eventfd_signal(-1), Err(Errno::BADF));
        assert_eq!(eventfd_drain(-1), 0);
    }

    /// The timer's current setting (`timerfd_gettime`): remaining time
    /// and interval.
    fn setting(fd: i32) -> ((i64, i64), (i64, i64)) {
        // SAFETY: plain integers.
        let mut cur: libc::itimerspec = unsafe { core::mem::zeroed() };
        // SAFETY: `cur` is a writable itimerspec for the call.
        syscall!(timerfd_gettime(fd, &mut cur)).unwrap();
        (sec_nsec(cur.it_value), sec_nsec(cur.it_interval))
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn timerfd_arms_and_disarms() {
        let tfd = timerfd_create().unwrap();
        assert_eq!(flags(tfd.raw()), (libc::FD_CLOEXEC, libc::O_NONBLOCK));
        assert_eq!(setting(tfd.raw()), ((0, 0), (0, 0)), "created disarmed");

        // Far in the future on any clock: armed, one-shot, not expired.
        timerfd_set_abs(tfd.raw(), Some(u64::MAX)).unwrap();
        let (remaining, interval) = setting(tfd.raw());
        assert_ne!(remaining, (0, 0));
        assert_eq!(interval, (0, 0));
        assert_eq!(eventfd_drain(tfd.raw()), 0, "nothing expired yet");

        timerfd_set_abs(tfd.raw(), None).unwrap();
        assert_eq!(setting(tfd.raw()), ((0, 0), (0, 0)));

        assert_eq!(timerfd_set_abs(-1, None), Err(Errno::BADF));
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn timerfd_deadline_zero_expires_instead_of_disarming() {
        let tfd = timerfd_create().unwrap();
        timerfd_set_abs(tfd.raw(), Some(0)).unwrap();
        // Wait for readiness (never a sleep); the timeout only keeps a
        // disarmed timer from hanging the test.
        let mut p = libc::pollfd {
            fd: tfd.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd for the call.
        assert_eq!(syscall_retry!(poll(&mut p, 1, 10_000)), Ok(1));
        // A timerfd read is the 8-byte expiration count, as for eventfd.
        assert_eq!(eventfd_drain(tfd.raw()), 1);
    }
}
