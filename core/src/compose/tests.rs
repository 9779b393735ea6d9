//! The composed operations against a fake stream.

use super::read::ReadOp;
use super::read_until::{find, ReadUntilOp};
use super::write::WriteOp;
use super::*;
use crate::backend::NoTask;
use crate::pool::OpSlot;
use crate::scheduler::HandlerOp;
use crate::Error;
use crate::StaticArray;
use crate::Storage;
use pinion_sync::SpinKit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::script::*;

// ---- read_until ------------------------------------------------------

/// `msg` split into two reads at every position finds the first
/// delimiter, with no more reads than needed.
fn split_everywhere(msg: &'static [u8], delim: &'static [u8]) {
    let end = find(msg, delim).unwrap() + delim.len();
    for p in 1..msg.len() {
        let s = ScriptStream::with_reads([Step::Data(&msg[..p]), Step::Data(&msg[p..])]);
        let (r, buf) = read_until(&s, TestBuf::new(64), delim);
        assert_eq!(r, Ok(end), "split at {p}");
        let reads = if p >= end { 1 } else { 2 };
        let got = if p >= end { p } else { msg.len() };
        assert_eq!(
            buf,
            &msg[..got],
            "split at {p}: bytes after the delimiter stay"
        );
        assert_eq!(s.script().read_spares.len(), reads, "split at {p}");
    }
}

#[test]
fn read_until_crlf_split_at_every_position() {
    split_everywhere(b"GET / HTTP/1.1\r\nHost: x\r\n", b"\r\n");
    split_everywhere(b"a\r\r\rb\r\nc", b"\r\n");
}

#[test]
fn read_until_four_byte_delim_split_at_every_position() {
    split_everywhere(b"head\r\n\r\nbody", b"\r\n\r\n");
    // Overlapping partial matches: "abab" then "abac".
    split_everywhere(b"xabababacyy", b"abac");
}

#[test]
fn read_until_one_byte_reads() {
    let msg = b"key: value\r\n\r\nrest";
    let s = ScriptStream::with_reads(msg.chunks(1).map(Step::Data));
    let (r, buf) = read_until(&s, TestBuf::new(64), b"\r\n\r\n");
    assert_eq!(r, Ok(14));
    assert_eq!(buf, &msg[..14]);
    assert_eq!(s.script().reads.len(), 4, "nothing read past the delimiter");
}

#[test]
fn read_until_byte_finds_newline() {
    let s = ScriptStream::with_reads([Step::Data(b"ab"), Step::Data(b"c\nd")]);
    let (r, b) = run_op(&s, |h| {
        async_read_until_byte(&s, TestBuf::new(16), b'\n', h)
    });
    assert_eq!(r, Ok(4));
    assert_eq!(b.v, b"abc\nd");
}

#[test]
fn read_until_delim_already_in_buffer_completes_via_post() {
    let s = ScriptStream::default(); // any read would panic
    let (r, buf) = read_until(&s, TestBuf::with(b"one\r\ntwo\r\n", 32), b"\r\n");
    assert_eq!(r, Ok(5));
    assert_eq!(buf, b"one\r\ntwo\r\n");
    assert_eq!(s.script().posts, 1);
    assert!(s.script().read_spares.is_empty());
}

#[test]
fn read_until_searches_bytes_already_in_buffer_then_reads() {
    // "\r" already there, "\n" arrives: found across the old/new border.
    let s = ScriptStream::with_reads([Step::Data(b"\nmore")]);
    let (r, buf) = read_until(&s, TestBuf::with(b"line\r", 32), b"\r\n");
    assert_eq!(r, Ok(6));
    assert_eq!(buf, b"line\r\nmore");
    assert_eq!(s.script().posts, 0);
}

#[test]
fn read_until_not_found_at_buffer_limit() {
    let s = ScriptStream::with_reads([Step::Data(b"abcde"), Step::Data(b"fghij\n")]);
    let (r, buf) = read_until(&s, TestBuf::new(8), b"\n");
    assert_eq!(r, Err(Error::NotFound));
    assert_eq!(buf, b"abcdefgh");
    assert_eq!(s.script().read_spares, [8, 3]);
}

#[test]
fn read_until_not_found_in_full_buffer_completes_via_post() {
    let s = ScriptStream::default();
    let (r, buf) = read_until(&s, TestBuf::with(b"abcd", 4), b"\n");
    assert_eq!(r, Err(Error::NotFound));
    assert_eq!(buf, b"abcd");
    assert_eq!(s.script().posts, 1);
}

#[test]
fn read_until_eof_before_delimiter_keeps_partial_bytes() {
    let s = ScriptStream::with_reads([Step::Data(b"abc\r"), Step::Eof]);
    let (r, buf) = read_until(&s, TestBuf::new(32), b"\r\n");
    assert_eq!(r, Err(Error::Eof));
    assert_eq!(buf, b"abc\r");
}

#[test]
fn read_until_stream_error_passes_through() {
    let s = ScriptStream::with_reads([Step::Data(b"ab"), Step::Err(Error::ConnectionReset)]);
    let (r, buf) = read_until(&s, TestBuf::new(32), b"\n");
    assert_eq!(r, Err(Error::ConnectionReset));
    assert_eq!(buf, b"ab");
}

#[test]
fn read_until_read_size_is_capped() {
    static BIG: [u8; 70_000] = [b'x'; 70_000];
    let s = ScriptStream::with_reads([Step::Data(&BIG), Step::Data(b"\n")]);
    let (r, buf) = read_until(&s, TestBuf::new(70_010), b"\n");
    assert_eq!(r, Ok(70_001));
    assert_eq!(buf.len(), 70_001);
    assert_eq!(s.script().read_spares, [65_536, 70_010 - 65_536, 10]);
}

#[test]
fn read_until_empty_delimiter_is_found_at_once() {
    let s = ScriptStream::default();
    let (r, _) = read_until(&s, TestBuf::new(8), b"");
    assert_eq!(r, Ok(0));
}

#[test]
fn read_until_refusals_hand_everything_back() {
    // At initiation, by the stream.
    let s = ScriptStream::default();
    s.script().refuse_read_at = Some(0);
    let (out, h) = catcher::<TestBuf>();
    let e = async_read_until(&s, TestBuf::with(b"ab", 8), b"\n", h).unwrap_err();
    assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
    let (buf, h) = e.handler;
    assert_eq!(buf.v, b"ab");
    h(Ok(7), buf);
    assert_eq!(out.lock().unwrap().as_ref().unwrap().0, Ok(7));

    // At initiation, by post (delimiter already there).
    let s = ScriptStream::default();
    s.script().refuse_posts = true;
    let (_, h) = catcher::<TestBuf>();
    let e = async_read_until(&s, TestBuf::with(b"a\nb", 8), b"\n", h).unwrap_err();
    assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
    assert_eq!(e.handler.0.v, b"a\nb");

    // Mid-way: the second read is refused; the handler gets the error.
    let s = ScriptStream::with_reads([Step::Data(b"ab"), Step::Data(b"\n")]);
    s.script().refuse_read_at = Some(1);
    let (r, buf) = read_until(&s, TestBuf::new(8), b"\n");
    assert_eq!(r, Err(Error::PoolFull(crate::Pool::Ops)));
    assert_eq!(buf, b"ab");
}

// ---- read ------------------------------------------------------------

#[test]
fn read_exactly_one_byte_reads_never_over_read() {
    let s = ScriptStream::with_reads(b"0123456789".chunks(1).map(Step::Data));
    let (r, buf) = read(&s, TestBuf::new(16), Completion::Exactly(5));
    assert_eq!(r, Ok(5));
    assert_eq!(buf, b"01234");
    assert_eq!(s.script().read_spares, [5, 4, 3, 2, 1]);
    assert_eq!(s.script().reads.len(), 5, "the script's rest is unread");
}

#[test]
fn read_exactly_never_asks_past_the_count() {
    let s = ScriptStream::with_reads([Step::Data(b"ab"), Step::Data(b"cdefghij")]);
    let (r, buf) = read(&s, TestBuf::new(16), Completion::Exactly(4));
    assert_eq!(r, Ok(4));
    assert_eq!(buf, b"abcd");
    assert_eq!(s.script().read_spares, [4, 2]);
    assert!(matches!(
        s.script().reads.front(),
        Some(Step::Data(b"efghij"))
    ));
}

#[test]
fn read_exactly_more_than_room_ends_full() {
    let s = ScriptStream::with_reads([Step::Data(b"abcdefgh")]);
    let (r, buf) = read(&s, TestBuf::new(3), Completion::Exactly(5));
    assert_eq!(r, Ok(3));
    assert_eq!(buf, b"abc");
}

#[test]
fn read_at_least() {
    let s = ScriptStream::with_reads([Step::Data(b"ab"), Step::Data(b"cdef"), Step::Data(b"zz")]);
    let (r, buf) = read(&s, TestBuf::new(16), Completion::AtLeast(3));
    assert_eq!(r, Ok(6), "the second read may bring more than needed");
    assert_eq!(buf, b"abcdef");
    assert_eq!(s.script().read_spares, [16, 14]);
    assert_eq!(s.script().reads.len(), 1);
}

#[test]
fn read_transfer_all_until_full() {
    let s = ScriptStream::with_reads([Step::Data(b"abc"), Step::Data(b"defgh")]);
    // Bytes already there are kept and not counted.
    let (r, buf) = read(&s, TestBuf::with(b"xy", 8), Completion::TransferAll);
    assert_eq!(r, Ok(6));
    assert_eq!(buf, b"xyabcdef");
    assert!(matches!(s.script().reads.front(), Some(Step::Data(b"gh"))));
}

#[test]
fn read_transfer_all_caps_each_step() {
    static BIG: [u8; 70_000] = [7; 70_000];
    let s = ScriptStream::with_reads([Step::Data(&BIG)]);
    let (r, _) = read(&s, TestBuf::new(70_000), Completion::TransferAll);
    assert_eq!(r, Ok(70_000));
    assert_eq!(s.script().read_spares, [65_536, 70_000 - 65_536]);
}

#[test]
fn read_eof_mid_read() {
    let s = ScriptStream::with_reads([Step::Data(b"abc"), Step::Eof]);
    let (r, buf) = read(&s, TestBuf::new(16), Completion::Exactly(6));
    assert_eq!(r, Err(Error::Eof));
    assert_eq!(buf, b"abc");
}

#[test]
fn read_nothing_to_do_completes_via_post() {
    for (buf, cond) in [
        (TestBuf::new(8), Completion::Exactly(0)),
        (TestBuf::new(8), Completion::AtLeast(0)),
        (TestBuf::with(b"full", 4), Completion::TransferAll),
        (TestBuf::with(b"full", 4), Completion::Exactly(3)),
    ] {
        let s = ScriptStream::default();
        let (r, _) = read(&s, buf, cond);
        assert_eq!(r, Ok(0), "{cond:?}");
        assert_eq!(s.script().posts, 1);
    }
}

#[test]
fn read_refusals_hand_everything_back() {
    let s = ScriptStream::default();
    s.script().refuse_read_at = Some(0);
    let (_, h) = catcher::<TestBuf>();
    let e = async_read(&s, TestBuf::with(b"q", 8), Completion::TransferAll, h).unwrap_err();
    assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
    assert_eq!(e.handler.0.v, b"q");

    let s = ScriptStream::default();
    s.script().refuse_posts = true;
    let (_, h) = catcher::<TestBuf>();
    let e = async_read(&s, TestBuf::new(8), Completion::Exactly(0), h).unwrap_err();
    assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));

    let s = ScriptStream::with_reads(b"abcd".chunks(1).map(Step::Data));
    s.script().refuse_read_at = Some(2);
    let (r, buf) = read(&s, TestBuf::new(8), Completion::Exactly(4));
    assert_eq!(r, Err(Error::PoolFull(crate::Pool::Ops)));
    assert_eq!(buf, b"ab");
}

#[test]
fn steps_run_from_the_loop_one_at_a_time() {
    // Each completion queues exactly the next step: no nesting.
    let s = ScriptStream::with_reads(b"abc".chunks(1).map(Step::Data));
    let (out, h) = catcher::<TestBuf>();
    async_read(&s, TestBuf::new(8), Completion::Exactly(3), h).unwrap();
    for _ in 0..3 {
        assert_eq!(s.queued(), 1);
        let job = s.script().queue.pop_front().unwrap();
        job();
    }
    assert_eq!(s.queued(), 0);
    assert_eq!(out.lock().unwrap().as_ref().unwrap().0, Ok(3));
}

// ---- write -----------------------------------------------------------

fn write(s: &ScriptStream, data: &'static [u8]) -> (Result<usize>, &'static [u8]) {
    run_op(s, |h| async_write(s, data, h))
}

#[test]
fn write_partial_writes_complete_in_order() {
    static DATA: [u8; 300] = {
        let mut d = [0u8; 300];
        let mut i = 0;
        while i < 300 {
            d[i] = (i * 7) as u8;
            i += 1;
        }
        d
    };
    let data: &'static [u8] = &DATA;
    for max in 1..=7 {
        let s = ScriptStream::default();
        s.script().write_max = std::vec![max];
        let (r, buf) = write(&s, data);
        assert_eq!(r, Ok(300), "max {max}");
        assert!(core::ptr::eq(buf, data), "the same buffer comes back");
        assert_eq!(s.script().written, data, "max {max}");
        assert_eq!(s.script().write_lens.len(), 300usize.div_ceil(max));
    }
    // Varying sizes 1..7 in one operation.
    let s = ScriptStream::default();
    s.script().write_max = (1..=7).collect();
    let (r, _) = write(&s, data);
    assert_eq!(r, Ok(300));
    assert_eq!(s.script().written, data);
    let lens = s.script().write_lens.clone();
    assert_eq!(&lens[..3], [300, 299, 297], "each step offers the rest");
}

#[test]
fn write_error_midway_returns_error_and_buffer() {
    let s = ScriptStream::default();
    s.script().write_max = std::vec![3];
    s.script().write_error = Some((2, Error::BrokenPipe));
    let (r, buf) = write(&s, b"abcdefghijkl");
    assert_eq!(r, Err(Error::BrokenPipe));
    assert_eq!(buf, b"abcdefghijkl");
    assert_eq!(s.script().written, b"abcdef");
    assert_eq!(s.script().write_lens.len(), 3, "no write after the error");
}

#[test]
fn write_that_makes_no_progress_fails() {
    let s = ScriptStream::default();
    s.script().write_max = std::vec![2, 0];
    let (r, _) = write(&s, b"abcdef");
    assert_eq!(r, Err(Error::BrokenPipe));
    assert_eq!(s.script().written, b"ab");
}

#[test]
fn write_empty_completes_via_post() {
    let s = ScriptStream::default();
    let (r, _) = write(&s, b"");
    assert_eq!(r, Ok(0));
    assert_eq!(s.script().posts, 1);
    assert!(s.script().write_lens.is_empty());
}

#[test]
fn write_caps_each_step() {
    static BIG: [u8; 70_000] = [9; 70_000];
    let s = ScriptStream::default();
    let (r, _) = write(&s, &BIG);
    assert_eq!(r, Ok(70_000));
    assert_eq!(s.script().write_lens, [65_536, 70_000 - 65_536]);
}

#[test]
fn write_refusals_hand_everything_back() {
    let s = ScriptStream::default();
    s.script().refuse_write_at = Some(0);
    let (_, h) = catcher::<&'static [u8]>();
    let e = async_write(&s, b"abc" as &'static [u8], h).unwrap_err();
    assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
    assert_eq!(e.handler.0, b"abc");

    let s = ScriptStream::default();
    s.script().write_max = std::vec![1];
    s.script().refuse_write_at = Some(1);
    let (r, buf) = write(&s, b"abc");
    assert_eq!(r, Err(Error::PoolFull(crate::Pool::Ops)));
    assert_eq!(buf, b"abc");
    assert_eq!(s.script().written, b"a");
}

// ---- post_value and sizes --------------------------------------------

#[test]
fn post_value_runs_from_the_loop_and_hands_back_when_full() {
    static SLOTS: StaticArray<OpSlot, 2> = StaticArray::new([OpSlot::EMPTY; 2]);
    let sched: Scheduler<NoTask, SpinKit> =
        Scheduler::new(NoTask, Storage::from_static(SLOTS.take().unwrap()), 1);
    let hits = Arc::new(AtomicUsize::new(0));
    let bump: fn(Arc<AtomicUsize>) = |h| {
        h.fetch_add(1, Ordering::Relaxed);
    };
    post_value(&sched, hits.clone(), bump).unwrap();
    post_value(&sched, hits.clone(), bump).unwrap();
    let e = post_value(&sched, hits.clone(), bump).unwrap_err();
    assert_eq!(e.error, Error::PoolFull(crate::Pool::Ops));
    assert!(Arc::ptr_eq(&e.handler, &hits), "the value comes back");
    drop(e);
    assert_eq!(hits.load(Ordering::Relaxed), 0, "never inline");
    assert_eq!(sched.run(), 2);
    assert_eq!(hits.load(Ordering::Relaxed), 2);
    assert_eq!(Arc::strong_count(&hits), 1);
    assert_eq!(sched.ops_in_use().0, 0);
}

#[test]
fn post_value_dropped_unrun_when_scheduler_dies() {
    static SLOTS: StaticArray<OpSlot, 1> = StaticArray::new([OpSlot::EMPTY; 1]);
    let sched: Scheduler<NoTask, SpinKit> =
        Scheduler::new(NoTask, Storage::from_static(SLOTS.take().unwrap()), 1);
    let hits = Arc::new(AtomicUsize::new(0));
    post_value(&sched, hits.clone(), |h| {
        h.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    drop(sched);
    assert_eq!(hits.load(Ordering::Relaxed), 0);
    assert_eq!(Arc::strong_count(&hits), 1, "dropped, not leaked");
}

#[test]
fn op_states_fit_a_slot_beside_a_backend_header() {
    // A 16-byte stream handle, a Vec-sized buffer, a 16-byte handler.
    type Stream = [usize; 2];
    type Buf = [usize; 3];
    type Handler = [usize; 2];
    let budget = crate::OP_SLOT_SIZE - 64;
    assert!(size_of::<ReadOp<Stream, Buf, Handler>>() <= budget);
    assert!(size_of::<ReadUntilOp<Stream, Buf, Handler>>() <= budget);
    assert!(size_of::<WriteOp<Stream, Buf, Handler>>() <= budget);
    // The posted form: header + value + fn pointer.
    assert!(size_of::<HandlerOp<Bound<ReadOp<Stream, Buf, Handler>>>>() <= crate::OP_SLOT_SIZE);
    std::println!(
        "ReadOp {} ReadUntilOp {} WriteOp {} HandlerOp<Bound<ReadOp>> {}",
        size_of::<ReadOp<Stream, Buf, Handler>>(),
        size_of::<ReadUntilOp<Stream, Buf, Handler>>(),
        size_of::<WriteOp<Stream, Buf, Handler>>(),
        size_of::<HandlerOp<Bound<ReadOp<Stream, Buf, Handler>>>>(),
    );
}
