//! What only Unix-domain sockets have: binding to a path or an abstract
//! name, connecting (at once: there is no handshake), `socketpair`, and
//! the peer's credentials (`SO_PEERCRED`). Everything else is the generic
//! [`StreamSocket`](super::StreamSocket) /
//! [`DatagramSocket`](super::DatagramSocket) code TCP and UDP use.
//!
//! A filesystem path must not exist when it is bound (`AddrInUse`): a
//! server removes a stale socket file first, and removes its own at exit.
//! An abstract name (`UnixAddr::abstract_name`) has no file and goes away
//! with its last socket.

use pinion_core::backend::{At, Backend, DescKind, Key, Readiness};
use pinion_core::compose::post_value;
use pinion_core::{Error, Rejected, Result};
use pinion_sys::socket::{self as sys, PeerCred};
use pinion_sys::Fd;

use super::{UnixAddr, UnixDatagram, UnixListener, UnixStream, DEFAULT_BACKLOG};
use crate::context::IoContext;
use crate::handler::Connected;
use crate::owned::Owned;

/// A Unix socket of type `ty`, blocking or not as the backend wants it.
fn unix_socket<B: Backend>(ty: i32) -> Result<Fd> {
    Ok(sys::socket(libc::AF_UNIX, ty, !B::BLOCKING_SOCKETS)?)
}

/// Registers both ends of a pair, or neither.
fn register_pair<B: Backend>(
    ctx: &IoContext<B>, (a, b): (Fd, Fd), kind: DescKind,
) -> Result<(Key, Key)> {
    let sched = ctx.sched();
    let ka = crate::context::register::<B>(sched, a, kind)?;
    match crate::context::register::<B>(sched, b, kind) {
        Ok(kb) => Ok((ka, kb)),
        Err(e) => {
            let _ = B::close(At { sched, key: ka });
            Err(e)
        }
    }
}

/// A socket of type `ty` bound to `addr`, set up by `then`, registered.
/// A path bound here is unlinked again if a later step fails, so a
/// failed bind leaves no file behind.
fn bind_unix<B: Backend>(
    ctx: &IoContext<B>, addr: &UnixAddr, ty: i32, then: impl FnOnce(i32) -> Result<()>,
) -> Result<Key> {
    let fd = unix_socket::<B>(ty)?;
    sys::bind_to(fd.raw(), addr)?;
    let kind = if ty == libc::SOCK_STREAM {
        DescKind::Listener
    } else {
        DescKind::Datagram
    };
    then(fd.raw())
        .and_then(|()| crate::context::register::<B>(ctx.sched(), fd, kind))
        .inspect_err(|_| {
            let _ = addr.unlink();
        })
}

/// Connects a new Unix stream socket to `addr`: the registered key, or
/// why not (the socket is closed then). Non-blocking for the call, so a
/// full backlog is `WouldBlock` on every backend instead of a wait.
fn connect_now<B: Backend>(ctx: &IoContext<B>, addr: &UnixAddr) -> Result<Key> {
    let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, true)?;
    sys::connect_to(fd.raw(), addr)?;
    sys::set_nonblocking(fd.raw(), !B::BLOCKING_SOCKETS)?;
    crate::context::register::<B>(ctx.sched(), fd, DescKind::Stream)
}

impl<'c, B: Backend> UnixListener<'c, B> {
    /// A listener on `addr` (backlog [`DEFAULT_BACKLOG`]). A path that
    /// exists already is `AddrInUse`; one in a missing directory
    /// `Os(ENOENT)`.
    ///
    /// ```
    /// # #[cfg(not(miri))] {
    /// use pinion::net::UnixAddr;
    /// let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
    /// let name = format!("pinion-doc-{}", std::process::id());
    /// let at = UnixAddr::abstract_name(name.as_bytes()).unwrap();
    /// let l = pinion::UnixListener::bind(ctx, &at).unwrap();
    /// l.async_accept(move |r| {
    ///     let (s, _peer) = r.unwrap();
    ///     let me = s.peer_cred().unwrap();
    ///     assert_eq!(me.pid as u32, std::process::id());
    ///     pinion::compose::async_write(&s, &b"hi"[..], move |r, _| {
    ///         assert_eq!(r, Ok(2));
    ///         s.close().unwrap();
    ///     })
    ///     .unwrap();
    ///     l.close().unwrap();
    /// })
    /// .unwrap();
    /// use std::os::linux::net::SocketAddrExt;
    /// let std_at = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    /// let client = std::os::unix::net::UnixStream::connect_addr(&std_at);
    /// ctx.run();
    /// let mut got = String::new();
    /// std::io::Read::read_to_string(&mut client.unwrap(), &mut got).unwrap();
    /// assert_eq!(got, "hi");
    /// # }
    /// ```
    pub fn bind(ctx: &'c IoContext<B>, addr: &UnixAddr) -> Result<Self> {
        Self::bind_with_backlog(ctx, addr, DEFAULT_BACKLOG)
    }

    /// A listener on `addr` with the given listen backlog.
    pub fn bind_with_backlog(ctx: &'c IoContext<B>, addr: &UnixAddr, backlog: i32) -> Result<Self> {
        let key = bind_unix(ctx, addr, libc::SOCK_STREAM, |fd| {
            Ok(sys::listen(fd, backlog)?)
        })?;
        Ok(Self::from_key(ctx, key))
    }
}

impl<'c, B: Backend> UnixStream<'c, B> {
    /// Connects to the listener at `addr`. A Unix connect has no
    /// handshake: it is done (or refused) in this call, and the handler
    /// gets the stream, or the error, from `run()`: `Os(ENOENT)` for a
    /// path nobody bound, `ConnectionRefused` for one nobody listens on,
    /// `WouldBlock` when the listener's backlog is full.
    pub fn async_connect<F>(
        ctx: &'c IoContext<B>, addr: &UnixAddr, handler: F,
    ) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<UnixStream<'c, B>>) + Send + 'static,
    {
        let sched = ctx.sched();
        let key = match connect_now(ctx, addr) {
            Ok(key) => key,
            Err(e) => {
                fn fail<T, F: FnOnce(Result<T>)>((f, e): (F, Error)) {
                    f(Err(e))
                }
                return post_value(sched, (handler, e), fail::<UnixStream<'c, B>, F>)
                    .map_err(|r| r.map(|(f, _)| f));
            }
        };
        // Connected already: the handler runs once the socket reports
        // writable, which it is, through the same queue as every other
        // completion.
        let h = Connected::new(handler, key);
        B::wait(At { sched, key }, Readiness::Writable, h).map_err(|r| {
            let _ = B::close(At { sched, key });
            r.map(Connected::into_inner)
        })
    }

    /// Connects to the listener at `addr`, in this call (see
    /// [`async_connect`](Self::async_connect)): the stream, closed when
    /// dropped, or the error.
    pub fn connect(ctx: &'c IoContext<B>, addr: &UnixAddr) -> Result<Owned<UnixStream<'c, B>>> {
        let key = connect_now(ctx, addr)?;
        Ok(Owned::new(UnixStream::from_key(ctx, key)))
    }

    /// Two connected streams (`socketpair`), each in a descriptor slot.
    pub fn pair(ctx: &'c IoContext<B>) -> Result<(Self, Self)> {
        let fds = sys::socketpair(libc::SOCK_STREAM, !B::BLOCKING_SOCKETS)?;
        let (a, b) = register_pair(ctx, fds, DescKind::Stream)?;
        Ok((Self::from_key(ctx, a), Self::from_key(ctx, b)))
    }

    /// The peer process's pid, uid and gid (`SO_PEERCRED`), as they were
    /// when it connected: what a control socket checks before it obeys.
    pub fn peer_cred(&self) -> Result<PeerCred> {
        self.with_fd(|fd| Ok(sys::peer_cred(fd)?))
    }
}

impl<'c, B: Backend> UnixDatagram<'c, B> {
    /// A datagram socket bound to `addr`, which receives what is sent
    /// there.
    pub fn bind(ctx: &'c IoContext<B>, addr: &UnixAddr) -> Result<Self> {
        let key = bind_unix(ctx, addr, libc::SOCK_DGRAM, |_| Ok(()))?;
        Ok(Self::from_key(ctx, key))
    }

    /// A socket bound to nothing: it can send, and receive only replies
    /// to a [`connect`](Self::connect)ed peer (it has no name to be sent
    /// to).
    pub fn unbound(ctx: &'c IoContext<B>) -> Result<Self> {
        let fd = unix_socket::<B>(libc::SOCK_DGRAM)?;
        let key = crate::context::register::<B>(ctx.sched(), fd, DescKind::Datagram)?;
        Ok(Self::from_key(ctx, key))
    }

    /// Two connected datagram sockets (`socketpair`).
    pub fn pair(ctx: &'c IoContext<B>) -> Result<(Self, Self)> {
        let fds = sys::socketpair(libc::SOCK_DGRAM, !B::BLOCKING_SOCKETS)?;
        let (a, b) = register_pair(ctx, fds, DescKind::Datagram)?;
        Ok((Self::from_key(ctx, a), Self::from_key(ctx, b)))
    }

    /// The peer process's credentials (`SO_PEERCRED`) for a connected
    /// socket or a pair.
    pub fn peer_cred(&self) -> Result<PeerCred> {
        self.with_fd(|fd| Ok(sys::peer_cred(fd)?))
    }
}
