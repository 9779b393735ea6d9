//! [`current_thread_id`]: a cheap identity for the running thread.
//!
//! The scheduler uses it to tell whether a post comes from one of its own
//! threads (Asio's `call_stack` check) and so may skip the mutex.

/// A non-zero value unique among the process's live threads, or 0 when
/// this target has no cheap way to tell threads apart ("unknown").
///
/// On Linux x86-64 and AArch64 it is the thread pointer (the TLS block's
/// address), read with one instruction and no syscall. Values may be reused
/// once a thread exits. On every other target it is 0, and the scheduler
/// then takes its locked path for every post, which is correct, only
/// slower.
#[inline(always)]
pub fn current_thread_id() -> usize {
    imp::current_thread_id()
}

#[cfg(all(not(miri), target_os = "linux", target_arch = "x86_64"))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        let tp: usize;
        // On x86-64 Linux the FS base is the thread pointer, and both glibc
        // and musl store the TCB's own address at fs:0 (the x86-64 TLS ABI
        // requires it). The value is fixed for the thread's life: `pure`.
        // SAFETY: fs:0 is thus mapped, initialised memory of the current
        // thread; the load touches no stack and no flags.
        unsafe {
            core::arch::asm!(
                "mov {}, qword ptr fs:[0]",
                out(reg) tp,
                options(nostack, preserves_flags, readonly, pure),
            );
        }
        tp
    }
}

#[cfg(all(not(miri), target_os = "linux", target_arch = "aarch64"))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        let tp: usize;
        // TPIDR_EL0 is the user-readable thread pointer register, set by the
        // libc to each thread's TLS block (non-zero for every thread).
        // SAFETY: reading it has no side effects and touches no memory,
        // stack or flags.
        unsafe {
            core::arch::asm!(
                "mrs {}, tpidr_el0",
                out(reg) tp,
                options(nomem, nostack, preserves_flags, pure),
            );
        }
        tp
    }
}

/// Miri cannot run inline assembly. Under miri with std linked (this
/// crate's tests, or the `std` feature dependants enable for theirs), the
/// address of a thread-local stands in for the thread pointer.
#[cfg(all(miri, any(test, feature = "std")))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        std::thread_local! {
            static MARKER: u8 = const { 0 };
        }
        MARKER.with(|m| m as *const u8 as usize)
    }
}

/// Everything else: no cheap thread identity, so "unknown".
#[cfg(not(any(
    all(miri, any(test, feature = "std")),
    all(
        not(miri),
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )
)))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        0
    }
}
