//! Shared by the server examples: stopping on SIGTERM and SIGINT through a
//! `SignalSet`, the same way on either backend, with no signal handler,
//! and draining the connections gracefully ([`Drain`]).

// Each example uses a different part.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pinion::backend::Backend;
use pinion::context::IoContext;
use pinion::signal::{self, SignalSet};
use pinion::timer::SteadyTimer;

/// Blocks SIGTERM and SIGINT in this thread. Call it first thing in
/// `main`: threads spawned later inherit the mask, so the kernel queues
/// the signals for the set instead of terminating the process.
pub fn block_stop_signals(name: &str) {
    if let Err(e) = signal::block(&[libc::SIGTERM, libc::SIGINT]) {
        eprintln!("{name}: blocking SIGTERM/SIGINT: {e}");
        std::process::exit(1);
    }
}

/// Runs `on_stop` once, from `ctx`'s `run()`, when SIGTERM or SIGINT
/// arrives (logged). The pending wait counts as work, as the server's
/// own accept does.
pub fn on_stop_signal<B: Backend>(
    ctx: &'static IoContext<B>, name: &'static str, on_stop: impl FnOnce() + Send + 'static,
) {
    let set = SignalSet::new(ctx)
        .and_then(|s| s.add(libc::SIGTERM).and(s.add(libc::SIGINT)).map(|()| s))
        .unwrap_or_else(|e| {
            eprintln!("{name}: cannot wait for SIGTERM/SIGINT: {e}");
            std::process::exit(1)
        });
    let waiting = set.async_wait(move |r| {
        if let Ok(sig) = r {
            eprintln!("{name}: signal {sig} received, stopping");
            on_stop();
        }
    });
    if let Err(r) = waiting {
        eprintln!("{name}: cannot wait for SIGTERM/SIGINT: {}", r.error);
        std::process::exit(1);
    }
}

/// A server's graceful stop, the same in every example: on SIGTERM or
/// SIGINT the listener is closed at once (new connections are refused and
/// the port is free for a successor), the connections already open are
/// served until they end, and the context stops when the last one has
/// closed or after the grace time, whichever comes first. `main` then
/// shuts the context down ([`shut_down`]: whatever is still open closes,
/// pending handlers are destroyed) and returns, and the process exits 0.
///
/// A server counts its connections with [`opened`](Self::opened) and
/// [`closed`](Self::closed).
pub struct Drain<B: Backend> {
    ctx: &'static IoContext<B>,
    name: &'static str,
    stopping: AtomicBool,
    live: AtomicUsize,
}

impl<B: Backend> Drain<B> {
    /// Installs the stop on SIGTERM/SIGINT (see [`on_stop_signal`]):
    /// `close_listener` runs first, then the drain waits at most `grace`.
    pub fn install(
        ctx: &'static IoContext<B>, name: &'static str, grace: Duration,
        close_listener: impl FnOnce() + Send + 'static,
    ) -> &'static Drain<B> {
        let d: &'static Drain<B> = Box::leak(Box::new(Drain {
            ctx,
            name,
            stopping: AtomicBool::new(false),
            live: AtomicUsize::new(0),
        }));
        on_stop_signal(ctx, name, move || d.begin(grace, close_listener));
        d
    }

    fn begin(&'static self, grace: Duration, close_listener: impl FnOnce()) {
        self.stopping.store(true, Ordering::SeqCst);
        close_listener();
        let live = self.live.load(Ordering::SeqCst);
        if live == 0 {
            return self.ctx.stop();
        }
        eprintln!(
            "{}: listener closed; {live} connection(s) to finish, at most {} ms",
            self.name,
            grace.as_millis()
        );
        // The grace time: past it, the context stops with whatever is
        // still open (`shut_down` then closes those sockets).
        let ctx = self.ctx;
        let armed = SteadyTimer::new(ctx).and_then(|t| {
            t.expires_after(grace)?;
            t.async_wait(move |_| ctx.stop()).map_err(|r| r.error)
        });
        if let Err(e) = armed {
            eprintln!("{}: no grace timer ({e}); stopping now", self.name);
            ctx.stop();
        }
    }

    /// A connection was accepted.
    pub fn opened(&self) {
        self.live.fetch_add(1, Ordering::SeqCst);
    }

    /// A connection ended; the last one to end during a stop stops the
    /// context.
    pub fn closed(&self) {
        let left = self.live.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && self.stopping.load(Ordering::SeqCst) {
            self.ctx.stop();
        }
    }

    /// `true` once a stop signal has arrived.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// The last step of a stop, once `run()` has returned on every thread:
/// the context's shutdown destroys the handlers still pending (those of
/// connections past the grace time) and closes every descriptor, the
/// listener's registered file on io_uring included, so the port is free
/// the moment this returns, not when the process is gone.
pub fn shut_down<B: Backend>(ctx: &'static IoContext<B>, name: &str) {
    if let Err(e) = ctx.shutdown() {
        eprintln!("{name}: shutting the context down: {e}");
        std::process::exit(1);
    }
}

/// The grace time of `--grace-ms` (default 5 s).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// A future that completes once SIGTERM or SIGINT has arrived (through
/// [`on_stop_signal`]), for programs written as one `block_on`.
pub fn stop_signal<B: Backend>(
    ctx: &'static IoContext<B>, name: &'static str,
) -> impl std::future::Future<Output = ()> {
    use std::sync::Mutex;
    use std::task::{Poll, Waker};
    struct Flag {
        up: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }
    let flag: &'static Flag = Box::leak(Box::new(Flag {
        up: AtomicBool::new(false),
        waker: Mutex::new(None),
    }));
    on_stop_signal(ctx, name, move || {
        flag.up.store(true, Ordering::SeqCst);
        if let Some(w) = flag.waker.lock().unwrap().take() {
            w.wake();
        }
    });
    std::future::poll_fn(move |cx| {
        // The waker is stored before the flag is read again, so a signal
        // in between is not missed.
        *flag.waker.lock().unwrap() = Some(cx.waker().clone());
        if flag.up.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}
