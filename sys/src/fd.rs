//! [`Fd`]: an owned file descriptor, closed on drop (std's `OwnedFd`
//! without std), and the calls any descriptor takes: `read`, `write`,
//! `duplicate`.

use core::fmt;

/// An open file descriptor that this value alone owns and closes on drop.
///
/// ```
/// use pinion_sys::{syscall, Errno, Fd};
///
/// // SAFETY: plain integers.
/// let raw = syscall!(eventfd(0, libc::EFD_CLOEXEC)).unwrap();
/// // SAFETY: the descriptor was just returned to us alone.
/// let fd = unsafe { Fd::from_raw(raw) };
/// assert_eq!(fd.raw(), raw);
/// drop(fd); // closes it
/// // SAFETY: F_GETFD touches no memory.
/// assert_eq!(syscall!(fcntl(raw, libc::F_GETFD)), Err(Errno::BADF));
/// ```
pub struct Fd(i32);

impl Fd {
    /// Takes ownership of `fd`: it is closed when the `Fd` is dropped.
    ///
    /// # Safety
    /// `fd` is an open descriptor that nothing else owns or will close.
    #[inline]
    pub unsafe fn from_raw(fd: i32) -> Fd {
        debug_assert!(fd >= 0, "Fd::from_raw({fd})");
        Fd(fd)
    }

    /// The descriptor number, still owned by `self`.
    #[inline]
    pub fn raw(&self) -> i32 {
        self.0
    }

    /// Gives up ownership without closing: the caller closes it now.
    #[inline]
    pub fn into_raw(self) -> i32 {
        let fd = self.0;
        core::mem::forget(self);
        fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // Linux releases the descriptor even when close fails (EINTR,
        // EIO): retrying could close a number another thread just got.
        // SAFETY: `self` owns the descriptor (`from_raw`'s contract) and
        // nothing uses it after this.
        let _ = unsafe { libc::close(self.0) };
    }
}

impl fmt::Debug for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fd").field(&self.0).finish()
    }
}

#[cfg(feature = "std")]
impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

#[cfg(feature = "std")]
impl From<Fd> for std::os::fd::OwnedFd {
    /// Hands the descriptor over to std, which then closes it.
    fn from(fd: Fd) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        // SAFETY: `into_raw` gives up the only owner of an open descriptor.
        unsafe { std::os::fd::OwnedFd::from_raw_fd(fd.into_raw()) }
    }
}

#[cfg(feature = "std")]
impl From<std::os::fd::OwnedFd> for Fd {
    /// Takes the descriptor over from std (a socket or file opened by std,
    /// to hand to a `from_fd` constructor).
    fn from(fd: std::os::fd::OwnedFd) -> Fd {
        use std::os::fd::IntoRawFd;
        // SAFETY: `into_raw_fd` gives up std's only owner of an open
        // descriptor.
        unsafe { Fd::from_raw(fd.into_raw_fd()) }
    }
}

/// `read(2)` on any descriptor: the count (0 at end of file), or the
/// errno (`EAGAIN` on an empty non-blocking one). `EINTR` is retried.
///
/// ```
/// # #[cfg(not(miri))] { // miri has no pipe2 with flags
/// let mut p = [0i32; 2];
/// // SAFETY: `p` has room for the two descriptors.
/// pinion_sys::syscall!(pipe2(p.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC)).unwrap();
/// // SAFETY: both ends are ours alone.
/// let (r, w) = unsafe { (pinion_sys::Fd::from_raw(p[0]), pinion_sys::Fd::from_raw(p[1])) };
/// let mut buf = [0u8; 8];
/// assert_eq!(pinion_sys::fd::read(r.raw(), &mut buf), Err(pinion_sys::Errno::AGAIN));
/// assert_eq!(pinion_sys::fd::write(w.raw(), b"hi"), Ok(2));
/// assert_eq!(pinion_sys::fd::read(r.raw(), &mut buf), Ok(2));
/// # }
/// ```
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, crate::Errno> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = crate::syscall_retry!(read(fd, buf.as_mut_ptr().cast(), buf.len()))?;
    Ok(n as usize)
}

/// `write(2)` on any descriptor: the count, or the errno (`EAGAIN` when
/// a non-blocking one is full; `EPIPE` on a pipe with no reader, which
/// raises SIGPIPE unless the program ignores it). `EINTR` is retried.
pub fn write(fd: i32, buf: &[u8]) -> Result<usize, crate::Errno> {
    // SAFETY: `buf` is valid for reads of its length.
    let n = crate::syscall_retry!(write(fd, buf.as_ptr().cast(), buf.len()))?;
    Ok(n as usize)
}

/// `readv(2)` on any descriptor: into the buffers `iov` names, each
/// filled before the next; the count, or the errno (as for [`read()`]).
/// `EINTR` is retried.
///
/// # Safety
/// Every iovec is valid for writes of its length.
pub unsafe fn readv(fd: i32, iov: &[libc::iovec]) -> Result<usize, crate::Errno> {
    let cnt = iov.len().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: `iov` holds `cnt` iovecs, each valid for writes (contract).
    let n = crate::syscall_retry!(readv(fd, iov.as_ptr(), cnt))?;
    Ok(n as usize)
}

/// `writev(2)` on any descriptor: the bytes `iov` names, in order; the
/// count, or the errno (as for [`write()`]). `EINTR` is retried.
///
/// # Safety
/// Every iovec is valid for reads of its length.
pub unsafe fn writev(fd: i32, iov: &[libc::iovec]) -> Result<usize, crate::Errno> {
    let cnt = iov.len().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: `iov` holds `cnt` iovecs, each valid for reads (contract).
    let n = crate::syscall_retry!(writev(fd, iov.as_ptr(), cnt))?;
    Ok(n as usize)
}

/// A second descriptor for the same open file (`F_DUPFD_CLOEXEC`).
pub fn duplicate(fd: i32) -> Result<Fd, crate::Errno> {
    // SAFETY: plain integers.
    let n = crate::syscall!(fcntl(fd, libc::F_DUPFD_CLOEXEC, 0))?;
    // SAFETY: a new descriptor, ours alone.
    Ok(unsafe { Fd::from_raw(n) })
}

#[cfg(test)]
mod tests {
    use super::Fd;
    use crate::Errno;

    /// A fresh descriptor at or above `floor`, a number no other test
    /// thread is handed meanwhile: the kernel gives out the lowest free
    /// number, the tests hold far fewer than 500, and each test here has
    /// its own floor (under the usual limit of 1024).
    fn high_fd(floor: i32) -> Fd {
        // SAFETY: plain integers.
        let low = syscall!(eventfd(0, libc::EFD_CLOEXEC)).unwrap();
        // SAFETY: the number was just returned to us alone.
        let low = unsafe { Fd::from_raw(low) };
        // SAFETY: F_DUPFD_CLOEXEC only reads `low` and returns a new number.
        let raw = syscall!(fcntl(low.raw(), libc::F_DUPFD_CLOEXEC, floor)).unwrap();
        // SAFETY: the number was just returned to us alone.
        unsafe { Fd::from_raw(raw) }
    }

    fn is_open(raw: i32) -> Result<i32, Errno> {
        // SAFETY: F_GETFD on any number touches no memory.
        syscall!(fcntl(raw, libc::F_GETFD))
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn closes_on_drop() {
        let fd = high_fd(500);
        let raw = fd.raw();
        assert!(raw >= 500);
        assert_eq!(is_open(raw), Ok(libc::FD_CLOEXEC));
        assert_eq!(std::format!("{fd:?}"), std::format!("Fd({raw})"));
        drop(fd);
        assert_eq!(is_open(raw), Err(Errno::BADF));
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn into_raw_leaves_it_open() {
        let fd = high_fd(600);
        let raw = fd.into_raw();
        assert!(is_open(raw).is_ok());
        // SAFETY: `into_raw` made us the owner; nothing uses it afterwards.
        assert_eq!(syscall!(close(raw)), Ok(0));
    }

    #[cfg(feature = "std")]
    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn converts_to_owned_fd() {
        use std::os::fd::AsRawFd;
        let fd = high_fd(700);
        let raw = fd.as_raw_fd();
        let owned = std::os::fd::OwnedFd::from(fd);
        assert_eq!(owned.as_raw_fd(), raw);
        drop(owned);
        assert_eq!(is_open(raw), Err(Errno::BADF));
    }
}
