//! [`SteadyTimer`]: Asio's `basic_waitable_timer` on the steady clock,
//! written once over the timer service every backend shares.

use core::time::Duration;

use pinion_core::backend::{Backend, Key};
use pinion_core::timer as service;
use pinion_core::{Rejected, Result};

use crate::context::IoContext;
use crate::time::Instant;

/// A timer object: an expiry and any number of pending waits. A `Copy`
/// handle into the context's timer table (`PoolFull(Timers)` when it is
/// full); a closed timer answers `BadDescriptor`.
///
/// ```
/// use std::time::Duration;
/// let ctx: &'static pinion::IoContext = pinion::Builder::new().build_static().unwrap();
/// let t = pinion::SteadyTimer::new(ctx).unwrap();
/// t.expires_after(Duration::from_millis(1)).unwrap();
/// t.async_wait(move |r| {
///     assert!(r.is_ok());
///     t.close().unwrap();
/// })
/// .unwrap();
/// ctx.run();
/// ```
pub struct SteadyTimer<'c, B: Backend> {
    ctx: &'c IoContext<B>,
    key: Key,
}

impl<B: Backend> Clone for SteadyTimer<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for SteadyTimer<'_, B> {}

impl<B: Backend> core::fmt::Debug for SteadyTimer<'_, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("SteadyTimer").field(&self.key).finish()
    }
}

impl<'c, B: Backend> SteadyTimer<'c, B> {
    /// A timer with no wait pending; its expiry is in the past until set.
    pub fn new(ctx: &'c IoContext<B>) -> Result<Self> {
        let key = service::open(ctx.sched())?;
        Ok(SteadyTimer { ctx, key })
    }

    /// Sets the expiry to `d` from now. Pending waits complete with
    /// `OperationAborted`; returns how many there were.
    pub fn expires_after(&self, d: Duration) -> Result<usize> {
        self.expires_at(self.ctx.now() + d)
    }

    /// Sets the expiry to `deadline` on the context's clock
    /// ([`IoContext::now`]). Pending waits complete with
    /// `OperationAborted`; returns how many there were.
    pub fn expires_at(&self, deadline: Instant) -> Result<usize> {
        service::reset(self.ctx.sched(), self.key, Some(deadline.as_nanos()), false)
    }

    /// The expiry.
    pub fn expiry(&self) -> Result<Instant> {
        let ns = self.ctx.sched().task().timers().expiry(self.key)?;
        Ok(Instant::from_nanos(ns))
    }

    /// Waits for the expiry: `Ok(())` once it has passed (at once, from
    /// `run()`, if it already has), `OperationAborted` when cancelled or
    /// reset first.
    pub fn async_wait<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<()>) + Send + 'static,
    {
        service::async_wait(self.ctx.sched(), self.key, handler)
    }

    /// Cancels every pending wait; returns how many.
    pub fn cancel(&self) -> Result<usize> {
        service::reset(self.ctx.sched(), self.key, None, false)
    }

    /// Cancels pending waits and frees the timer object.
    pub fn close(&self) -> Result<()> {
        service::reset(self.ctx.sched(), self.key, None, true).map(drop)
    }

    /// The context this timer belongs to.
    pub fn context(&self) -> &'c IoContext<B> {
        self.ctx
    }
}
