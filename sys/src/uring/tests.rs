//! Against the running kernel: setup, the mappings, submission and
//! registration. They skip loudly where io_uring cannot run (qemu-user,
//! `io_uring_disabled`, seccomp) and under miri (system calls).

use std::io::Write;

use super::abi::*;
use super::*;
use crate::Errno;

/// Says why a test skips, on the process's stderr: past the harness's
/// capture, so a run without `--nocapture` shows it too.
fn skip(why: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
}

/// A ring of `entries`, or `None` after saying why the test skips.
fn ring_or_skip(test: &str, entries: u32) -> Option<Ring> {
    match Ring::new(entries, Params::default()) {
        Ok(r) => Some(r),
        Err(e) => {
            skip(format_args!("{test}: io_uring_setup failed here ({e})"));
            None
        }
    }
}

/// Reaps every CQE now in `cq`.
fn reap(cq: &Cq) -> Vec<Cqe> {
    let mut got = Vec::new();
    // SAFETY: the test is the only reaper; each entry is copied before
    // the head moves past it.
    unsafe {
        let mut head = cq.head();
        let tail = cq.tail();
        while head != tail {
            let (p, n) = cq.entries().run(head, tail);
            got.extend_from_slice(core::slice::from_raw_parts(p, n as usize));
            head = head.wrapping_add(n);
        }
        cq.set_head(head);
    }
    got
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn nops_go_round_the_ring_more_than_once() {
    let Some(ring) = ring_or_skip("nops_go_round_the_ring_more_than_once", 4) else {
        return;
    };
    assert_eq!(ring.params().sq_entries, 4);
    assert!(ring.has_feature(IORING_FEAT_NODROP));
    // SAFETY: the first and only call; the views die before `ring`.
    let (mut sq, cq) = unsafe { ring.queues() };
    assert_eq!(sq.entries(), 4);
    let mut seen = Vec::new();
    for round in 0..3u64 {
        for i in 0..4 {
            assert!(!sq.looks_full() || sq.sync_head());
            // SAFETY: room (above); NOPs carry no pointer.
            unsafe { sq.push_lean(&Sqe::nop().user_data(round * 4 + i)) };
        }
        assert!(sq.looks_full());
        assert_eq!(ring.submit(4, None), Ok(4));
        assert!(!sq.pending());
        seen.extend(reap(&cq).iter().map(|c| (c.user_data, c.res)));
    }
    let want: Vec<(u64, i32)> = (0..12).map(|ud| (ud, 0)).collect();
    assert_eq!(seen, want);
    assert_eq!(sq.pushed(), 12);
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn a_timed_wait_ends_with_etime() {
    let Some(ring) = ring_or_skip("a_timed_wait_ends_with_etime", 2) else {
        return;
    };
    if !ring.has_feature(IORING_FEAT_EXT_ARG) {
        skip(format_args!(
            "a_timed_wait_ends_with_etime: no IORING_FEAT_EXT_ARG (< 5.11)"
        ));
        return;
    }
    let ts = KernelTimespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    // Nothing will complete: the wait ends by its time-out.
    assert_eq!(ring.submit(1, Some(&ts)), Err(Errno::TIME));
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn a_read_names_its_buffer_and_an_eventfd_fills_it() {
    let Some(ring) = ring_or_skip("a_read_names_its_buffer_and_an_eventfd_fills_it", 2) else {
        return;
    };
    let efd = crate::event::eventfd(false).unwrap();
    crate::event::eventfd_signal(efd.raw()).unwrap();
    let mut buf = 0u64;
    // SAFETY: the first and only call; the views die before `ring`.
    let (mut sq, cq) = unsafe { ring.queues() };
    let e = Sqe::read(Target::Fd(efd.raw()), &mut buf as *mut u64 as *mut u8, 8, 0);
    // SAFETY: `buf` outlives the read's CQE, reaped below.
    unsafe { sq.push(&e.user_data(7)) };
    ring.submit(1, None).unwrap();
    let c = reap(&cq);
    assert_eq!((c[0].user_data, c[0].res, buf), (7, 8, 1));
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn the_probe_and_registered_files() {
    let Some(ring) = ring_or_skip("the_probe_and_registered_files", 2) else {
        return;
    };
    let mut probe = Box::new(Probe::EMPTY);
    ring.probe(&mut probe).unwrap();
    for op in [
        IORING_OP_NOP,
        IORING_OP_READ,
        IORING_OP_RECV,
        IORING_OP_SEND,
    ] {
        assert!(probe.is_supported(op), "opcode {op}");
    }
    assert!(!probe.is_supported(255));
    // A second probe into the filled one still works (it is cleared).
    ring.probe(&mut probe).unwrap();
    assert!(probe.is_supported(IORING_OP_NOP));
    if ring.register_files_sparse(4).is_err() {
        skip(format_args!(
            "the_probe_and_registered_files (files): no sparse tables (< 5.19)"
        ));
        return;
    }
    let efd = crate::event::eventfd(false).unwrap();
    assert_eq!(ring.register_files_update(2, &[efd.raw()]), Ok(1));
    assert_eq!(ring.register_files_update(2, &[-1]), Ok(1));
    assert_eq!(
        ring.register_files_update(9, &[efd.raw()]),
        Err(Errno::INVAL)
    );
}

#[test]
#[cfg_attr(miri, ignore)] // system calls
fn setup_refuses_flags_that_would_hand_it_our_memory() {
    let mut p = Params {
        flags: 1 << 14, // IORING_SETUP_NO_MMAP
        ..Params::default()
    };
    assert_eq!(setup(2, &mut p).err(), Some(Errno::INVAL));
    p.flags = 1 << 15; // IORING_SETUP_REGISTERED_FD_ONLY
    assert_eq!(setup(2, &mut p).err(), Some(Errno::INVAL));
}

#[test]
fn prepared_sqes_fill_the_fields_the_kernel_reads() {
    let buf = core::ptr::without_provenance_mut::<u8>(0x1000);
    let e = Sqe::send(Target::Fd(7), buf, 100, libc::MSG_NOSIGNAL as u32).user_data(0x80);
    assert_eq!(
        (e.opcode, e.flags, e.fd, e.addr, e.len),
        (IORING_OP_SEND, 0, 7, 0x1000, 100)
    );
    assert_eq!((e.op_flags, e.user_data), (libc::MSG_NOSIGNAL as u32, 0x80));
    assert!(e.is_lean());
    let e = Sqe::recv_select(Target::Fixed(3), 7, 4096).user_data(0x44);
    assert_eq!(e.flags, IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT);
    assert_eq!((e.buf_index, e.len, e.addr), (7, 4096, 0));
    let e = Sqe::cancel_fd_all(Target::Fixed(9));
    assert_eq!(
        (e.fd, e.flags),
        (9, 0),
        "a cancel by fd does not set FIXED_FILE"
    );
    assert_eq!(
        e.op_flags,
        IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_FD_FIXED
    );
    let e = Sqe::cancel_any();
    assert_eq!((e.fd, e.op_flags), (-1, IORING_ASYNC_CANCEL_ANY));
    let e = Sqe::accept_multishot(Target::Fd(4), libc::SOCK_CLOEXEC);
    assert_eq!(
        (e.ioprio, e.op_flags),
        (IORING_ACCEPT_MULTISHOT, libc::SOCK_CLOEXEC as u32)
    );
    let e = Sqe::poll_add(Target::Fd(4), 0x0001_2004);
    let want = if cfg!(target_endian = "big") {
        0x2004_0001
    } else {
        0x0001_2004
    };
    assert_eq!(e.op_flags, want);
    assert_eq!(
        cqe_buffer(IORING_CQE_F_BUFFER | (513 << IORING_CQE_BUFFER_SHIFT)),
        Some(513)
    );
    assert_eq!(cqe_buffer(513 << IORING_CQE_BUFFER_SHIFT), None);
    assert!(cqe_more(IORING_CQE_F_MORE) && !cqe_more(0));
    let e = Sqe::send_zc(Target::Fixed(2), buf, 9000, libc::MSG_NOSIGNAL as u32);
    assert_eq!(
        (e.opcode, e.flags, e.fd, e.addr, e.len, e.ioprio),
        (IORING_OP_SEND_ZC, IOSQE_FIXED_FILE, 2, 0x1000, 9000, 0)
    );
    assert!(e.is_lean(), "a zero-copy send is pushed like a send");
    assert!(cqe_notif(IORING_CQE_F_NOTIF) && !cqe_notif(IORING_CQE_F_MORE));
}
