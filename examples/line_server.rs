//! Line echo on `read_until`, with an idle timeout per connection.
//!
//! ```text
//! line_server [PORT] [--bind ADDR] [--idle-ms MS] [--max-conns N]
//! ```
//! PORT defaults to 7001, ADDR to 127.0.0.1, the idle timeout to 30 s.
//!
//! Each connection reads lines with `async_read_until(.., b"\n", ..)` into
//! a 4 KiB pool buffer, writes each line back, and keeps the bytes after
//! the line for the next one. A `SteadyTimer` per connection is re-armed
//! on every line; when it expires the connection is closed (its pending
//! read then completes with `OperationAborted`). A line longer than the
//! buffer (`NotFound`) or the end of the stream also closes it. A failing
//! accept (EMFILE) is retried every 50 ms and logged once per run of
//! failures; SIGTERM and SIGINT stop the server gracefully (`shared/stop.rs`:
//! the listener closes, open connections get up to 5 s to end). Built
//! against the facade, so it runs on either backend.

#[path = "shared/backoff.rs"]
mod backoff;
#[path = "shared/stop.rs"]
mod stop;

use std::net::{IpAddr, SocketAddr};
use std::process::exit;
use std::time::Duration;

use backoff::AcceptBackoff;
use pinion::buf::{BufPool, PoolBuf};
use pinion::compose::{async_read_until, async_write};
use pinion::sync::FutexMutex;
use pinion::{
    Builder, DefaultBackend, Error, IoBuf, IoContext, SteadyTimer, TcpListener, TcpStream,
};

const LINE_MAX: usize = 4096;
type Pool = BufPool<FutexMutex, LINE_MAX>;
type Buf = PoolBuf<'static, FutexMutex, LINE_MAX>;

struct Server {
    ctx: &'static IoContext,
    listener: TcpListener<'static>,
    pool: Pool,
    idle: Duration,
    /// Retries a failing accept (EMFILE) after a pause, logged once.
    backoff: AcceptBackoff,
    /// Counts connections for the graceful stop.
    drain: &'static stop::Drain<DefaultBackend>,
}

/// One connection: the socket and its idle timer.
#[derive(Clone, Copy)]
struct Conn {
    sock: TcpStream<'static>,
    idle: SteadyTimer<'static>,
    drain: &'static stop::Drain<DefaultBackend>,
}

impl Conn {
    /// Closes the socket (aborting its read) and releases the timer; the
    /// connection is counted off for the graceful stop.
    fn close(self) {
        let _ = self.sock.close();
        // Only this closes the timer, once, however many paths get here
        // (the idle timer closes the socket alone).
        if self.idle.close().is_ok() {
            self.drain.closed();
        }
    }
}

fn main() {
    stop::block_stop_signals("line_server");
    let (port, bind, idle_ms, max_conns) = parse_args();
    let ctx: &'static IoContext = Builder::new()
        .ops(4 * max_conns + 16)
        .descriptors(max_conns + 4)
        .timers(max_conns + 4)
        .build_static()
        .unwrap_or_else(|e| fail(&format!("building the context: {e}")));
    let addr = SocketAddr::new(bind, port);
    let listener =
        TcpListener::bind(ctx, addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    let drain = stop::Drain::install(ctx, "line_server", stop::DEFAULT_GRACE, move || {
        let _ = listener.close();
    });
    let server: &'static Server = Box::leak(Box::new(Server {
        ctx,
        listener,
        pool: Pool::boxed(max_conns),
        idle: Duration::from_millis(idle_ms),
        backoff: AcceptBackoff::new(ctx, "line_server"),
        drain,
    }));
    accept(server);
    // The bound address: with port 0 the kernel chose the port.
    let bound = server.listener.local_addr().unwrap_or(addr);
    eprintln!("line_server: listening on {bound}, idle timeout {idle_ms} ms");
    ctx.run();
    stop::shut_down(ctx, "line_server");
    eprintln!("line_server: stopped");
}

fn accept(s: &'static Server) {
    let started = s.listener.async_accept(move |r| match r {
        Ok((sock, _)) => {
            s.backoff.succeeded();
            start(s, sock);
            accept(s);
        }
        Err(Error::OperationAborted) => {} // closing down
        Err(e) => s.backoff.retry_later(e, move || accept(s)),
    });
    if let Err(r) = started {
        s.backoff.retry_later(r.error, move || accept(s));
    }
}

fn start(s: &'static Server, sock: TcpStream<'static>) {
    let _ = sock.set_nodelay(true);
    // The buffer first: a timer is opened only for a connection that has
    // one, so a refusal leaves nothing open.
    let Some(buf) = s.pool.alloc() else {
        eprintln!("line_server: at capacity, refusing a connection");
        let _ = sock.close();
        return;
    };
    let Ok(idle) = SteadyTimer::new(s.ctx) else {
        eprintln!("line_server: no timer free, refusing a connection");
        drop(buf);
        let _ = sock.close();
        return;
    };
    s.drain.opened();
    let conn = Conn {
        sock,
        idle,
        drain: s.drain,
    };
    arm_idle(s, conn);
    read_line(s, conn, buf);
}

/// (Re)starts the idle timeout; a wait it replaces completes with
/// `OperationAborted` and does nothing.
fn arm_idle(s: &'static Server, conn: Conn) {
    let armed = conn.idle.expires_after(s.idle).is_ok()
        && conn
            .idle
            .async_wait(move |r| {
                if r.is_ok() {
                    let _ = conn.sock.close(); // the pending read ends, and closes the rest
                }
            })
            .is_ok();
    if !armed {
        conn.close();
    }
}

fn read_line(s: &'static Server, conn: Conn, buf: Buf) {
    let started = async_read_until(&conn.sock, buf, b"\n", move |r, buf| match r {
        Ok(n) => {
            arm_idle(s, conn);
            write_line(s, conn, Line { buf, n });
        }
        // End of stream, reset, line too long (NotFound), or closed by the
        // idle timer (OperationAborted): done.
        Err(_) => conn.close(),
    });
    if started.is_err() {
        conn.close();
    }
}

fn write_line(s: &'static Server, conn: Conn, line: Line) {
    let started = async_write(&conn.sock, line, move |r, line| match r {
        Ok(_) => read_line(s, conn, line.consume()),
        Err(_) => conn.close(),
    });
    if started.is_err() {
        conn.close();
    }
}

/// The first `n` bytes of a buffer (one line): what `async_write` sends.
struct Line {
    buf: Buf,
    n: usize,
}

impl Line {
    /// The buffer with the line removed and the bytes after it moved to
    /// the front, for the next `read_until`.
    fn consume(self) -> Buf {
        let Line { mut buf, n } = self;
        let len = buf.bytes_len();
        buf.as_mut_full().copy_within(n..len, 0);
        buf.set_len(len - n);
        buf
    }
}

// SAFETY: a prefix of the pool buffer's initialised bytes (`n` never
// exceeds its length), which stay in place while the value moves.
unsafe impl IoBuf for Line {
    fn read_ptr(&self) -> *const u8 {
        self.buf.read_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.n.min(self.buf.bytes_len())
    }
}

fn parse_args() -> (u16, IpAddr, u64, usize) {
    let (mut port, mut bind, mut idle_ms, mut max_conns) =
        (7001, IpAddr::from([127, 0, 0, 1]), 30_000, 1024);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| fail(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--bind" => {
                bind = value("--bind")
                    .parse()
                    .unwrap_or_else(|_| fail("bad --bind"))
            }
            "--idle-ms" => {
                idle_ms = value("--idle-ms")
                    .parse()
                    .unwrap_or_else(|_| fail("bad --idle-ms"))
            }
            "--max-conns" => {
                max_conns = value("--max-conns")
                    .parse()
                    .unwrap_or_else(|_| fail("bad --max-conns"))
            }
            p if !p.starts_with('-') => port = p.parse().unwrap_or_else(|_| fail("bad PORT")),
            _ => fail("usage: line_server [PORT] [--bind ADDR] [--idle-ms MS] [--max-conns N]"),
        }
    }
    (port, bind, idle_ms, max_conns.max(1))
}

fn fail(msg: &str) -> ! {
    eprintln!("line_server: {msg}");
    exit(2)
}
