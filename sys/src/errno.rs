//! [`Errno`]: an error number as the kernel reports it, with its name and
//! a short description for messages.
//!
//! The numbers differ between Linux architectures (MIPS, SPARC, Alpha and
//! PA-RISC number many errnos their own way), so the table below is built
//! from `libc::E*` constants only, never from literal numbers: it is right
//! on whatever target libc describes.

use core::fmt;

/// An error number (`errno`) returned by a failed system call.
///
/// `Errno(0)` is not an error; nothing in this crate makes one.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// use pinion_sys::Errno;
///
/// let e = Errno::CONNRESET;
/// assert_eq!(e.name(), Some("ECONNRESET"));
/// assert_eq!(e.to_string(), "ECONNRESET: connection reset by peer");
/// assert_eq!(Errno(4242).to_string(), "errno 4242: unknown error");
/// # }
/// ```
///
/// On targets other than Linux there is no table: every code is unnamed
/// and the associated constants do not exist.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Errno(pub i32);

/// One row of the table: number, name, description, and whether the name
/// is a second name for a number that has a primary one.
#[derive(Clone, Copy)]
struct Entry {
    code: i32,
    name: &'static str,
    text: &'static str,
    alias: bool,
}

/// Defines the associated constants and the table from one list, so the
/// two cannot disagree. `alias` marks a name that some architectures give
/// the same number as an earlier (primary) name; a trailing `cfg(...)`
/// limits an entry to the targets where libc defines the name.
macro_rules! errnos {
    (@alias) => { false };
    (@alias alias) => { true };
    ($( $(#[$meta:meta])* $konst:ident = $libc:ident $($alias:ident)?, $text:literal
        $(, cfg($cfg:meta))?; )*) => {
        #[cfg(target_os = "linux")]
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($libc), "`: ", $text, ".")]
                $(#[$meta])*
                $(#[cfg($cfg)])?
                pub const $konst: Errno = Errno(libc::$libc);
            )*
        }

        /// Every errno libc defines for Linux, primary names first.
        #[cfg(target_os = "linux")]
        const TABLE: &[Entry] = &[
            $($(#[cfg($cfg)])? Entry {
                code: libc::$libc,
                name: stringify!($libc),
                text: $text,
                alias: errnos!(@alias $($alias)?),
            },)*
        ];
    };
}

/// No table where there is no libc to take the numbers from.
#[cfg(not(target_os = "linux"))]
const TABLE: &[Entry] = &[];

errnos! {
    PERM = EPERM, "operation not permitted";
    NOENT = ENOENT, "no such file or directory";
    SRCH = ESRCH, "no such process";
    INTR = EINTR, "interrupted system call";
    IO = EIO, "input/output error";
    NXIO = ENXIO, "no such device or address";
    /// (`2BIG` is not an identifier.)
    TOOBIG = E2BIG, "argument list too long";
    NOEXEC = ENOEXEC, "exec format error";
    BADF = EBADF, "bad file descriptor";
    CHILD = ECHILD, "no child processes";
    AGAIN = EAGAIN, "resource temporarily unavailable";
    NOMEM = ENOMEM, "cannot allocate memory";
    ACCES = EACCES, "permission denied";
    FAULT = EFAULT, "bad address";
    NOTBLK = ENOTBLK, "block device required";
    BUSY = EBUSY, "device or resource busy";
    EXIST = EEXIST, "file exists";
    XDEV = EXDEV, "invalid cross-device link";
    NODEV = ENODEV, "no such device";
    NOTDIR = ENOTDIR, "not a directory";
    ISDIR = EISDIR, "is a directory";
    INVAL = EINVAL, "invalid argument";
    NFILE = ENFILE, "too many open files in system";
    MFILE = EMFILE, "too many open files";
    NOTTY = ENOTTY, "inappropriate ioctl for device";
    TXTBSY = ETXTBSY, "text file busy";
    FBIG = EFBIG, "file too large";
    NOSPC = ENOSPC, "no space left on device";
    SPIPE = ESPIPE, "illegal seek";
    ROFS = EROFS, "read-only file system";
    MLINK = EMLINK, "too many links";
    PIPE = EPIPE, "broken pipe";
    DOM = EDOM, "numerical argument out of domain";
    RANGE = ERANGE, "numerical result out of range";
    DEADLK = EDEADLK, "resource deadlock avoided";
    NAMETOOLONG = ENAMETOOLONG, "file name too long";
    NOLCK = ENOLCK, "no locks available";
    NOSYS = ENOSYS, "function not implemented";
    NOTEMPTY = ENOTEMPTY, "directory not empty";
    LOOP = ELOOP, "too many levels of symbolic links";
    NOMSG = ENOMSG, "no message of desired type";
    IDRM = EIDRM, "identifier removed";
    CHRNG = ECHRNG, "channel number out of range";
    L2NSYNC = EL2NSYNC, "level 2 not synchronized";
    L3HLT = EL3HLT, "level 3 halted";
    L3RST = EL3RST, "level 3 reset";
    LNRNG = ELNRNG, "link number out of range";
    UNATCH = EUNATCH, "protocol driver not attached";
    NOCSI = ENOCSI, "no CSI structure available";
    L2HLT = EL2HLT, "level 2 halted";
    BADE = EBADE, "invalid exchange";
    BADR = EBADR, "invalid request descriptor";
    XFULL = EXFULL, "exchange full";
    NOANO = ENOANO, "no anode";
    BADRQC = EBADRQC, "invalid request code";
    BADSLT = EBADSLT, "invalid slot";
    BFONT = EBFONT, "bad font file format";
    NOSTR = ENOSTR, "device not a stream";
    NODATA = ENODATA, "no data available";
    TIME = ETIME, "timer expired";
    NOSR = ENOSR, "out of streams resources";
    NONET = ENONET, "machine is not on the network";
    NOPKG = ENOPKG, "package not installed";
    REMOTE = EREMOTE, "object is remote";
    NOLINK = ENOLINK, "link has been severed";
    ADV = EADV, "advertise error";
    SRMNT = ESRMNT, "srmount error";
    COMM = ECOMM, "communication error on send";
    PROTO = EPROTO, "protocol error";
    MULTIHOP = EMULTIHOP, "multihop attempted";
    DOTDOT = EDOTDOT, "RFS specific error";
    BADMSG = EBADMSG, "bad message";
    OVERFLOW = EOVERFLOW, "value too large for defined data type";
    NOTUNIQ = ENOTUNIQ, "name not unique on network";
    BADFD = EBADFD, "file descriptor in bad state";
    REMCHG = EREMCHG, "remote address changed";
    LIBACC = ELIBACC, "can not access a needed shared library";
    LIBBAD = ELIBBAD, "accessing a corrupted shared library";
    LIBSCN = ELIBSCN, ".lib section in a.out corrupted";
    LIBMAX = ELIBMAX, "attempting to link in too many shared libraries";
    LIBEXEC = ELIBEXEC, "cannot exec a shared library directly";
    ILSEQ = EILSEQ, "invalid or incomplete multibyte or wide character";
    RESTART = ERESTART, "interrupted system call should be restarted";
    STRPIPE = ESTRPIPE, "streams pipe error";
    USERS = EUSERS, "too many users";
    NOTSOCK = ENOTSOCK, "socket operation on non-socket";
    DESTADDRREQ = EDESTADDRREQ, "destination address required";
    MSGSIZE = EMSGSIZE, "message too long";
    PROTOTYPE = EPROTOTYPE, "protocol wrong type for socket";
    NOPROTOOPT = ENOPROTOOPT, "protocol not available";
    PROTONOSUPPORT = EPROTONOSUPPORT, "protocol not supported";
    SOCKTNOSUPPORT = ESOCKTNOSUPPORT, "socket type not supported";
    OPNOTSUPP = EOPNOTSUPP, "operation not supported";
    PFNOSUPPORT = EPFNOSUPPORT, "protocol family not supported";
    AFNOSUPPORT = EAFNOSUPPORT, "address family not supported by protocol";
    ADDRINUSE = EADDRINUSE, "address already in use";
    ADDRNOTAVAIL = EADDRNOTAVAIL, "cannot assign requested address";
    NETDOWN = ENETDOWN, "network is down";
    NETUNREACH = ENETUNREACH, "network is unreachable";
    NETRESET = ENETRESET, "network dropped connection on reset";
    CONNABORTED = ECONNABORTED, "software caused connection abort";
    CONNRESET = ECONNRESET, "connection reset by peer";
    NOBUFS = ENOBUFS, "no buffer space available";
    ISCONN = EISCONN, "transport endpoint is already connected";
    NOTCONN = ENOTCONN, "transport endpoint is not connected";
    SHUTDOWN = ESHUTDOWN, "cannot send after transport endpoint shutdown";
    TOOMANYREFS = ETOOMANYREFS, "too many references: cannot splice";
    TIMEDOUT = ETIMEDOUT, "connection timed out";
    CONNREFUSED = ECONNREFUSED, "connection refused";
    HOSTDOWN = EHOSTDOWN, "host is down";
    HOSTUNREACH = EHOSTUNREACH, "no route to host";
    ALREADY = EALREADY, "operation already in progress";
    INPROGRESS = EINPROGRESS, "operation now in progress";
    STALE = ESTALE, "stale file handle";
    UCLEAN = EUCLEAN, "structure needs cleaning";
    NOTNAM = ENOTNAM, "not a XENIX named type file";
    NAVAIL = ENAVAIL, "no XENIX semaphores available";
    ISNAM = EISNAM, "is a named type file";
    REMOTEIO = EREMOTEIO, "remote I/O error";
    DQUOT = EDQUOT, "disk quota exceeded";
    NOMEDIUM = ENOMEDIUM, "no medium found";
    MEDIUMTYPE = EMEDIUMTYPE, "wrong medium type";
    CANCELED = ECANCELED, "operation canceled";
    NOKEY = ENOKEY, "required key not available";
    KEYEXPIRED = EKEYEXPIRED, "key has expired";
    KEYREVOKED = EKEYREVOKED, "key has been revoked";
    KEYREJECTED = EKEYREJECTED, "key was rejected by service";
    OWNERDEAD = EOWNERDEAD, "owner died";
    NOTRECOVERABLE = ENOTRECOVERABLE, "state not recoverable";
    RFKILL = ERFKILL, "operation not possible due to RF-kill";
    /// (Not on MIPS with uClibc, where libc does not define it.)
    HWPOISON = EHWPOISON, "memory page has hardware error",
        cfg(not(all(target_env = "uclibc", any(target_arch = "mips", target_arch = "mips64"))));
    // Second names, after their primaries so that the primary is the one
    // printed where both share a number.
    /// The same number as [`Errno::AGAIN`] on Linux.
    WOULDBLOCK = EWOULDBLOCK alias, "resource temporarily unavailable";
    /// The same number as [`Errno::DEADLK`] on most architectures; its own
    /// number on MIPS, PowerPC and SPARC.
    DEADLOCK = EDEADLOCK alias, "file locking deadlock error";
    /// The same number as [`Errno::OPNOTSUPP`] on Linux.
    NOTSUP = ENOTSUP alias, "operation not supported";
}

// A number that two primary names share, or an alias listed before its
// primary, would print the wrong name: refuse to build on such a target.
const _: () = {
    let mut i = 0;
    while i < TABLE.len() {
        let mut j = 0;
        while j < i {
            if TABLE[j].code == TABLE[i].code && !TABLE[i].alias {
                panic!("pinion-sys: an errno number has two primary names on this target");
            }
            j += 1;
        }
        i += 1;
    }
};

impl Errno {
    /// The calling thread's `errno`: read it right after the call that
    /// failed, before anything else can overwrite it.
    ///
    /// ```
    /// use pinion_sys::Errno;
    ///
    /// // SAFETY: closing an invalid descriptor touches no memory.
    /// assert_eq!(unsafe { libc::close(-1) }, -1);
    /// assert_eq!(Errno::last(), Errno::BADF);
    /// ```
    #[cfg(target_os = "linux")]
    #[inline]
    pub fn last() -> Errno {
        // SAFETY: `__errno_location` returns the calling thread's errno
        // slot, valid and aligned for the thread's whole life.
        Errno(unsafe { *libc::__errno_location() })
    }

    /// The symbolic name (`"ECONNRESET"`), or `None` for a number this
    /// target does not define. Where two names share a number, the
    /// primary one (`EAGAIN`, not `EWOULDBLOCK`).
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|e| e.name)
    }

    /// A short lowercase description (`"connection reset by peer"`), or
    /// `"unknown error"` for a number this target does not define.
    pub fn text(self) -> &'static str {
        self.entry().map_or("unknown error", |e| e.text)
    }

    /// The first row with this number. Linear: only messages need it.
    fn entry(self) -> Option<&'static Entry> {
        TABLE.iter().find(|e| e.code == self.0)
    }
}

impl fmt::Display for Errno {
    /// `ECONNRESET: connection reset by peer`, or
    /// `errno 4242: unknown error`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Strings by write_str, not as `{}` arguments: that would link
        // `Formatter::pad`, a kilobyte of text in a small no_std binary.
        match self.name() {
            Some(name) => f.write_str(name)?,
            None => write!(f, "errno {}", self.0)?,
        }
        f.write_str(": ")?;
        f.write_str(self.text())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Errno {}

#[cfg(feature = "std")]
impl From<Errno> for std::io::Error {
    /// The same OS error, so `kind()` and messages come from std.
    fn from(e: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.0)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn common_names_and_texts() {
        let common = [
            (libc::EPERM, "EPERM", "operation not permitted"),
            (libc::ENOENT, "ENOENT", "no such file or directory"),
            (libc::EINTR, "EINTR", "interrupted system call"),
            (libc::EIO, "EIO", "input/output error"),
            (libc::EBADF, "EBADF", "bad file descriptor"),
            (libc::EAGAIN, "EAGAIN", "resource temporarily unavailable"),
            (libc::ENOMEM, "ENOMEM", "cannot allocate memory"),
            (libc::EACCES, "EACCES", "permission denied"),
            (libc::EEXIST, "EEXIST", "file exists"),
            (libc::EINVAL, "EINVAL", "invalid argument"),
            (libc::ENFILE, "ENFILE", "too many open files in system"),
            (libc::EMFILE, "EMFILE", "too many open files"),
            (libc::EPIPE, "EPIPE", "broken pipe"),
            (libc::EDEADLK, "EDEADLK", "resource deadlock avoided"),
            (libc::ENOSYS, "ENOSYS", "function not implemented"),
            (libc::EOPNOTSUPP, "EOPNOTSUPP", "operation not supported"),
            (libc::EADDRINUSE, "EADDRINUSE", "address already in use"),
            (libc::ECONNRESET, "ECONNRESET", "connection reset by peer"),
            (libc::ECONNREFUSED, "ECONNREFUSED", "connection refused"),
            (libc::ETIMEDOUT, "ETIMEDOUT", "connection timed out"),
            (
                libc::EINPROGRESS,
                "EINPROGRESS",
                "operation now in progress",
            ),
            (libc::ECANCELED, "ECANCELED", "operation canceled"),
            (
                libc::ENOTCONN,
                "ENOTCONN",
                "transport endpoint is not connected",
            ),
            (libc::ENOBUFS, "ENOBUFS", "no buffer space available"),
        ];
        for (code, name, text) in common {
            let e = Errno(code);
            assert_eq!(e.name(), Some(name));
            assert_eq!(e.text(), text);
            assert_eq!(e.to_string(), std::format!("{name}: {text}"));
        }
    }

    #[test]
    fn primary_names_win_over_aliases() {
        assert_eq!(Errno::WOULDBLOCK, Errno::AGAIN);
        assert_eq!(Errno::WOULDBLOCK.name(), Some("EAGAIN"));
        assert_eq!(Errno::NOTSUP.name(), Some("EOPNOTSUPP"));
        // EDEADLOCK is its own number on MIPS, PowerPC and SPARC.
        let deadlock = if Errno::DEADLOCK == Errno::DEADLK {
            "EDEADLK"
        } else {
            "EDEADLOCK"
        };
        assert_eq!(Errno::DEADLOCK.name(), Some(deadlock));
    }

    #[test]
    fn every_row_prints_its_own_name_or_its_primary() {
        assert!(TABLE.len() >= 130, "every errno libc defines for Linux");
        for (i, e) in TABLE.iter().enumerate() {
            let shown = Errno(e.code).entry().unwrap();
            if e.alias {
                let primary = TABLE[..i].iter().find(|p| p.code == e.code);
                assert_eq!(shown.name, primary.unwrap_or(e).name, "{}", e.name);
            } else {
                assert_eq!(shown.name, e.name, "two primary names for {}", e.code);
            }
            assert!(e.code > 0 && e.name.starts_with('E'));
            assert!(!e.text.is_empty() && !e.text.ends_with('.'));
            // Lowercase, but for an acronym ("RFS specific error").
            let first = e.text.split(' ').next().unwrap();
            assert!(
                !first.starts_with(|c: char| c.is_ascii_uppercase())
                    || !first.contains(|c: char| c.is_ascii_lowercase()),
                "{}",
                e.text
            );
        }
    }

    #[test]
    fn unknown_numbers() {
        for code in [0, -1, 4242, i32::MAX] {
            assert_eq!(Errno(code).name(), None);
            assert_eq!(Errno(code).text(), "unknown error");
            assert_eq!(
                Errno(code).to_string(),
                std::format!("errno {code}: unknown error")
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // calls close(2)
    fn last_reads_the_failed_calls_errno() {
        // SAFETY: closing an invalid descriptor touches no memory.
        assert_eq!(unsafe { libc::close(-1) }, -1);
        assert_eq!(Errno::last(), Errno::BADF);
    }

    #[cfg(feature = "std")]
    #[test]
    fn converts_to_io_error() {
        let e = std::io::Error::from(Errno::CONNRESET);
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
    }
}
