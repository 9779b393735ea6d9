//! [`monotonic_now_ns`]: the clock timed waits and timers count against.

/// Nanoseconds on `CLOCK_MONOTONIC` (time since an arbitrary fixed point,
/// typically boot; never goes backwards, not affected by clock changes).
///
/// It is the clock `FUTEX_WAIT`'s relative time-outs run on, and on Linux
/// `clock_gettime` is served by the vDSO without entering the kernel.
pub fn monotonic_now_ns() -> u64 {
    // SAFETY: `timespec` is plain integers (plus private padding on some
    // 32-bit targets); all-zero bytes are a valid value.
    let mut ts: libc::timespec = unsafe { core::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable `timespec` for the call's duration.
    // CLOCK_MONOTONIC always exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Both fields are non-negative for CLOCK_MONOTONIC.
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}
