//! A handle used by one thread while another closes it and at once opens
//! a new object, which takes the freed descriptor slot, the same fd number
//! and (io_uring) the same registered-file index. The rule both backends
//! keep: an operation started on a handle runs on the object the handle
//! named, or is refused with `BadDescriptor`, or is aborted by the close
//! (`OperationAborted`); it never runs on the successor. So no byte reaches
//! a handler or a peer it was not meant for.
//!
//! Each kind (read, write, accept, UDP receive, UDP send) runs
//! `race_iters()` iterations (bounded in count; every wait bounded by the
//! watchdog) on every builder the backend's `race_builders()` lists
//! (io_uring: registered files on and off, multishot accept on and off).
//! Two threads wait on one epoch counter and each spins a pseudo-random
//! number of turns before acting, so the start lands before, inside and
//! after the close across iterations. `PINION_RACE_ITERS=200000` runs the
//! stress length of issue 10; `PINION_RACE_ONLY=registered` limits a run
//! to the builders whose name contains that text.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, UdpSocket as StdUdp};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

use pinion::Error;

use super::{b, race_builders, Ctx};
use crate::util::{self, FixedBuf, WATCHDOG};

const SECRET: &[u8] = b"SECRET-FOR-VICTIM-PEER";
const DATA: &[u8] = b"DATA-FOR-W";

fn race_iters() -> u64 {
    std::env::var("PINION_RACE_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

/// Work for one iteration of one racing thread.
type Job = Box<dyn FnOnce() + Send>;

/// What the racing threads share.
#[derive(Default)]
struct Shared {
    /// Iteration to run (`QUIT` ends the threads), with its jobs.
    round: Mutex<(u64, [Option<Job>; 2])>,
    wake: Condvar,
    /// Threads that reached the start line; both go once it is even.
    arrived: AtomicUsize,
    done: AtomicUsize,
}

/// Two threads that run one job each per round, as close together in
/// time as a spinning start line allows, each after a pseudo-random delay.
/// Between rounds they sleep, so they cost nothing while the next round
/// is set up.
struct Racers {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Ends the racers' loops.
const QUIT: u64 = u64::MAX;

impl Racers {
    fn new() -> Racers {
        let shared = Arc::new(Shared::default());
        let threads = (0..2usize)
            .map(|who| {
                let sh = shared.clone();
                std::thread::spawn(move || {
                    let mut seen = 0;
                    loop {
                        let (round, job) = {
                            let mut g = sh.round.lock().unwrap();
                            while g.0 == seen {
                                g = sh.wake.wait(g).unwrap();
                            }
                            (g.0, g.1[who].take())
                        };
                        if round == QUIT {
                            return;
                        }
                        seen = round;
                        // The start line: both threads are awake and
                        // spinning before either acts.
                        let line = 2 * round as usize;
                        sh.arrived.fetch_add(1, Ordering::AcqRel);
                        while sh.arrived.load(Ordering::Acquire) < line {
                            std::hint::spin_loop();
                        }
                        // xorshift of (round, who): 0..4096 spins.
                        let mut x = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (who as u64 + 1);
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        for _ in 0..(x & 4095) {
                            std::hint::spin_loop();
                        }
                        if let Some(j) = job {
                            j();
                        }
                        sh.done.fetch_add(1, Ordering::AcqRel);
                    }
                })
            })
            .collect();
        Racers { shared, threads }
    }

    /// Runs `a` and `b` on the two threads at once; returns when both ran.
    fn race(&self, a: Job, b: Job) {
        let sh = &self.shared;
        let before = sh.done.load(Ordering::Acquire);
        {
            let mut g = sh.round.lock().unwrap();
            g.0 += 1;
            g.1 = [Some(a), Some(b)];
        }
        sh.wake.notify_all();
        let start = std::time::Instant::now();
        while sh.done.load(Ordering::Acquire) < before + 2 {
            assert!(start.elapsed() < WATCHDOG, "watchdog: a racing job hung");
            std::thread::yield_now();
        }
    }
}

impl Drop for Racers {
    fn drop(&mut self) {
        self.shared.round.lock().unwrap().0 = QUIT;
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A context run by its own thread until dropped.
struct Running {
    ctx: Ctx,
    /// Keeps `run` from running out of work until dropped.
    guard: Option<Box<dyn Send>>,
    runner: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn new(builder: b::Builder) -> Option<Running> {
        let ctx = Ctx::try_with(builder)?;
        let c = ctx.get();
        let guard: Option<Box<dyn Send>> = Some(Box::new(c.work_guard()));
        let runner = Some(std::thread::spawn(move || {
            c.run();
        }));
        Some(Running { ctx, guard, runner })
    }

    fn get(&self) -> &'static b::IoContext {
        self.ctx.get()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.ctx.stop();
        if let Some(t) = self.runner.take() {
            let _ = t.join();
        }
    }
}

fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    rx.recv_timeout(WATCHDOG)
        .unwrap_or_else(|_| panic!("watchdog: {what} did not arrive"))
}

/// A pinion stream connected to `addr`, through the running context.
fn connect(ctx: &'static b::IoContext, addr: SocketAddr) -> b::TcpStream<'static> {
    let (tx, rx) = channel();
    b::TcpStream::async_connect(ctx, addr, move |r| tx.send(r).unwrap())
        .map_err(|r| r.error)
        .unwrap();
    recv(&rx, "connect").expect("connect")
}

/// Where a successor UDP socket binds: another loopback address than the
/// victim's, so that the port the victim just freed, which the kernel may
/// hand out again, can never make the two addresses equal.
fn successor_addr() -> SocketAddr {
    "127.0.0.2:0".parse().unwrap()
}

fn std_listener() -> (StdListener, SocketAddr) {
    let l = StdListener::bind(util::any_port()).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn accept_std(l: &StdListener) -> std::net::TcpStream {
    let (s, _) = l.accept().expect("std accept");
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    s
}

/// The only outcomes a raced operation on the closed handle may have.
fn assert_refused_or_aborted<T: std::fmt::Debug>(kind: &str, i: u64, r: &Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::BadDescriptor) | Err(Error::OperationAborted)),
        "{kind}, iteration {i}: the operation on the closed handle gave {r:?}"
    );
}

/// Runs `f` on every builder of `race_builders()` whose name contains
/// `PINION_RACE_ONLY` (all of them when it is unset).
fn each_builder(kind: &str, f: impl Fn(&str, b::Builder)) {
    let only = std::env::var("PINION_RACE_ONLY").unwrap_or_default();
    for (name, builder) in race_builders() {
        if !name.contains(only.as_str()) {
            continue;
        }
        eprintln!("{kind}: {} iterations with {name}", race_iters());
        f(name, builder);
    }
}

#[test]
fn read_never_runs_on_the_successor() {
    each_builder("read", |name, builder| {
        let Some(run) = Running::new(builder) else {
            return;
        };
        let ctx = run.get();
        let racers = Racers::new();
        let (l1, a1) = std_listener();
        let (l2, a2) = std_listener();
        for i in 0..race_iters() {
            let v = connect(ctx, a1);
            let p1 = accept_std(&l1);
            let (tx_a, rx_a) = channel();
            let (tx_w, rx_w) = channel();
            racers.race(
                Box::new(move || {
                    let t = tx_a.clone();
                    let r = v.async_read_some(FixedBuf::new(64), move |r, buf| {
                        t.send((r, buf.bytes().to_vec())).unwrap()
                    });
                    if let Err(r) = r {
                        tx_a.send((Err(r.error), Vec::new())).unwrap();
                    }
                }),
                Box::new(move || {
                    v.close().expect("close the victim");
                    let t = tx_w.clone();
                    b::TcpStream::async_connect(ctx, a2, move |r| t.send(r).unwrap())
                        .map_err(|r| r.error)
                        .expect("start the successor's connect");
                }),
            );
            let mut p2 = accept_std(&l2);
            p2.write_all(DATA).unwrap();
            let w = recv(&rx_w, "successor connect").expect("successor connect");
            let (r, bytes) = recv(&rx_a, "the raced read's handler");
            assert!(bytes.is_empty(), "{name}, iteration {i}: got {bytes:?}");
            assert_refused_or_aborted(name, i, &r);
            // The successor's bytes are all still there for it.
            let (tx, rx) = channel();
            w.async_read_some(FixedBuf::new(64), move |r, buf| {
                tx.send((r, buf.bytes().to_vec())).unwrap()
            })
            .map_err(|r| r.error)
            .unwrap();
            let (r, got) = recv(&rx, "the successor's read");
            assert_eq!(r, Ok(DATA.len()), "{name}, iteration {i}");
            assert_eq!(got, DATA, "{name}, iteration {i}");
            w.close().unwrap();
            drop((p1, p2));
        }
        drop(racers);
        assert_eq!(ctx.descriptors_in_use(), 0, "{name}: descriptors leaked");
    });
}

#[test]
fn write_never_reaches_the_successors_peer() {
    each_builder("write", |name, builder| {
        let Some(run) = Running::new(builder) else {
            return;
        };
        let ctx = run.get();
        let racers = Racers::new();
        let (l1, a1) = std_listener();
        let (l2, a2) = std_listener();
        for i in 0..race_iters() {
            let v = connect(ctx, a1);
            let mut p1 = accept_std(&l1);
            let (tx_a, rx_a) = channel();
            let (tx_w, rx_w) = channel();
            racers.race(
                Box::new(move || {
                    let t = tx_a.clone();
                    if let Err(r) = v.async_write_some(SECRET, move |r, _| t.send(r).unwrap()) {
                        tx_a.send(Err(r.error)).unwrap();
                    }
                }),
                Box::new(move || {
                    v.close().expect("close the victim");
                    let t = tx_w.clone();
                    b::TcpStream::async_connect(ctx, a2, move |r| t.send(r).unwrap())
                        .map_err(|r| r.error)
                        .expect("start the successor's connect");
                }),
            );
            let mut p2 = accept_std(&l2);
            let w = recv(&rx_w, "successor connect").expect("successor connect");
            let r = recv(&rx_a, "the raced write's handler");
            match r {
                // Written before the close: the victim's peer has it all.
                Ok(n) => {
                    assert_eq!(n, SECRET.len(), "{name}, iteration {i}");
                    let mut got = vec![0; n];
                    p1.read_exact(&mut got).unwrap();
                    assert_eq!(got, SECRET, "{name}, iteration {i}");
                }
                r => assert_refused_or_aborted(name, i, &r),
            }
            w.close().unwrap();
            // Nobody wrote on the successor: its peer reads EOF, nothing else.
            let mut got = Vec::new();
            p2.read_to_end(&mut got).unwrap();
            assert!(
                got.is_empty(),
                "{name}, iteration {i}: the successor's peer received {:?}",
                String::from_utf8_lossy(&got)
            );
        }
        drop(racers);
        assert_eq!(ctx.descriptors_in_use(), 0, "{name}: descriptors leaked");
    });
}

#[test]
fn accept_never_takes_the_successors_connection() {
    each_builder("accept", |name, builder| {
        let Some(run) = Running::new(builder) else {
            return;
        };
        let ctx = run.get();
        let racers = Racers::new();
        for i in 0..race_iters() {
            let v = b::TcpListener::bind(ctx, util::any_port()).unwrap();
            let (tx_a, rx_a) = channel();
            let (tx_x, rx_x) = channel::<(SocketAddr, Receiver<_>)>();
            racers.race(
                Box::new(move || {
                    let t = tx_a.clone();
                    let r = v.async_accept(move |r| t.send(r.map(|(s, _)| s)).unwrap());
                    if let Err(r) = r {
                        tx_a.send(Err(r.error)).unwrap();
                    }
                }),
                Box::new(move || {
                    v.close().expect("close the victim");
                    let x = b::TcpListener::bind(ctx, util::any_port()).unwrap();
                    let (tx, rx) = channel();
                    x.async_accept(move |r| {
                        tx.send(r.map(|(s, _)| s)).unwrap();
                        x.close().unwrap();
                    })
                    .map_err(|r| r.error)
                    .unwrap();
                    tx_x.send((x.local_addr().unwrap(), rx)).unwrap();
                }),
            );
            let (x_addr, rx_x_accept) = recv(&rx_x, "the successor listener");
            let client = util::std_connect(x_addr);
            let s = recv(&rx_x_accept, "the successor's accept")
                .unwrap_or_else(|e| panic!("{name}, iteration {i}: successor accept: {e:?}"));
            s.close().unwrap();
            let r = recv(&rx_a, "the raced accept's handler");
            if let Ok(s) = &r {
                let _ = s.close();
            }
            assert_refused_or_aborted(name, i, &r.map(drop));
            drop(client);
        }
        drop(racers);
        assert_eq!(ctx.descriptors_in_use(), 0, "{name}: descriptors leaked");
    });
}

#[test]
fn udp_receive_never_takes_the_successors_datagram() {
    each_builder("udp receive", |name, builder| {
        let Some(run) = Running::new(builder) else {
            return;
        };
        let ctx = run.get();
        let racers = Racers::new();
        let sender = StdUdp::bind(util::any_port()).unwrap();
        for i in 0..race_iters() {
            let v = b::UdpSocket::bind(ctx, util::any_port()).unwrap();
            let (tx_a, rx_a) = channel();
            let (tx_x, rx_x) = channel();
            racers.race(
                Box::new(move || {
                    let t = tx_a.clone();
                    let r = v.async_receive_from(FixedBuf::new(64), move |r, buf| {
                        t.send((r.map(|(n, _)| n), buf.bytes().to_vec())).unwrap()
                    });
                    if let Err(r) = r {
                        tx_a.send((Err(r.error), Vec::new())).unwrap();
                    }
                }),
                Box::new(move || {
                    v.close().expect("close the victim");
                    let x = b::UdpSocket::bind(ctx, successor_addr()).unwrap();
                    tx_x.send(x).unwrap();
                }),
            );
            let x = recv(&rx_x, "the successor socket");
            sender.send_to(DATA, x.local_addr().unwrap()).unwrap();
            let (r, bytes) = recv(&rx_a, "the raced receive's handler");
            assert!(bytes.is_empty(), "{name}, iteration {i}: got {bytes:?}");
            assert_refused_or_aborted(name, i, &r);
            let (tx, rx) = channel();
            x.async_receive_from(FixedBuf::new(64), move |r, buf| {
                tx.send((r.map(|(n, _)| n), buf.bytes().to_vec())).unwrap()
            })
            .map_err(|r| r.error)
            .unwrap();
            let (r, got) = recv(&rx, "the successor's datagram");
            assert_eq!((r, got.as_slice()), (Ok(DATA.len()), DATA), "{name}, {i}");
            x.close().unwrap();
        }
        drop(racers);
        assert_eq!(ctx.descriptors_in_use(), 0, "{name}: descriptors leaked");
    });
}

#[test]
fn udp_send_never_leaves_from_the_successor() {
    each_builder("udp send", |name, builder| {
        let Some(run) = Running::new(builder) else {
            return;
        };
        let ctx = run.get();
        let racers = Racers::new();
        let receiver = StdUdp::bind(util::any_port()).unwrap();
        receiver.set_nonblocking(true).unwrap();
        let r_addr = receiver.local_addr().unwrap();
        for i in 0..race_iters() {
            let v = b::UdpSocket::bind(ctx, util::any_port()).unwrap();
            let v_addr = v.local_addr().unwrap();
            let (tx_a, rx_a) = channel();
            let (tx_x, rx_x): (Sender<b::UdpSocket<'static>>, _) = channel();
            racers.race(
                Box::new(move || {
                    let t = tx_a.clone();
                    if let Err(r) = v.async_send_to(SECRET, r_addr, move |r, _| t.send(r).unwrap())
                    {
                        tx_a.send(Err(r.error)).unwrap();
                    }
                }),
                Box::new(move || {
                    v.close().expect("close the victim");
                    tx_x.send(b::UdpSocket::bind(ctx, successor_addr()).unwrap())
                        .unwrap();
                }),
            );
            let x = recv(&rx_x, "the successor socket");
            let x_addr = x.local_addr().unwrap();
            let r = recv(&rx_a, "the raced send's handler");
            if !matches!(r, Ok(n) if n == SECRET.len()) {
                assert_refused_or_aborted(name, i, &r);
            }
            // Loopback delivers a datagram within the send: whatever was
            // sent is queued by now.
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = receiver.recv_from(&mut buf) {
                assert_eq!(&buf[..n], SECRET);
                assert_ne!(
                    from, x_addr,
                    "{name}, iteration {i}: sent from the successor"
                );
                assert_eq!(
                    from, v_addr,
                    "{name}, iteration {i}: the victim's datagram left from the successor"
                );
            }
            x.close().unwrap();
        }
        drop(racers);
        assert_eq!(ctx.descriptors_in_use(), 0, "{name}: descriptors leaked");
    });
}
