//! The floor of async echo: the connection is a hand-written `Future`,
//! a two-state machine over pinion's task and I/O futures, with no
//! `async fn` and no composed future in between. Measured beside
//! `async_echo` (the same loop as `async fn`s, with `write_all`) and the
//! callback `echo_server`, it splits what an echoed message costs into
//! the runtime's part (task entry, waker, I/O future, completion) and
//! the part of generators and future layers (see `README.md` here).
//!
//! ```text
//! floor_async_echo [PORT] [--backend epoll|uring]
//! ```
//! Listens on 127.0.0.1:PORT (default 7000), one task per connection,
//! 16 KiB buffers from a pool made at start-up, until killed. Built to be
//! measured, not used: no graceful stop, no EMFILE back-off.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::exit;
use std::task::{Context, Poll};

use pinion::aio::{Read, Write};
use pinion::buf::{BufPool, PoolBuf};
use pinion::builder::Builder;
use pinion::context::IoContext;
use pinion::net::{TcpListener, TcpStream};
use pinion::sync::FutexMutex;
use pinion::{Backend, IoBuf, IoBufMut, Owned, Slice};

const BUF_SIZE: usize = 16 * 1024;
const MAX_CONNS: usize = 1024;
type Pool = BufPool<FutexMutex, BUF_SIZE>;
type Buf = PoolBuf<'static, FutexMutex, BUF_SIZE>;

fn main() {
    let mut port = 7000u16;
    let mut backend = String::from("epoll");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--backend" => backend = args.next().unwrap_or_default(),
            p => port = p.parse().unwrap_or_else(|_| fail(&format!("bad port {p}"))),
        }
    }
    match backend.as_str() {
        #[cfg(feature = "epoll")]
        "epoll" => serve::<pinion::epoll::Backend>(port),
        #[cfg(feature = "uring")]
        "uring" => serve::<pinion::uring::Backend>(port),
        other => fail(&format!("backend {other} not built in")),
    }
}

fn serve<B: Backend>(port: u16) {
    let ctx: &'static IoContext<B> = Builder::<B>::new()
        .ops(2 * MAX_CONNS + 64)
        .descriptors(MAX_CONNS + 16)
        .tasks(MAX_CONNS + 1, 256)
        .concurrency_hint(1)
        .build_static()
        .unwrap_or_else(|e| fail(&format!("building the context: {e}")));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(ctx, addr)
        .map(Owned::new)
        .unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    let pool: &'static Pool = Box::leak(Box::new(Pool::boxed(MAX_CONNS)));
    if ctx.spawn(accept(ctx, listener, pool)).is_err() {
        fail("no task slot for the accept loop");
    }
    eprintln!(
        "floor_async_echo: listening on {addr} ({})",
        ctx.backend_name()
    );
    ctx.run();
}

/// Spawns a [`Conn`] per connection (not on the measured path).
async fn accept<B: Backend>(
    ctx: &'static IoContext<B>, listener: Owned<TcpListener<'static, B>>, pool: &'static Pool,
) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let _ = conn.set_nodelay(true);
        if let Some(buf) = pool.alloc() {
            let _ = ctx.spawn(Conn {
                state: State::Read(conn.read(buf)),
                stream: conn,
            });
        }
    }
}

/// One connection: `Read` until bytes come, then `Write` until all went.
struct Conn<B: Backend + 'static> {
    /// Pinned with the task (`Pin::set` replaces it in place); before
    /// `stream`, so a pending operation is cancelled before the close.
    state: State<B>,
    stream: Owned<TcpStream<'static, B>>,
}

enum State<B: Backend + 'static> {
    Read(Read<'static, B, Buf>),
    Write(Write<'static, B, Slice<Buf>>),
}

impl<B: Backend> Future for Conn<B> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `state` is never moved out: it is polled in place and
        // replaced through `Pin::set`, which drops the old one where it is.
        let this = unsafe { self.get_unchecked_mut() };
        loop {
            let next = match &mut this.state {
                State::Read(f) => {
                    // SAFETY: as above.
                    let (r, buf) = std::task::ready!(unsafe { Pin::new_unchecked(f) }.poll(cx));
                    if r.is_err() {
                        return Poll::Ready(());
                    }
                    State::Write(this.stream.write(Slice::new(buf, 0)))
                }
                State::Write(f) => {
                    // SAFETY: as above.
                    let (r, mut rest) =
                        std::task::ready!(unsafe { Pin::new_unchecked(f) }.poll(cx));
                    match r {
                        Ok(n) if n > 0 => rest.consume(n),
                        _ => return Poll::Ready(()),
                    }
                    if rest.bytes_len() > 0 {
                        State::Write(this.stream.write(rest))
                    } else {
                        let mut buf = rest.into_inner();
                        buf.clear();
                        State::Read(this.stream.read(buf))
                    }
                }
            };
            // SAFETY: as above.
            unsafe { Pin::new_unchecked(&mut this.state) }.set(next);
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("floor_async_echo: {msg}");
    exit(1)
}
