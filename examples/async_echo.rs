//! `echo_server` written with async/await: every byte a client sends comes
//! back, in order. The benchmark twin of the callback server, with the same
//! behaviour and command line (plus `--backend`):
//!
//! ```text
//! async_echo [PORT] [--bind ADDR] [--threads N] [--max-conns N] [--backend epoll|uring]
//! ```
//! PORT defaults to 7000 (0 lets the kernel pick; the bound address is
//! printed), ADDR to 127.0.0.1, N to 1, `--max-conns` to 1024, the backend
//! to epoll (`uring` when built with the `uring` feature).
//!
//! One task per connection, spawned into task slots reserved at build
//! (`Builder::tasks`), with one 16 KiB buffer from a pool made at start-up:
//! nothing is allocated per connection or per message. The loop is
//! `read` → `write_all` → `read`; while a write is pending the connection
//! is not read, so a client that sends without reading is slowed by TCP
//! and memory stays flat. A half-closed client gets every byte back before
//! the server closes (the `Owned` stream closes when the task ends). A
//! connection beyond `--max-conns` is closed at once and logged once. An
//! accept error (EMFILE) is logged once per run of failures and the accept
//! retried after 50 ms. SIGTERM and SIGINT stop the server gracefully,
//! as the other servers do (`shared/stop.rs`): the listener closes at
//! once, open connections are served until they end or 5 s have passed,
//! and the process exits 0.

#[path = "shared/stop.rs"]
mod stop;

use std::net::{IpAddr, SocketAddr};
use std::process::exit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pinion::aio::sleep;
use pinion::buf::BufPool;
use pinion::builder::Builder;
use pinion::context::IoContext;
use pinion::net::{TcpListener, TcpStream};
use pinion::sync::FutexMutex;
use pinion::{Backend, Error, IoBufMut, Owned};

const BUF_SIZE: usize = 16 * 1024;
type Pool = BufPool<FutexMutex, BUF_SIZE>;

/// Room for the largest future spawned here (a connection's `echo`: 280
/// bytes in a release build, 296 in a debug one, as its I/O futures keep
/// their results in themselves); a change that outgrows it makes `spawn`
/// fail with `TaskTooLarge`, which names the size needed.
const TASK_BYTES: usize = 320;

static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

fn main() {
    stop::block_stop_signals("async_echo");
    let cfg = Config::parse();
    match cfg.backend.as_str() {
        #[cfg(feature = "epoll")]
        "epoll" => serve::<pinion::epoll::Backend>(&cfg),
        #[cfg(not(feature = "epoll"))]
        "epoll" => fail("built without the `epoll` feature"),
        #[cfg(feature = "uring")]
        "uring" => serve::<pinion::uring::Backend>(&cfg),
        #[cfg(not(feature = "uring"))]
        "uring" => fail("built without the `uring` feature"),
        other => usage(&format!("unknown backend {other} (epoll or uring)")),
    }
}

fn serve<B: Backend>(cfg: &Config) {
    // The accept loop and one task per connection.
    let tasks = cfg.max_conns + 1;
    let ctx: &'static IoContext<B> = Builder::<B>::new()
        .ops(2 * cfg.max_conns + 64)
        .descriptors(cfg.max_conns + 16)
        .timers(8)
        .tasks(tasks, TASK_BYTES)
        .concurrency_hint(cfg.threads)
        .build_static()
        .unwrap_or_else(|e| fail(&format!("building the context: {e}")));
    let addr = SocketAddr::new(cfg.bind, cfg.port);
    let listener = TcpListener::bind(ctx, addr)
        .map(Owned::new)
        .unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    let local = listener.local_addr().map(|a| a.to_string());
    let pool: &'static Pool = Box::leak(Box::new(Pool::boxed(cfg.max_conns)));
    let l = *listener;
    let drain = stop::Drain::install(ctx, "async_echo", stop::DEFAULT_GRACE, move || {
        let _ = l.close();
    });
    if ctx.spawn(accept(ctx, listener, pool, drain)).is_err() {
        fail("no task slots for the server's own tasks");
    }
    eprintln!(
        "async_echo: listening on {} ({}, {} thread{}, {} connections max)",
        local.unwrap_or_default(),
        ctx.backend_name(),
        cfg.threads,
        if cfg.threads == 1 { "" } else { "s" },
        cfg.max_conns
    );
    std::thread::scope(|s| {
        for _ in 1..cfg.threads {
            s.spawn(|| ctx.run());
        }
        ctx.run();
    });
    stop::shut_down(ctx, "async_echo");
    eprintln!(
        "async_echo: stopped after {} connections",
        CONNECTIONS.load(Ordering::Relaxed)
    );
}

/// Keeps one accept pending and spawns a task per connection.
async fn accept<B: Backend>(
    ctx: &'static IoContext<B>, listener: Owned<TcpListener<'static, B>>, pool: &'static Pool,
    drain: &'static stop::Drain<B>,
) {
    // One log line per run of failures, not one per refused connection.
    let (mut accept_failing, mut refusing) = (false, false);
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _peer)) => conn,
            Err(Error::OperationAborted) => return, // closing down
            Err(e) => {
                if !accept_failing {
                    eprintln!("async_echo: accept failed: {e}; retrying");
                    accept_failing = true;
                }
                // Asio's advice for EMFILE: keep accepting; a connection
                // closing meanwhile makes room.
                let _ = sleep(ctx, Duration::from_millis(50)).await;
                continue;
            }
        };
        accept_failing = false;
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let Some(buf) = pool.alloc() else {
            if !refusing {
                eprintln!("async_echo: all buffers in use; refusing connections (see --max-conns)");
                refusing = true;
            }
            continue; // dropping `conn` closes it
        };
        drain.opened();
        match ctx.spawn(echo(conn, buf, Open(drain))) {
            Ok(_) => refusing = false,
            Err(rejected) => {
                // The future, with its `Open`, was dropped: counted off.
                if !refusing {
                    eprintln!("async_echo: {}; refusing connections", rejected.error);
                    refusing = true;
                }
            }
        }
    }
}

/// `read` → `write_all` → `read`... until an error or end of stream; the
/// stream closes and the buffer goes back to the pool when this returns.
///
/// Generic over the buffer only because rustc cannot yet prove a future
/// holding `PoolBuf<'static, ..>` is `Send` when the `IoBuf` impl is for
/// `'static` alone (rust-lang/rust#102211).
async fn echo<B: Backend, T: IoBufMut + Send>(
    conn: Owned<TcpStream<'static, B>>, mut buf: T, _open: Open<B>,
) {
    let _ = conn.set_nodelay(true);
    loop {
        buf.clear();
        let (r, b) = conn.read(buf).await;
        buf = b;
        if r.is_err() {
            return;
        }
        let (r, b) = conn.write_all(buf).await;
        buf = b;
        if r.is_err() {
            return;
        }
    }
}

/// A connection counted open for the graceful stop until its task ends
/// (or its future is dropped unrun).
struct Open<B: Backend>(&'static stop::Drain<B>);

impl<B: Backend> Drop for Open<B> {
    fn drop(&mut self) {
        self.0.closed();
    }
}

// ---- arguments ------------------------------------------------------------

struct Config {
    port: u16,
    bind: IpAddr,
    threads: usize,
    max_conns: usize,
    backend: String,
}

impl Config {
    fn parse() -> Config {
        let mut cfg = Config {
            port: 7000,
            bind: IpAddr::from([127, 0, 0, 1]),
            threads: 1,
            max_conns: 1024,
            backend: if cfg!(feature = "epoll") {
                "epoll"
            } else {
                "uring"
            }
            .into(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| usage(&format!("{name} needs a value")))
            };
            match a.as_str() {
                "--bind" => cfg.bind = parse(&value("--bind"), "--bind"),
                "--threads" => cfg.threads = parse(&value("--threads"), "--threads"),
                "--max-conns" => cfg.max_conns = parse(&value("--max-conns"), "--max-conns"),
                "--backend" => cfg.backend = value("--backend"),
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
        eprintln!("async_echo: {msg}");
    }
    eprintln!(
        "usage: async_echo [PORT] [--bind ADDR] [--threads N] [--max-conns N] [--backend epoll|uring]"
    );
    exit(2)
}

fn fail(msg: &str) -> ! {
    eprintln!("async_echo: {msg}");
    exit(1)
}
