//! A full operation pool: the initiating call hands handler (and buffer)
//! back with `PoolFull(Ops)`, and nothing is queued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pinion::{Error, Pool};

use super::{accept_one, b, listen, run_until};
use crate::util::{self, FixedBuf};

#[test]
fn full_pool_hands_the_handler_back() {
    const OPS: usize = 8;
    let ctx = ctx_or_skip!(b::Builder::new().ops(OPS).descriptors(8).timers(2));
    let c = ctx.get();
    let (l, addr) = listen(c);
    let _peer = util::std_connect(addr);
    let s = accept_one(c, l);
    let timer = b::SteadyTimer::new(c).unwrap();
    assert_eq!(c.ops_in_use().0, 0);

    let ran = Arc::new(AtomicUsize::new(0));
    let mut posted = 0;
    let rejected = loop {
        let r = ran.clone();
        match c.post(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }) {
            Ok(()) => posted += 1,
            Err(rej) => break rej,
        }
        assert!(posted <= OPS, "more posts accepted than slots");
    };
    assert_eq!(posted, OPS);
    assert_eq!(rejected.error, Error::PoolFull(Pool::Ops));
    (rejected.handler)(); // it is the handler we gave
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    let r = s
        .async_read_some(FixedBuf::new(16).tagged(5), |_, _| panic!("never queued"))
        .expect_err("pool is full");
    assert_eq!(r.error, Error::PoolFull(Pool::Ops));
    assert_eq!(r.handler.0.tag, 5, "buffer handed back");
    let r = s
        .async_write_some(FixedBuf::from_bytes(b"abc").tagged(6), |_, _| {
            panic!("never queued")
        })
        .expect_err("pool is full");
    assert_eq!((r.error, r.handler.0.tag), (Error::PoolFull(Pool::Ops), 6));
    let r = l
        .async_accept(|_| panic!("never queued"))
        .expect_err("pool is full");
    assert_eq!(r.error, Error::PoolFull(Pool::Ops));
    let r = timer
        .async_wait(|_| panic!("never queued"))
        .expect_err("pool is full");
    assert_eq!(r.error, Error::PoolFull(Pool::Ops));
    let r =
        b::TcpStream::async_connect(c, addr, |_| panic!("never queued")).expect_err("pool is full");
    assert_eq!(r.error, Error::PoolFull(Pool::Ops));

    run_until(c, "posted handlers", || {
        ran.load(Ordering::SeqCst) == OPS + 1
    });
    assert_eq!(c.ops_in_use().0, 0);
    timer.close().unwrap();
    s.close().unwrap();
    l.close().unwrap();
}
