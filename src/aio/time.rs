//! Timer futures: `sleep`, `sleep_until`, `timeout`, `Interval`.
//!
//! Each sleep holds one timer object of the context (`PoolFull(Timers)`
//! when the table is full) from its first poll until it is dropped;
//! dropping a sleep closes its timer, which aborts its wait.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use pinion_core::backend::{Backend, Key};
use pinion_core::{Error, Result};

use super::rendezvous::{Looked, Waiting};
use crate::context::IoContext;
use crate::owned::Owned;
use crate::time::Instant;
use crate::timer::SteadyTimer;

/// Waits until `d` has passed: `Ok(())`, or the timer's error
/// (`PoolFull(Timers)`).
pub fn sleep<B: Backend>(ctx: &IoContext<B>, d: Duration) -> Sleep<'_, B> {
    sleep_until(ctx, ctx.now() + d)
}

/// Waits until `deadline` on the context's clock.
pub fn sleep_until<B: Backend>(ctx: &IoContext<B>, deadline: Instant) -> Sleep<'_, B> {
    Sleep {
        ctx,
        deadline,
        timer: None,
        wait: None,
    }
}

/// The future of [`sleep`] / [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep<'c, B: Backend> {
    ctx: &'c IoContext<B>,
    deadline: Instant,
    timer: Option<Owned<SteadyTimer<'c, B>>>,
    wait: Option<Waiting<Result<()>>>,
}

impl<B: Backend> Unpin for Sleep<'_, B> {}

impl<'c, B: Backend> Sleep<'c, B> {
    /// The instant this sleep ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline, keeping the timer object: the next poll waits
    /// for `deadline` (a wait in progress is given up; setting the timer
    /// again aborts it).
    pub fn reset(&mut self, deadline: Instant) {
        if let Some(w) = self.wait.take() {
            w.abandon(self.ctx.sched(), NO_KEY);
        }
        self.deadline = deadline;
    }

    /// Starts the wait: opens the timer (once), sets it, and waits on it.
    fn start(&mut self, cx: &Context<'_>) -> Result<Waiting<Result<()>>> {
        let timer = match &self.timer {
            Some(t) => **t,
            None => {
                let t = SteadyTimer::new(self.ctx)?;
                self.timer = Some(Owned::new(t));
                t
            }
        };
        timer.expires_at(self.deadline)?;
        let (w, h) = Waiting::new(self.ctx.sched(), cx.waker())?;
        match timer.async_wait(move |r| h.finish(r)) {
            Ok(()) => Ok(w),
            Err(r) => {
                let e = r.error;
                // The closure came back with the handler inside: dropping
                // it marks the rendezvous DESTROYED, and the abandon then
                // frees it.
                drop(r);
                w.abandon(self.ctx.sched(), NO_KEY);
                Err(e)
            }
        }
    }
}

/// No operation to cancel by id: a timer wait is cancelled by closing
/// its timer.
const NO_KEY: Key = Key::new(u32::MAX, 0);

impl<B: Backend> Future for Sleep<'_, B> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let mut w = match this.wait.take() {
            Some(w) => w,
            None => match this.start(cx) {
                Ok(w) => w,
                Err(e) => return Poll::Ready(Err(e)),
            },
        };
        match w.look(cx.waker()) {
            Looked::Pending => {
                this.wait = Some(w);
                Poll::Pending
            }
            Looked::Ready(r) => {
                w.release(this.ctx.sched());
                Poll::Ready(r)
            }
        }
    }
}

impl<B: Backend> Drop for Sleep<'_, B> {
    fn drop(&mut self) {
        if let Some(w) = self.wait.take() {
            w.abandon(self.ctx.sched(), NO_KEY);
        }
        // Dropping the timer closes it, which aborts the wait: its handler
        // then frees the rendezvous.
        self.timer = None;
    }
}

/// Runs `future` for at most `d`: its output, or `Err(TimedOut)` (the
/// future is dropped, which cancels what it was waiting for).
pub fn timeout<B: Backend, F: Future>(
    ctx: &IoContext<B>, d: Duration, future: F,
) -> Timeout<'_, B, F> {
    Timeout {
        future,
        sleep: sleep(ctx, d),
    }
}

/// The future of [`timeout`].
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<'c, B: Backend, F> {
    future: F,
    sleep: Sleep<'c, B>,
}

impl<B: Backend, F: Future> Future for Timeout<'_, B, F> {
    type Output = Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is pinned with `self` (never moved out, and
        // `Timeout` has no `Unpin` impl of its own beyond `F: Unpin`);
        // `sleep` is `Unpin` and is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let fut = unsafe { Pin::new_unchecked(&mut this.future) };
        poll_bounded(fut, &mut this.sleep, cx)
    }
}

/// The future first, then the sleep: `TimedOut` once the sleep ends.
fn poll_bounded<B: Backend, F: Future>(
    fut: Pin<&mut F>, sleep: &mut Sleep<'_, B>, cx: &mut Context<'_>,
) -> Poll<Result<F::Output>> {
    if let Poll::Ready(v) = fut.poll(cx) {
        return Poll::Ready(Ok(v));
    }
    match Pin::new(sleep).poll(cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Err(Error::TimedOut)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// One timer object for many bounded waits: [`Deadline::timeout`] works
/// as [`timeout`] does, without opening and closing a timer per call (a
/// read loop with an idle timeout keeps one). The timer is opened at the
/// first wait and closed when the `Deadline` is dropped.
///
/// ```
/// use std::time::Duration;
/// use pinion::aio::Deadline;
/// let ctx: &'static pinion::IoContext =
///     pinion::Builder::new().tasks(2, 512).build_static().unwrap();
/// ctx.block_on(async {
///     let mut idle = Deadline::new(ctx);
///     for i in 0..3 {
///         assert_eq!(idle.timeout(Duration::from_secs(5), async { i }).await, Ok(i));
///     }
///     let never = std::future::pending::<()>();
///     let r = idle.timeout(Duration::from_millis(1), never).await;
///     assert_eq!(r, Err(pinion::Error::TimedOut));
///     assert_eq!(ctx.timers_in_use(), 1, "one timer for every wait");
/// })
/// .unwrap();
/// assert_eq!(ctx.timers_in_use(), 0);
/// ```
pub struct Deadline<'c, B: Backend> {
    sleep: Sleep<'c, B>,
}

impl<'c, B: Backend> Deadline<'c, B> {
    /// A deadline on `ctx`'s clock; no timer is opened until the first
    /// wait.
    pub fn new(ctx: &'c IoContext<B>) -> Self {
        Deadline {
            sleep: sleep_until(ctx, ctx.now()),
        }
    }

    /// Runs `future` for at most `d` from now: its output, or
    /// `Err(TimedOut)` (the future is dropped, which cancels what it was
    /// waiting for).
    pub fn timeout<F: Future>(&mut self, d: Duration, future: F) -> TimeoutIn<'_, 'c, B, F> {
        let at = self.sleep.ctx.now() + d;
        self.sleep.reset(at);
        TimeoutIn {
            future,
            sleep: &mut self.sleep,
        }
    }
}

/// The future of [`Deadline::timeout`].
#[must_use = "futures do nothing unless awaited"]
pub struct TimeoutIn<'d, 'c, B: Backend, F> {
    future: F,
    sleep: &'d mut Sleep<'c, B>,
}

impl<B: Backend, F: Future> Future for TimeoutIn<'_, '_, B, F> {
    type Output = Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is pinned with `self` (never moved out); the
        // sleep is reached through a `&mut` and is `Unpin`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let fut = unsafe { Pin::new_unchecked(&mut this.future) };
        poll_bounded(fut, this.sleep, cx)
    }
}

/// Ticks every `period`, on a fixed schedule: the n-th tick is due at
/// `start + n * period`; ticks missed while the task was busy come at
/// once, one per `tick()`.
pub struct Interval<'c, B: Backend> {
    ctx: &'c IoContext<B>,
    next: Instant,
    period: Duration,
    sleep: Option<Sleep<'c, B>>,
}

impl<'c, B: Backend> Interval<'c, B> {
    /// An interval whose first tick is due at once.
    pub fn new(ctx: &'c IoContext<B>, period: Duration) -> Self {
        Interval {
            ctx,
            next: ctx.now(),
            period,
            sleep: None,
        }
    }

    /// Waits for the next tick and returns when it was due.
    pub async fn tick(&mut self) -> Result<Instant> {
        let due = self.next;
        let sleep = self.sleep.get_or_insert_with(|| sleep_until(self.ctx, due));
        sleep.deadline = due;
        // The timer object is kept from tick to tick.
        sleep.await?;
        self.next = due + self.period;
        Ok(due)
    }
}

impl<B: Backend> Unpin for Interval<'_, B> {}
