//! Echo server for `../shared/bench` (and a tour of the API): every byte a
//! client sends comes back, in order.
//!
//! ```text
//! echo_server [PORT] [--bind ADDR | --unix PATH] [--threads N] [--max-conns N]
//!             [--buf-size BYTES] [--read-buffers N] [--grace-ms MS]
//!             [--send-zc BYTES]
//! ```
//! PORT defaults to 7000, ADDR to 127.0.0.1, N to 1 (the context's
//! concurrency hint), `--max-conns` to 1024. `--unix PATH` serves the
//! same protocol on a Unix-domain socket instead (`@NAME`: a Linux
//! abstract name); the server code is the same, generic over the address
//! family. `--buf-size` is the size of each buffer: 4096, 16384, 65536
//! (the default) or 262144. `--read-buffers N` switches to pooled reads
//! (`async_read_pooled`): N shared buffers, taken only when data arrives
//! (io_uring: a provided buffer ring), instead of one buffer per
//! connection. `--send-zc BYTES` (io_uring build only) sends writes of at
//! least BYTES zero-copy (`Builder::send_zc`); off by default: a
//! zero-copy write's buffer comes back only once the peer has acknowledged
//! the data, and this server reads again only then.
//! Built with the `stats` feature, the server prints its backend's
//! counters when it stops.
//!
//! Why 64 KiB by default: a bulk stream echoed through 64 KiB buffers costs
//! the server about a third less CPU per byte than through 16 KiB ones
//! (a quarter of the `recv`/`send` calls, and loopback's 64 KiB segments
//! are filled), measured with the `stream` workloads (see the README's
//! figures); request/response traffic is not affected. The memory is
//! `--max-conns` × `--buf-size`, reserved at start-up.
//!
//! Written against the facade `pinion::…`, so it builds on either backend.
//! Per connection: `TCP_NODELAY` and one buffer from a pool made at
//! start-up (nothing is allocated per connection or per message); the loop
//! is read_some → write all → read_some. While a write is pending the
//! connection is not read: a client that sends without reading is slowed
//! by TCP itself, and memory stays flat. A client that half-closes gets
//! every byte back before the server closes. An accept error (EMFILE, a
//! full pool) is logged once and the accept retried after a short timer.
//! SIGTERM and SIGINT stop the server gracefully (`shared/stop.rs`): the
//! listener closes at once (the port can be bound again), open
//! connections are served until they end or `--grace-ms` (default 5000)
//! has passed, and the process exits 0.

#[path = "shared/backoff.rs"]
mod backoff;
#[path = "shared/stop.rs"]
mod stop;

use std::net::{IpAddr, SocketAddr};
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use backoff::AcceptBackoff;
use pinion::buf::{BufPool, PoolBuf};
use pinion::compose::async_write;
use pinion::net::{Family, Listener, StreamSocket, UnixAddr};
use pinion::sync::FutexMutex;
use pinion::{Builder, DefaultBackend, Error, IoBufMut, IoContext, TcpListener, UnixListener};

/// The buffer sizes `--buf-size` offers (the pool's chunk size is a
/// constant of its type, so each is its own instance of the server).
const BUF_SIZES: [usize; 4] = [4096, 16384, 65536, 262144];
const DEFAULT_BUF_SIZE: usize = 65536;
type Pool<const N: usize> = BufPool<FutexMutex, N>;
type Buf<const N: usize> = PoolBuf<'static, FutexMutex, N>;

/// A connection of family `P` (TCP or Unix).
type Conn<P> = StreamSocket<'static, DefaultBackend, P>;

/// What every handler needs, made once and leaked (it lives as long as
/// the process).
struct Server<P: Family, const N: usize> {
    listener: Listener<'static, DefaultBackend, P>,
    /// Set up each new connection (TCP: `TCP_NODELAY`).
    setup: fn(&Conn<P>),
    /// Counts connections for the graceful stop.
    drain: &'static stop::Drain<DefaultBackend>,
    pool: Pool<N>,
    /// Retries a failing accept (EMFILE) after a pause, logged once.
    backoff: AcceptBackoff,
    /// A connection was refused for want of a buffer since the last log.
    pool_failing: AtomicBool,
    /// Reads take a shared buffer when data arrives (`--read-buffers`).
    pooled: bool,
    connections: AtomicUsize,
}

fn main() {
    stop::block_stop_signals("echo_server");
    let cfg = Config::parse();
    match cfg.buf_size {
        4096 => run::<4096>(cfg),
        16384 => run::<16384>(cfg),
        65536 => run::<65536>(cfg),
        262144 => run::<262144>(cfg),
        n => usage(&format!("--buf-size {n}: not one of {BUF_SIZES:?}")),
    }
}

/// Builds the context and serves on TCP or a Unix socket with `N`-byte
/// buffers.
fn run<const N: usize>(cfg: Config) {
    let b = Builder::new()
        .ops(4 * cfg.max_conns + 64)
        .descriptors(cfg.max_conns + 16)
        .timers(8)
        .concurrency_hint(cfg.threads)
        .read_buffers(cfg.read_buffers, N);
    #[cfg(all(feature = "uring", not(feature = "epoll")))]
    let b = b.send_zc(cfg.send_zc);
    let ctx: &'static IoContext = b
        .build_static()
        .unwrap_or_else(|e| fail(&format!("building the context: {e}")));
    match &cfg.unix {
        None => {
            let addr = SocketAddr::new(cfg.bind, cfg.port);
            let l =
                TcpListener::bind(ctx, addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
            serve::<_, N>(ctx, &cfg, l, |c| {
                let _ = c.set_nodelay(true);
            });
        }
        Some(path) => {
            let at = match path.strip_prefix('@') {
                Some(name) => UnixAddr::abstract_name(name.as_bytes()),
                None => UnixAddr::path(path.as_bytes()),
            }
            .map_err(Error::from)
            .unwrap_or_else(|e| fail(&format!("--unix {path}: {e}")));
            let l =
                UnixListener::bind(ctx, &at).unwrap_or_else(|e| fail(&format!("bind {path}: {e}")));
            serve::<_, N>(ctx, &cfg, l, |_| {});
            // Our socket file goes with us (an abstract name needs nothing).
            let _ = at.unlink();
        }
    }
}

/// Serves on `listener` until stopped.
fn serve<P: Family, const N: usize>(
    ctx: &'static IoContext, cfg: &Config, listener: Listener<'static, DefaultBackend, P>,
    setup: fn(&Conn<P>),
) where
    P::Addr: std::fmt::Display,
{
    let grace = Duration::from_millis(cfg.grace_ms);
    let drain = stop::Drain::install(ctx, "echo_server", grace, move || {
        let _ = listener.close();
    });
    // One server per process: a second `serve` would find it set.
    let _ = DRAIN.set(drain);
    let server: &'static Server<P, N> = Box::leak(Box::new(Server {
        listener,
        setup,
        drain,
        // Pooled reads need no per-connection buffers.
        pool: Pool::<N>::boxed(if cfg.read_buffers > 0 {
            0
        } else {
            cfg.max_conns
        }),
        pooled: cfg.read_buffers > 0,
        backoff: AcceptBackoff::new(ctx, "echo_server"),
        pool_failing: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
    }));
    let local = listener.local_addr().map(|a| a.to_string());
    accept(server);
    eprintln!(
        "echo_server: listening on {} ({} thread{}, {} connections max, {}-byte buffers)",
        local.unwrap_or_default(),
        cfg.threads,
        if cfg.threads == 1 { "" } else { "s" },
        cfg.max_conns,
        N
    );
    std::thread::scope(|s| {
        for _ in 1..cfg.threads {
            s.spawn(|| ctx.run());
        }
        ctx.run();
    });
    stop::shut_down(ctx, "echo_server");
    eprintln!(
        "echo_server: stopped after {} connections",
        server.connections.load(Ordering::Relaxed)
    );
    #[cfg(feature = "stats")]
    eprintln!("echo_server: {:?}", ctx.stats());
}

/// Keeps one accept pending; errors re-arm it after a short timer.
fn accept<P: Family, const N: usize>(s: &'static Server<P, N>) {
    let started = s.listener.async_accept(move |r| match r {
        Ok((conn, _peer)) => {
            s.backoff.succeeded();
            s.connections.fetch_add(1, Ordering::Relaxed);
            s.drain.opened();
            start(s, conn);
            accept(s);
        }
        Err(Error::OperationAborted) => {} // closing down
        Err(e) => s.backoff.retry_later(e, move || accept(s)),
    });
    if let Err(r) = started {
        s.backoff.retry_later(r.error, move || accept(s));
    }
}

fn start<P: Family, const N: usize>(s: &'static Server<P, N>, conn: Conn<P>) {
    (s.setup)(&conn);
    if s.pooled {
        return read_pooled(conn);
    }
    match s.pool.alloc() {
        Some(buf) => {
            s.pool_failing.store(false, Ordering::Relaxed);
            read(conn, buf)
        }
        None => {
            if !s.pool_failing.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "echo_server: all buffers in use; refusing connections (see --max-conns)"
                );
            }
            close(conn);
        }
    }
}

/// The graceful stop's connection count, set once in `serve`. Reached
/// through a static so that the read and write handlers capture only the
/// connection: every word a handler holds is copied into and out of its
/// operation slot on every message.
static DRAIN: OnceLock<&'static stop::Drain<DefaultBackend>> = OnceLock::new();

/// Ends a connection: closed, and counted off for the graceful stop.
fn close<P: Family>(conn: Conn<P>) {
    if conn.close().is_ok() {
        if let Some(d) = DRAIN.get() {
            d.closed();
        }
    }
}

/// read_some → write all → read_some...; any error or end-of-stream
/// closes the connection and returns the buffer to the pool.
fn read<P: Family, const N: usize>(conn: Conn<P>, mut buf: Buf<N>) {
    buf.clear();
    let started = conn.async_read_some(buf, move |r, buf| match r {
        Ok(_) => write(conn, buf),
        Err(_) => close(conn),
    });
    if started.is_err() {
        close(conn);
    }
}

fn write<P: Family, const N: usize>(conn: Conn<P>, buf: Buf<N>) {
    let started = async_write(&conn, buf, move |r, buf| match r {
        Ok(_) => read(conn, buf),
        Err(_) => close(conn),
    });
    if started.is_err() {
        close(conn);
    }
}

/// Pooled variant: read into a shared buffer taken when data arrives,
/// write it back, drop it (back to the pool), read again.
fn read_pooled<P: Family>(conn: Conn<P>) {
    let started = conn.async_read_pooled(move |r| match r {
        Ok(buf) => {
            let started = async_write(&conn, buf, move |r, buf| {
                drop(buf);
                match r {
                    Ok(_) => read_pooled(conn),
                    Err(_) => close(conn),
                }
            });
            if started.is_err() {
                close(conn);
            }
        }
        // Every buffer is in flight on other connections; the data waits
        // in the socket. Try again once the queued handlers have run (and
        // freed buffers).
        Err(Error::PoolFull(pinion::Pool::ReadBuffers)) => {
            if conn.context().post(move || read_pooled(conn)).is_err() {
                close(conn);
            }
        }
        Err(_) => close(conn),
    });
    if started.is_err() {
        close(conn);
    }
}

// ---- arguments ------------------------------------------------------------

struct Config {
    port: u16,
    bind: IpAddr,
    unix: Option<String>,
    grace_ms: u64,
    threads: usize,
    max_conns: usize,
    buf_size: usize,
    read_buffers: usize,
    send_zc: Option<usize>,
}

impl Config {
    fn parse() -> Config {
        let mut cfg = Config {
            port: 7000,
            bind: IpAddr::from([127, 0, 0, 1]),
            unix: None,
            grace_ms: 5000,
            threads: 1,
            max_conns: 1024,
            buf_size: DEFAULT_BUF_SIZE,
            read_buffers: 0,
            send_zc: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| usage(&format!("{name} needs a value")))
            };
            match a.as_str() {
                "--bind" => cfg.bind = parse(&value("--bind"), "--bind"),
                "--unix" => cfg.unix = Some(value("--unix")),
                "--grace-ms" => cfg.grace_ms = parse(&value("--grace-ms"), "--grace-ms"),
                "--threads" => cfg.threads = parse(&value("--threads"), "--threads"),
                "--max-conns" => cfg.max_conns = parse(&value("--max-conns"), "--max-conns"),
                "--buf-size" => cfg.buf_size = parse(&value("--buf-size"), "--buf-size"),
                "--read-buffers" => {
                    cfg.read_buffers = parse(&value("--read-buffers"), "--read-buffers")
                }
                "--send-zc" if cfg!(all(feature = "uring", not(feature = "epoll"))) => {
                    cfg.send_zc = Some(parse(&value("--send-zc"), "--send-zc"))
                }
                "-h" | "--help" => usage(""),
                p if !p.starts_with('-') => cfg.port = parse(p, "PORT"),
                other => usage(&format!("unknown option {other}")),
            }
        }
        if cfg.threads == 0 || cfg.max_conns == 0 {
            usage("--threads and --max-conns must be at least 1");
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
        eprintln!("echo_server: {msg}");
    }
    eprintln!(
        "usage: echo_server [PORT] [--bind ADDR | --unix PATH|@NAME] [--threads N] [--max-conns N] \
         [--buf-size 4096|16384|65536|262144] [--read-buffers N] [--grace-ms MS] \
         [--send-zc BYTES (io_uring build)]"
    );
    exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("echo_server: {msg}");
    exit(1)
}
