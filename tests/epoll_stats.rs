//! epoll-specific behaviour seen through the reactor's counters (feature
//! `stats`): `EPOLLOUT` registered once and only after a write would
//! block, speculative reads and writes that make `epoll_wait` rare, and
//! the interrupter at work.
#![cfg(all(feature = "epoll", feature = "stats"))]

mod util;

macro_rules! backend {
    ($b:ident) => {
        pub(crate) use pinion::epoll as $b;
    };
}
backend!(b);

#[path = "suite/support.rs"]
mod support;

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use pinion::compose::async_write;
use support::{accept_one, connected_pair, listen, run_until, Ctx};
use util::FixedBuf;

#[test]
fn eight_mib_through_a_small_send_buffer_registers_epollout_once() {
    const N: usize = 8 << 20;
    let ctx = Ctx::new();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let peer = std::thread::spawn(move || {
        let mut s = util::std_connect(addr);
        let mut got = vec![0u8; N];
        let mut off = 0;
        while off < N {
            let end = (off + 4096).min(N);
            let n = s.read(&mut got[off..end]).expect("peer read");
            assert!(n > 0, "early EOF after {off} bytes");
            off += n;
        }
        got
    });
    let s = accept_one(c, l);
    // Small next to 8 MiB, yet not so small that TCP crawls (below ~32
    // KiB every segment waits for a delayed ACK).
    s.set_send_buffer_size(64 * 1024).unwrap();
    let data = util::pattern_vec(9, N);
    let start = c.stats();
    let seen = Arc::new(Mutex::new(None));

    // First step by hand: it is tried at once (speculatively), before any
    // EPOLL_CTL_MOD; the rest goes through async_write.
    let sn = seen.clone();
    s.async_write_some(data, move |r, data| {
        let n = r.expect("first write");
        let after_first = c.stats();
        let sn2 = sn.clone();
        async_write(&s, pinion::Slice::new(data, n), move |r, _| {
            r.expect("write the rest");
            *sn2.lock().unwrap() = Some((after_first, c.stats()));
            s.close().unwrap();
        })
        .map_err(|r| r.error)
        .unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "8 MiB written", || seen.lock().unwrap().is_some());
    let (first, end) = seen.lock().unwrap().take().unwrap();
    assert_eq!(first.speculative_hits - start.speculative_hits, 1);
    assert_eq!(
        first.ctl_mod - start.ctl_mod,
        0,
        "EPOLLOUT before any write blocked"
    );
    assert_eq!(
        end.ctl_mod - start.ctl_mod,
        1,
        "EPOLLOUT registered more than once"
    );
    assert!(
        end.epoll_wait > first.epoll_wait,
        "the rest waited for EPOLLOUT"
    );
    let got = peer.join().unwrap();
    assert!(
        got == util::pattern_vec(9, N),
        "bytes out of order or corrupted"
    );
    l.close().unwrap();
}

#[test]
fn ping_pong_with_data_always_ready_makes_epoll_wait_rare() {
    const ROUND_TRIPS: usize = 2000;
    let ctx = Ctx::new();
    let c = ctx.get();
    let (a, bs) = connected_pair(c);
    a.set_nodelay(true).unwrap();
    bs.set_nodelay(true).unwrap();
    let done = Arc::new(AtomicUsize::new(0));

    // Each read is issued once its data was written, with a buffer of
    // exactly the message size: always ready, never short.
    fn hop(
        from: b::TcpStream<'static>, to: b::TcpStream<'static>, msg: FixedBuf, buf: FixedBuf,
        left: usize, done: Arc<AtomicUsize>,
    ) {
        from.async_write_some(msg, move |r, msg| {
            assert_eq!(r, Ok(64));
            let mut buf = buf;
            pinion::IoBufMut::clear(&mut buf);
            to.async_read_some(buf, move |r, buf| {
                assert_eq!(r, Ok(64));
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                if n < left {
                    hop(to, from, msg, buf, left, done);
                }
            })
            .map_err(|r| r.error)
            .unwrap();
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    let start = c.stats();
    hop(
        a,
        bs,
        FixedBuf::from_bytes(&[1u8; 64]),
        FixedBuf::new(64),
        2 * ROUND_TRIPS,
        done.clone(),
    );
    run_until(c, "ping-pong", || {
        done.load(Ordering::SeqCst) == 2 * ROUND_TRIPS
    });
    let end = c.stats();
    let messages = (2 * ROUND_TRIPS) as u64;
    let waits = end.epoll_wait - start.epoll_wait;
    let hits = end.speculative_hits - start.speculative_hits;
    eprintln!("{messages} messages: {waits} epoll_wait, {hits} speculative hits, {end:?}");
    assert!(
        waits * 4 <= messages,
        "{waits} epoll_wait for {messages} messages"
    );
    assert!(
        hits >= messages * 3 / 2,
        "{hits} speculative hits for {messages} messages"
    );
    a.close().unwrap();
    bs.close().unwrap();
}

#[test]
fn post_to_a_thread_blocked_in_epoll_wait_interrupts_it() {
    let ctx = Ctx::new();
    let c = ctx.get();
    let guard = c.work_guard();
    let (tx, rx) = mpsc::channel();
    let (tid_tx, tid) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        tid_tx.send(util::current_tid()).unwrap();
        c.run();
        tx.send(()).unwrap();
    });
    // The lone runner asleep is in epoll_wait, holding the task: the post
    // must interrupt it (before, a sleep made that only likely).
    util::wait_blocked(tid.recv().unwrap(), "the runner to block in epoll_wait");
    let before = c.stats().interrupts;
    c.post(move || drop(guard)).map_err(|r| r.error).unwrap();
    rx.recv_timeout(util::WATCHDOG).expect("run returned");
    runner.join().unwrap();
    assert!(c.stats().interrupts > before, "{:?}", c.stats());
}
