//! Manual check of the io_uring backend: a 64-byte ping-pong echo over
//! loopback, printing the server context's counters per echoed message.
//!
//! ```text
//! cargo run --release --example uring_smoke --features uring,stats            # both in one process
//! cargo run --release --example uring_smoke --features uring,stats -- server 127.0.0.1:7000 64 10000
//! cargo run --release --example uring_smoke --features uring,stats -- client 127.0.0.1:7000 64 10000
//! ```
//! `server ADDR CONNS MSGS` echoes CONNS connections until they close
//! (MSGS per connection, for the per-message figures);
//! `client ADDR CONNS MSGS` runs CONNS connections of MSGS round trips.
//! The split form lets `valgrind --tool=callgrind` measure the server
//! alone (user-space instructions per echoed message).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pinion::uring::{Builder, IoContext, TcpListener, TcpStream};
use pinion::{Error, IoBuf, Slice};

const SIZE: usize = 64;

/// `unwrap`/`expect` that print the error's message (`Display`).
trait OrDie<T> {
    fn or_die(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrDie<T> for Result<T, E> {
    fn or_die(self, what: &str) -> T {
        self.unwrap_or_else(|e| panic!("uring_smoke: {what}: {e}"))
    }
}

fn leak(b: Builder) -> &'static IoContext {
    b.build_static().unwrap_or_else(|e| {
        eprintln!("uring_smoke: {e}");
        std::process::exit(2)
    })
}

/// A command-line argument, or exits saying which one was bad.
fn parsed<T: std::str::FromStr>(s: &str, what: &str) -> T
where
    T::Err: std::fmt::Display,
{
    s.parse().unwrap_or_else(|e| {
        eprintln!("uring_smoke: bad {what} '{s}': {e}");
        std::process::exit(2)
    })
}

fn serve(l: TcpListener<'static>, left: usize) {
    l.async_accept(move |r| {
        let (s, _) = r.or_die("accept");
        s.set_nodelay(true).or_die("TCP_NODELAY");
        echo_read(s, Vec::with_capacity(SIZE));
        if left > 1 {
            serve(l, left - 1)
        } else {
            l.close().or_die("close the listener")
        }
    })
    .or_die("start an accept");
}

fn echo_read(s: TcpStream<'static>, mut buf: Vec<u8>) {
    buf.clear();
    s.async_read_some(buf, move |r, buf| match r {
        Ok(_) => echo_write(s, Slice::new(buf, 0)),
        Err(Error::Eof) | Err(Error::ConnectionReset) => s.close().or_die("close"),
        Err(e) => panic!("uring_smoke: server read: {e}"),
    })
    .or_die("start a server read");
}

fn echo_write(s: TcpStream<'static>, sl: Slice<Vec<u8>>) {
    s.async_write_some(sl, move |r, mut sl| {
        sl.consume(r.or_die("server write"));
        if sl.bytes_len() == 0 {
            echo_read(s, sl.into_inner())
        } else {
            echo_write(s, sl)
        }
    })
    .or_die("start a server write");
}

fn client(ctx: &'static IoContext, addr: SocketAddr, msgs: usize, done: Arc<AtomicUsize>) {
    TcpStream::async_connect(ctx, addr, move |r| {
        let s = r.or_die("connect");
        s.set_nodelay(true).or_die("TCP_NODELAY");
        ping(s, msgs, Vec::with_capacity(SIZE), done);
    })
    .or_die("start a connect");
}

fn ping(s: TcpStream<'static>, left: usize, mut buf: Vec<u8>, done: Arc<AtomicUsize>) {
    if left == 0 {
        s.close().or_die("close");
        done.fetch_add(1, Ordering::Relaxed);
        return;
    }
    buf.clear();
    buf.resize(SIZE, left as u8);
    s.async_write_some(buf, move |r, mut buf| {
        assert_eq!(r.or_die("client write"), SIZE);
        buf.clear();
        pong(s, left, buf, 0, done);
    })
    .or_die("start a client write");
}

fn pong(s: TcpStream<'static>, left: usize, buf: Vec<u8>, _got: usize, done: Arc<AtomicUsize>) {
    s.async_read_some(buf, move |r, buf| {
        r.or_die("client read");
        if buf.len() < SIZE {
            pong(s, left, buf, 0, done)
        } else {
            ping(s, left - 1, buf, done)
        }
    })
    .or_die("start a client read");
}

fn run_server(addr: SocketAddr, conns: usize) -> (&'static IoContext, SocketAddr) {
    let ctx = leak(Builder::new());
    let l = TcpListener::bind(ctx, addr).or_die("bind");
    let bound = l.local_addr().or_die("local address");
    serve(l, conns);
    (ctx, bound)
}

fn report(ctx: &IoContext, msgs: usize, secs: f64) {
    println!(
        "messages={msgs} secs={secs:.3} msgs_per_s={:.0}",
        msgs as f64 / secs
    );
    #[cfg(feature = "stats")]
    {
        let s = ctx.stats();
        println!(
            "server: enter_calls={} ({:.4}/msg) sqes={} cqes={} sq_full={} interrupts={} ops={}",
            s.enter_calls,
            s.enter_calls as f64 / msgs as f64,
            s.sqes_submitted,
            s.cqes_reaped,
            s.sq_full_events,
            s.interrupts,
            s.ops_completed
        );
    }
    #[cfg(not(feature = "stats"))]
    let _ = ctx;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    match args.first().map(String::as_str) {
        Some("server") => {
            let conns: usize = parsed(&arg(2, "64"), "CONNS");
            let (ctx, bound) = run_server(parsed(&arg(1, "127.0.0.1:7000"), "ADDR"), conns);
            eprintln!("listening on {bound}");
            let t = Instant::now();
            ctx.run();
            let msgs: usize = parsed(&arg(3, "10000"), "MSGS");
            report(ctx, conns * msgs, t.elapsed().as_secs_f64());
        }
        Some("client") => {
            let addr: SocketAddr = parsed(&arg(1, "127.0.0.1:7000"), "ADDR");
            let conns: usize = parsed(&arg(2, "64"), "CONNS");
            let msgs: usize = parsed(&arg(3, "10000"), "MSGS");
            let ctx = leak(Builder::new());
            let done = Arc::new(AtomicUsize::new(0));
            for _ in 0..conns {
                client(ctx, addr, msgs, done.clone());
            }
            let t = Instant::now();
            ctx.run();
            assert_eq!(done.load(Ordering::Relaxed), conns);
            println!(
                "client: {} round trips in {:.3}s",
                conns * msgs,
                t.elapsed().as_secs_f64()
            );
        }
        _ => {
            let conns: usize = arg(0, "64").parse().unwrap_or(64);
            let msgs: usize = arg(1, "10000").parse().unwrap_or(10000);
            let (ctx, bound) = run_server(SocketAddr::from(([127, 0, 0, 1], 0)), conns);
            let done = Arc::new(AtomicUsize::new(0));
            let d = done.clone();
            let c = std::thread::spawn(move || {
                let cctx = leak(Builder::new());
                for _ in 0..conns {
                    client(cctx, bound, msgs, d.clone());
                }
                cctx.run();
            });
            let t = Instant::now();
            ctx.run();
            if c.join().is_err() {
                eprintln!("uring_smoke: the client thread panicked");
                std::process::exit(1);
            }
            assert_eq!(done.load(Ordering::Relaxed), conns);
            report(ctx, conns * msgs, t.elapsed().as_secs_f64());
        }
    }
}
