//! Tests that read or change process-wide descriptor state (the fd limit,
//! the count of open fds), against the backend alias `b`. They run in
//! their own binary (`tests/fd_limit.rs`), one at a time.

backend!(b);

#[path = "../suite/support.rs"]
mod support;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pinion::Error;
use support::{accept_one, listen, run_until, Ctx};

use crate::util::{self, FixedBuf};

/// One test at a time: they all depend on the process's descriptors.
fn serial() -> MutexGuard<'static, ()> {
    // One lock for the whole binary (util is loaded once), not one per
    // backend module: the epoll and uring instances of these tests share
    // the process's descriptor table and limit.
    crate::util::PROCESS_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

#[test]
fn accept_at_the_fd_limit_fails_and_the_listener_keeps_serving() {
    let _serial = serial();
    let ctx = Ctx::new();
    let c = ctx.get();
    let (l, addr) = listen(c);
    let mut client = util::std_connect(addr); // waits in the backlog

    let (soft, _) = util::nofile_limit();
    util::set_nofile_limit(util::lowest_free_fd() as libc::rlim_t);
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    l.async_accept(move |r| *g.lock().unwrap() = Some(r.map(|(s, _)| s)))
        .map_err(|r| r.error)
        .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_until(c, "accept fails", || got.lock().unwrap().is_some())
    }));
    util::set_nofile_limit(soft);
    outcome.unwrap();
    assert_eq!(
        got.lock().unwrap().take().unwrap().err(),
        Some(Error::TooManyOpenFiles)
    );

    // Below the limit again: the same pending connection is accepted.
    let s = accept_one(c, l);
    client.write_all(b"ping").unwrap();
    let read = Arc::new(Mutex::new(None));
    let r2 = read.clone();
    s.async_read_some(FixedBuf::new(16), move |r, buf| {
        *r2.lock().unwrap() = Some((r, buf.bytes().to_vec()));
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "read after accept", || read.lock().unwrap().is_some());
    assert_eq!(
        read.lock().unwrap().take().unwrap(),
        (Ok(4), b"ping".to_vec())
    );
    s.close().unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    l.close().unwrap();
}

#[test]
fn dropping_the_context_destroys_pending_handlers_and_closes_every_fd() {
    let _serial = serial();
    let fds_before = util::open_fds();
    let token = Arc::new(()); // one clone per handler: all must be dropped
    let ran = Arc::new(AtomicBool::new(false));
    let buf_drops = Arc::new(AtomicUsize::new(0));
    let peer;
    {
        let ctx = Ctx::new();
        let c = ctx.get();
        let (l, addr) = listen(c);
        peer = util::std_connect(addr);
        let s = accept_one(c, l);
        let (client, _server) = support::connected_pair(c);
        let u = b::UdpSocket::bind(c, util::any_port()).unwrap();
        let t = b::SteadyTimer::new(c).unwrap();
        assert_eq!(t.expires_after(Duration::from_secs(3600)), Ok(0));

        macro_rules! handler {
            () => {{
                let (tk, rn) = (token.clone(), ran.clone());
                move |_r| {
                    let _ = &tk;
                    rn.store(true, Ordering::SeqCst);
                }
            }};
        }
        macro_rules! io_handler {
            () => {{
                let (tk, rn) = (token.clone(), ran.clone());
                move |_r, _buf| {
                    let _ = &tk;
                    rn.store(true, Ordering::SeqCst);
                }
            }};
        }
        let buf = || FixedBuf::new(64).counting(&buf_drops);
        s.async_read_some(buf(), io_handler!())
            .map_err(|r| r.error)
            .unwrap();
        // Completes at once (speculatively or in the kernel): its handler
        // is queued, never run.
        s.async_write_some(
            FixedBuf::from_bytes(b"x").counting(&buf_drops),
            io_handler!(),
        )
        .map_err(|r| r.error)
        .unwrap();
        client
            .async_read_some(buf(), io_handler!())
            .map_err(|r| r.error)
            .unwrap();
        u.async_receive_from(buf(), io_handler!())
            .map_err(|r| r.error)
            .unwrap();
        l.async_accept(handler!()).map_err(|r| r.error).unwrap();
        t.async_wait(handler!()).map_err(|r| r.error).unwrap();
        let (tk, rn) = (token.clone(), ran.clone());
        c.post(move || {
            let _ = &tk;
            rn.store(true, Ordering::SeqCst);
        })
        .map_err(|r| r.error)
        .unwrap();
        let strand = b::Strand::new(c).unwrap();
        let (tk, rn) = (token.clone(), ran.clone());
        strand
            .post(move || {
                let _ = &tk;
                rn.store(true, Ordering::SeqCst);
            })
            .map_err(|r| r.error)
            .unwrap();
        drop(strand);
        assert_eq!(Arc::strong_count(&token), 9); // 8 handlers
        assert!(c.ops_in_use().0 > 0);
        drop(ctx);
    }
    assert_eq!(Arc::strong_count(&token), 1, "a handler was leaked");
    assert!(!ran.load(Ordering::SeqCst), "a handler ran during the drop");
    assert_eq!(buf_drops.load(Ordering::SeqCst), 4, "a buffer was leaked");
    drop(peer);
    assert_eq!(util::open_fds(), fds_before, "descriptors leaked");
}

/// Stream descriptors leave no fd behind: closed, released, refused by a
/// full table, or dropped with the context while a read is pending.
#[test]
fn stream_descriptors_leak_no_fd_on_any_path() {
    use pinion::fd::StreamDescriptor;
    let _serial = serial();
    let before = util::open_fds();
    let pipe = || {
        let mut p = [0i32; 2];
        // SAFETY: `p` has room for both descriptors.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both were just made, ours alone.
        unsafe {
            (
                pinion_sys::Fd::from_raw(p[0]),
                pinion_sys::Fd::from_raw(p[1]),
            )
        }
    };
    {
        let ctx = Ctx::with(b::Builder::new().descriptors(2));
        let c = ctx.get();
        let (r, w) = pipe();
        let r = StreamDescriptor::from_fd(c, r).unwrap();
        let w = StreamDescriptor::from_fd(c, w).unwrap();
        let (x, _y) = pipe();
        assert!(
            StreamDescriptor::from_fd(c, x).is_err(),
            "the table is full"
        );
        drop(_y);
        w.release().map(drop).unwrap();
        r.async_read_some(FixedBuf::new(8), |_, _| {})
            .map_err(|r| r.error)
            .unwrap();
        c.poll();
        // `r` stays open with its read pending: the context's drop closes it.
    }
    assert_eq!(util::open_fds(), before, "descriptors leaked");
}

/// Unix sockets leave no fd (and no socket file) behind on any path: a
/// full table refusing a bind, a pair or a connect; bad paths; refused
/// and missing listeners; a served connection; the context dropped with
/// an accept pending.
#[test]
fn unix_sockets_leak_no_fd_on_any_path() {
    use pinion::net::UnixAddr;
    use pinion::Pool;
    let _serial = serial();
    let before = util::open_fds();
    let path = std::env::temp_dir().join(format!("pinion-fds-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let at = UnixAddr::path(path.as_os_str().as_encoded_bytes()).unwrap();
    {
        let ctx = Ctx::with(b::Builder::new().descriptors(3));
        let c = ctx.get();
        let l = b::UnixListener::bind(c, &at).unwrap();
        let (x, y) = b::UnixStream::pair(c).unwrap();
        let full = Err(Error::PoolFull(Pool::Descriptors));
        assert_eq!(b::UnixStream::pair(c).map(drop), full);
        assert_eq!(b::UnixStream::connect(c, &at).map(drop), full);
        let name = UnixAddr::abstract_name(b"pinion-fds-full").unwrap();
        assert_eq!(b::UnixDatagram::bind(c, &name).map(drop), full);
        x.close().unwrap();
        // Room for one: a connect, served, then closed.
        let s = b::UnixStream::connect(c, &at).unwrap();
        assert_eq!(b::UnixStream::pair(c).map(drop), full);
        drop(s);
        y.close().unwrap();
        let missing = UnixAddr::path(b"/nonexistent-pinion/x.sock").unwrap();
        let enoent = Err(Error::Os(pinion::Errno::NOENT));
        assert_eq!(b::UnixStream::connect(c, &missing).map(drop), enoent);
        assert_eq!(b::UnixListener::bind(c, &missing).map(drop), enoent);
        assert_eq!(
            b::UnixListener::bind(c, &at).map(drop),
            Err(Error::AddrInUse)
        );
        l.async_accept(|_| {}).map_err(|r| r.error).unwrap();
        c.poll();
        // The listener stays open with its accept pending: the context's
        // drop closes it.
    }
    assert_eq!(util::open_fds(), before, "descriptors leaked");
    assert!(path.exists(), "the listener's own file stays until removed");
    UnixAddr::path(path.as_os_str().as_encoded_bytes())
        .unwrap()
        .unlink()
        .unwrap();
}
