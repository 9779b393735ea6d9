//! `cancel()` and `close()` with operations pending: every handler runs
//! once with `OperationAborted` and gets its buffer back.

use std::io::Write;
use std::sync::{Arc, Mutex};

use pinion::{Error, Result};

use super::{accept_one, b, listen, run_until};
use crate::util::{self, FixedBuf};

type Log = Arc<Mutex<Vec<(&'static str, Result<usize>, u32)>>>;

/// A server stream with a read and a write pending on it (the peer sends
/// nothing and reads nothing; the send path is full), and the peer.
fn with_read_and_write_pending(
    c: &'static b::IoContext, l: b::TcpListener<'static>, addr: std::net::SocketAddr, log: &Log,
) -> (b::TcpStream<'static>, std::net::TcpStream) {
    let peer = util::std_connect(addr);
    let s = accept_one(c, l);
    s.set_send_buffer_size(4096).unwrap();
    let l1 = log.clone();
    s.async_read_some(FixedBuf::new(64).tagged(1), move |r, buf| {
        l1.lock().unwrap().push(("read", r, buf.tag))
    })
    .map_err(|r| r.error)
    .unwrap();
    // The receiver may still open a little window after the send path
    // looked full (it compacts its queue now and then), and a write that
    // then completes is right, not a bug: fill again and retry.
    for _ in 0..20 {
        util::fill_send_path(s.as_raw_fd());
        let l2 = log.clone();
        s.async_write_some(
            FixedBuf::from_bytes(&[7u8; 1000]).tagged(2),
            move |r, buf| l2.lock().unwrap().push(("write", r, buf.tag)),
        )
        .map_err(|r| r.error)
        .unwrap();
        // Give the run loop a chance to (wrongly) complete them; on
        // io_uring, to submit them: an io_uring_enter that failed
        // (EAGAIN, EBUSY: seed 454214044) left them in the SQ, where the
        // close would have found the write before the kernel did.
        for _ in 0..100 {
            c.restart();
            c.poll();
        }
        let mut done = log.lock().unwrap();
        assert!(
            done.iter().all(|e| e.0 == "write" && e.1.is_ok()),
            "only a write into newly opened room may complete: {done:?}"
        );
        if done.is_empty() {
            drop(done);
            return (s, peer);
        }
        done.clear();
    }
    panic!("the send path never stayed full");
}

fn assert_both_aborted(log: &Log) {
    let mut v = log.lock().unwrap().clone();
    v.sort_by_key(|e| e.2);
    assert_eq!(
        v,
        vec![
            ("read", Err(Error::OperationAborted), 1),
            ("write", Err(Error::OperationAborted), 2)
        ]
    );
}

#[test]
fn cancel_aborts_pending_read_and_write_and_the_socket_stays_usable() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let log: Log = Default::default();
    let (s, mut peer) = with_read_and_write_pending(c, l, addr, &log);
    s.cancel().unwrap();
    run_until(c, "both aborted", || log.lock().unwrap().len() == 2);
    c.restart();
    c.poll();
    assert_both_aborted(&log);

    // Still open: a new read gets what the peer sends now.
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    s.async_read_some(FixedBuf::new(64), move |r, buf| {
        *g.lock().unwrap() = Some((r, buf.bytes().to_vec()))
    })
    .map_err(|r| r.error)
    .unwrap();
    peer.write_all(b"x").unwrap();
    run_until(c, "read after cancel", || got.lock().unwrap().is_some());
    assert_eq!(got.lock().unwrap().take().unwrap(), (Ok(1), b"x".to_vec()));
    s.close().unwrap();
    l.close().unwrap();
    run_until(c, "quiet", || c.outstanding_work() == 0);
    assert_eq!(c.ops_in_use().0, 0);
}

#[test]
fn close_aborts_pending_read_and_write() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let log: Log = Default::default();
    let (s, _peer) = with_read_and_write_pending(c, l, addr, &log);
    s.close().unwrap();
    run_until(c, "both aborted", || log.lock().unwrap().len() == 2);
    c.restart();
    c.poll();
    assert_both_aborted(&log);
    assert_eq!(s.as_raw_fd(), -1);
    assert_eq!(s.close(), Err(Error::BadDescriptor));
    l.close().unwrap();
    run_until(c, "quiet", || c.outstanding_work() == 0);
    assert_eq!(c.ops_in_use().0, 0);
}

#[test]
fn cancel_and_close_abort_a_pending_accept() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (l, _) = listen(c);
    let log: Log = Default::default();
    for round in 0..2 {
        let lg = log.clone();
        l.async_accept(move |r| lg.lock().unwrap().push(("accept", r.map(|_| 0), round)))
            .map_err(|r| r.error)
            .unwrap();
        if round == 0 {
            l.cancel().unwrap();
        } else {
            l.close().unwrap();
        }
        run_until(c, "accept aborted", || {
            log.lock().unwrap().len() == round as usize + 1
        });
    }
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            ("accept", Err(Error::OperationAborted), 0),
            ("accept", Err(Error::OperationAborted), 1)
        ]
    );
    assert_eq!(c.ops_in_use().0, 0);
}
