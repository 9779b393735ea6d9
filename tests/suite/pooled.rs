//! Pooled reads (`async_read_pooled`): the buffer is taken from the
//! context's read pool when data arrives (epoll) or by the kernel from a
//! provided buffer ring (io_uring), and goes back when dropped. Every test
//! ends with the whole pool free again: nothing leaks on any path. The
//! future form (`read_pooled`), and one dropped mid-flight.

use std::io::{Read, Write};
use std::net::Shutdown as StdShutdown;
use std::sync::{Arc, Mutex};

use pinion::compose::async_write;
use pinion::{Error, Pool, PooledBuf, ReadBufferCount};

use super::{accept_one, b, listen, run_until, Ctx};
use crate::util::{self, pattern_vec};

const COUNT: usize = 4;
const SIZE: usize = 256;

fn ctx() -> Option<Ctx> {
    Ctx::try_with(
        b::Builder::new()
            .ops(64)
            .descriptors(16)
            .timers(2)
            .read_buffers(COUNT, SIZE),
    )
}

type Got = Arc<Mutex<Vec<Result<Vec<u8>, Error>>>>;

/// Starts one pooled read whose result (bytes copied out, buffer dropped)
/// lands in `got`.
fn read_into(s: b::TcpStream<'static>, got: &Got) {
    let g = got.clone();
    s.async_read_pooled(move |r| g.lock().unwrap().push(r.map(|b| b.to_vec())))
        .map_err(|r| r.error)
        .expect("start pooled read");
}

#[test]
fn echo_through_pooled_reads_returns_every_buffer() {
    let Some(ctx) = ctx() else { return };
    let c = ctx.get();
    assert_eq!(
        c.read_buffers(),
        Some(ReadBufferCount {
            free: COUNT,
            total: COUNT,
            size: SIZE
        })
    );
    let (l, addr) = listen(c);
    let mut peer = util::std_connect(addr);
    let s = accept_one(c, l);

    // Echo loop: pooled read, write the same buffer back, read again.
    fn serve(s: b::TcpStream<'static>, done: Arc<Mutex<bool>>) {
        s.async_read_pooled(move |r| match r {
            Ok(buf) => {
                async_write(&s, buf, move |r, buf| {
                    r.expect("write back");
                    drop(buf);
                    serve(s, done);
                })
                .map_err(|r| r.error)
                .expect("start write");
            }
            Err(e) => {
                assert_eq!(e, Error::Eof);
                *done.lock().unwrap() = true;
            }
        })
        .map_err(|r| r.error)
        .expect("start pooled read");
    }
    let done = Arc::new(Mutex::new(false));
    serve(s, done.clone());

    // Messages larger than one buffer come back whole, in order.
    let msg = pattern_vec(3, 10 * SIZE + 17);
    let expect = msg.clone();
    let client = std::thread::spawn(move || {
        peer.write_all(&msg).unwrap();
        let mut back = vec![0; msg.len()];
        peer.read_exact(&mut back).unwrap();
        peer.shutdown(StdShutdown::Write).unwrap();
        back
    });
    run_until(c, "echo and end of stream", || *done.lock().unwrap());
    assert_eq!(client.join().unwrap(), expect);
    assert_eq!(c.read_buffers().unwrap().free, COUNT, "every buffer back");
    s.close().unwrap();
    l.close().unwrap();
}

#[test]
fn exhausted_pool_is_an_error_and_loses_no_data() {
    let Some(ctx) = ctx() else { return };
    let c = ctx.get();
    let (l, addr) = listen(c);
    let mut peer = util::std_connect(addr);
    let s = accept_one(c, l);

    // Hold every buffer of the pool in handlers' results.
    let held: Arc<Mutex<Vec<PooledBuf<'static>>>> = Arc::default();
    for i in 0..COUNT {
        peer.write_all(&[i as u8; 8]).unwrap();
        let h = held.clone();
        s.async_read_pooled(move |r| h.lock().unwrap().push(r.expect("read")))
            .map_err(|r| r.error)
            .unwrap();
        run_until(c, "pooled read", || held.lock().unwrap().len() == i + 1);
    }
    assert_eq!(c.read_buffers().unwrap().free, 0);

    // Data arrives while no buffer is free: the read says so.
    peer.write_all(b"later").unwrap();
    let got: Got = Arc::default();
    read_into(s, &got);
    run_until(c, "refused read", || !got.lock().unwrap().is_empty());
    assert_eq!(got.lock().unwrap()[0], Err(Error::PoolFull(Pool::ReadBuffers)));

    // Once a buffer is free again, the same bytes are read.
    held.lock().unwrap().pop();
    read_into(s, &got);
    run_until(c, "read after a buffer came back", || {
        got.lock().unwrap().len() == 2
    });
    assert_eq!(got.lock().unwrap()[1], Ok(b"later".to_vec()));
    held.lock().unwrap().clear();
    assert_eq!(c.read_buffers().unwrap().free, COUNT);
    s.close().unwrap();
    l.close().unwrap();
}

#[test]
fn cancel_and_close_with_pooled_reads_pending_hold_no_buffer() {
    let Some(ctx) = ctx() else { return };
    let c = ctx.get();
    let (l, addr) = listen(c);
    let _peer = util::std_connect(addr);
    let s = accept_one(c, l);

    let got: Got = Arc::default();
    read_into(s, &got);
    // Let the read reach the kernel (io_uring) or the descriptor's queue.
    c.restart();
    c.poll();
    s.cancel().unwrap();
    run_until(c, "cancelled read", || got.lock().unwrap().len() == 1);
    assert_eq!(got.lock().unwrap()[0], Err(Error::OperationAborted));

    read_into(s, &got);
    c.restart();
    c.poll();
    s.close().unwrap();
    run_until(c, "read aborted by close", || {
        got.lock().unwrap().len() == 2
    });
    assert_eq!(got.lock().unwrap()[1], Err(Error::OperationAborted));
    assert_eq!(c.read_buffers().unwrap().free, COUNT, "no buffer kept");
    l.close().unwrap();
}

#[test]
fn end_of_stream_holds_no_buffer() {
    let Some(ctx) = ctx() else { return };
    let c = ctx.get();
    let (l, addr) = listen(c);
    let peer = util::std_connect(addr);
    let s = accept_one(c, l);
    let got: Got = Arc::default();
    read_into(s, &got);
    drop(peer);
    run_until(c, "end of stream", || !got.lock().unwrap().is_empty());
    assert_eq!(got.lock().unwrap()[0], Err(Error::Eof));
    assert_eq!(c.read_buffers().unwrap().free, COUNT);
    s.close().unwrap();
    l.close().unwrap();
}

#[test]
fn destroying_the_context_drops_pending_pooled_reads() {
    // Reads pending at shutdown, one of them completed with data whose
    // handler never ran: the context destroys both handlers without
    // running them, and returns the filled buffer to the pool before the
    // pool itself goes (miri-free here, but a use after free would crash
    // or corrupt the allocator under the test binary's checks).
    let Some(ctx) = ctx() else { return };
    let c = ctx.get();
    let (l, addr) = listen(c);
    let mut peer = util::std_connect(addr);
    let s = accept_one(c, l);
    let (l2, addr2) = listen(c);
    let _idle = util::std_connect(addr2);
    let s2 = accept_one(c, l2);
    peer.write_all(b"pending").unwrap();
    let drops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for s in [s, s2] {
        let token = util::FixedBuf::new(1).counting(&drops);
        s.async_read_pooled(move |_| {
            drop(token);
            panic!("never run")
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    // Not run: on epoll the read with data completed speculatively and
    // its handler waits in the queue holding a buffer; on io_uring both
    // reads are still to be submitted.
    drop(ctx);
    assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn without_read_buffers_pooled_reads_are_refused() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    assert_eq!(c.read_buffers(), None);
    let (l, addr) = listen(c);
    let _peer = util::std_connect(addr);
    let s = accept_one(c, l);
    let r = s
        .async_read_pooled(|_| panic!("never queued"))
        .expect_err("no pool");
    assert_eq!(r.error, Error::NoPool(Pool::ReadBuffers));
    s.close().unwrap();
    l.close().unwrap();
}

/// The pooled read's future, in a task and in `block_on`; without a pool
/// it is `NoPool`.
#[test]
fn the_pooled_read_future_reads_into_the_pool() {
    let Some(ctx) = Ctx::try_with(
        b::Builder::new().ops(64).descriptors(16).timers(4).tasks(2, 2048).read_buffers(COUNT, SIZE),
    ) else {
        return;
    };
    let c = ctx.get();
    let (l, addr) = listen(c);
    let mut peer = util::std_connect(addr);
    let s = accept_one(c, l);
    l.close().unwrap();
    peer.write_all(b"hello").unwrap();
    let h = c
        .spawn(async move { s.read_pooled().await.map(|b| b.to_vec()) })
        .map_err(|r| r.error)
        .unwrap();
    assert_eq!(c.block_on(h).unwrap().expect("task"), Ok(b"hello".to_vec()));
    peer.write_all(b"again").unwrap();
    let got = c.block_on(async move { s.read_pooled().await.map(|b| b.to_vec()) }).unwrap();
    assert_eq!(got, Ok(b"again".to_vec()));
    drop(peer);
    assert_eq!(c.block_on(s.read_pooled()).unwrap().err(), Some(Error::Eof));
    s.close().unwrap();
    assert_eq!(c.read_buffers().unwrap().free, COUNT);

    let plain = ctx_or_skip!(Ctx::builder().tasks(2, 2048));
    let p = plain.get();
    let (l, addr) = listen(p);
    let _peer = util::std_connect(addr);
    let s = accept_one(p, l);
    let r = p.block_on(s.read_pooled()).unwrap();
    assert_eq!(r.err(), Some(Error::NoPool(Pool::ReadBuffers)));
    s.close().unwrap();
    l.close().unwrap();
}

/// A pooled read dropped while it waits is cancelled: its operation
/// ends (its slot comes back), it holds no buffer, and the bytes sent
/// afterwards go to the next read. On io_uring its SQE carries a tagged
/// `user_data`, which the cancel must name: a cancel by the plain
/// operation address found nothing, and the read stayed in the kernel
/// and took the next bytes.
#[test]
fn a_dropped_pooled_read_is_cancelled() {
    let Some(ctx) = Ctx::try_with(
        b::Builder::new().ops(64).descriptors(16).timers(4).tasks(2, 2048).read_buffers(COUNT, SIZE),
    ) else {
        return;
    };
    let c = ctx.get();
    let (l, addr) = listen(c);
    let mut peer = util::std_connect(addr);
    let s = accept_one(c, l);
    l.close().unwrap();
    let before = c.ops_in_use().0;
    let h = c
        .spawn(async move {
            let r = pinion::aio::timeout(c, std::time::Duration::from_millis(20), s.read_pooled()).await;
            let got = format!("{:?}", r.as_ref().map(|r| r.as_ref().map(|b| b.len())));
            assert_eq!(r.err(), Some(Error::TimedOut), "{got}");
        })
        .map_err(|r| r.error)
        .unwrap();
    c.block_on(h).unwrap().expect("task");
    run_until(c, "the cancelled pooled read ends", || c.ops_in_use().0 == before);
    assert_eq!(c.read_buffers().unwrap().free, COUNT);
    peer.write_all(b"after").unwrap();
    let got = c.block_on(async move { s.read_pooled().await.map(|b| b.to_vec()) }).unwrap();
    assert_eq!(got, Ok(b"after".to_vec()), "the dropped read took nothing");
    s.close().unwrap();
    assert_eq!(c.read_buffers().unwrap().free, COUNT);
}
