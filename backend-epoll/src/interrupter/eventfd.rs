//! The default interrupter: one eventfd holding a non-zero count.

use pinion_core::Error;

use crate::sys::{syscall, Fd};

/// An eventfd whose counter is 1 from creation on.
pub(crate) struct Interrupter {
    fd: Fd,
}

impl Interrupter {
    /// Creates the eventfd and makes it readable once (Asio writes once in
    /// the reactor's constructor).
    pub(crate) fn new() -> Result<Self, Error> {
        let raw = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        // SAFETY: `eventfd` just returned this descriptor; nobody else has it.
        let fd = unsafe { Fd::from_raw(raw) };
        let one: u64 = 1;
        // SAFETY: `one` is 8 readable bytes, the size an eventfd write takes.
        syscall!(write(
            fd.raw(),
            &one as *const u64 as *const libc::c_void,
            8
        ))?;
        Ok(Interrupter { fd })
    }

    /// The descriptor registered with epoll.
    pub(crate) fn read_fd(&self) -> i32 {
        self.fd.raw()
    }
}
