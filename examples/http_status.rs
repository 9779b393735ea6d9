//! An HTTP/1.1 keep-alive server: `GET /status` answers 200 and a JSON
//! document of the context's counters; other paths are 404.
//!
//! ```text
//! http_status [PORT] [--bind ADDR] [--max-conns N] [--idle-ms MS] [--threads N] [--backend epoll|uring]
//! ```
//! Defaults: port 8080 (0: the kernel picks), 127.0.0.1, 1024
//! connections, 5000 ms, 1 thread, epoll (`uring` needs the `uring`
//! feature). Once bound it prints `http_status: listening on ADDR`.
//!
//! One task per connection, with a request and a response buffer from
//! pools made at start-up (nothing is allocated per request); without a
//! free buffer or task slot a connection gets a best-effort 503 and a
//! close, logged once per run of refusals. Heads are parsed with
//! `httparse` as bytes arrive: over 8 KiB is 431, unparsable (or HTTP/1.1
//! without `Host`) 400, both closing. Pipelined requests are answered in
//! order, in one write. `Connection: close`, or HTTP/1.0 without
//! `keep-alive`, closes after the response. `Content-Length` bodies are
//! read and discarded; `Transfer-Encoding` (chunked) is not decoded: 400
//! and close. HEAD is GET without the body; other methods are 405.
//!
//! A head must arrive within `--idle-ms` of the last response (or the
//! accept): idle clients and clients that trickle a head are closed; each
//! body read and each write may take `--idle-ms`. Closing, the server
//! half-closes and drains the client for up to a second, so the client
//! reads the last response rather than a reset. SIGTERM and SIGINT stop
//! the server gracefully, as the other servers do (`shared/stop.rs`): the
//! listener closes at once, open connections are served until they end
//! or 5 s have passed; then it prints a summary and exits 0.

#[path = "shared/http.rs"]
mod http;
#[path = "shared/stop.rs"]
mod stop;

use core::fmt::{self, Write as _};

use core::future::Future;
use http::{Cursor, DebugAsJson, Done, HEADER_LIMIT, MAX_RESPONSE};
use std::net::{IpAddr, SocketAddr};
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use pinion::aio::{sleep, timeout};
use pinion::backend::Sched;
use pinion::buf::{BufPool, PoolBuf};
use pinion::builder::Builder;
use pinion::context::IoContext;
use pinion::net::{TcpListener, TcpStream};
use pinion::sync::FutexMutex;
use pinion::{Backend, BuildError, Error, Instant, IoBuf, IoBufMut, Owned, Shutdown};

/// The buffer holds the largest request head and the start of the next.
const REQ_SIZE: usize = HEADER_LIMIT + 512;
/// Responses to pipelined requests are gathered here; each takes at most
/// `MAX_RESPONSE` (`shared/http.rs`).
const RESP_SIZE: usize = 4096;
/// A task slot: the connection future is 432 bytes (x86-64, debug); a
/// bigger one would be refused with `TaskTooLarge`, and logged.
const TASK_BYTES: usize = 1024;
/// A closing connection is drained for at most this long, and this much.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

type ReqBuf = PoolBuf<'static, FutexMutex, REQ_SIZE>;
type RespBuf = PoolBuf<'static, FutexMutex, RESP_SIZE>;
type Conn<B> = TcpStream<'static, B>;

/// Shared by every task; made once and leaked (it lives as long as the
/// process).
struct Server<B: Backend> {
    ctx: &'static IoContext<B>,
    listener: TcpListener<'static, B>,
    /// Counts connections for the graceful stop.
    drain: &'static stop::Drain<B>,
    reqs: BufPool<FutexMutex, REQ_SIZE>,
    resps: BufPool<FutexMutex, RESP_SIZE>,
    idle: Duration,
    threads: usize,
    started: Instant,
    n: Counts,
}

#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    open: AtomicUsize,
    total: AtomicUsize,
    refused: AtomicUsize,
    /// A refusal was logged and no connection was admitted since.
    refusing: AtomicBool,
    /// An accept error was logged and no accept succeeded since.
    accept_failing: AtomicBool,
}

fn main() {
    stop::block_stop_signals("http_status");
    let cfg = Config::parse();
    match cfg.backend.as_str() {
        #[cfg(feature = "epoll")]
        "epoll" => run::<pinion::epoll::Backend>(&cfg),
        #[cfg(not(feature = "epoll"))]
        "epoll" => fail("built without the `epoll` feature"),
        #[cfg(feature = "uring")]
        "uring" => run::<pinion::uring::Backend>(&cfg),
        #[cfg(not(feature = "uring"))]
        "uring" => fail("built without the `uring` feature: rebuild with `--features uring`"),
        other => usage(&format!("unknown backend {other} (epoll or uring)")),
    }
}

fn run<B: Backend>(cfg: &Config)
where
    Sched<B>: Sync,
{
    let n = cfg.max_conns;
    // Per connection a read or write and the timeout's timer wait, each an
    // operation and a rendezvous slot; a task per connection and the
    // accept loop (the signal set waits with a callback).
    let ctx = Builder::<B>::new()
        .ops(8 * n + 64)
        .descriptors(n + 16)
        .timers(n + 16)
        .tasks(n + 1, TASK_BYTES)
        .concurrency_hint(cfg.threads)
        .build_static()
        .unwrap_or_else(|e| match e {
            BuildError::NotSupported
            | BuildError::Disabled(_)
            | BuildError::PermissionDenied
            | BuildError::KernelTooOld(_) => fail(&format!("backend {} unavailable: {e}", B::NAME)),
            e => fail(&format!("building the context: {e}")),
        });
    let addr = SocketAddr::new(cfg.bind, cfg.port);
    let listener = TcpListener::bind(ctx, addr).unwrap_or_else(|e| fail(&format!("{addr}: {e}")));
    let drain = stop::Drain::install(ctx, "http_status", stop::DEFAULT_GRACE, move || {
        let _ = listener.close();
    });
    let s: &'static Server<B> = Box::leak(Box::new(Server {
        ctx,
        listener,
        drain,
        reqs: BufPool::boxed(n),
        resps: BufPool::boxed(n),
        idle: cfg.idle,
        threads: cfg.threads,
        started: ctx.now(),
        n: Counts::default(),
    }));
    if ctx.spawn(s.accept_loop()).is_err() {
        fail("no task slot for the accept loop");
    }
    match listener.local_addr() {
        Ok(a) => eprintln!("http_status: listening on {a}"),
        Err(e) => fail(&format!("local_addr: {e}")),
    }
    std::thread::scope(|sc| {
        for _ in 1..cfg.threads {
            sc.spawn(|| ctx.run());
        }
        ctx.run();
    });
    stop::shut_down(ctx, "http_status");
    eprintln!(
        "http_status: stopped after {} requests on {} connections ({} refused, {} open)",
        s.n.requests.load(Relaxed),
        s.n.total.load(Relaxed),
        s.n.refused.load(Relaxed),
        s.n.open.load(Relaxed),
    );
    exit(0)
}

/// Counts a connection open from its admission to the end of its task
/// (or to the drop of a future that never ran).
struct OpenGuard<B: Backend>(&'static Server<B>);

impl<B: Backend> Drop for OpenGuard<B> {
    fn drop(&mut self) {
        self.0.n.open.fetch_sub(1, Relaxed);
        self.0.drain.closed();
    }
}

impl<B: Backend> Server<B>
where
    Sched<B>: Sync,
{
    async fn accept_loop(&'static self) {
        loop {
            match self.listener.accept().await {
                Ok((conn, _peer)) => {
                    self.n.accept_failing.store(false, Relaxed);
                    self.admit(conn);
                }
                Err(Error::OperationAborted) => return,
                // EMFILE, a full descriptor table: the connection waits in
                // the backlog; one closing meanwhile makes room.
                Err(e) => {
                    if !self.n.accept_failing.swap(true, Relaxed) {
                        eprintln!("http_status: accept failed: {e}; retrying");
                    }
                    let _ = sleep(self.ctx, Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Gives the connection its buffers and its task, or refuses it.
    fn admit(&'static self, conn: Owned<Conn<B>>) {
        self.n.total.fetch_add(1, Relaxed);
        let (Some(req), Some(out)) = (self.reqs.alloc(), self.resps.alloc()) else {
            return self.refuse(&conn, &"every buffer is in use");
        };
        let _ = conn.set_nodelay(true);
        self.n.open.fetch_add(1, Relaxed);
        self.drain.opened();
        let stream = *conn;
        // Detached: the task ends with its connection.
        match self.ctx.spawn(self.serve(conn, req, out, OpenGuard(self))) {
            Ok(_) => self.n.refusing.store(false, Relaxed),
            // Dropping the future closes the stream and frees its buffers.
            Err(r) => self.refuse(&stream, &r.error),
        }
    }

    /// A best-effort 503 (a non-blocking send of a static reply: no buffer,
    /// no task); the caller's drop then closes the connection.
    fn refuse(&self, conn: &Conn<B>, why: &dyn fmt::Display) {
        self.n.refused.fetch_add(1, Relaxed);
        if !self.n.refusing.swap(true, Relaxed) {
            eprintln!("http_status: refusing connections: {why} (see --max-conns)");
        }
        let _ = conn.try_write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = conn.shutdown(Shutdown::Write);
    }

    /// One connection: answer what is buffered, write, read more.
    async fn serve(
        &'static self, conn: Owned<Conn<B>>, mut req: ReqBuf, mut out: RespBuf, _open: OpenGuard<B>,
    ) -> Option<()> {
        let mut idle_since = self.ctx.now();
        let mut skip = 0; // body bytes of the last request not read yet
        loop {
            // Every complete request buffered, in order.
            let (mut at, mut close) = (0, false);
            loop {
                let n = skip.min(req.bytes_len() - at);
                (at, skip) = (at + n, skip - n);
                if skip > 0 || at == req.bytes_len() {
                    break;
                }
                if out.spare() < MAX_RESPONSE {
                    out = self.flush(&conn, out).await?;
                }
                let Some(done) = self.answer(&req.as_slice()[at..], &mut out) else {
                    break; // the head is not all here yet
                };
                (at, skip) = (at + done.used, done.body);
                if !done.keep {
                    close = true;
                    break;
                }
            }
            // The unanswered bytes to the front.
            let len = req.bytes_len();
            req.as_mut_full().copy_within(at..len, 0);
            req.set_len(len - at);
            if out.bytes_len() > 0 {
                out = self.flush(&conn, out).await?;
                idle_since = self.ctx.now();
            }
            if close {
                return self.linger(&conn, req).await;
            }
            let wait = match skip {
                0 => (idle_since + self.idle).saturating_duration_since(self.ctx.now()),
                _ => self.idle,
            };
            // A timeout drops the read (and, once it is cancelled, the
            // buffer): the connection closes.
            let (r, b) = self.read_for(wait, &conn, req).await.ok()?;
            req = b;
            r.ok()?; // end of stream, reset
            if skip > 0 {
                idle_since = self.ctx.now(); // a body is progress
            }
        }
    }

    /// Writes every gathered response; `None` if the connection is done.
    async fn flush(&self, conn: &Conn<B>, out: RespBuf) -> Option<RespBuf> {
        let (r, mut out) = self.write_for(conn, out).await.ok()?;
        r.ok()?;
        out.clear();
        Some(out)
    }

    /// `conn.read(buf)` for at most `d`, from a plain function whose future
    /// is declared `Send`: a task that awaits the read directly does not
    /// compile ("implementation of `IoBufMut` is not general enough"), as
    /// rustc checks the task's `Send` with lifetimes erased and `PoolBuf`
    /// is an I/O buffer only as `PoolBuf<'static, ..>`.
    fn read_for<'a>(
        &self, d: Duration, conn: &'a Conn<B>, buf: ReqBuf,
    ) -> impl Future<Output = pinion::Result<(pinion::Result<usize>, ReqBuf)>> + Send + 'a {
        timeout(self.ctx, d, conn.read(buf))
    }

    /// `conn.write_all(buf)` for at most the idle time (see `read_for`).
    fn write_for<'a>(
        &self, conn: &'a Conn<B>, buf: RespBuf,
    ) -> impl Future<Output = pinion::Result<(pinion::Result<()>, RespBuf)>> + Send + 'a {
        timeout(self.ctx, self.idle, conn.write_all(buf))
    }

    /// Half-closes, then reads and drops what the client still sends (for
    /// a bounded time and amount), so that the close does not reset the
    /// connection before the client has read the last response.
    async fn linger(&self, conn: &Conn<B>, mut buf: ReqBuf) -> Option<()> {
        let _ = conn.shutdown(Shutdown::Write);
        let until = self.ctx.now() + LINGER;
        let mut drained = 0;
        while drained < LINGER_BYTES {
            buf.clear();
            let left = until.saturating_duration_since(self.ctx.now());
            let (r, b) = self.read_for(left, conn, buf).await.ok()?;
            (buf, drained) = (b, drained + r.ok()?);
        }
        None
    }

    /// Parses the head at the start of `bytes` and appends its response
    /// to `out` (`shared/http.rs`); `None` while the head is incomplete.
    fn answer(&self, bytes: &[u8], out: &mut RespBuf) -> Option<Done> {
        let len = out.bytes_len();
        let mut w = Cursor::new(&mut out.as_mut_full()[len..]);
        let done = http::answer(bytes, &mut w, |w| self.status_json(w));
        let written = w.len;
        out.set_len(len + written);
        if done.is_some() {
            self.n.requests.fetch_add(1, Relaxed);
        }
        done
    }

    /// The `/status` document.
    fn status_json(&self, w: &mut Cursor<'_>) -> fmt::Result {
        let c = self.ctx;
        let (ops, ops_cap) = c.ops_in_use();
        let (tasks, tasks_cap) = c.tasks_in_use();
        write!(
            w,
            "{{\"backend\":\"{}\",\"uptime_ms\":{},\"threads\":{},\"requests_served\":{},\
             \"connections_open\":{},\"connections_total\":{},\"connections_refused\":{},\
             \"ops_in_use\":{ops},\"ops_capacity\":{ops_cap},\"descriptors_in_use\":{},\
             \"timers_in_use\":{},\"tasks_in_use\":{tasks},\"tasks_capacity\":{tasks_cap},\
             \"outstanding_work\":{},\"stats_enabled\":{},\"stats\":",
            c.backend_name(),
            (c.now() - self.started).as_millis(),
            self.threads,
            self.n.requests.load(Relaxed) + 1, // this one included
            self.n.open.load(Relaxed),
            self.n.total.load(Relaxed),
            self.n.refused.load(Relaxed),
            c.descriptors_in_use(),
            c.timers_in_use(),
            c.outstanding_work(),
            cfg!(feature = "stats"),
        )?;
        write!(DebugAsJson(w, Default::default()), "{:?}", c.stats())?;
        w.write_str("}\n")
    }
}

// ---- arguments ------------------------------------------------------------

struct Config {
    port: u16,
    bind: IpAddr,
    max_conns: usize,
    idle: Duration,
    threads: usize,
    backend: String,
}

impl Config {
    fn parse() -> Config {
        let mut cfg = Config {
            port: 8080,
            bind: IpAddr::from([127, 0, 0, 1]),
            max_conns: 1024,
            idle: Duration::from_secs(5),
            threads: 1,
            backend: "epoll".into(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || {
                let v = args.next();
                v.unwrap_or_else(|| usage(&format!("{a} needs a value")))
            };
            match a.as_str() {
                "--bind" => cfg.bind = parse(&value(), &a),
                "--max-conns" => cfg.max_conns = parse(&value(), &a),
                "--idle-ms" => cfg.idle = Duration::from_millis(parse(&value(), &a)),
                "--threads" => cfg.threads = parse(&value(), &a),
                "--backend" => cfg.backend = value(),
                "-h" | "--help" => usage(""),
                p if !p.starts_with('-') => cfg.port = parse(p, "PORT"),
                other => usage(&format!("unknown option {other}")),
            }
        }
        if cfg.threads == 0 || cfg.max_conns == 0 || cfg.idle.is_zero() {
            usage("--threads, --max-conns and --idle-ms must be at least 1");
        }
        cfg
    }
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| usage(&format!("bad {what}: {s}")))
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("http_status: {msg}");
    }
    eprintln!(
        "usage: http_status [PORT] [--bind ADDR] [--max-conns N] [--idle-ms MS] [--threads N] \
         [--backend epoll|uring]"
    );
    exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("http_status: {msg}");
    exit(1)
}
