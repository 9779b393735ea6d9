//! [`Fd`]: an owned file descriptor, closed on drop (std's `OwnedFd`
//! without std).

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
