//! Helpers of the io_uring test binaries (`tests/uring_*.rs`): contexts
//! that skip loudly on kernels without io_uring, a watched run, a
//! connected TCP pair, echo state machines over `Vec<u8>` buffers.
//! Backend-independent helpers (fd counts, rlimits, the process lock) are
//! in `tests/util`.
#![allow(dead_code)] // each binary uses a different subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;

use pinion::buf::{IoBuf, Slice};
use pinion::uring::{Builder, IoContext, TcpListener, TcpStream};
use pinion::{BuildError, Error};

use crate::util;

/// Tests in one binary share the process's fd table and rlimits: run
/// them one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    util::PROCESS_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds a leaked context, or says loudly why the test is skipped (a
/// kernel without io_uring, or qemu-user, which passes no io_uring
/// syscall through). Said on the process's stderr, past the harness's
/// capture, so a run without `--nocapture` shows it. Any other build
/// error fails the test.
pub fn ctx_or_skip(b: Builder, test: &str) -> Option<&'static IoContext> {
    match b.build() {
        Ok(c) => Some(Box::leak(Box::new(c))),
        Err(
            e @ (BuildError::NotSupported
            | BuildError::Disabled(_)
            | BuildError::PermissionDenied
            | BuildError::KernelTooOld(_)),
        ) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {e}");
            None
        }
        Err(e) => panic!("{test}: build failed: {e}"),
    }
}

/// Frees a context made by `ctx_or_skip` (drop: cancels, drains, closes).
///
/// # Safety
/// No handle or reference to `ctx` is used afterwards.
pub unsafe fn free_ctx(ctx: &'static IoContext) {
    // SAFETY: `ctx` came from Box::leak in `ctx_or_skip`, and the caller
    // promises nothing uses it any more.
    drop(unsafe { Box::from_raw(ctx as *const IoContext as *mut IoContext) });
}

/// Runs `ctx` until it runs out of work; fails if that takes longer than
/// the watchdog (which stops it).
pub fn run_watched(ctx: &'static IoContext) -> usize {
    watched(ctx, || ctx.run())
}

/// Calls `run` (one of `ctx`'s run functions); fails if it takes longer
/// than the watchdog, which stops `ctx` to end it.
pub fn watched<R>(ctx: &'static IoContext, run: impl FnOnce() -> R) -> R {
    let (tx, rx) = mpsc::channel::<()>();
    let fired = Arc::new(AtomicBool::new(false));
    let f = fired.clone();
    let dog = thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(util::WATCHDOG) {
            f.store(true, Ordering::SeqCst);
            eprintln!(
                "watchdog: outstanding_work={} ops_in_use={:?} descriptors_in_use={}",
                ctx.outstanding_work(),
                ctx.ops_in_use(),
                ctx.descriptors_in_use()
            );
            #[cfg(feature = "stats")]
            eprintln!("watchdog: {:?}", ctx.stats());
            ctx.stop();
        }
    });
    let n = run();
    drop(tx);
    dog.join().unwrap();
    assert!(
        !fired.load(Ordering::SeqCst),
        "watchdog: the context ran for longer than {:?}",
        util::WATCHDOG
    );
    n
}

pub fn loopback() -> SocketAddr {
    util::any_port()
}

// ---- connected pair -----------------------------------------------------

/// Accepts one connection and hands the server side and the client side
/// to `f` (both inside the running context).
pub fn with_pair<F>(ctx: &'static IoContext, f: F)
where
    F: FnOnce(TcpStream<'static>, TcpStream<'static>) + Send + 'static,
{
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    let client = Arc::new(Mutex::new(None::<TcpStream<'static>>));
    let server = Arc::new(Mutex::new(None::<TcpStream<'static>>));
    let f = Arc::new(Mutex::new(Some(f)));
    let go = {
        let (client, server, f) = (client.clone(), server.clone(), f.clone());
        move || {
            let (c, s) = (*client.lock().unwrap(), *server.lock().unwrap());
            if let (Some(c), Some(s)) = (c, s) {
                (f.lock().unwrap().take().unwrap())(s, c);
            }
        }
    };
    let go2 = go.clone();
    l.async_accept(move |r| {
        *server.lock().unwrap() = Some(r.unwrap().0);
        l.close().unwrap();
        go();
    })
    .unwrap();
    TcpStream::async_connect(ctx, addr, move |r| {
        *client.lock().unwrap() = Some(r.unwrap());
        go2();
    })
    .unwrap();
}

// ---- echo server --------------------------------------------------------

/// Accepts `conns` connections on `l`, echoes each until EOF, then closes
/// the listener.
pub fn serve_echo(l: TcpListener<'static>, conns: usize) {
    l.async_accept(move |r| {
        let (s, _) = r.expect("accept");
        echo_read(s, Vec::with_capacity(4096));
        if conns > 1 {
            serve_echo(l, conns - 1);
        } else {
            l.close().unwrap();
        }
    })
    .unwrap();
}

pub fn echo_read(s: TcpStream<'static>, mut buf: Vec<u8>) {
    buf.clear();
    s.async_read_some(buf, move |r, buf| match r {
        Ok(_) => echo_write(s, Slice::new(buf, 0)),
        Err(Error::Eof) | Err(Error::ConnectionReset) => s.close().unwrap(),
        Err(e) => panic!("echo read: {e}"),
    })
    .unwrap();
}

fn echo_write(s: TcpStream<'static>, sl: Slice<Vec<u8>>) {
    s.async_write_some(sl, move |r, mut sl| {
        let n = r.expect("echo write");
        sl.consume(n);
        if sl.bytes_len() == 0 {
            echo_read(s, sl.into_inner());
        } else {
            echo_write(s, sl);
        }
    })
    .unwrap();
}

// ---- echo client --------------------------------------------------------

/// Connects to `addr`, sends `msgs` messages of `size` bytes and checks
/// each echo, then closes and counts itself in `done`.
pub fn echo_client(
    ctx: &'static IoContext, addr: SocketAddr, msgs: usize, size: usize, done: Arc<AtomicUsize>,
) {
    TcpStream::async_connect(ctx, addr, move |r| {
        let s = r.expect("connect");
        let tx = Vec::with_capacity(size);
        let rx = Vec::with_capacity(size);
        client_step(s, 0, msgs, tx, rx, done);
    })
    .unwrap();
}

/// One round trip; buffers are reused, so the steady state allocates
/// nothing.
pub fn client_step(
    s: TcpStream<'static>, i: usize, msgs: usize, mut tx: Vec<u8>, mut rx: Vec<u8>,
    done: Arc<AtomicUsize>,
) {
    if i == msgs {
        s.close().unwrap();
        done.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let size = tx.capacity();
    tx.clear();
    tx.resize(size, (i % 251) as u8);
    rx.clear();
    write_all(s, Slice::new(tx, 0), move |tx| {
        read_exact(s, rx, size, move |rx| {
            assert!(rx.iter().all(|&b| b == (i % 251) as u8), "echo mismatch");
            client_step(s, i + 1, msgs, tx, rx, done);
        });
    });
}

pub fn write_all<K: FnOnce(Vec<u8>) + Send + 'static>(
    s: TcpStream<'static>, sl: Slice<Vec<u8>>, k: K,
) {
    s.async_write_some(sl, move |r, mut sl| {
        sl.consume(r.expect("write"));
        if sl.bytes_len() == 0 {
            k(sl.into_inner())
        } else {
            write_all(s, sl, k)
        }
    })
    .unwrap();
}

pub fn read_exact<K: FnOnce(Vec<u8>) + Send + 'static>(
    s: TcpStream<'static>, buf: Vec<u8>, want: usize, k: K,
) {
    if buf.len() == want {
        return k(buf);
    }
    assert!(buf.capacity() >= want);
    s.async_read_some(buf, move |r, mut buf| {
        r.expect("read");
        if buf.len() >= want {
            buf.truncate(want);
            k(buf)
        } else {
            read_exact(s, buf, want, k)
        }
    })
    .unwrap();
}
