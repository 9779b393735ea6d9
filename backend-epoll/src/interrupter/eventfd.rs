//! The default interrupter: one eventfd holding a non-zero count.

use pinion_sys::{event, Errno, Fd};

/// An eventfd whose counter is 1 from creation on.
pub(crate) struct Interrupter {
    fd: Fd,
}

impl Interrupter {
    /// Creates the eventfd and makes it readable once (Asio writes once in
    /// the reactor's constructor).
    pub(crate) fn new() -> Result<Self, Errno> {
        let fd = event::eventfd(true)?;
        event::eventfd_signal(fd.raw())?;
        Ok(Interrupter { fd })
    }

    /// The descriptor registered with epoll.
    pub(crate) fn read_fd(&self) -> i32 {
        self.fd.raw()
    }
}
