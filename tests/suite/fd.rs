//! `StreamDescriptor` over kernel objects that are not sockets: a pipe
//! carrying 1 MiB through the composed operations, an eventfd woken from
//! another thread, end of file, cancel, close, a full table, async/await.
//! That a descriptor was closed is shown by its pipe's other end reading
//! end of file (a count of `/proc/self/fd` would race the suite's other
//! tests, which run in parallel).

use std::sync::{Arc, Mutex};

use pinion::backend::Readiness;
use pinion::compose::{async_read, async_write, Completion};
use pinion::fd::StreamDescriptor;
use pinion::{Error, Owned, Pool};
use pinion_sys::Fd;

use super::{b, run_until, Ctx};
use crate::util::{self, FixedBuf};

type Desc = StreamDescriptor<'static, b::Backend>;

fn pipe() -> (Fd, Fd) {
    let mut p = [0i32; 2];
    // SAFETY: `p` has room for both descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just made, ours alone.
    unsafe { (Fd::from_raw(p[0]), Fd::from_raw(p[1])) }
}

fn eventfd() -> Fd {
    // SAFETY: plain integers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: just made, ours alone.
    unsafe { Fd::from_raw(fd) }
}

/// Whether every write end of the pipe whose read end is `r` is closed:
/// a non-blocking read then gives end of file, not `EAGAIN`.
fn writers_gone(r: &Fd) -> bool {
    pinion_sys::socket::set_nonblocking(r.raw(), true).unwrap();
    pinion_sys::fd::read(r.raw(), &mut [0u8; 1]) == Ok(0)
}

#[test]
fn a_mebibyte_through_a_pipe_with_the_composed_operations() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (r, w) = pipe();
    let r: Desc = StreamDescriptor::from_fd(c, r).unwrap();
    let w: Desc = StreamDescriptor::from_fd(c, w).unwrap();
    let msg = util::pattern_vec(3, 1 << 20);
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    // The pipe holds 64 KiB: both sides take many steps and waits.
    async_read(
        &r,
        FixedBuf::new(1 << 20),
        Completion::TransferAll,
        move |n, buf| {
            *g.lock().unwrap() = Some((n, buf.bytes().to_vec()));
        },
    )
    .map_err(|r| r.error)
    .unwrap();
    let wrote = Arc::new(Mutex::new(None));
    let wr = wrote.clone();
    async_write(&w, msg.clone(), move |n, _| *wr.lock().unwrap() = Some(n))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "1 MiB through the pipe", || {
        got.lock().unwrap().is_some()
    });
    assert_eq!(wrote.lock().unwrap().take(), Some(Ok(1 << 20)));
    let (n, bytes) = got.lock().unwrap().take().unwrap();
    assert_eq!(n, Ok(1 << 20));
    assert!(bytes == msg, "the bytes came through in order");
    r.close().unwrap();
    w.close().unwrap();
    assert_eq!(c.descriptors_in_use(), 0);
}

#[test]
fn the_writer_closing_is_end_of_file_and_cancel_aborts_a_read() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (r, w) = pipe();
    let r = Owned::new(Desc::from_fd(c, r).unwrap());
    let w = Owned::new(Desc::from_fd(c, w).unwrap());
    // A pending read, cancelled: OperationAborted, buffer handed back.
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    r.async_read_some(FixedBuf::new(8), move |n, b| {
        g.lock().unwrap().push((n, b.capacity()))
    })
    .map_err(|r| r.error)
    .unwrap();
    c.poll();
    r.cancel().unwrap();
    run_until(c, "the cancelled read", || got.lock().unwrap().len() == 1);
    assert_eq!(got.lock().unwrap()[0], (Err(Error::OperationAborted), 8));
    // The writer goes: the next read is end of file.
    let g = got.clone();
    r.async_read_some(FixedBuf::new(8), move |n, b| {
        g.lock().unwrap().push((n, b.capacity()))
    })
    .map_err(|r| r.error)
    .unwrap();
    drop(w);
    run_until(c, "end of file", || got.lock().unwrap().len() == 2);
    assert_eq!(got.lock().unwrap()[1], (Err(Error::Eof), 8));
    // A buffer with no room is refused at the call.
    let full = FixedBuf::from_bytes(b"12345678");
    let e = r.async_read_some(full, |_, _| {}).unwrap_err();
    assert_eq!(e.error, Error::BufferFull);
    drop(r);
    assert_eq!(c.descriptors_in_use(), 0);
}

#[test]
fn an_eventfd_signalled_from_another_thread_wakes_a_wait() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let e = Owned::new(Desc::from_fd(c, eventfd()).unwrap());
    let fd = e.as_raw_fd();
    let woke = Arc::new(Mutex::new(None));
    let wk = woke.clone();
    e.async_wait(Readiness::Readable, move |r| *wk.lock().unwrap() = Some(r))
        .map_err(|r| r.error)
        .unwrap();
    c.poll();
    assert!(woke.lock().unwrap().is_none(), "not readable yet");
    let t = std::thread::spawn(move || {
        // SAFETY: an 8-byte counter increment on a live eventfd.
        let one = 1u64;
        assert_eq!(
            unsafe { libc::write(fd, (&one as *const u64).cast(), 8) },
            8
        );
    });
    run_until(c, "the eventfd wait", || woke.lock().unwrap().is_some());
    t.join().unwrap();
    assert_eq!(woke.lock().unwrap().take(), Some(Ok(())));
    let mut v = [0u8; 8];
    assert_eq!(e.try_read(&mut v), Ok(8));
    assert_eq!(u64::from_ne_bytes(v), 1);
    assert_eq!(e.try_read(&mut v), Err(Error::WouldBlock), "drained");
}

#[test]
fn a_full_table_is_named_and_closes_the_fd_and_stale_handles_are_refused() {
    let ctx = ctx_or_skip!(b::Builder::new().descriptors(1));
    let c = ctx.get();
    let a = Desc::from_fd(c, eventfd()).unwrap();
    // The refused descriptor is closed: its pipe reads end of file.
    let (r, w) = pipe();
    assert_eq!(
        Desc::from_fd(c, w).unwrap_err(),
        Error::PoolFull(Pool::Descriptors)
    );
    assert!(writers_gone(&r), "the refused write end was closed");
    // release: the caller owns a duplicate; the slot is free again, and
    // the old handle is stale.
    let fd = a.release().unwrap();
    assert_eq!(c.descriptors_in_use(), 0);
    assert_eq!(a.try_read(&mut [0; 8]), Err(Error::BadDescriptor));
    assert_eq!(a.close(), Err(Error::BadDescriptor));
    let again = Desc::from_fd(c, fd).unwrap();
    again.close().unwrap();
    // close closes: a registered write end, closed, leaves no writer.
    let (r, w) = pipe();
    let d = Desc::from_fd(c, w).unwrap();
    assert!(!writers_gone(&r));
    d.close().unwrap();
    assert!(writers_gone(&r), "close closed the descriptor");
}

/// A regular file cannot be polled (epoll refuses it); on io_uring it is
/// always ready. Either way a handle works or the error is clear, and a
/// refused descriptor is closed.
#[test]
fn a_regular_file_is_refused_or_always_ready() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let f = std::fs::File::open("/proc/self/status").expect("a regular file");
    match Desc::from_owned_fd(c, f.into()) {
        Err(e) => assert_eq!(e, Error::OperationNotSupported, "{e}"),
        Ok(d) => {
            let mut buf = [0u8; 64];
            assert!(d.try_read(&mut buf).unwrap() > 0);
            d.close().unwrap();
        }
    }
    assert_eq!(c.descriptors_in_use(), 0);
}

#[test]
fn futures_read_and_write_a_pipe() {
    let ctx = ctx_or_skip!(Ctx::builder().tasks(4, 4096));
    let c = ctx.get();
    let (r, w) = pipe();
    let r = Owned::new(Desc::from_fd(c, r).unwrap());
    let w = Owned::new(Desc::from_fd(c, w).unwrap());
    let reader = c
        .spawn(async move {
            let mut all = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) => return Ok(all),
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
        })
        .map_err(|r| r.error)
        .unwrap();
    let msg = util::pattern_vec(9, 300_000);
    let m = msg.clone();
    let got = c
        .block_on(async move {
            let mut rest = &m[..];
            while !rest.is_empty() {
                let n = w.write(rest).await.expect("write");
                rest = &rest[n..];
            }
            drop(w); // end of file for the reader
            reader.await
        })
        .unwrap();
    assert!(got.unwrap().unwrap() == msg);
    assert_eq!(c.descriptors_in_use(), 0);
}
