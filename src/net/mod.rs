//! Sockets, written once over the backend contract: [`TcpListener`],
//! [`TcpStream`], [`UdpSocket`].
//!
//! Every type here is a `Copy` handle `(context, key)` into the context's
//! descriptor table. A handle is stale once its socket is closed: every
//! call on it answers [`Error::BadDescriptor`]
//! (an initiating call hands handler and buffer back), under every
//! interleaving with a close on another thread. An operation started on a
//! handle runs on the socket the handle named, or is refused, or is
//! aborted by the close; it never reaches the socket that reuses the slot.

use core::net::SocketAddr;

use pinion_core::backend::{Backend, Fd};
use pinion_core::{Error, Rejected, Result};
use pinion_sys::addr::family;
use pinion_sys::socket;

mod inherit;
mod opts;
mod tcp;
mod udp;

#[cfg(feature = "std")]
pub use inherit::listen_fds;
pub use inherit::{listen_fds_from, LISTEN_FDS_START};
pub use opts::{BindOptions, KeepAlive};

pub use pinion_sys::socket::Shutdown;
pub use tcp::{TcpListener, TcpStream, DEFAULT_BACKLOG};
pub use udp::UdpSocket;

/// A socket for `addr`'s family and type `ty`, blocking or not as the
/// backend wants it.
pub(crate) fn open_socket<B: Backend>(addr: &SocketAddr, ty: i32) -> Result<Fd> {
    Ok(socket::socket(family(addr), ty, !B::BLOCKING_SOCKETS)?)
}

/// A refusal handing `value` back.
#[cold]
fn refuse<T>(error: Error, value: T) -> Rejected<T> {
    Rejected {
        error,
        handler: value,
    }
}
