//! Pooled reads on io_uring: the provided buffer ring and its software
//! fallback (`Builder::buffer_ring(false)`), over real loopback sockets.
//!
//! The shared conformance suite (`tests/suite/pooled.rs`) runs on the
//! ring; the tests here run its behaviours in both modes and add what
//! only io_uring has: a buffer the kernel picked for a CQE that is not
//! handed to the user (cancelled, destroyed unrun) goes back to the ring,
//! `ENOBUFS` is `PoolFull(ReadBuffers)` with no data lost, and a read
//! started while the ring is empty waits for data instead of failing.
//!
//! Every test ends with the whole pool free again.
#![cfg(feature = "uring")]

mod uring_util;
mod util;

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinion::uring::{Builder, IoContext, TcpListener, TcpStream};
use pinion::{BuildError, Error, Pool, PooledBuf, ReadBufferCount};
use uring_util::*;
use util::{open_fds, WATCHDOG};

const COUNT: usize = 4;
const SIZE: usize = 256;

/// Both ways of serving the read pool.
const MODES: [bool; 2] = [true, false];

fn mode(ring: bool) -> &'static str {
    if ring {
        "ring"
    } else {
        "fallback"
    }
}

fn builder(ring: bool) -> Builder {
    Builder::new()
        .ops(64)
        .descriptors(64)
        .timers(4)
        .read_buffers(COUNT, SIZE)
        .buffer_ring(ring)
}

/// A context with read buffers served as asked; `None` (skipped loudly)
/// without io_uring. Fails if the ring was asked for and not used: this
/// project's kernels have provided buffer rings.
fn ctx(ring: bool, test: &str) -> Option<&'static IoContext> {
    let ctx = ctx_or_skip(builder(ring), test)?;
    assert_eq!(
        ctx.ring_info().buffer_ring,
        ring,
        "{test}: buffer ring in use"
    );
    Some(ctx)
}

fn free(ctx: &IoContext) -> usize {
    ctx.read_buffers().expect("read buffers").free
}

/// Runs the context until `done()` holds; fails after the watchdog.
fn run_until(ctx: &IoContext, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < WATCHDOG,
            "watchdog: {what} did not happen"
        );
        ctx.restart();
        if ctx.run_for(Duration::from_millis(20)) == 0 && ctx.outstanding_work() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Runs the context for about `ms` milliseconds.
fn run_for_ms(ctx: &IoContext, ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        ctx.restart();
        ctx.run_for(Duration::from_millis(5));
    }
}

/// The server side of a loopback connection and its std peer.
fn pair(ctx: &'static IoContext) -> (TcpStream<'static>, StdStream) {
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let peer = StdStream::connect(l.local_addr().unwrap()).unwrap();
    peer.set_read_timeout(Some(WATCHDOG)).unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    l.async_accept(move |r| *g.lock().unwrap() = Some(r.expect("accept").0))
        .unwrap();
    run_until(ctx, "accept", || got.lock().unwrap().is_some());
    l.close().unwrap();
    let s = got.lock().unwrap().take().unwrap();
    (s, peer)
}

type Got = Arc<Mutex<Vec<Result<Vec<u8>, Error>>>>;

/// Starts a pooled read whose result (bytes copied out, buffer dropped)
/// lands in `got`.
fn read_into(s: TcpStream<'static>, got: &Got) {
    let g = got.clone();
    s.async_read_pooled(move |r| g.lock().unwrap().push(r.map(|b| b.to_vec())))
        .map_err(|r| r.error)
        .expect("start pooled read");
}

/// Reads once per buffer, each with data waiting, keeping every buffer.
fn hold_every_buffer(
    ctx: &'static IoContext, s: TcpStream<'static>, peer: &mut StdStream,
) -> Arc<Mutex<Vec<PooledBuf<'static>>>> {
    let held: Arc<Mutex<Vec<PooledBuf<'static>>>> = Arc::default();
    for i in 0..COUNT {
        peer.write_all(&[i as u8; 8]).unwrap();
        let h = held.clone();
        s.async_read_pooled(move |r| h.lock().unwrap().push(r.expect("read")))
            .map_err(|r| r.error)
            .unwrap();
        run_until(ctx, "a read holding a buffer", || {
            held.lock().unwrap().len() == i + 1
        });
    }
    assert_eq!(free(ctx), 0);
    held
}

#[test]
fn ring_info_says_which_pool_serves_reads() {
    let _g = serial();
    let Some(plain) = ctx_or_skip(Builder::new(), "ring_info_says_which_pool") else {
        return;
    };
    assert_eq!(plain.read_buffers(), None);
    assert!(!plain.ring_info().buffer_ring);
    let ring = ctx(true, "ring_info_says_which_pool").unwrap();
    assert_eq!(
        ring.read_buffers(),
        Some(ReadBufferCount {
            free: COUNT,
            total: COUNT,
            size: SIZE
        })
    );
    // The ring's entries (one page here) are pinned; the buffers are not.
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    assert_eq!(ring.pinned_bytes(), plain.pinned_bytes() + page);
    let soft = ctx(false, "ring_info_says_which_pool").unwrap();
    assert_eq!(soft.pinned_bytes(), plain.pinned_bytes());
    assert_eq!(soft.read_buffers(), ring.read_buffers());
    // Sizes are exact: below 16 bytes (a free buffer holds its pool link)
    // is a build error naming the knob; 16 is served by the ring. More
    // buffers than a ring may hold get the software pool.
    match Builder::new().read_buffers(1, 1).build() {
        Err(e @ BuildError::Invalid { knob, .. }) => {
            assert_eq!(knob, "read_buffers");
            assert!(e.to_string().contains("16 bytes"), "{e}");
        }
        Err(e) => panic!("read_buffers(1, 1): {e}"),
        Ok(_) => panic!("read_buffers(1, 1) was built"),
    }
    let small = ctx_or_skip(Builder::new().read_buffers(1, 16), "small").unwrap();
    assert_eq!(small.read_buffers().unwrap().size, 16);
    assert!(small.ring_info().buffer_ring);
    let many = ctx_or_skip(Builder::new().read_buffers(32769, 16), "many").unwrap();
    assert!(!many.ring_info().buffer_ring);
    assert_eq!(many.read_buffers().unwrap().free, 32769);
    // SAFETY: nothing uses them any more.
    unsafe {
        for c in [plain, ring, soft, small, many] {
            free_ctx(c);
        }
    }
}

/// Echo through pooled reads (messages larger than a buffer), the buffers
/// written back as they are; some dropped on another thread. Every buffer
/// is back at the end, in both modes.
#[test]
fn echo_returns_every_buffer_in_both_modes() {
    let _g = serial();
    for ring in MODES {
        let Some(ctx) = ctx(ring, "echo_returns_every_buffer") else {
            return;
        };
        let (s, mut peer) = pair(ctx);
        let done = Arc::new(AtomicUsize::new(0));
        fn serve(s: TcpStream<'static>, n: usize, done: Arc<AtomicUsize>) {
            s.async_read_pooled(move |r| match r {
                Ok(buf) => {
                    assert!(buf.len() <= buf.capacity());
                    if n % 3 == 2 {
                        // Dropped on another thread: back in the ring all
                        // the same. Echo a copy instead.
                        let copy = buf.to_vec();
                        std::thread::spawn(move || drop(buf)).join().unwrap();
                        pinion::compose::async_write(&s, copy, move |r, _| {
                            r.expect("write back");
                            serve(s, n + 1, done);
                        })
                        .map_err(|r| r.error)
                        .unwrap();
                    } else {
                        pinion::compose::async_write(&s, buf, move |r, buf| {
                            r.expect("write back");
                            drop(buf);
                            serve(s, n + 1, done);
                        })
                        .map_err(|r| r.error)
                        .unwrap();
                    }
                }
                Err(e) => {
                    assert_eq!(e, Error::Eof);
                    done.store(1, Ordering::SeqCst);
                }
            })
            .map_err(|r| r.error)
            .unwrap();
        }
        serve(s, 0, done.clone());
        let msg: Vec<u8> = (0..10 * SIZE + 17).map(|i| (i * 7 % 251) as u8).collect();
        let expect = msg.clone();
        let client = std::thread::spawn(move || {
            peer.write_all(&msg).unwrap();
            let mut back = vec![0; msg.len()];
            peer.read_exact(&mut back).unwrap();
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            back
        });
        run_until(ctx, "echo and end of stream", || {
            done.load(Ordering::SeqCst) == 1
        });
        assert_eq!(client.join().unwrap(), expect, "{}", mode(ring));
        assert_eq!(free(ctx), COUNT, "{}: every buffer back", mode(ring));
        s.close().unwrap();
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
    }
}

/// A waiting pooled read holds no buffer on the ring; the fallback's
/// holds one from its start (documented). Cancel gives it back.
#[test]
fn only_the_fallback_holds_a_buffer_while_waiting() {
    let _g = serial();
    for ring in MODES {
        let Some(ctx) = ctx(ring, "only_the_fallback_holds_a_buffer") else {
            return;
        };
        let (s, _peer) = pair(ctx);
        let got: Got = Arc::default();
        read_into(s, &got);
        run_for_ms(ctx, 20);
        assert!(got.lock().unwrap().is_empty(), "no data: still waiting");
        let want = if ring { COUNT } else { COUNT - 1 };
        assert_eq!(free(ctx), want, "{}", mode(ring));
        s.cancel().unwrap();
        run_until(ctx, "cancelled read", || !got.lock().unwrap().is_empty());
        assert_eq!(got.lock().unwrap()[0], Err(Error::OperationAborted));
        assert_eq!(free(ctx), COUNT, "{}", mode(ring));
        s.close().unwrap();
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
    }
}

/// Data arriving while every buffer is held: `PoolFull(ReadBuffers)`
/// (`ENOBUFS` from the ring), counted in the stats, and the bytes stay in
/// the socket for the next read once a buffer is back.
#[test]
fn empty_pool_is_pool_full_without_data_loss() {
    let _g = serial();
    for ring in MODES {
        let Some(ctx) = ctx(ring, "empty_pool_is_pool_full") else {
            return;
        };
        let (s, mut peer) = pair(ctx);
        let held = hold_every_buffer(ctx, s, &mut peer);
        for (i, b) in held.lock().unwrap().iter().enumerate() {
            assert_eq!(&b[..], &[i as u8; 8]);
        }
        peer.write_all(b"later").unwrap();
        let got: Got = Arc::default();
        read_into(s, &got);
        run_until(ctx, "refused read", || !got.lock().unwrap().is_empty());
        assert_eq!(
            got.lock().unwrap()[0],
            Err(Error::PoolFull(Pool::ReadBuffers))
        );
        #[cfg(feature = "stats")]
        assert_eq!(ctx.stats().read_buffers_empty, 1);
        assert_eq!(free(ctx), 0);

        held.lock().unwrap().pop();
        read_into(s, &got);
        run_until(ctx, "read after a buffer came back", || {
            got.lock().unwrap().len() == 2
        });
        assert_eq!(
            got.lock().unwrap()[1],
            Ok(b"later".to_vec()),
            "{}",
            mode(ring)
        );
        held.lock().unwrap().clear();
        assert_eq!(free(ctx), COUNT);
        s.close().unwrap();
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
    }
}

/// A pooled read started while every buffer is held, on an idle socket,
/// waits (the ring's recv polls first; the fallback polls) instead of
/// failing at once. On the ring a buffer given back before the data
/// arrives serves it; the fallback's read, which started without one,
/// reports `PoolFull(ReadBuffers)` and the next read gets the bytes.
#[test]
fn a_read_started_with_the_pool_empty_waits_for_data() {
    let _g = serial();
    for ring in MODES {
        let Some(ctx) = ctx(ring, "a_read_started_with_the_pool_empty") else {
            return;
        };
        let (s, mut peer) = pair(ctx);
        let held = hold_every_buffer(ctx, s, &mut peer);
        let got: Got = Arc::default();
        read_into(s, &got);
        run_for_ms(ctx, 30);
        assert!(got.lock().unwrap().is_empty(), "{}: waits", mode(ring));

        held.lock().unwrap().pop();
        assert_eq!(free(ctx), 1);
        peer.write_all(b"now").unwrap();
        run_until(ctx, "read with data", || !got.lock().unwrap().is_empty());
        if ring {
            assert_eq!(got.lock().unwrap()[0], Ok(b"now".to_vec()));
        } else {
            assert_eq!(
                got.lock().unwrap()[0],
                Err(Error::PoolFull(Pool::ReadBuffers))
            );
            read_into(s, &got);
            run_until(ctx, "second read", || got.lock().unwrap().len() == 2);
            assert_eq!(got.lock().unwrap()[1], Ok(b"now".to_vec()));
        }
        held.lock().unwrap().clear();
        assert_eq!(free(ctx), COUNT, "{}", mode(ring));
        s.close().unwrap();
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
    }
}

/// Cancels and closes racing data on the wire, many times: whichever
/// wins, each read ends with its bytes or `OperationAborted`, no buffer is
/// kept, and (for cancel) no byte is lost or reordered. First, on the
/// idle socket, reads whose cancel reached the kernel surely abort.
#[test]
fn cancel_and_close_racing_data_keep_every_buffer_and_byte() {
    let _g = serial();
    const ROUNDS: usize = 200;
    for ring in MODES {
        let Some(ctx) = ctx(ring, "cancel_and_close_racing_data") else {
            return;
        };
        let (s, mut peer) = pair(ctx);
        let got: Got = Arc::default();
        for _ in 0..20 {
            read_into(s, &got);
            ctx.restart();
            ctx.poll();
            s.cancel().unwrap();
            run_until(ctx, "cancel", || !got.lock().unwrap().is_empty());
            assert_eq!(
                got.lock().unwrap().pop(),
                Some(Err(Error::OperationAborted))
            );
            assert_eq!(free(ctx), COUNT, "{}", mode(ring));
        }
        for i in 0..ROUNDS {
            peer.write_all(&[i as u8]).unwrap();
            read_into(s, &got);
            // Submit, so the cancel meets the read in the kernel (or its
            // completion already in the CQ).
            ctx.restart();
            ctx.poll();
            let _ = s.cancel();
            run_until(ctx, "read or cancel", || got.lock().unwrap().len() == i + 1);
        }
        let mut bytes = Vec::new();
        for r in got.lock().unwrap().drain(..) {
            match r {
                Ok(b) => bytes.extend(b),
                Err(e) => assert_eq!(e, Error::OperationAborted),
            }
        }
        while bytes.len() < ROUNDS {
            read_into(s, &got);
            run_until(ctx, "drain", || !got.lock().unwrap().is_empty());
            bytes.extend(got.lock().unwrap().pop().unwrap().expect("drain read"));
        }
        let want: Vec<u8> = (0..ROUNDS).map(|i| i as u8).collect();
        assert_eq!(bytes, want, "{}: every byte, in order", mode(ring));
        assert_eq!(free(ctx), COUNT, "{}", mode(ring));
        s.close().unwrap();

        // Close racing data, on fresh connections.
        for _ in 0..50 {
            let (s, mut peer) = pair(ctx);
            peer.write_all(b"x").unwrap();
            read_into(s, &got);
            ctx.restart();
            ctx.poll();
            s.close().unwrap();
        }
        run_until(ctx, "reads ended by close", || {
            got.lock().unwrap().len() == 50
        });
        for r in got.lock().unwrap().iter() {
            assert!(
                matches!(r, Ok(b) if b == b"x") || *r == Err(Error::OperationAborted),
                "{r:?}"
            );
        }
        assert_eq!(free(ctx), COUNT, "{}", mode(ring));
        assert_eq!(ctx.descriptors_in_use(), 0);
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
    }
}

/// Dropping the context with a completed read queued and another still in
/// the kernel: two pooled reads whose data was already waiting complete in
/// the `io_uring_enter` that submits them and are reaped together, so
/// `run_one` runs one handler and leaves the other queued, holding the
/// buffer the kernel picked; a third read waits on an idle socket. The
/// drop destroys both pending handlers unrun (their buffers go back before
/// the pool goes) and leaks no fd.
///
/// On the ring, "queued holding a buffer" is seen from the pool: one
/// buffer short after `run_one` although the handler that ran dropped its
/// own. Should the second CQE miss the first reap, the round proves less;
/// it is tried again, up to `ATTEMPTS` times. The fallback's reads hold
/// their buffers from the start, so there it runs once.
#[test]
fn dropping_the_context_with_a_completed_read_queued() {
    const ATTEMPTS: usize = 20;
    let _g = serial();
    for ring in MODES {
        let mut queued_with_a_buffer = false;
        for _ in 0..if ring { ATTEMPTS } else { 1 } {
            let fds = open_fds();
            let Some(ctx) = ctx(ring, "dropping_the_context_with_a_completed_read") else {
                return;
            };
            let (s, mut peer) = pair(ctx);
            let (s_b, mut peer_b) = pair(ctx);
            let (s2, idle) = pair(ctx);
            peer.write_all(b"pending").unwrap();
            peer_b.write_all(b"pending").unwrap();
            let drops = Arc::new(AtomicUsize::new(0));
            let ran = Arc::new(AtomicUsize::new(0));
            for s in [s, s_b, s2] {
                let token = DropCount(drops.clone());
                let ran = ran.clone();
                s.async_read_pooled(move |r| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(r.map(|b| b.to_vec()), Ok(b"pending".to_vec()));
                    drop(token);
                })
                .map_err(|r| r.error)
                .unwrap();
            }
            ctx.restart();
            assert_eq!(watched(ctx, || ctx.run_one()), 1, "{}", mode(ring));
            assert_eq!(ran.load(Ordering::SeqCst), 1);
            queued_with_a_buffer = !ring || free(ctx) == COUNT - 1;
            // SAFETY: nothing uses ctx any more.
            unsafe { free_ctx(ctx) };
            assert_eq!(drops.load(Ordering::SeqCst), 3, "{}", mode(ring));
            assert_eq!(ran.load(Ordering::SeqCst), 1, "no pending handler ran");
            drop((peer, peer_b, idle));
            assert_eq!(open_fds(), fds, "{}: no fd leaked", mode(ring));
            if queued_with_a_buffer {
                break;
            }
        }
        assert!(
            queued_with_a_buffer,
            "{}: the second completion was never reaped with the first",
            mode(ring)
        );
    }
}

/// End of stream, in both modes: `Eof`, no buffer kept (the ring's CQE
/// for it may carry one, which goes back).
#[test]
fn end_of_stream_holds_no_buffer_in_both_modes() {
    let _g = serial();
    for ring in MODES {
        let Some(ctx) = ctx(ring, "end_of_stream_holds_no_buffer") else {
            return;
        };
        let (s, peer) = pair(ctx);
        let got: Got = Arc::default();
        read_into(s, &got);
        drop(peer);
        run_until(ctx, "end of stream", || !got.lock().unwrap().is_empty());
        assert_eq!(got.lock().unwrap()[0], Err(Error::Eof));
        assert_eq!(free(ctx), COUNT, "{}", mode(ring));
        // Refused on a closed handle, handler handed back.
        s.close().unwrap();
        let r = s.async_read_pooled(|_| ()).expect_err("closed");
        assert_eq!(r.error, Error::BadDescriptor);
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
    }
}

/// No op slot free: refused at the call, no buffer taken.
#[test]
fn a_full_op_pool_refuses_and_takes_no_buffer() {
    let _g = serial();
    for ring in MODES {
        let Some(ctx) = ctx_or_skip(builder(ring).ops(2), "a_full_op_pool_refuses") else {
            return;
        };
        let (s, _peer) = pair(ctx);
        let got: Got = Arc::default();
        read_into(s, &got);
        read_into(s, &got);
        let r = s.async_read_pooled(|_| ()).expect_err("no slot");
        assert_eq!(r.error, Error::PoolFull(Pool::Ops));
        let want = if ring { COUNT } else { COUNT - 2 };
        assert_eq!(free(ctx), want, "{}", mode(ring));
        s.close().unwrap();
        run_until(ctx, "aborted reads", || got.lock().unwrap().len() == 2);
        assert_eq!(free(ctx), COUNT);
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
    }
}

struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
