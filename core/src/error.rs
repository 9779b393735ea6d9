//! pinion's one error type.

use core::fmt;

/// Everything an operation can fail with.
///
/// errno-like kinds for what the network and the kernel say, plus the
/// runtime's own (`PoolExhausted`, `OperationAborted`, `NotFound`, `Eof`).
/// `Copy` and two words wide, so it rides in an operation's result slot.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The operation would block (`EAGAIN`); internal to reactors.
    WouldBlock,
    /// The peer reset the connection (`ECONNRESET`).
    ConnectionReset,
    /// Nobody listens at the address (`ECONNREFUSED`).
    ConnectionRefused,
    /// Writing to a connection the peer has closed (`EPIPE`).
    BrokenPipe,
    /// The peer closed its side: a read returned 0 bytes, or a composed
    /// read ended before it could be satisfied.
    Eof,
    /// `read_until` filled its buffer to the limit without the delimiter.
    NotFound,
    /// The operation was cancelled (`cancel()`, `close()`, timer reset).
    OperationAborted,
    /// A fixed pool had no free slot. Size the pool larger in the context's
    /// configuration, or bound the number of operations in flight.
    PoolExhausted,
    /// A deadline passed (`ETIMEDOUT`).
    TimedOut,
    /// The descriptor is not registered with this context's reactor.
    OperationNotSupported,
    /// The socket handle is closed or was never opened.
    BadDescriptor,
    /// The address is already in use (`EADDRINUSE`).
    AddrInUse,
    /// The process or system descriptor limit is reached (`EMFILE`/`ENFILE`).
    TooManyOpenFiles,
    /// The context has been shut down; no new operations are accepted.
    Shutdown,
    /// Any other OS error, by errno.
    Os(i32),
}

impl Error {
    /// Maps a Linux errno to its kind; unknown values become `Os(errno)`.
    pub const fn from_errno(errno: i32) -> Error {
        // Linux numbering (asm-generic/errno*.h), identical on every Linux
        // architecture pinion targets; core names no libc on purpose.
        match errno {
            11 => Error::WouldBlock,
            104 => Error::ConnectionReset,
            111 => Error::ConnectionRefused,
            32 => Error::BrokenPipe,
            125 => Error::OperationAborted,
            110 => Error::TimedOut,
            9 => Error::BadDescriptor,
            98 => Error::AddrInUse,
            24 | 23 => Error::TooManyOpenFiles,
            95 => Error::OperationNotSupported,
            e => Error::Os(e),
        }
    }

    /// `true` for the kinds that end a connection's usefulness.
    pub const fn is_disconnect(&self) -> bool {
        matches!(
            self,
            Error::ConnectionReset | Error::BrokenPipe | Error::Eof | Error::ConnectionRefused
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WouldBlock => f.write_str("operation would block"),
            Error::ConnectionReset => f.write_str("connection reset by peer"),
            Error::ConnectionRefused => f.write_str("connection refused"),
            Error::BrokenPipe => f.write_str("broken pipe: the peer closed the connection"),
            Error::Eof => f.write_str("end of file: the peer closed its side"),
            Error::NotFound => {
                f.write_str("delimiter not found before the buffer's limit was reached")
            }
            Error::OperationAborted => f.write_str("operation aborted (cancelled or closed)"),
            Error::PoolExhausted => f.write_str(
                "operation pool exhausted: raise the pool size in the context's configuration \
                 or bound the operations in flight",
            ),
            Error::TimedOut => f.write_str("timed out"),
            Error::OperationNotSupported => {
                f.write_str("operation not supported: descriptor not registered with the reactor")
            }
            Error::BadDescriptor => f.write_str("bad descriptor: the socket is closed"),
            Error::AddrInUse => f.write_str("address already in use"),
            Error::TooManyOpenFiles => {
                f.write_str("too many open files: the descriptor limit (ulimit -n) is reached")
            }
            Error::Shutdown => f.write_str("the context has been shut down"),
            Error::Os(e) => write!(f, "os error {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e {
            Error::WouldBlock => K::WouldBlock,
            Error::ConnectionReset => K::ConnectionReset,
            Error::ConnectionRefused => K::ConnectionRefused,
            Error::BrokenPipe => K::BrokenPipe,
            Error::Eof => K::UnexpectedEof,
            Error::NotFound => K::InvalidData,
            Error::OperationAborted => K::Interrupted,
            Error::TimedOut => K::TimedOut,
            Error::AddrInUse => K::AddrInUse,
            Error::Os(code) => return std::io::Error::from_raw_os_error(code),
            _ => K::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// Result with pinion's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;
