//! io_uring: no heap allocation on the I/O path, 10,000 echo round trips
//! after warm-up (plain reads, and pooled reads from the buffer ring and
//! from its software fallback), counted by a global allocator on the
//! thread running the context.
#![cfg(feature = "uring")]

mod uring_util;
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pinion::buf::Slice;
use pinion::compose::async_write;
use pinion::uring::{Builder, TcpListener, TcpStream};
use pinion::Error;
use uring_util::*;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.with(|c| c.get()) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded contract.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARMUP: usize = 100;
const ROUND_TRIPS: usize = 10_000;

fn step(s: TcpStream<'static>, i: usize, mut tx: Vec<u8>, mut rx: Vec<u8>, done: Arc<AtomicUsize>) {
    if i == WARMUP {
        COUNTING.with(|c| c.set(true));
    }
    if i == WARMUP + ROUND_TRIPS {
        COUNTING.with(|c| c.set(false));
        s.close().unwrap();
        done.fetch_add(1, Ordering::SeqCst);
        return;
    }
    tx.clear();
    tx.resize(64, i as u8);
    rx.clear();
    write_all(s, Slice::new(tx, 0), move |tx| {
        read_exact(s, rx, 64, move |rx| {
            assert!(rx.iter().all(|&b| b == i as u8));
            step(s, i + 1, tx, rx, done);
        });
    });
}

#[test]
fn ten_thousand_round_trips_allocate_nothing() {
    let Some(ctx) = ctx_or_skip(Builder::new(), "ten_thousand_round_trips_allocate_nothing") else {
        return;
    };
    let l = TcpListener::bind(ctx, loopback()).unwrap();
    let addr = l.local_addr().unwrap();
    serve_echo(l, 1);
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    TcpStream::async_connect(ctx, addr, move |r| {
        step(
            r.unwrap(),
            0,
            Vec::with_capacity(64),
            Vec::with_capacity(64),
            d,
        );
    })
    .unwrap();
    run_watched(ctx);
    assert_eq!(done.load(Ordering::SeqCst), 1);
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "heap allocations during {ROUND_TRIPS} round trips"
    );
    // SAFETY: nothing uses ctx any more.
    unsafe { free_ctx(ctx) };
}

/// Echoes with pooled reads, each buffer written back as it is.
fn serve_pooled(s: TcpStream<'static>) {
    s.async_read_pooled(move |r| match r {
        Ok(buf) => {
            async_write(&s, buf, move |r, buf| {
                r.expect("write back");
                drop(buf);
                serve_pooled(s);
            })
            .map_err(|r| r.error)
            .unwrap();
        }
        Err(Error::Eof) => s.close().unwrap(),
        Err(e) => panic!("pooled read: {e}"),
    })
    .map_err(|r| r.error)
    .unwrap();
}

/// The same round trips served by pooled reads: taking a buffer from the
/// ring (or the fallback pool) and giving it back allocate nothing.
#[test]
fn pooled_round_trips_allocate_nothing() {
    for ring in [true, false] {
        let b = Builder::new().read_buffers(8, 128).buffer_ring(ring);
        let Some(ctx) = ctx_or_skip(b, "pooled_round_trips_allocate_nothing") else {
            return;
        };
        assert_eq!(ctx.ring_info().buffer_ring, ring);
        let l = TcpListener::bind(ctx, loopback()).unwrap();
        let addr = l.local_addr().unwrap();
        l.async_accept(move |r| {
            serve_pooled(r.expect("accept").0);
            l.close().unwrap();
        })
        .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        TcpStream::async_connect(ctx, addr, move |r| {
            step(
                r.unwrap(),
                0,
                Vec::with_capacity(64),
                Vec::with_capacity(64),
                d,
            );
        })
        .unwrap();
        run_watched(ctx);
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert_eq!(ctx.read_buffers().unwrap().free, 8, "every buffer back");
        assert_eq!(
            ALLOCS.load(Ordering::SeqCst),
            0,
            "heap allocations during {ROUND_TRIPS} pooled round trips (ring: {ring})"
        );
        // SAFETY: nothing uses ctx any more.
        unsafe { free_ctx(ctx) };
    }
}
