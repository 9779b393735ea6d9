//! Zero heap allocations on each I/O path by itself, after a warm-up:
//! accept and connect, timers (expiry and cancel), `read_until`, UDP,
//! pooled reads, a context that three threads run, and async accept,
//! connect, sleep and spawn. Against the backend alias `b`, so each runs
//! on every backend `tests/no_alloc.rs` is built with.

use super::b;
use super::{ping, support};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use pinion::compose::{async_read_until, async_write};
use pinion::{Error, IoBufMut};
use support::{run_until, Ctx};

use crate::util::{self, FixedBuf};

/// Rounds before counting starts: pools and caches reach their steady
/// state (first use of a slot, of a descriptor, of a timer).
const WARM_UP: usize = 100;

/// One test at a time: the allocation counter is process-wide.
/// Also clears what a failed test may have left armed.
fn serial() -> MutexGuard<'static, ()> {
    let guard = crate::util::PROCESS_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    util::disarm_alloc_counter();
    guard
}

/// Counts rounds: arms the allocation counter after [`WARM_UP`] of them,
/// disarms it and keeps the count after `rounds` more.
struct Tally {
    rounds: usize,
    done: AtomicUsize,
    allocs: AtomicUsize,
    finished: AtomicBool,
}

impl Tally {
    fn new(rounds: usize) -> Arc<Tally> {
        Arc::new(Tally {
            rounds,
            done: AtomicUsize::new(0),
            allocs: AtomicUsize::new(0),
            finished: AtomicBool::new(false),
        })
    }

    /// One round done: whether to start another.
    fn next(&self) -> bool {
        let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if n == WARM_UP {
            util::arm_alloc_counter();
        }
        if n < WARM_UP + self.rounds {
            return true;
        }
        self.allocs
            .store(util::disarm_alloc_counter(), Ordering::SeqCst);
        self.finished.store(true, Ordering::SeqCst);
        false
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// Fails unless every round ran and none allocated.
    fn check(&self, what: &str) {
        assert!(self.finished(), "{what}: not finished");
        assert_eq!(
            self.allocs.load(Ordering::SeqCst),
            0,
            "heap allocations during {} rounds of {what}",
            self.rounds
        );
    }
}

// ---- accept and connect ---------------------------------------------------

/// Both ends of one round's connection, whichever completes first waits
/// here for the other.
struct Pair {
    listener: b::TcpListener<'static>,
    addr: SocketAddr,
    accepted: Mutex<Option<b::TcpStream<'static>>>,
    connected: Mutex<Option<b::TcpStream<'static>>>,
    tally: Arc<Tally>,
}

/// One round: an accept and a connect; once both are in, both close.
fn accept_and_connect(p: Arc<Pair>) {
    let q = p.clone();
    p.listener
        .async_accept(move |r| {
            *q.accepted.lock().unwrap() = Some(r.expect("accept").0);
            end_round(q);
        })
        .map_err(|r| r.error)
        .unwrap();
    let q = p.clone();
    b::TcpStream::async_connect(p.listener.context(), p.addr, move |r| {
        *q.connected.lock().unwrap() = Some(r.expect("connect"));
        end_round(q);
    })
    .map_err(|r| r.error)
    .unwrap();
}

fn end_round(p: Arc<Pair>) {
    let (mut a, mut c) = (p.accepted.lock().unwrap(), p.connected.lock().unwrap());
    if a.is_none() || c.is_none() {
        return;
    }
    a.take().unwrap().close().unwrap();
    c.take().unwrap().close().unwrap();
    drop((a, c));
    if p.tally.next() {
        accept_and_connect(p);
    }
}

#[test]
fn accepts_and_connects_allocate_nothing() {
    let _serial = serial();
    let ctx = Ctx::new();
    let c = ctx.get();
    let (listener, addr) = support::listen(c);
    // A thousand: each leaves a socket in TIME_WAIT on loopback.
    let tally = Tally::new(1_000);
    accept_and_connect(Arc::new(Pair {
        listener,
        addr,
        accepted: Mutex::new(None),
        connected: Mutex::new(None),
        tally: tally.clone(),
    }));
    run_until(c, "accepts and connects", || tally.finished());
    listener.close().unwrap();
    tally.check("accept + connect + close");
}

// ---- timers -----------------------------------------------------------------

/// Even rounds wait for an expiry; odd ones for a far deadline that is
/// cancelled at once (the heap's insert and remove, the timerfd re-armed).
fn timer_round(t: b::SteadyTimer<'static>, tally: Arc<Tally>, i: usize) {
    let expiring = i.is_multiple_of(2);
    let d = if expiring {
        Duration::ZERO
    } else {
        Duration::from_secs(3600)
    };
    t.expires_after(d).unwrap();
    t.async_wait(move |r| {
        if expiring {
            r.expect("expiry");
        } else {
            assert_eq!(r, Err(Error::OperationAborted));
        }
        if tally.next() {
            timer_round(t, tally, i + 1);
        }
    })
    .map_err(|r| r.error)
    .unwrap();
    if !expiring {
        assert_eq!(t.cancel().unwrap(), 1);
    }
}

#[test]
fn timer_waits_and_cancels_allocate_nothing() {
    let _serial = serial();
    let ctx = Ctx::new();
    let c = ctx.get();
    let t = b::SteadyTimer::new(c).unwrap();
    let tally = Tally::new(10_000);
    timer_round(t, tally.clone(), 0);
    run_until(c, "timer rounds", || tally.finished());
    t.close().unwrap();
    tally.check("timer waits and cancels");
}

// ---- read_until ---------------------------------------------------------------

const LINE: &[u8] = b"a line of text, read up to its newline\n";

/// The server side: each line read with `read_until` is written back.
fn serve_lines(s: b::TcpStream<'static>, mut buf: FixedBuf) {
    buf.clear();
    async_read_until(&s, buf, b"\n", move |r, buf| match r {
        Ok(n) => {
            assert_eq!(n, LINE.len());
            async_write(&s, buf, move |r, buf| {
                r.expect("write the line back");
                serve_lines(s, buf);
            })
            .map_err(|r| r.error)
            .unwrap();
        }
        Err(_) => s.close().unwrap(),
    })
    .map_err(|r| r.error)
    .unwrap();
}

/// The client side: a line out, its echo read with `read_until`.
fn line_round(s: b::TcpStream<'static>, w: FixedBuf, mut r: FixedBuf, tally: Arc<Tally>) {
    r.clear();
    async_write(&s, w, move |res, w| {
        res.expect("write a line");
        async_read_until(&s, r, b"\n", move |res, r| {
            assert_eq!(res, Ok(LINE.len()));
            assert_eq!(r.bytes(), LINE);
            if tally.next() {
                line_round(s, w, r, tally);
            } else {
                s.close().unwrap();
            }
        })
        .map_err(|r| r.error)
        .unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
}

#[test]
fn read_until_round_trips_allocate_nothing() {
    let _serial = serial();
    let ctx = Ctx::new();
    let c = ctx.get();
    let (client, server) = support::connected_pair(c);
    serve_lines(server, FixedBuf::new(256));
    let tally = Tally::new(10_000);
    line_round(
        client,
        FixedBuf::from_bytes(LINE),
        FixedBuf::new(256),
        tally.clone(),
    );
    run_until(c, "line round trips", || tally.finished());
    tally.check("read_until round trips");
}

// ---- UDP ----------------------------------------------------------------------

const DATAGRAM: &[u8] = b"sixteen bytes!!!";

/// Sends every datagram back to its sender, until closed.
fn udp_echo(s: b::UdpSocket<'static>, mut buf: FixedBuf) {
    buf.clear();
    s.async_receive_from(buf, move |r, buf| match r {
        Ok((n, from)) => {
            assert_eq!(n, DATAGRAM.len());
            s.async_send_to(buf, from, move |r, buf| {
                assert_eq!(r, Ok(DATAGRAM.len()));
                udp_echo(s, buf);
            })
            .map_err(|r| r.error)
            .unwrap();
        }
        Err(e) => assert_eq!(e, Error::OperationAborted),
    })
    .map_err(|r| r.error)
    .unwrap();
}

/// One datagram out, its echo back.
fn udp_round(s: b::UdpSocket<'static>, to: SocketAddr, mut back: FixedBuf, tally: Arc<Tally>) {
    back.clear();
    s.async_receive_from(back, move |r, back| {
        assert_eq!(r.expect("the echo").0, DATAGRAM.len());
        assert_eq!(back.bytes(), DATAGRAM);
        if tally.next() {
            udp_round(s, to, back, tally);
        }
    })
    .map_err(|r| r.error)
    .unwrap();
    s.async_send_to(DATAGRAM, to, |r, _| assert_eq!(r, Ok(DATAGRAM.len())))
        .map_err(|r| r.error)
        .unwrap();
}

#[test]
fn udp_round_trips_allocate_nothing() {
    let _serial = serial();
    let ctx = Ctx::new();
    let c = ctx.get();
    let a = b::UdpSocket::bind(c, util::any_port()).unwrap();
    let bsock = b::UdpSocket::bind(c, util::any_port()).unwrap();
    let to = bsock.local_addr().unwrap();
    let tally = Tally::new(10_000);
    udp_echo(bsock, FixedBuf::new(64));
    udp_round(a, to, FixedBuf::new(64), tally.clone());
    run_until(c, "UDP round trips", || tally.finished());
    a.close().unwrap();
    bsock.close().unwrap();
    tally.check("UDP round trips");
}

// ---- pooled reads -------------------------------------------------------------

/// Echoes with pooled reads: each shared buffer is written back, then
/// goes back to the pool.
fn serve_pooled(s: b::TcpStream<'static>, closed: Arc<AtomicUsize>) {
    s.async_read_pooled(move |r| match r {
        Ok(buf) => {
            async_write(&s, buf, move |r, buf| {
                r.expect("write back");
                drop(buf);
                serve_pooled(s, closed);
            })
            .map_err(|r| r.error)
            .unwrap();
        }
        Err(_) => {
            s.close().unwrap();
            closed.fetch_add(1, Ordering::SeqCst);
        }
    })
    .map_err(|r| r.error)
    .unwrap();
}

#[test]
fn pooled_read_round_trips_allocate_nothing() {
    let _serial = serial();
    let ctx = Ctx::with(Ctx::builder().read_buffers(8, 256));
    let c = ctx.get();
    let (client, server) = support::connected_pair(c);
    let closed = Arc::new(AtomicUsize::new(0));
    serve_pooled(server, closed.clone());
    let done = Arc::new(AtomicUsize::new(0));
    ping(
        client,
        FixedBuf::from_bytes(&util::pattern_vec(3, super::MSG)),
        FixedBuf::new(super::MSG),
        done.clone(),
    );
    run_until(c, "pooled round trips", || {
        closed.load(Ordering::SeqCst) == 1
    });
    assert_eq!(
        done.load(Ordering::SeqCst),
        super::WARM_UP + super::MEASURED
    );
    assert_eq!(c.read_buffers().unwrap().free, 8, "every buffer back");
    assert_eq!(
        util::disarm_alloc_counter(),
        0,
        "heap allocations during {} pooled round trips",
        super::MEASURED
    );
}

// ---- several threads in run() -------------------------------------------------

#[test]
fn three_threads_running_the_context_allocate_nothing() {
    const THREADS: usize = 3;
    let _serial = serial();
    let ctx = Ctx::with(Ctx::builder().concurrency_hint(THREADS));
    let c = ctx.get();
    let (client, server) = support::connected_pair(c);
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    support::echo(server, FixedBuf::new(16384), closed.clone());
    let done = Arc::new(AtomicUsize::new(0));
    ping(
        client,
        FixedBuf::from_bytes(&util::pattern_vec(4, super::MSG)),
        FixedBuf::new(super::MSG),
        done.clone(),
    );
    // Every thread joins the count before any runs a handler (the one
    // that arms it may be any of them); run() returns once the echo ends.
    let ready = Barrier::new(THREADS);
    // Setting up ran the context until it had nothing left to do, which
    // leaves it stopped.
    c.restart();
    thread::scope(|s| {
        for _ in 1..THREADS {
            s.spawn(|| {
                util::count_allocs_on_this_thread();
                ready.wait();
                c.run_for(util::WATCHDOG);
            });
        }
        util::count_allocs_on_this_thread();
        ready.wait();
        c.run_for(util::WATCHDOG);
    });
    assert_eq!(closed.load(Ordering::SeqCst), 1, "the echo ended");
    assert_eq!(
        done.load(Ordering::SeqCst),
        super::WARM_UP + super::MEASURED
    );
    assert_eq!(
        util::disarm_alloc_counter(),
        0,
        "heap allocations during {} round trips on {THREADS} threads",
        super::MEASURED
    );
}

// ---- async: accept, connect, sleep, spawn ---------------------------------------

#[test]
fn async_accepts_connects_sleeps_and_spawns_allocate_nothing() {
    const ROUNDS: usize = 1_000;
    let _serial = serial();
    let ctx = Ctx::with(
        b::Builder::new()
            .ops(64)
            .descriptors(16)
            .timers(4)
            .tasks(4, 1024),
    );
    let c = ctx.get();
    let (l, addr) = support::listen(c);
    let driver = async move {
        for n in 1..=WARM_UP + ROUNDS {
            if n == WARM_UP + 1 {
                util::arm_alloc_counter();
            }
            // The accept in a task of its own, awaited through its handle.
            let accepting = c
                .spawn(async move { l.accept().await.map(|(s, _peer)| s) })
                .map_err(|r| r.error)
                .expect("spawn");
            let conn = b::TcpStream::connect(c, addr).await.expect("connect");
            let accepted = accepting.await.expect("join").expect("accept");
            pinion::aio::sleep(c, Duration::ZERO).await.expect("sleep");
            // Owned: both close here.
            drop((conn, accepted));
        }
        util::disarm_alloc_counter()
    };
    let allocs = c.block_on(driver).expect("block_on");
    l.close().unwrap();
    assert_eq!(
        allocs, 0,
        "heap allocations during {ROUNDS} async accept/connect/sleep/spawn rounds"
    );
}
