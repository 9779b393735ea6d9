//! The pipe interrupter (Asio's `pipe_select_interrupter`): one byte sits
//! in the pipe from creation on.

use pinion_sys::{syscall, Errno, Fd};

/// A pipe with one unread byte; the read end is registered with epoll.
pub(crate) struct Interrupter {
    read: Fd,
    // Kept open so the read end never reports end-of-file.
    _write: Fd,
}

impl Interrupter {
    /// Creates the pipe and writes its one byte.
    pub(crate) fn new() -> Result<Self, Errno> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is room for the two descriptors pipe2 writes.
        syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK))?;
        // SAFETY: `pipe2` just returned both descriptors; nobody else has them.
        let (read, write) = unsafe { (Fd::from_raw(fds[0]), Fd::from_raw(fds[1])) };
        let byte = 0u8;
        // SAFETY: `byte` is one readable byte.
        syscall!(write(
            write.raw(),
            &byte as *const u8 as *const libc::c_void,
            1
        ))?;
        Ok(Interrupter {
            read,
            _write: write,
        })
    }

    /// The descriptor registered with epoll.
    pub(crate) fn read_fd(&self) -> i32 {
        self.read.raw()
    }
}
