//! pinion's one error type.

use core::fmt;

pub use pinion_sys::Errno;

/// A fixed pool of a context, as a full-pool error names it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pool {
    /// Operation slots: every pending operation, posted handler and
    /// strand takes one (`Builder::ops`).
    Ops,
    /// The descriptor table: every open socket takes one
    /// (`Builder::descriptors`).
    Descriptors,
    /// Timer objects (`Builder::timers`).
    Timers,
    /// The read-buffer pool of pooled reads (`Builder::read_buffers`).
    ReadBuffers,
    /// Task slots: every spawned task that has not been released takes
    /// one (`Builder::tasks`).
    Tasks,
    /// Signal sets: a fixed table for the whole process
    /// (`pinion::signal::MAX_SETS`); close one to make room.
    Signals,
}

impl Pool {
    /// The `Builder` method that sizes this pool.
    pub const fn knob(self) -> &'static str {
        match self {
            Pool::Ops => "Builder::ops",
            Pool::Descriptors => "Builder::descriptors",
            Pool::Timers => "Builder::timers",
            Pool::ReadBuffers => "Builder::read_buffers",
            Pool::Tasks => "Builder::tasks",
            Pool::Signals => "pinion::signal::MAX_SETS (close a SignalSet)",
        }
    }

    /// What one entry of the pool holds, for messages.
    const fn what(self) -> &'static str {
        match self {
            Pool::Ops => "operation slot",
            Pool::Descriptors => "descriptor slot",
            Pool::Timers => "timer",
            Pool::ReadBuffers => "read buffer",
            Pool::Tasks => "task slot",
            Pool::Signals => "signal set",
        }
    }
}

/// Everything an operation can fail with.
///
/// errno-like kinds for what the network and the kernel say, plus the
/// runtime's own (`PoolFull`, `OperationAborted`, `NotFound`, `Eof`...).
/// `Copy` and 8 bytes, aligned like a `u64`, so it rides in an operation's
/// result slot.
/// `Display` says what happened and, for the runtime's own kinds, what to
/// change; an [`Os`](Error::Os) error prints its errno name and text.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Aligned like a `u64`, an error sits in an operation's result slot at the
// byte count's offset: `Ok` and `Err` then share one 8-byte payload, and a
// result is written and read with two plain moves. Overlapping at
// different offsets, LLVM built every store on the stack (instr.sh: +6
// instructions per echoed message on epoll).
#[repr(align(8))]
pub enum Error {
    /// The operation would block (`EAGAIN`); internal to reactors.
    WouldBlock,
    /// The peer reset the connection (`ECONNRESET`).
    ConnectionReset,
    /// Nobody listens at the address (`ECONNREFUSED`).
    ConnectionRefused,
    /// Writing to a connection the peer has closed (`EPIPE`).
    BrokenPipe,
    /// End of stream: a read returned 0 bytes because the peer closed its
    /// side, or a composed read ended before it could be satisfied.
    Eof,
    /// `read_until` filled its buffer to the limit without the delimiter.
    NotFound,
    /// The operation was cancelled (`cancel()`, `close()`, timer reset).
    OperationAborted,
    /// A fixed pool had no free entry.
    PoolFull(Pool),
    /// The context was built without this pool (a pooled read on a context
    /// with no read buffers).
    NoPool(Pool),
    /// A read was given a buffer with no room (`spare() == 0`): nothing
    /// could be read. (A `Vec` reads into its spare capacity, not into its
    /// length.)
    BufferFull,
    /// A deadline passed (`ETIMEDOUT`).
    TimedOut,
    /// A spawned future (or its output) needs this many bytes, more than a
    /// task slot holds (or is aligned beyond 16 bytes).
    TaskTooLarge(u32),
    /// The descriptor does not support the operation (`EOPNOTSUPP`; a
    /// file epoll cannot watch).
    OperationNotSupported,
    /// An inherited descriptor (`from_fd`) is not the kind of socket the
    /// constructor builds: its type, family or state differs.
    NotA(SocketKind),
    /// A serial port's descriptor is not a terminal (`ENOTTY`).
    NotATerminal,
    /// A baud rate termios has no constant for.
    UnsupportedBaudRate(u32),
    /// Not a signal a `SignalSet` can take: out of `1..=64`, or SIGKILL /
    /// SIGSTOP.
    InvalidSignal(i32),
    /// A signal added to a `SignalSet` that the calling thread does not
    /// block (`pinion::signal::block`): the kernel would act on it instead.
    SignalNotBlocked(i32),
    /// `spawn_local` on a context that more than one thread may run
    /// (concurrency hint other than 1), or on a target with no thread id.
    NotOneThread,
    /// The handle is closed or was never opened.
    BadDescriptor,
    /// The address is already in use (`EADDRINUSE`).
    AddrInUse,
    /// A Unix socket path or abstract name of this many bytes: more than
    /// `sun_path` holds (107 and its NUL).
    UnixNameTooLong(u32),
    /// A Unix socket path that is empty, or holds a NUL byte at this
    /// offset.
    UnixPathInvalid(u32),
    /// The process or system descriptor limit is reached (`EMFILE`/`ENFILE`).
    TooManyOpenFiles,
    /// The context was shut down (`IoContext::shutdown`): it runs nothing
    /// and starts nothing any more.
    ContextShutDown,
    /// `IoContext::shutdown` was called from a handler or task of the same
    /// context: it waits for every `run()` to return, so it would wait for
    /// itself.
    ShutdownInsideRun,
    /// Any other OS error.
    Os(Errno),
}

/// What an inherited descriptor was expected to be ([`Error::NotA`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// A listening IPv4 or IPv6 stream socket.
    TcpListener,
    /// A connected IPv4 or IPv6 stream socket.
    TcpStream,
    /// An IPv4 or IPv6 datagram socket.
    UdpSocket,
    /// A listening Unix-domain stream socket.
    UnixListener,
    /// A connected Unix-domain stream socket.
    UnixStream,
    /// A Unix-domain datagram socket.
    UnixDatagram,
}

impl SocketKind {
    /// How the error text names it.
    pub fn what(self) -> &'static str {
        match self {
            SocketKind::TcpListener => "a listening TCP socket",
            SocketKind::TcpStream => "a connected TCP socket",
            SocketKind::UdpSocket => "a UDP socket",
            SocketKind::UnixListener => "a listening Unix-domain stream socket",
            SocketKind::UnixStream => "a connected Unix-domain stream socket",
            SocketKind::UnixDatagram => "a Unix-domain datagram socket",
        }
    }
}

impl Error {
    /// Maps an errno to its kind; the others become `Os(errno)`.
    pub fn from_errno(e: Errno) -> Error {
        #[cfg(target_os = "linux")]
        {
            match e {
                Errno::AGAIN => return Error::WouldBlock,
                Errno::CONNRESET => return Error::ConnectionReset,
                Errno::CONNREFUSED => return Error::ConnectionRefused,
                Errno::PIPE => return Error::BrokenPipe,
                Errno::CANCELED => return Error::OperationAborted,
                Errno::TIMEDOUT => return Error::TimedOut,
                Errno::BADF => return Error::BadDescriptor,
                Errno::ADDRINUSE => return Error::AddrInUse,
                Errno::MFILE | Errno::NFILE => return Error::TooManyOpenFiles,
                Errno::OPNOTSUPP => return Error::OperationNotSupported,
                _ => {}
            }
        }
        Error::Os(e)
    }

    /// `true` for the kinds that end a connection's usefulness.
    pub const fn is_disconnect(&self) -> bool {
        matches!(
            self,
            Error::ConnectionReset | Error::BrokenPipe | Error::Eof | Error::ConnectionRefused
        )
    }

    /// The errno this error stands for, when it stands for one.
    pub fn errno(&self) -> Option<Errno> {
        #[cfg(target_os = "linux")]
        {
            Some(match *self {
                Error::WouldBlock => Errno::AGAIN,
                Error::ConnectionReset => Errno::CONNRESET,
                Error::ConnectionRefused => Errno::CONNREFUSED,
                Error::BrokenPipe => Errno::PIPE,
                Error::OperationAborted => Errno::CANCELED,
                Error::TimedOut => Errno::TIMEDOUT,
                Error::BadDescriptor => Errno::BADF,
                Error::AddrInUse => Errno::ADDRINUSE,
                Error::TooManyOpenFiles => Errno::MFILE,
                Error::OperationNotSupported => Errno::OPNOTSUPP,
                Error::Os(e) => e,
                _ => return None,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            match *self {
                Error::Os(e) => Some(e),
                _ => None,
            }
        }
    }
}

#[cfg(target_os = "linux")]
impl From<pinion_sys::addr::UnixAddrError> for Error {
    fn from(e: pinion_sys::addr::UnixAddrError) -> Self {
        use pinion_sys::addr::UnixAddrError as E;
        let n = |n: usize| n.min(u32::MAX as usize) as u32;
        match e {
            E::TooLong(len) => Error::UnixNameTooLong(n(len)),
            E::Invalid(at) => Error::UnixPathInvalid(n(at)),
        }
    }
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Self {
        Error::from_errno(e)
    }
}

/// Writes `parts` one after the other. Strings go through `write_str`
/// rather than as `{}` arguments, which would link `Formatter::pad`
/// (padding and precision nobody asks for here): a kilobyte of text in a
/// small no_std binary.
pub(crate) fn write_strs(f: &mut fmt::Formatter<'_>, parts: &[&str]) -> fmt::Result {
    parts.iter().try_for_each(|p| f.write_str(p))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The plain texts are values of one match and written by one call
        // (a table, not thirty calls); the others write themselves.
        let text = match self {
            Error::WouldBlock => "operation would block (EAGAIN)",
            Error::ConnectionReset => "connection reset by peer (ECONNRESET)",
            Error::ConnectionRefused => "connection refused (ECONNREFUSED)",
            Error::BrokenPipe => "broken pipe: the peer closed the connection (EPIPE)",
            Error::Eof => "end of stream: the peer closed its side",
            Error::NotFound => "delimiter not found before the buffer's limit was reached",
            Error::OperationAborted => "operation aborted (cancelled or closed)",
            Error::PoolFull(p) => return write_strs(
                f,
                &[
                    match p {
                        Pool::Ops => "operation",
                        Pool::Descriptors => "descriptor",
                        Pool::Timers => "timer",
                        Pool::ReadBuffers => "read-buffer",
                        Pool::Tasks => "task",
                        Pool::Signals => "signal-set",
                    },
                    " pool full: every ",
                    p.what(),
                    " is in use; raise ",
                    p.knob(),
                    " or bound what is in flight",
                ],
            ),
            Error::NoPool(p) => return write_strs(
                f,
                &["this context has no ", p.what(), " pool: build it with ", p.knob()],
            ),
            Error::BufferFull => {
                "the buffer has no room to read into (spare capacity 0); a Vec reads into its \
                 spare capacity: use Vec::with_capacity, or clear the buffer"
            }
            Error::TaskTooLarge(n) => return write!(
                f,
                "the future (or its output) needs {n} bytes, more than a task slot holds: \
                 raise max_future_bytes in Builder::tasks, or box large state outside the task"
            ),
            Error::TimedOut => "timed out (ETIMEDOUT)",
            Error::OperationNotSupported => {
                "operation not supported on this descriptor (EOPNOTSUPP)"
            }
            Error::NotA(k) => return write_strs(
                f,
                &[
                    "the descriptor is not ",
                    k.what(),
                    ": check what was passed in (LISTEN_FDS order, socket type)",
                ],
            ),
            Error::NotATerminal => {
                "not a terminal (ENOTTY): a serial port needs a tty device such as /dev/ttyS0"
            }
            Error::UnsupportedBaudRate(r) => return write!(
                f,
                "baud rate {r} is not supported: termios offers 50 to 4000000 in its standard \
                 steps (9600, 19200, 38400, 57600, 115200, ...)"
            ),
            Error::InvalidSignal(n) => return write!(
                f,
                "signal {n} cannot be waited for: valid are 1..=64 except SIGKILL (9) and SIGSTOP (19)"
            ),
            Error::SignalNotBlocked(n) => return write!(
                f,
                "signal {n} is not blocked in this thread: call pinion::signal::block(&[{n}, ...]) \
                 in main before spawning threads, or its default action runs instead"
            ),
            Error::NotOneThread => {
                "a !Send task needs a context that one thread runs: build it with \
                 concurrency_hint(1), or spawn a Send future"
            }
            Error::BadDescriptor => "bad descriptor: the handle is closed",
            Error::AddrInUse => "address already in use (EADDRINUSE)",
            Error::UnixNameTooLong(n) => return write!(
                f,
                "a Unix socket name of {n} bytes is too long: sun_path holds at most 107 \
                 (use a shorter path, e.g. under /run, or an abstract name)"
            ),
            Error::UnixPathInvalid(at) => return write!(
                f,
                "a Unix socket path must be non-empty and hold no NUL byte (byte {at} is one)"
            ),
            Error::TooManyOpenFiles => {
                "too many open files: the descriptor limit is reached (EMFILE/ENFILE; ulimit -n)"
            }
            Error::ContextShutDown => {
                "the context was shut down (IoContext::shutdown): it runs and starts nothing \
                 any more; build a new context"
            }
            Error::ShutdownInsideRun => {
                "IoContext::shutdown called from a handler or task of the same context: it \
                 waits for run() to return, so it would wait for itself; call stop() there and \
                 shutdown() once run() has returned"
            }
            Error::Os(e) => return fmt::Display::fmt(e, f),
        };
        f.write_str(text)
    }
}

impl core::error::Error for Error {}

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
            Error::PoolFull(_) => K::OutOfMemory,
            Error::Os(e) => return std::io::Error::from_raw_os_error(e.0),
            _ => K::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// Result with pinion's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// A value handed back because it could not be queued: `error` says why,
/// `handler` is what the caller gave (the handler, with its buffer for
/// I/O), unrun. Converts into [`Error`], so `?` works where the handler
/// need not come back.
pub struct Rejected<H> {
    /// Why the value was not accepted.
    pub error: Error,
    /// The handler (and buffer) the caller gave, unrun.
    pub handler: H,
}

impl<H> Rejected<H> {
    /// The handed-back value, for a caller that wants it and not the error.
    pub fn into_inner(self) -> H {
        self.handler
    }

    /// The same rejection with the handed-back value changed by `f`.
    pub fn map<G>(self, f: impl FnOnce(H) -> G) -> Rejected<G> {
        Rejected {
            error: self.error,
            handler: f(self.handler),
        }
    }
}

impl<H> fmt::Debug for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<H> fmt::Display for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<H> core::error::Error for Rejected<H> {}

impl<H> From<Rejected<H>> for Error {
    fn from(r: Rejected<H>) -> Self {
        r.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn pool_errors_name_the_pool_and_the_knob() {
        let s = Error::PoolFull(Pool::Descriptors).to_string();
        assert!(
            s.contains("descriptor") && s.contains("Builder::descriptors"),
            "{s}"
        );
        let s = Error::NoPool(Pool::ReadBuffers).to_string();
        assert!(s.contains("Builder::read_buffers"), "{s}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn os_errors_print_their_errno_name() {
        let e = Error::from_errno(Errno::NOTSOCK);
        assert_eq!(e, Error::Os(Errno::NOTSOCK));
        assert!(e.to_string().starts_with("ENOTSOCK: "), "{e}");
        assert_eq!(Error::from_errno(Errno::CONNRESET), Error::ConnectionReset);
        assert_eq!(Error::ConnectionReset.errno(), Some(Errno::CONNRESET));
    }

    #[test]
    fn rejections_convert_into_errors() {
        fn refuse() -> core::result::Result<(), Rejected<u8>> {
            Err(Rejected {
                error: Error::PoolFull(Pool::Ops),
                handler: 7,
            })
        }
        fn caller() -> Result<()> {
            refuse()?;
            Ok(())
        }
        assert_eq!(caller(), Err(Error::PoolFull(Pool::Ops)));
        assert_eq!(refuse().unwrap_err().into_inner(), 7);
    }
}

#[cfg(feature = "embedded-io")]
impl embedded_io::Error for Error {
    fn kind(&self) -> embedded_io::ErrorKind {
        use embedded_io::ErrorKind as K;
        match self {
            Error::ConnectionReset => K::ConnectionReset,
            Error::ConnectionRefused => K::ConnectionRefused,
            Error::BrokenPipe => K::BrokenPipe,
            Error::NotFound => K::NotFound,
            Error::OperationAborted => K::Interrupted,
            Error::PoolFull(_) | Error::NoPool(_) | Error::TaskTooLarge(_) => K::OutOfMemory,
            Error::BufferFull => K::InvalidInput,
            Error::TimedOut => K::TimedOut,
            Error::OperationNotSupported | Error::NotOneThread => K::Unsupported,
            Error::BadDescriptor => K::NotConnected,
            Error::AddrInUse => K::AddrInUse,
            Error::TooManyOpenFiles => K::OutOfMemory,
            _ => K::Other,
        }
    }
}
