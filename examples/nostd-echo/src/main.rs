//! A `#![no_std]` `#![no_main]` echo server: pinion's epoll backend on
//! libc alone, every byte of memory in `static`s, no allocator, no
//! `unsafe`. It serves the benchmark echo protocol (`../shared/bench`:
//! every byte a client sends comes back, in order) as `echo_server` does.
//!
//! ```text
//! nostd-echo [PORT]      # 127.0.0.1:PORT, 7000 by default, 0: any free port
//! ```
//!
//! Behaviour, as `examples/echo_server.rs`: per connection `TCP_NODELAY`
//! and one 16 KiB buffer from a pool in `static` memory; read_some → write
//! all → read_some, so a client that does not read is slowed by TCP
//! itself and memory stays flat; a client that half-closes gets every byte
//! back before the server closes; a reset ends only its connection. A
//! failing accept (EMFILE at the descriptor limit) is logged once per run
//! of failures and retried every 50 ms. Past `MAX_CONNS` connections a new
//! one is closed at once (logged once). SIGTERM and SIGINT stop it with
//! status 0.
//!
//! What a no_std program needs from pinion: `StaticArray`s for the pools,
//! `Builder::build_in` over them, a `StaticCell` for the `&'static`
//! context and server state, and `pinion::process` for the entry point,
//! the arguments, stderr and the panic handler.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::fmt::Write;
use core::net::{Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;

use pinion::buf::{BufPool, Chunk, ChunkLink, PoolBuf};
use pinion::compose::async_write;
use pinion::epoll::{
    Builder, DescriptorSlot, Entry, IoContext, Parts, SteadyTimer, TcpListener, TcpStream,
    TimerEntry, TimerObj, TimerSlot,
};
use pinion::process::{Args, Stderr};
use pinion::signal::{self, SignalSet};
use pinion::sync::FutexMutex;
use pinion::{BuildError, Error, IoBufMut, OpSlot, StaticArray, StaticCell};

/// Connections served at once (each holds one buffer).
const MAX_CONNS: usize = 256;
const BUF_SIZE: usize = 16 * 1024;
/// A connection has at most one read or write pending; the rest is the
/// accept, the retry timer and the signal wait, with room to spare.
const OPS: usize = 2 * MAX_CONNS + 16;
/// Connections, the listener, the signal set, the timer's timerfd.
const DESCRIPTORS: usize = MAX_CONNS + 8;
const TIMERS: usize = 2;

type Pool = BufPool<FutexMutex, BUF_SIZE>;
type Buf = PoolBuf<'static, FutexMutex, BUF_SIZE>;

// Every pool, in static memory: zeroed ones land in .bss and cost pages
// only once touched.
static OP_SLOTS: StaticArray<OpSlot, OPS> = StaticArray::new([OpSlot::EMPTY; OPS]);
static DESCS: StaticArray<Entry<DescriptorSlot>, DESCRIPTORS> =
    StaticArray::new([DescriptorSlot::ENTRY; DESCRIPTORS]);
static TIMER_OBJS: StaticArray<TimerEntry, TIMERS> = StaticArray::new([TimerObj::ENTRY; TIMERS]);
static TIMER_HEAP: StaticArray<TimerSlot, TIMERS> = StaticArray::new([TimerSlot::EMPTY; TIMERS]);
static CHUNKS: StaticArray<Chunk<BUF_SIZE>, MAX_CONNS> = StaticArray::new([Chunk::ZERO; MAX_CONNS]);
static LINKS: StaticArray<ChunkLink, MAX_CONNS> = StaticArray::new([ChunkLink::NEW; MAX_CONNS]);
static CTX: StaticCell<IoContext> = StaticCell::new();
static SERVER: StaticCell<Server> = StaticCell::new();

/// What every handler needs, made once in `start`.
struct Server {
    listener: TcpListener<'static>,
    pool: Pool,
    /// Re-arms a failing accept after a pause.
    retry: SteadyTimer<'static>,
    /// A failing accept was logged and none has succeeded since.
    accept_failing: AtomicBool,
    /// A connection was refused for want of a buffer since the last log.
    pool_failing: AtomicBool,
    connections: AtomicUsize,
}

/// One line on stderr, prefixed with the program's name.
macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(Stderr, "nostd-echo: {}", format_args!($($arg)*));
    }};
}

pinion::no_std_main!(start);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    pinion::process::abort_on_panic(info)
}

fn start(args: Args) -> i32 {
    let port = match args
        .get(1)
        .map(|a| a.to_str().ok().and_then(|s| s.parse().ok()))
    {
        None => 7000,
        Some(Some(p)) => p,
        Some(None) => {
            log!("usage: nostd-echo [PORT]");
            return 2;
        }
    };
    match serve(port) {
        Ok(served) => {
            log!("stopped after {served} connections");
            0
        }
        Err(failure) => {
            log!("{failure}");
            1
        }
    }
}

/// Why the server could not start.
enum Failure {
    Io(&'static str, Error),
    Build(BuildError),
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The &str by write_str: as a `{}` argument it would link
        // `Formatter::pad` (a kilobyte) for nothing.
        let (what, e): (&str, &dyn core::fmt::Display) = match self {
            Failure::Io(what, e) => (what, e),
            Failure::Build(e) => ("building the context", e),
        };
        f.write_str(what)?;
        f.write_str(": ")?;
        e.fmt(f)
    }
}

/// Sets everything up, runs until SIGTERM/SIGINT; the connections served.
fn serve(port: u16) -> Result<usize, Failure> {
    let io = |what| move |e| Failure::Io(what, e);
    // Before anything else: the signals are queued for the set, not acted on.
    signal::block(&[libc::SIGTERM, libc::SIGINT]).map_err(io("blocking SIGTERM/SIGINT"))?;
    let ctx = context().map_err(Failure::Build)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(ctx, addr).map_err(io("bind"))?;
    let server = Server {
        listener,
        pool: Pool::from_static(once(CHUNKS.take()), once(LINKS.take())),
        retry: SteadyTimer::new(ctx).map_err(io("timer"))?,
        accept_failing: AtomicBool::new(false),
        pool_failing: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
    };
    let s: &'static Server = &*once(SERVER.init(server).ok());
    stop_on_signal(ctx).map_err(io("waiting for SIGTERM/SIGINT"))?;
    accept(s);
    // The port alone, as a u32: formatting a whole SocketAddr would link
    // IPv6's Display (a tenth of this binary), a u16 one more formatter.
    let port = u32::from(listener.local_addr().map_or(port, |a| a.port()));
    log!("listening on 127.0.0.1:{port} ({MAX_CONNS} connections max)");
    ctx.run();
    Ok(s.connections.load(Ordering::Relaxed))
}

/// A static's contents, taken by `serve`, which runs once.
fn once<T>(taken: Option<T>) -> T {
    match taken {
        Some(t) => t,
        // A literal: `expect(msg)` would format it through `Formatter::pad`.
        None => panic!("statics are taken once"),
    }
}

/// The context, on the static pools.
fn context() -> Result<&'static IoContext, BuildError> {
    let parts = Parts::from_static(
        once(DESCS.take()),
        once(TIMER_OBJS.take()),
        once(TIMER_HEAP.take()),
        None,
    );
    let ctx = Builder::new().build_in(once(OP_SLOTS.take()), parts)?;
    match CTX.init(ctx) {
        Ok(c) => Ok(&*c),
        // Unreachable (this runs once); `forget` spares the binary the
        // context's drop code, which nothing else needs.
        Err(c) => {
            core::mem::forget(c);
            panic!("statics are taken once")
        }
    }
}

/// Stops the context when SIGTERM or SIGINT arrives.
fn stop_on_signal(ctx: &'static IoContext) -> Result<(), Error> {
    let set = SignalSet::new(ctx)?;
    set.add(libc::SIGTERM)?;
    set.add(libc::SIGINT)?;
    set.async_wait(move |r| {
        if let Ok(sig) = r {
            log!("signal {sig} received, stopping");
            ctx.stop();
        }
    })
    .map_err(|r| r.error)
}

/// Keeps one accept pending; a failure re-arms it after a pause.
fn accept(s: &'static Server) {
    let started = s.listener.async_accept(move |r| match r {
        Ok((conn, _peer)) => {
            s.accept_failing.store(false, Ordering::Relaxed);
            s.connections.fetch_add(1, Ordering::Relaxed);
            start_conn(s, conn);
            accept(s);
        }
        Err(Error::OperationAborted) => {} // closing down
        Err(e) => retry_later(s, e),
    });
    if let Err(r) = started {
        retry_later(s, r.error);
    }
}

/// Logs `e` (once per run of failures) and accepts again in 50 ms: at
/// the descriptor limit, a connection closing meanwhile makes room.
fn retry_later(s: &'static Server, e: Error) {
    if !s.accept_failing.swap(true, Ordering::Relaxed) {
        log!("accept failed: {e}; retrying every 50 ms");
    }
    let armed = s.retry.expires_after(Duration::from_millis(50)).is_ok()
        && s.retry
            .async_wait(move |r| {
                if r.is_ok() {
                    accept(s);
                }
            })
            .is_ok();
    if !armed {
        log!("accept: cannot arm the retry timer");
        pinion::process::exit(1);
    }
}

fn start_conn(s: &'static Server, conn: TcpStream<'static>) {
    let _ = conn.set_nodelay(true);
    match s.pool.alloc() {
        Some(buf) => {
            s.pool_failing.store(false, Ordering::Relaxed);
            read(conn, buf);
        }
        None => {
            if !s.pool_failing.swap(true, Ordering::Relaxed) {
                log!("all {MAX_CONNS} buffers in use; refusing connections");
            }
            let _ = conn.close();
        }
    }
}

/// read_some → write all → read_some...; an error or the end of the
/// stream closes the connection, and the buffer goes back to the pool.
fn read(conn: TcpStream<'static>, mut buf: Buf) {
    buf.clear();
    let started = conn.async_read_some(buf, move |r, buf| match r {
        Ok(_) => write(conn, buf),
        Err(_) => {
            let _ = conn.close();
        }
    });
    if started.is_err() {
        let _ = conn.close();
    }
}

fn write(conn: TcpStream<'static>, buf: Buf) {
    let started = async_write(&conn, buf, move |r, buf| match r {
        Ok(_) => read(conn, buf),
        Err(_) => {
            let _ = conn.close();
        }
    });
    if started.is_err() {
        let _ = conn.close();
    }
}
