//! io_uring: accept at the process's fd limit, with single-shot and
//! multishot accepts: the handler gets TooManyOpenFiles and the listener
//! keeps working. In its own test binary because it lowers RLIMIT_NOFILE
//! for the whole process.
#![cfg(feature = "uring")]

mod uring_util;
mod util;

use std::sync::{Arc, Mutex};

use pinion::uring::{Builder, TcpListener};
use pinion::Error;
use uring_util::*;
use util::{nofile_limit, open_fds, set_nofile_limit};

fn accept_at_fd_limit(multishot: bool) {
    let name = if multishot {
        "emfile_multishot"
    } else {
        "emfile_single_shot"
    };
    let Some(ctx) = ctx_or_skip(Builder::new().multishot_accept(multishot), name) else {
        return;
    };
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    // A client connection waits in the listen queue.
    let client = std::net::TcpStream::connect(addr).unwrap();
    // Use up every fd below a lowered limit.
    let limit = (open_fds() + 16) as libc::rlim_t;
    let (old, _) = nofile_limit();
    set_nofile_limit(limit);
    let fillers = Arc::new(Mutex::new(Vec::new()));
    loop {
        // SAFETY: duplicating stdin's fd; the copy is closed below.
        let fd = unsafe { libc::dup(0) };
        if fd < 0 {
            break;
        }
        fillers.lock().unwrap().push(fd);
        assert!(fillers.lock().unwrap().len() < 100, "limit not reached");
    }
    let results = Arc::new(Mutex::new(Vec::new()));
    let (r, f) = (results.clone(), fillers.clone());
    l.async_accept(move |res| {
        r.lock()
            .unwrap()
            .push(res.as_ref().map(drop).map_err(|e| *e));
        // Free one fd: the same listener accepts now.
        // SAFETY: closing a filler fd this test made.
        unsafe { libc::close(f.lock().unwrap().pop().unwrap()) };
        let r2 = r.clone();
        l.async_accept(move |res| {
            let (s, _) = res.expect("accept after freeing an fd");
            r2.lock().unwrap().push(Ok(()));
            s.close().unwrap();
            l.close().unwrap();
        })
        .unwrap();
    })
    .unwrap();
    run_watched(ctx);
    set_nofile_limit(old);
    for fd in fillers.lock().unwrap().drain(..) {
        // SAFETY: closing filler fds this test made.
        unsafe { libc::close(fd) };
    }
    drop(client);
    assert_eq!(
        *results.lock().unwrap(),
        vec![Err(Error::TooManyOpenFiles), Ok(())]
    );
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

#[test]
fn accept_at_fd_limit_reports_and_recovers() {
    let _g = serial();
    accept_at_fd_limit(true);
    accept_at_fd_limit(false);
}
