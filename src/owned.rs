//! [`Owned`]: a handle that closes its object when dropped.

use core::ops::Deref;

use pinion_core::backend::Backend;
use pinion_core::Result;

use crate::net::{DatagramSocket, Family, Listener, StreamSocket};
use crate::timer::SteadyTimer;

/// An object that can be closed through a handle.
pub trait Close {
    /// Closes the object; `BadDescriptor` if it already was.
    fn close(&self) -> Result<()>;
}

impl<B: Backend, P: Family> Close for Listener<'_, B, P> {
    fn close(&self) -> Result<()> {
        Listener::close(self)
    }
}
impl<B: Backend, P: Family> Close for StreamSocket<'_, B, P> {
    fn close(&self) -> Result<()> {
        StreamSocket::close(self)
    }
}
impl<B: Backend, P: Family> Close for DatagramSocket<'_, B, P> {
    fn close(&self) -> Result<()> {
        DatagramSocket::close(self)
    }
}
impl<B: Backend> Close for SteadyTimer<'_, B> {
    fn close(&self) -> Result<()> {
        SteadyTimer::close(self)
    }
}

/// The owning form of a handle: closes the object when dropped (RAII), so
/// a forgotten `close` leaks nothing. Derefs to the handle, whose copies
/// (in handlers, say) stay valid until then and go stale after.
///
/// ```
/// let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
/// let l = pinion::Owned::new(pinion::TcpListener::bind(ctx, "127.0.0.1:0".parse().unwrap()).unwrap());
/// let copy = *l;
/// assert!(copy.local_addr().is_ok());
/// drop(l);
/// assert_eq!(copy.local_addr(), Err(pinion::Error::BadDescriptor));
/// ```
#[derive(Debug)]
pub struct Owned<T: Close> {
    handle: Option<T>,
}

impl<T: Close> Owned<T> {
    /// Takes ownership of `handle`'s object.
    pub fn new(handle: T) -> Self {
        Owned {
            handle: Some(handle),
        }
    }

    /// Gives the handle back without closing the object.
    pub fn release(mut self) -> T {
        self.handle
            .take()
            .expect("an Owned holds its handle until dropped")
    }
}

impl<T: Close> Deref for Owned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.handle
            .as_ref()
            .expect("an Owned holds its handle until dropped")
    }
}

impl<T: Close> Drop for Owned<T> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            // Closed through a copy already: nothing left to do.
            let _ = h.close();
        }
    }
}
