//! `StreamDescriptor` over kernel objects that are not sockets: a pipe
//! carrying 1 MiB through the composed operations, an eventfd woken from
//! another thread, end of file, cancel, close, a full table, async/await,
//! scatter/gather (`readv`/`writev`), and a tty in canonical mode (a line
//! per read with more queued).
//! That a descriptor was closed is shown by its pipe's other end reading
//! end of file (a count of `/proc/self/fd` would race the suite's other
//! tests, which run in parallel).

use std::sync::{Arc, Mutex};

use pinion::backend::Readiness;
use pinion::compose::{
    async_read, async_read_until, async_write, async_write_vectored, Completion,
};
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

/// A gather write and a scatter read through a pipe (callbacks), then the
/// composed gather write of 768 KiB, which the 64 KiB pipe takes in many
/// partial `writev`s.
#[test]
fn scatter_and_gather_through_a_pipe() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let (r, w) = pipe();
    let r: Desc = StreamDescriptor::from_fd(c, r).unwrap();
    let w: Desc = StreamDescriptor::from_fd(c, w).unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let out: [&'static [u8]; 4] = [b"one ", b"", b"two ", b"three"];
    w.async_write_some_vectored(out, move |n, back| {
        assert_eq!(n, Ok(13));
        assert_eq!(back, out);
        let bufs = [
            Vec::with_capacity(3),
            Vec::with_capacity(4),
            Vec::with_capacity(16),
        ];
        r.async_read_some_vectored(bufs, move |n, b| *g.lock().unwrap() = Some((n, b)))
            .map_err(|r| r.error)
            .unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "the scatter read", || got.lock().unwrap().is_some());
    let (n, [a, bb, cc]) = got.lock().unwrap().take().unwrap();
    assert_eq!(n, Ok(13));
    assert_eq!(
        (&a[..], &bb[..], &cc[..]),
        (&b"one"[..], &b" two"[..], &b" three"[..])
    );
    let refused = r.async_read_some_vectored([Vec::<u8>::new()], |_, _| unreachable!());
    assert_eq!(refused.unwrap_err().error, Error::BufferFull);

    let parts = [
        util::pattern_vec(7, 256 * 1024),
        util::pattern_vec(8, 256 * 1024),
        util::pattern_vec(9, 256 * 1024),
    ];
    let want: Vec<u8> = parts.concat();
    let done = Arc::new(Mutex::new(None));
    let d = done.clone();
    async_write_vectored(&w, parts, move |n, _| {
        *d.lock().unwrap() = Some(n);
        w.close().unwrap();
    })
    .map_err(|r| r.error)
    .unwrap();
    let read = Arc::new(Mutex::new(None));
    let g = read.clone();
    async_read(
        &r,
        FixedBuf::new(want.len() + 1),
        Completion::TransferAll,
        move |n, buf| {
            *g.lock().unwrap() = Some((n, buf.bytes().to_vec()));
            r.close().unwrap();
        },
    )
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "768 KiB through the pipe", || {
        read.lock().unwrap().is_some()
    });
    assert_eq!(*done.lock().unwrap(), Some(Ok(want.len())));
    let (n, bytes) = read.lock().unwrap().take().unwrap();
    assert_eq!(n, Err(Error::Eof), "read to the writer's close");
    assert!(bytes == want, "bytes out of order across buffers");
    assert_eq!(c.descriptors_in_use(), 0);
}

/// The borrowed (cancel-safe) futures over buffer lists.
#[test]
fn vectored_futures_on_a_pipe() {
    let ctx = ctx_or_skip!(Ctx::builder().tasks(4, 4096));
    let c = ctx.get();
    let (r, w) = pipe();
    let r = Owned::new(Desc::from_fd(c, r).unwrap());
    let w = Owned::new(Desc::from_fd(c, w).unwrap());
    let h = c
        .spawn(async move {
            // Owned buffers: `&'static` ones trip rust#102211 in a task.
            let out = [b"head".to_vec(), b"body".to_vec()];
            assert_eq!(w.write_vectored(&out).await, Ok(8));
            drop(w);
            let mut bufs = [
                Vec::with_capacity(4),
                Vec::with_capacity(2),
                Vec::with_capacity(8),
            ];
            assert_eq!(r.read_vectored(&mut bufs).await, Ok(8));
            assert_eq!(bufs, [b"head".to_vec(), b"bo".to_vec(), b"dy".to_vec()]);
            let mut none: [Vec<u8>; 1] = [Vec::new()];
            assert_eq!(r.read_vectored(&mut none).await, Err(Error::BufferFull));
            assert_eq!(
                r.read_vectored(&mut [Vec::with_capacity(4)]).await,
                Err(Error::Eof)
            );
        })
        .map_err(|r| r.error)
        .unwrap();
    c.block_on(h).unwrap().expect("task");
    assert_eq!(c.descriptors_in_use(), 0);
}

/// A pty's slave in canonical mode hands over one line per `read(2)`
/// however many are queued: a short read there does not mean drained. All
/// three lines written at once arrive, one read each, through callbacks,
/// `read_until` and the futures, with no new data to wake any wait.
#[test]
fn a_tty_in_canonical_mode_gives_a_line_per_read_with_more_queued() {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let ctx = ctx_or_skip!(Ctx::builder().tasks(4, 4096));
    let c = ctx.get();
    let (mut master, mut slave) = (0, 0);
    let (name, attrs, size) = (std::ptr::null_mut(), std::ptr::null(), std::ptr::null());
    // SAFETY: out-pointers to two ints; no name, termios or window size.
    assert_eq!(
        unsafe { libc::openpty(&mut master, &mut slave, name, attrs, size) },
        0
    );
    // SAFETY: just made, ours alone.
    let mut master = unsafe { std::fs::File::from_raw_fd(master) };
    // Canonical, without echo (nothing comes back to the master).
    // SAFETY: a termios filled by tcgetattr, on our tty.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave, &mut t), 0);
        t.c_lflag |= libc::ICANON;
        t.c_lflag &= !(libc::ECHO | libc::ECHONL);
        assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &t), 0);
    }
    // SAFETY: just made, ours alone.
    let d = Owned::new(Desc::from_fd(c, unsafe { Fd::from_raw(slave) }).unwrap());
    let tty = *d;

    // Callbacks: three reads with room for all, three lines.
    master.write_all(b"one\ntwo\nthree\n").unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    fn read_line(d: Desc, lines: Arc<Mutex<Vec<Vec<u8>>>>, left: usize) {
        d.async_read_some(FixedBuf::new(64), move |n, buf| {
            n.expect("a line");
            lines.lock().unwrap().push(buf.bytes().to_vec());
            if left > 1 {
                read_line(d, lines, left - 1);
            }
        })
        .map_err(|r| r.error)
        .unwrap();
    }
    read_line(tty, lines.clone(), 3);
    run_until(c, "three lines", || lines.lock().unwrap().len() == 3);
    assert_eq!(
        *lines.lock().unwrap(),
        [b"one\n".to_vec(), b"two\n".to_vec(), b"three\n".to_vec()]
    );

    // read_until across lines that come one per read.
    master.write_all(b"alpha\nbeta\n").unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    async_read_until(&tty, FixedBuf::new(64), b"beta\n", move |n, buf| {
        *g.lock().unwrap() = Some((n, buf.bytes().to_vec()))
    })
    .map_err(|r| r.error)
    .unwrap();
    run_until(c, "read_until", || got.lock().unwrap().is_some());
    assert_eq!(
        got.lock().unwrap().take().unwrap(),
        (Ok(11), b"alpha\nbeta\n".to_vec())
    );

    // The futures: a plain read per line, then a scatter read.
    master.write_all(b"x\ny\nz\n").unwrap();
    let h = c
        .spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 64];
            for _ in 0..2 {
                let n = tty.read(&mut buf).await.expect("read");
                seen.push(buf[..n].to_vec());
            }
            let mut bufs = [Vec::with_capacity(1), Vec::with_capacity(8)];
            let n = tty.read_vectored(&mut bufs).await.expect("readv");
            assert_eq!(n, 2);
            seen.push(bufs.concat());
            seen
        })
        .map_err(|r| r.error)
        .unwrap();
    let seen = c.block_on(h).unwrap().expect("task");
    assert_eq!(seen, [b"x\n".to_vec(), b"y\n".to_vec(), b"z\n".to_vec()]);
    drop(d);
    assert_eq!(c.descriptors_in_use(), 0);
}
