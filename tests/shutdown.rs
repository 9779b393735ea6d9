//! `IoContext::shutdown` against real kernel objects, on each backend this
//! build has (io_uring with every way a socket can be named, and both
//! accept kinds). A binary without the test harness: descriptors are
//! counted in `/proc/self/fd`, which the harness's parallel tests would
//! change under us, and a signal set needs its signal blocked before any
//! thread exists. Every wait is bounded; nothing is checked on time.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinion::backend::Backend;
use pinion::builder::Builder;
use pinion::context::IoContext;
use pinion::fd::StreamDescriptor;
use pinion::net::{TcpListener, UdpSocket, UnixStream};
use pinion::signal::{self, SignalSet};
use pinion::timer::SteadyTimer;
use pinion::{Error, IoBuf, IoBufMut};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count() - 1 // read_dir's own
}

/// Counts drops of the values it is part of.
#[derive(Clone, Default)]
struct Drops(Arc<AtomicUsize>);

impl Drops {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    fn token(&self) -> Token {
        Token(self.0.clone())
    }
}

struct Token(Arc<AtomicUsize>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A read buffer that counts its drop.
struct Tracked {
    v: Vec<u8>,
    _t: Token,
}

// SAFETY: every method forwards to the Vec, whose heap block does not move
// with the struct.
unsafe impl IoBuf for Tracked {
    fn read_ptr(&self) -> *const u8 {
        self.v.read_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.v.bytes_len()
    }
}

// SAFETY: as above.
unsafe impl IoBufMut for Tracked {
    fn write_ptr(&mut self) -> *mut u8 {
        self.v.write_ptr()
    }
    fn spare(&self) -> usize {
        self.v.spare()
    }
    unsafe fn advance(&mut self, n: usize) {
        // SAFETY: forwarded under the caller's promise.
        unsafe { self.v.advance(n) }
    }
    fn clear(&mut self) {
        self.v.clear()
    }
}

fn buf(d: &Drops) -> Tracked {
    Tracked {
        v: Vec::with_capacity(64),
        _t: d.token(),
    }
}

/// Runs `ctx` until `done`, bounded.
fn run_until<B: Backend>(ctx: &IoContext<B>, what: &str, done: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        ctx.run_for(Duration::from_millis(10));
        ctx.restart();
    }
}

/// The descriptors a context of `B` keeps after its shutdown (its own
/// kernel objects, closed when it is dropped).
fn kept<B: Backend>() -> usize {
    match B::NAME {
        // epoll fd, timerfd, and the interrupter (eventfd, or a pipe).
        "epoll" if cfg!(feature = "pipe-interrupter") => 4,
        "epoll" => 3,
        // The ring fd and its eventfd.
        _ => 2,
    }
}

/// Every kind of descriptor a context opens, each with an operation
/// pending; shutdown destroys every handler unrun (its buffer dropped),
/// closes every descriptor (the count falls back to the baseline plus what
/// the context keeps), frees the ports at once, and refuses everything
/// after with a clear error.
fn everything_closes_and_later_calls_are_refused<B: Backend>(
    name: &str, builder: impl Fn() -> Builder<B>,
) {
    let base = open_fds();
    let Ok(ctx) = builder().build_static() else {
        println!("SKIPPED shutdown::{name}: the backend cannot be built here");
        return;
    };
    assert_eq!(
        open_fds(),
        base + kept::<B>(),
        "what a context holds when built"
    );
    let (ran, dropped) = (Drops::default(), Drops::default());

    // A listener with a connection accepted, and a read pending on it.
    let listener = TcpListener::bind(ctx, "127.0.0.1:0".parse().unwrap()).unwrap();
    let port: SocketAddr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::Mutex::new(None));
    let a = accepted.clone();
    listener
        .async_accept(move |r| *a.lock().unwrap() = Some(r.unwrap().0))
        .unwrap();
    let mut client = std::net::TcpStream::connect(port).unwrap();
    run_until(ctx, "the accept", || accepted.lock().unwrap().is_some());
    let conn = accepted.lock().unwrap().take().unwrap();
    let (r, d) = (ran.clone(), dropped.token());
    conn.async_read_some(buf(&dropped), move |_, _| {
        let _d = d;
        r.token();
    })
    .unwrap();
    // The listener keeps an accept pending (on io_uring: in the kernel).
    let (r, d) = (ran.clone(), dropped.token());
    listener
        .async_accept(move |_| {
            let _d = d;
            r.token();
        })
        .unwrap();
    // A UDP socket receiving.
    let udp = UdpSocket::bind(ctx, "127.0.0.1:0".parse().unwrap()).unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let (r, d) = (ran.clone(), dropped.token());
    udp.async_receive_from(buf(&dropped), move |_, _| {
        let _d = d;
        r.token();
    })
    .unwrap();
    // A Unix stream pair, one end reading.
    let (u1, _u2) = UnixStream::pair(ctx).unwrap();
    let (r, d) = (ran.clone(), dropped.token());
    u1.async_read_some(buf(&dropped), move |_, _| {
        let _d = d;
        r.token();
    })
    .unwrap();
    // A pipe's read end as a stream descriptor, reading.
    let (pr, pw) = std::io::pipe().unwrap();
    let pipe = StreamDescriptor::from_owned_fd(ctx, pr.into()).unwrap();
    let (r, d) = (ran.clone(), dropped.token());
    pipe.async_read_some(buf(&dropped), move |_, _| {
        let _d = d;
        r.token();
    })
    .unwrap();
    // A timer waiting, and a signal set waiting.
    let timer = SteadyTimer::new(ctx).unwrap();
    timer.expires_after(Duration::from_secs(3600)).unwrap();
    let (r, d) = (ran.clone(), dropped.token());
    timer
        .async_wait(move |_| {
            let _d = d;
            r.token();
        })
        .unwrap();
    let set = SignalSet::new(ctx).unwrap();
    set.add(libc::SIGUSR1).unwrap();
    let (r, d) = (ran.clone(), dropped.token());
    set.async_wait(move |_| {
        let _d = d;
        r.token();
    })
    .map_err(|r| r.error)
    .unwrap();
    // A posted handler.
    let (r, d) = (ran.clone(), dropped.token());
    ctx.post(move || {
        let _d = d;
        r.token();
    })
    .unwrap();
    // Started, not run: 8 handlers, 4 buffers.
    assert_eq!(dropped.get(), 0);

    assert_eq!(ctx.shutdown(), Ok(()));

    assert_eq!(ran.get(), 0, "{name}: a handler ran");
    assert_eq!(
        dropped.get(),
        12,
        "{name}: every handler and buffer dropped"
    );
    assert_eq!(
        open_fds(),
        base + kept::<B>() + 2, // ours: the pipe's write end, the TCP client
        "{name}: every descriptor of the context closed"
    );
    drop(pw);
    // Ports are free at once (on io_uring too: no registered file holds
    // the listener), and the peer sees the end of the stream.
    drop(std::net::TcpListener::bind(port).expect("the listener's port binds again at once"));
    drop(std::net::UdpSocket::bind(udp_addr).expect("the UDP port binds again at once"));
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(
        client.read(&mut [0u8; 16]).unwrap(),
        0,
        "{name}: the peer sees EOF"
    );
    drop(client);

    // Everything later is refused with a clear error.
    let shut = Error::ContextShutDown;
    assert!(ctx.is_shut_down());
    assert_eq!((ctx.run(), ctx.poll(), ctx.run_one()), (0, 0, 0));
    assert_eq!(ctx.post(|| ()).unwrap_err().error, shut);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert_eq!(TcpListener::bind(ctx, any).err(), Some(shut));
    assert_eq!(UdpSocket::bind(ctx, any).err(), Some(shut));
    assert_eq!(UnixStream::pair(ctx).err(), Some(shut));
    assert_eq!(SteadyTimer::new(ctx).err(), Some(shut));
    assert_eq!(SignalSet::new(ctx).err(), Some(shut));
    assert_eq!(pinion::strand::Strand::new(ctx).err(), Some(shut));
    let r = conn.async_read_some(Vec::with_capacity(8), |_, _| ());
    assert_eq!(r.unwrap_err().error, shut);
    assert_eq!(timer.async_wait(|_| ()).unwrap_err().error, shut);
    // Calls on the descriptor itself: the handle is closed.
    assert_eq!(conn.peer_addr().err(), Some(Error::BadDescriptor));
    assert_eq!(listener.local_addr().err(), Some(Error::BadDescriptor));
    assert_eq!(timer.expiry().err(), Some(Error::BadDescriptor));
    assert_eq!(set.add(libc::SIGUSR1), Err(Error::BadDescriptor));
    assert_eq!(conn.close(), Err(Error::BadDescriptor));
    assert_eq!(timer.close(), Err(Error::BadDescriptor));
    // Twice is fine; nothing leaked by the refused calls.
    assert_eq!(ctx.shutdown(), Ok(()));
    assert_eq!(
        open_fds(),
        base + kept::<B>(),
        "{name}: refused calls leaked a descriptor"
    );
    println!("ok shutdown::{name}: everything_closes_and_later_calls_are_refused");
}

/// An owned context: shut down then dropped, or dropped straight away,
/// leaves no descriptor at all.
fn owned_contexts_leave_nothing<B: Backend>(name: &str, builder: impl Fn() -> Builder<B>) {
    for shut_first in [true, false] {
        let base = open_fds();
        let Ok(ctx) = builder().build() else {
            println!("SKIPPED shutdown::{name}: the backend cannot be built here");
            return;
        };
        let dropped = Drops::default();
        {
            let listener = TcpListener::bind(&ctx, "127.0.0.1:0".parse().unwrap()).unwrap();
            let t = dropped.token();
            listener
                .async_accept(move |_| {
                    let _t = t;
                })
                .unwrap();
            let t = dropped.token();
            ctx.post(move || drop(t)).unwrap();
        }
        if shut_first {
            assert_eq!(ctx.shutdown(), Ok(()));
            assert_eq!(dropped.get(), 2);
        }
        drop(ctx);
        assert_eq!(dropped.get(), 2, "{name}: handlers destroyed");
        assert_eq!(
            open_fds(),
            base,
            "{name}: descriptors left (shutdown first: {shut_first})"
        );
    }
    println!("ok shutdown::{name}: owned_contexts_leave_nothing");
}

/// A thread blocked in `run()` (in the kernel's wait) is woken and waited
/// for; a call from a handler is refused and changes nothing.
fn a_thread_in_run_is_waited_for<B: Backend>(name: &str, builder: impl Fn() -> Builder<B>)
where
    IoContext<B>: Sync,
{
    let Ok(ctx) = builder().build_static() else {
        println!("SKIPPED shutdown::{name}: the backend cannot be built here");
        return;
    };
    let got = Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    ctx.post(move || *g.lock().unwrap() = Some(ctx.shutdown()))
        .unwrap();
    let listener = TcpListener::bind(ctx, "127.0.0.1:0".parse().unwrap()).unwrap();
    listener.async_accept(|_| ()).unwrap();
    let runner = std::thread::spawn(move || ctx.run());
    // The handler's refusal, then the runner blocks for the accept.
    let end = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().is_none() {
        assert!(Instant::now() < end, "timed out waiting for the handler");
        std::thread::yield_now();
    }
    assert_eq!(*got.lock().unwrap(), Some(Err(Error::ShutdownInsideRun)));
    assert!(!ctx.is_shut_down());
    assert_eq!(ctx.shutdown(), Ok(()));
    assert_eq!(runner.join().unwrap(), 1);
    println!("ok shutdown::{name}: a_thread_in_run_is_waited_for");
}

fn all<B: Backend>(name: &str, builder: impl Fn() -> Builder<B> + Copy)
where
    IoContext<B>: Sync,
{
    everything_closes_and_later_calls_are_refused(name, builder);
    owned_contexts_leave_nothing(name, builder);
    a_thread_in_run_is_waited_for(name, builder);
}

fn main() {
    signal::block(&[libc::SIGUSR1]).unwrap();
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        eprintln!("shutdown: still running after 120 s, aborting");
        std::process::abort();
    });
    #[cfg(feature = "epoll")]
    all("epoll", Builder::<pinion::epoll::Backend>::new);
    #[cfg(feature = "uring")]
    {
        use pinion::uring::Backend as U;
        all("uring", Builder::<U>::new);
        all("uring_plain_fds", || {
            Builder::<U>::new().registered_files(false)
        });
        all("uring_multishot_accept", || {
            Builder::<U>::new().multishot_accept(true)
        });
    }
}
