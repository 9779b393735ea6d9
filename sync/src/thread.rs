//! [`current_thread_id`]: a cheap identity for the running thread.
//!
//! The scheduler uses it to tell whether a post comes from one of its own
//! threads (Asio's `call_stack` check) and so may skip the mutex.
//!
//! On Linux the id is an address the libc gives each thread: the thread
//! pointer where one instruction reads it, else `pthread_self()`. Both name
//! the thread's own control block (TCB), which the libc allocates when it
//! creates the thread (the main thread's before `main`) and frees only
//! after the thread has exited. Live threads' blocks are distinct memory,
//! so their ids are distinct, and an address of mapped memory is never 0
//! (nor `usize::MAX`, which the scheduler uses to mark a free slot). The
//! argument holds for threads made through the libc (`pthread_create`,
//! `std::thread`), which is every thread the scheduler can meet.

/// A non-zero value unique among the process's live threads, or 0 when
/// this target has no way to tell threads apart ("unknown").
///
/// It is fixed for a thread's life and may be reused once a thread exits.
/// Per target:
///
/// | target | source | cost |
/// |---|---|---|
/// | Linux x86-64 | `fs:0`, the TCB's self-pointer | one load |
/// | Linux x86 (i586/i686) | `gs:0`, the TCB's self-pointer | one load |
/// | Linux AArch64 | `TPIDR_EL0`, the thread pointer | one register read |
/// | Linux ARMv7 and later | `TPIDRURO`, the thread pointer | one register read |
/// | Linux RISC-V | the `tp` register | one move |
/// | other Linux (ARMv4T–v6, MIPS, PowerPC, ...) | `pthread_self()` | a libc call |
/// | Miri, or other OS with `std` | a thread-local's address | a TLS access |
/// | loom models (`cfg(loom)`) | a loom thread-local's address | a model lookup |
/// | bare targets without `std` | 0 | none |
///
/// With 0 the scheduler takes its locked path for every post, which is
/// correct, only slower.
#[inline(always)]
pub fn current_thread_id() -> usize {
    imp::current_thread_id()
}

#[cfg(all(not(loom), not(miri), target_os = "linux", target_arch = "x86_64"))]
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

#[cfg(all(not(loom), not(miri), target_os = "linux", target_arch = "x86"))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        let tp: usize;
        // The i386 TLS ABI (TLS variant II, as on x86-64, through GS) puts
        // the TCB at the thread pointer and its first word is the TCB's own
        // address: glibc's `tcbhead_t.tcb` (set by TLS_INIT_TP for the main
        // thread and by pthread_create, `pd->header.tcb = pd`), musl's
        // `pthread.self`. So gs:0 equals `pthread_self()`; a test checks it.
        // SAFETY: gs:0 is thus mapped, initialised memory of the current
        // thread, fixed for its life; the load touches no stack or flags.
        unsafe {
            core::arch::asm!(
                "mov {}, dword ptr gs:[0]",
                out(reg) tp,
                options(nostack, preserves_flags, readonly, pure),
            );
        }
        tp
    }
}

#[cfg(all(not(loom), not(miri), target_os = "linux", target_arch = "aarch64"))]
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

/// `pinion_arm_tpidruro` is set by build.rs for ARM Linux targets of
/// ARMv7 or later: TPIDRURO exists from ARMv6K on, and stable rustc hides
/// ARM's architecture-level target features from `cfg`.
#[cfg(all(
    not(loom),
    not(miri),
    target_os = "linux",
    target_arch = "arm",
    pinion_arm_tpidruro
))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        let tp: usize;
        // TPIDRURO (CP15 c13/c0/3) is user-read-only; the kernel loads it
        // on every switch with the value the libc gave the thread through
        // `set_tls` (its TCB address: glibc's and musl's thread pointer),
        // never 0 for a thread the libc made. Encodable in ARM and Thumb-2.
        // SAFETY: reading it has no side effects and touches no memory,
        // stack or flags.
        unsafe {
            core::arch::asm!(
                "mrc p15, 0, {}, c13, c0, 3",
                out(reg) tp,
                options(nomem, nostack, preserves_flags, pure),
            );
        }
        tp
    }
}

#[cfg(all(
    not(loom),
    not(miri),
    target_os = "linux",
    any(target_arch = "riscv64", target_arch = "riscv32")
))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        let tp: usize;
        // `tp` (x4) is the thread pointer of the RISC-V psABI; the libc
        // points it into each thread's own TCB/TLS block, and nothing else
        // may write it, so it is non-zero and differs between threads.
        // SAFETY: copying a register touches no memory, stack or flags.
        unsafe {
            core::arch::asm!(
                "mv {}, tp",
                out(reg) tp,
                options(nomem, nostack, preserves_flags, pure),
            );
        }
        tp
    }
}

/// Every other Linux target (ARMv4T to ARMv6, MIPS, PowerPC, s390x,
/// LoongArch, ...): the libc's own answer. glibc, musl and uClibc-ng return
/// the thread descriptor's address, so the argument in the module docs
/// holds; needs no `std`, only the libc the futex calls already link.
#[cfg(all(
    not(loom),
    not(miri),
    target_os = "linux",
    not(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        all(target_arch = "arm", pinion_arm_tpidruro),
        target_arch = "riscv64",
        target_arch = "riscv32",
    ))
))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        // `pthread_t` is `c_ulong` on Linux, as wide as a pointer.
        // SAFETY: `pthread_self` has no preconditions and cannot fail.
        unsafe { libc::pthread_self() as usize }
    }
}

/// Miri cannot run inline assembly, and off Linux there is no libc
/// contract to lean on. With std linked (this crate's tests, or the `std`
/// feature), the address of a thread-local stands in: each live thread has
/// its own TLS block, so the address is unique among them, and non-zero.
#[cfg(all(
    not(loom),
    any(miri, not(target_os = "linux")),
    any(test, feature = "std")
))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        std::thread_local! {
            static MARKER: u8 = const { 0 };
        }
        MARKER.with(|m| m as *const u8 as usize)
    }
}

/// Miri without std, and bare targets: no thread identity, so "unknown".
#[cfg(all(
    not(loom),
    any(miri, not(target_os = "linux")),
    not(any(test, feature = "std"))
))]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        0
    }
}

/// Under loom every model thread is a coroutine on one OS thread, so the
/// thread pointer (and `pthread_self`) is the same for all of them and the
/// scheduler would take every model thread for the first one. loom's own
/// thread-locals are per model thread: each is a separate heap value that
/// lives until its thread ends, so its address is unique among live model
/// threads and non-zero, as the module docs require.
#[cfg(loom)]
mod imp {
    #[inline(always)]
    pub(super) fn current_thread_id() -> usize {
        loom::thread_local! {
            // Not zero-sized: each thread's value needs its own address.
            static MARKER: u8 = 0;
        }
        MARKER.with(|m| m as *const u8 as usize)
    }
}
