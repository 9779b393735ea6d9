//! Helpers written against the backend alias `b` (`super::b`): an owned
//! context usable as `'static`, a bounded run loop, listeners, echo.
#![allow(dead_code)] // each binary uses a different subset

use super::b;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pinion::compose::async_write;
use pinion::IoBufMut;

use crate::util::{self, FixedBuf};

/// An owned context that tests may treat as `'static` while it lives:
/// handlers must be `'static` and capture `TcpStream<'static>` handles.
/// Dropping it drops the context (closing everything, destroying pending
/// handlers); tests join their threads before that.
pub(crate) struct Ctx {
    ptr: *mut b::IoContext,
    /// Under `PINION_FAULT_SEED`: the schedule armed for this test, audited
    /// when the context drops (`util::faults`).
    #[cfg(feature = "fault-injection")]
    armed: Option<util::faults::Armed>,
}

impl Ctx {
    pub(crate) fn new() -> Ctx {
        Ctx::with(Ctx::builder())
    }

    /// The builder most tests use.
    pub(crate) fn builder() -> b::Builder {
        b::Builder::new().ops(4096).descriptors(1200).timers(1200)
    }

    pub(crate) fn with(builder: b::Builder) -> Ctx {
        Ctx::try_with(builder).expect("build the context")
    }

    /// [`with`](Self::with), or `None` after saying why the test is
    /// skipped where the backend cannot run at all: a kernel without
    /// io_uring, one that forbids it (`kernel.io_uring_disabled`,
    /// seccomp), or an emulator that passes no io_uring syscall through
    /// (qemu-user answers `ENOSYS`). Said on the process's stderr, past
    /// the test harness's capture, so a run without `--nocapture` shows
    /// it too. Any other build error fails the test. Tests use it through
    /// [`ctx_or_skip!`].
    pub(crate) fn try_with(builder: b::Builder) -> Option<Ctx> {
        #[cfg(feature = "fault-injection")]
        let armed = util::faults::arm();
        match builder.build() {
            Ok(ctx) => Some(Ctx {
                ptr: Box::into_raw(Box::new(ctx)),
                #[cfg(feature = "fault-injection")]
                armed,
            }),
            Err(
                e @ (pinion::BuildError::NotSupported
                | pinion::BuildError::Disabled(_)
                | pinion::BuildError::PermissionDenied
                | pinion::BuildError::KernelTooOld(_)),
            ) => {
                use std::io::Write;
                let test = std::thread::current();
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {}: {e}",
                    test.name().unwrap_or("a conformance test")
                );
                None
            }
            Err(e) => panic!("build the context: {e}"),
        }
    }

    /// The context, as `'static` (valid until this `Ctx` drops).
    pub(crate) fn get(&self) -> &'static b::IoContext {
        // SAFETY: the box lives until `drop`, and tests use no handle or
        // handler of it after dropping the `Ctx`.
        unsafe { &*self.ptr }
    }
}

impl Deref for Ctx {
    type Target = b::IoContext;
    fn deref(&self) -> &b::IoContext {
        self.get()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: made by Box::into_raw in `with`, dropped once.
        let ctx = unsafe { Box::from_raw(self.ptr) };
        #[cfg(feature = "fault-injection")]
        if let Some(armed) = self.armed.take() {
            return util::faults::audit(armed, ctx);
        }
        drop(ctx);
    }
}

// SAFETY: the context is Sync (the spec requires it); the pointer is only
// a way to drop it at the end.
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

/// Runs the context until `done()` holds; fails the test after the
/// watchdog. Restarts the context when it ran out of work.
pub(crate) fn run_until(ctx: &b::IoContext, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < util::WATCHDOG,
            "watchdog: {what} did not happen"
        );
        ctx.restart();
        if ctx.run_for(std::time::Duration::from_millis(50)) == 0 && ctx.outstanding_work() == 0 {
            // Waiting on a std peer thread: let it run.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// A listener on loopback, with its address.
pub(crate) fn listen(ctx: &'static b::IoContext) -> (b::TcpListener<'static>, SocketAddr) {
    let l = b::TcpListener::bind(ctx, util::any_port()).expect("bind");
    let addr = l.local_addr().expect("local_addr");
    (l, addr)
}

/// Accepts one connection by running the context; returns the stream.
pub(crate) fn accept_one(
    ctx: &'static b::IoContext, l: b::TcpListener<'static>,
) -> b::TcpStream<'static> {
    let got = Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    l.async_accept(move |r| *g.lock().unwrap() = Some(r.expect("accept").0))
        .map_err(|r| r.error)
        .unwrap();
    run_until(ctx, "accept", || got.lock().unwrap().is_some());
    let s = got.lock().unwrap().take().unwrap();
    s
}

/// A pinion client and the server side of its connection.
pub(crate) fn connected_pair(
    ctx: &'static b::IoContext,
) -> (b::TcpStream<'static>, b::TcpStream<'static>) {
    let (l, addr) = listen(ctx);
    let client = Arc::new(std::sync::Mutex::new(None));
    let c = client.clone();
    b::TcpStream::async_connect(ctx, addr, move |r| {
        *c.lock().unwrap() = Some(r.expect("connect"))
    })
    .map_err(|r| r.error)
    .unwrap();
    let server = accept_one(ctx, l);
    run_until(ctx, "connect", || client.lock().unwrap().is_some());
    l.close().unwrap();
    let c = client.lock().unwrap().take().unwrap();
    (c, server)
}

/// Echoes everything read on `s` (read_some, then write all, then read
/// again) until the peer closes; then closes `s` and bumps `closed`.
pub(crate) fn echo(s: b::TcpStream<'static>, mut buf: FixedBuf, closed: Arc<AtomicUsize>) {
    buf.clear();
    let c = closed.clone();
    let r = s.async_read_some(buf, move |r, buf| match r {
        Ok(_) => {
            let c2 = c.clone();
            async_write(&s, buf, move |r, buf| match r {
                Ok(_) => echo(s, buf, c2),
                Err(_) => {
                    let _ = s.close();
                    c2.fetch_add(1, Ordering::SeqCst);
                }
            })
            .map_err(|r| r.error)
            .expect("start write");
        }
        Err(_) => {
            let _ = s.close();
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    r.map_err(|r| r.error).expect("start read");
}

/// Accepts `n` connections and echoes on each (buffers of `size` bytes).
pub(crate) fn serve_echo(
    l: b::TcpListener<'static>, n: usize, size: usize, closed: Arc<AtomicUsize>,
) {
    if n == 0 {
        return;
    }
    l.async_accept(move |r| {
        let (s, _) = r.expect("accept");
        echo(s, FixedBuf::new(size), closed.clone());
        serve_echo(l, n - 1, size, closed);
    })
    .map_err(|r| r.error)
    .unwrap();
}
