//! Zero heap allocations on the I/O path, against the backend alias `b`;
//! run by `tests/no_alloc.rs` under a counting global allocator.

backend!(b);

#[path = "../suite/support.rs"]
mod support;

mod paths;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pinion::compose::{async_read, async_write, Completion};
use pinion::IoBufMut;
use support::{run_until, Ctx};

use crate::util::{self, FixedBuf};

const WARM_UP: usize = 100;
const MEASURED: usize = 10_000;
const MSG: usize = 64;

/// One round trip: write the message, read the echo exactly, again.
fn ping(s: b::TcpStream<'static>, w: FixedBuf, mut r: FixedBuf, done: Arc<AtomicUsize>) {
    r.clear();
    async_write(&s, w, move |res, w| {
        assert_eq!(res, Ok(MSG));
        async_read(&s, r, Completion::Exactly(MSG), move |res, r| {
            assert_eq!(res, Ok(MSG));
            assert!(r.bytes() == w.bytes());
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            if n == WARM_UP {
                util::arm_alloc_counter();
            }
            if n == WARM_UP + MEASURED {
                util::disarm_alloc_counter();
                s.close().unwrap();
            } else {
                ping(s, w, r, done);
            }
        })
        .map_err(|r| r.error)
        .unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
}

#[test]
fn ten_thousand_echo_round_trips_allocate_nothing() {
    // The allocation counter is process-wide: one backend at a time.
    let _serial = crate::util::PROCESS_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let ctx = Ctx::new();
    let c = ctx.get();
    let (client, server) = support::connected_pair(c);
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    support::echo(server, FixedBuf::new(16384), closed.clone());
    let done = Arc::new(AtomicUsize::new(0));
    ping(
        client,
        FixedBuf::from_bytes(&util::pattern_vec(1, MSG)),
        FixedBuf::new(MSG),
        done.clone(),
    );
    run_until(c, "round trips and close", || {
        closed.load(Ordering::SeqCst) == 1
    });
    assert_eq!(done.load(Ordering::SeqCst), WARM_UP + MEASURED);
    let allocs = util::disarm_alloc_counter();
    assert_eq!(
        allocs, 0,
        "heap allocations during {MEASURED} echo round trips"
    );
}

/// The same with async/await: a client task and an echo task on one
/// context, every await a backend operation (no allocation in spawn,
/// wakers, futures or their op slots). The context's memory is committed
/// at build, and its report is read while counting: neither allocates.
#[test]
fn ten_thousand_async_echo_round_trips_allocate_nothing() {
    let _serial = crate::util::PROCESS_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let ctx = Ctx::with(
        b::Builder::new()
            .ops(64)
            .descriptors(16)
            .timers(4)
            .tasks(4, 2048)
            .commit_memory(true),
    );
    let c = ctx.get();
    let (client, server) = support::connected_pair(c);
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    let echo = c
        .spawn(async move {
            let mut buf = FixedBuf::new(16384);
            loop {
                buf.clear();
                let (r, b) = server.read(buf).await;
                buf = b;
                if r.is_err() {
                    break;
                }
                let (r, b) = server.write_all(buf).await;
                buf = b;
                r.expect("echo write");
            }
            server.close().unwrap();
        })
        .unwrap();
    let pinger = async move {
        let mut w = FixedBuf::from_bytes(&util::pattern_vec(2, MSG));
        let mut r = FixedBuf::new(MSG);
        for n in 1..=WARM_UP + MEASURED {
            let (res, b) = client.write_all(w).await;
            w = b;
            res.expect("write");
            r.clear();
            let (res, b) = client.read_exact(r).await;
            r = b;
            res.expect("read_exact");
            assert!(r.bytes() == w.bytes());
            if n == WARM_UP {
                util::arm_alloc_counter();
            }
        }
        let m = c.memory();
        let allocs = util::disarm_alloc_counter();
        assert!(m.committed() && m.total() > 0);
        client.close().unwrap();
        allocs
    };
    let allocs = c.block_on(pinger).expect("block_on");
    c.block_on(echo).unwrap().unwrap();
    assert_eq!(
        allocs, 0,
        "heap allocations during {MEASURED} async echo round trips"
    );
}
