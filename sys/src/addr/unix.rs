//! Unix-domain socket addresses: [`UnixAddr`], a filesystem path, a Linux
//! abstract name or unnamed, in the kernel's `sockaddr_un` layout.

use core::fmt;
use core::mem::{offset_of, size_of};

use super::SockAddr;
use crate::Errno;

/// Bytes of `sun_path`: 108 on Linux.
const SUN_PATH: usize = 108;
/// Where `sun_path` starts: after the family field.
const PATH_AT: usize = offset_of!(libc::sockaddr_un, sun_path);

/// The longest name [`UnixAddr::path`] and [`UnixAddr::abstract_name`]
/// take, in bytes: `sun_path` holds 108, less the NUL that ends a path or
/// starts an abstract name.
pub const MAX_NAME: usize = SUN_PATH - 1;

/// Why a name cannot be a Unix socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnixAddrError {
    /// The name has this many bytes, more than [`MAX_NAME`].
    TooLong(usize),
    /// A path is empty, or holds a NUL byte at this offset (it would end
    /// the path there).
    Invalid(usize),
}

impl fmt::Display for UnixAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddrError::TooLong(n) => write!(
                f,
                "a Unix socket name of {n} bytes is too long: sun_path holds at most {MAX_NAME}"
            ),
            UnixAddrError::Invalid(at) => write!(
                f,
                "a Unix socket path must be non-empty with no NUL byte (found at byte {at})"
            ),
        }
    }
}

/// A Unix-domain socket address (`sockaddr_un` and its length): a
/// filesystem path, a Linux abstract name (no file; gone with its last
/// socket), or unnamed (an unbound socket, a `socketpair` end).
///
/// ```
/// use pinion_sys::addr::{UnixAddr, UnixAddrError};
///
/// let p = UnixAddr::path(b"/run/app.sock").unwrap();
/// assert_eq!(p.as_path(), Some(&b"/run/app.sock"[..]));
/// let a = UnixAddr::abstract_name(b"app-control").unwrap();
/// assert_eq!(a.as_abstract_name(), Some(&b"app-control"[..]));
/// assert_eq!(format!("{a}"), "@app-control");
/// assert_eq!(UnixAddr::path(&[b'x'; 200]), Err(UnixAddrError::TooLong(200)));
/// ```
#[derive(Clone, Copy)]
pub struct UnixAddr {
    sun: libc::sockaddr_un,
    len: libc::socklen_t,
}

impl UnixAddr {
    fn empty() -> UnixAddr {
        UnixAddr {
            sun: zeroed_sun(),
            len: PATH_AT as libc::socklen_t,
        }
    }

    /// The unnamed address: what an unbound socket and either end of a
    /// `socketpair` have.
    pub fn unnamed() -> UnixAddr {
        UnixAddr::empty()
    }

    /// A filesystem path (bytes, as the kernel sees them).
    pub fn path(path: &[u8]) -> Result<UnixAddr, UnixAddrError> {
        if let Some(at) = path.iter().position(|&b| b == 0) {
            return Err(UnixAddrError::Invalid(at));
        }
        if path.is_empty() {
            return Err(UnixAddrError::Invalid(0));
        }
        if path.len() > MAX_NAME {
            return Err(UnixAddrError::TooLong(path.len()));
        }
        let mut a = UnixAddr::empty();
        for (d, s) in a.sun.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        // The NUL after the path is counted, as `SUN_LEN` + 1 does.
        a.len = (PATH_AT + path.len() + 1) as libc::socklen_t;
        Ok(a)
    }

    /// A Linux abstract name: any bytes (NULs included), no file behind
    /// it. Written `@name` by `ss` and by this type's `Display`.
    pub fn abstract_name(name: &[u8]) -> Result<UnixAddr, UnixAddrError> {
        if name.len() > MAX_NAME {
            return Err(UnixAddrError::TooLong(name.len()));
        }
        let mut a = UnixAddr::empty();
        for (d, s) in a.sun.sun_path[1..].iter_mut().zip(name) {
            *d = *s as libc::c_char;
        }
        a.len = (PATH_AT + 1 + name.len()) as libc::socklen_t;
        Ok(a)
    }

    /// The name bytes after the family field.
    fn name(&self) -> &[u8] {
        let n = (self.len as usize).saturating_sub(PATH_AT).min(SUN_PATH);
        // SAFETY: `sun_path` is `SUN_PATH` `c_char`s, which have the size
        // and alignment of `u8`; `n <= SUN_PATH`.
        unsafe { core::slice::from_raw_parts(self.sun.sun_path.as_ptr().cast::<u8>(), n) }
    }

    /// The path, for a filesystem address (without its NUL).
    pub fn as_path(&self) -> Option<&[u8]> {
        match self.name() {
            [] | [0, ..] => None,
            name => Some(name.split(|&b| b == 0).next().unwrap_or(name)),
        }
    }

    /// The name, for an abstract address (without the leading NUL).
    pub fn as_abstract_name(&self) -> Option<&[u8]> {
        match self.name() {
            [0, name @ ..] => Some(name),
            _ => None,
        }
    }

    /// No name at all (an unbound socket, a `socketpair` end, most
    /// connecting clients).
    pub fn is_unnamed(&self) -> bool {
        self.name().is_empty()
    }

    /// The length to pass with [`as_ptr`](Self::as_ptr).
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }

    /// `true` for the unnamed address, the only one with no name bytes.
    pub fn is_empty(&self) -> bool {
        self.is_unnamed()
    }

    /// Pointer for `bind`, `connect`, `sendto`.
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        &self.sun as *const libc::sockaddr_un as *const libc::sockaddr
    }

    /// Removes the socket file of a path address (`unlink(2)`): what a
    /// server does with a stale file before it binds, and with its own
    /// at exit. Nothing for an abstract name or the unnamed address.
    pub fn unlink(&self) -> Result<(), Errno> {
        if self.as_path().is_none() {
            return Ok(());
        }
        // SAFETY: a path address's `sun_path` holds the path and a NUL
        // within its 108 bytes (`path` checked the length).
        syscall!(unlink(self.sun.sun_path.as_ptr())).map(drop)
    }
}

fn zeroed_sun() -> libc::sockaddr_un {
    // SAFETY: plain integers; all-zero bytes are valid.
    let mut sun: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    sun
}

impl PartialEq for UnixAddr {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}
impl Eq for UnixAddr {}

/// Bytes as text where they are UTF-8, `\xNN` where not.
fn write_bytes(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for chunk in bytes.utf8_chunks() {
        f.write_str(chunk.valid())?;
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for UnixAddr {
    /// The path; `@name` for an abstract name; `(unnamed)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.as_path() {
            write_bytes(f, p)
        } else if let Some(n) = self.as_abstract_name() {
            f.write_str("@")?;
            write_bytes(f, n)
        } else {
            f.write_str("(unnamed)")
        }
    }
}

impl fmt::Debug for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnixAddr({self})")
    }
}

impl SockAddr for UnixAddr {
    type Raw = libc::sockaddr_un;

    fn domain(&self) -> i32 {
        libc::AF_UNIX
    }

    fn to_raw(&self) -> (libc::sockaddr_un, libc::socklen_t) {
        (self.sun, self.len)
    }

    fn raw_zeroed() -> libc::sockaddr_un {
        zeroed_sun()
    }

    fn from_raw(raw: &libc::sockaddr_un, len: libc::socklen_t) -> Result<Self, Errno> {
        if raw.sun_family as i32 != libc::AF_UNIX {
            return Err(Errno::AFNOSUPPORT);
        }
        // The kernel reports the full length even when it cut the name
        // to the room it was given.
        let len = (len as usize).clamp(PATH_AT, size_of::<libc::sockaddr_un>());
        Ok(UnixAddr {
            sun: *raw,
            len: len as libc::socklen_t,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn paths_abstract_names_and_unnamed_round_trip() {
        let p = UnixAddr::path(b"/tmp/a.sock").unwrap();
        assert_eq!(p.len() as usize, PATH_AT + 12);
        let (raw, len) = p.to_raw();
        assert_eq!(UnixAddr::from_raw(&raw, len), Ok(p));
        assert_eq!(format!("{p}"), "/tmp/a.sock");

        let a = UnixAddr::abstract_name(b"x\0y").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"x\0y"[..]));
        assert_eq!(a.as_path(), None);
        let (raw, len) = a.to_raw();
        assert_eq!(UnixAddr::from_raw(&raw, len), Ok(a));
        assert_eq!(format!("{a}"), "@x\0y");

        let u = UnixAddr::unnamed();
        assert!(u.is_unnamed() && u.as_path().is_none() && u.as_abstract_name().is_none());
        assert_eq!(format!("{u:?}"), "UnixAddr((unnamed))");
        let (raw, len) = u.to_raw();
        assert_eq!(UnixAddr::from_raw(&raw, len), Ok(u));
    }

    #[test]
    fn bad_names_say_why() {
        let long = [b'a'; MAX_NAME + 1];
        assert_eq!(UnixAddr::path(&long), Err(UnixAddrError::TooLong(108)));
        assert_eq!(
            UnixAddr::abstract_name(&long),
            Err(UnixAddrError::TooLong(108))
        );
        assert!(UnixAddr::path(&long[..MAX_NAME]).is_ok());
        assert!(UnixAddr::abstract_name(&long[..MAX_NAME]).is_ok());
        assert_eq!(UnixAddr::path(b""), Err(UnixAddrError::Invalid(0)));
        assert_eq!(UnixAddr::path(b"/a\0b"), Err(UnixAddrError::Invalid(2)));
        let s = format!("{}", UnixAddrError::TooLong(300));
        assert!(s.contains("300") && s.contains("107"), "{s}");
        let mut raw = zeroed_sun();
        raw.sun_family = libc::AF_INET as libc::sa_family_t;
        assert_eq!(UnixAddr::from_raw(&raw, 16), Err(Errno::AFNOSUPPORT));
    }

    #[test]
    #[cfg_attr(miri, ignore)] // system calls
    fn unlink_removes_a_path_and_leaves_names_alone() {
        let p = std::env::temp_dir().join(std::format!("pinion-unlink-{}", std::process::id()));
        std::fs::write(&p, b"").unwrap();
        let a = UnixAddr::path(p.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(a.unlink(), Ok(()));
        assert!(!p.exists());
        assert_eq!(a.unlink(), Err(Errno::NOENT));
        assert_eq!(UnixAddr::abstract_name(b"x").unwrap().unlink(), Ok(()));
    }

    #[test]
    fn non_utf8_names_print_escaped() {
        let p = UnixAddr::path(b"/tmp/\xff").unwrap();
        assert_eq!(format!("{p}"), "/tmp/\\xff");
    }
}
