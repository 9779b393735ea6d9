//! The three io_uring system calls, through libc's per-target
//! `SYS_io_uring_*` numbers (425..427, offset on MIPS), so no binding
//! generated for another architecture is involved.
//!
//! # The seam
//!
//! [`enter`] and [`register`] are the only places in pinion that call
//! `io_uring_enter(2)` and `io_uring_register(2)`; [`setup`] the only one
//! that calls `io_uring_setup(2)`. Anything that wants to watch or fail
//! those calls (a fault injector, a counter, a trace) hooks here and sees
//! every one of them.

use core::ffi::c_void;

use super::abi::Params;
use crate::{Errno, Fd};

/// `IORING_SETUP_NO_MMAP`: refused by [`setup`].
const IORING_SETUP_NO_MMAP: u32 = 1 << 14;
/// `IORING_SETUP_REGISTERED_FD_ONLY`: refused by [`setup`].
const IORING_SETUP_REGISTERED_FD_ONLY: u32 = 1 << 15;

/// `io_uring_setup(2)`: a new ring with room for `entries` SQEs, set up as
/// `params` asks; `params` is filled with the sizes, features and ring
/// offsets the kernel chose.
///
/// `EINVAL` without a call for the two flags that would make this unsound
/// or wrong: `IORING_SETUP_NO_MMAP` (the kernel would use memory named by
/// the offsets' `user_addr`) and `IORING_SETUP_REGISTERED_FD_ONLY` (the
/// answer would not be a descriptor).
pub fn setup(entries: u32, params: &mut Params) -> Result<Fd, Errno> {
    if params.flags & (IORING_SETUP_NO_MMAP | IORING_SETUP_REGISTERED_FD_ONLY) != 0 {
        return Err(Errno::INVAL);
    }
    // SAFETY: `params` is a writable `io_uring_params` (layout asserted
    // in `abi`), which the kernel reads and writes back; nothing else.
    let fd = syscall!(syscall(
        libc::SYS_io_uring_setup,
        entries as libc::c_long,
        params as *mut Params as libc::c_long,
    ))?;
    // SAFETY: `io_uring_setup` just returned this descriptor (an fd fits
    // an i32); nobody else has it.
    Ok(unsafe { Fd::from_raw(fd as i32) })
}

/// `io_uring_enter(2)` on the ring `fd`: submits `to_submit` SQEs and,
/// with `IORING_ENTER_GETEVENTS` in `flags`, waits for `min_complete`
/// CQEs. `arg`/`argsz` is the extended argument (`IORING_ENTER_EXT_ARG`:
/// a [`GeteventsArg`](super::abi::GeteventsArg)) or null/0. Returns the
/// SQEs consumed.
///
/// Every `io_uring_enter` pinion makes goes through here (see the module
/// docs: the seam for fault injection).
///
/// # Safety
/// Every SQE published to the kernel obeys the buffer-lifetime rule of
/// whoever queued it (its pointers stay valid until its final CQE), and
/// `arg` is null or points to `argsz` readable bytes of the kind `flags`
/// says.
#[inline]
pub unsafe fn enter(
    fd: i32, to_submit: u32, min_complete: u32, flags: u32, arg: *const c_void, argsz: usize,
) -> Result<u32, Errno> {
    // The fault injector's seam (nothing without `fault-injection`): the
    // call fails as the kernel's would before it submitted anything;
    // `EINTR` only where it would have waited.
    if let Some(e) = crate::fault::fail(crate::fault::Site::UringEnter) {
        if e != Errno::INTR || flags & super::abi::IORING_ENTER_GETEVENTS != 0 {
            return Err(e);
        }
    }
    // SAFETY: per this fn's contract. (Seven arguments with the number:
    // one more than `syscall!` takes, so `-1` is turned into the errno
    // here.)
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            fd as libc::c_long,
            to_submit as libc::c_long,
            min_complete as libc::c_long,
            flags as libc::c_long,
            arg as libc::c_long,
            argsz as libc::c_long,
        )
    };
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(r as u32)
    }
}

/// `io_uring_register(2)` on the ring `fd`: `opcode`
/// (`IORING_REGISTER_*`) with its argument `arg` and count `nr_args`.
/// Returns the kernel's non-negative answer.
///
/// Every `io_uring_register` pinion makes goes through here (see the
/// module docs: the seam for fault injection).
///
/// # Safety
/// `arg` and `nr_args` are what `opcode` expects (see the `abi` structs),
/// and memory the registration hands the kernel (buffers, a buffer ring)
/// stays valid and mapped until it is unregistered or the ring is gone.
#[inline]
pub unsafe fn register(
    fd: i32, opcode: u32, arg: *const c_void, nr_args: u32,
) -> Result<u32, Errno> {
    // SAFETY: per this fn's contract.
    syscall!(syscall(
        libc::SYS_io_uring_register,
        fd as libc::c_long,
        opcode as libc::c_long,
        arg as libc::c_long,
        nr_args as libc::c_long,
    ))
    .map(|n| n as u32)
}
