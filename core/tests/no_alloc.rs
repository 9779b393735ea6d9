//! Once a context is built, running it allocates nothing: a counting
//! global allocator sees zero `alloc`/`alloc_zeroed`/`realloc` calls from
//! right after the context (and the test's own state) is built and leaked,
//! through 100,000 posts and 100,000 strand posts run by `run()` on one
//! thread and on two.
//!
//! One test function only: the counter is process-wide, so no other test
//! may run in this binary at the same time. Run threads are spawned and
//! parked on a barrier before the baseline is taken (spawning allocates).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pinion_core::backend::NoTask;
use pinion_core::{OpSlot, Scheduler, Storage, Strand};
use pinion_sync::FutexKit;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type Ctx = Scheduler<NoTask, FutexKit>;

/// Leaked state stays reachable from this static, so miri's leak check
/// (which accepts memory reachable from statics) passes.
static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());
struct Kept(#[allow(dead_code)] *const u8);
// SAFETY: never dereferenced; only keeps leaked allocations reachable.
unsafe impl Send for Kept {}

fn leak_box<T>(b: Box<T>) -> &'static T {
    let r: &'static T = Box::leak(b);
    KEPT.lock().unwrap().push(Kept(r as *const T as *const u8));
    r
}
type FStrand = Strand<'static, NoTask, FutexKit>;

const fn scale(normal: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        normal
    }
}

/// 100 chains x 1,000 posts (seeds included).
const CHAINS: usize = 100;
const PER_CHAIN: usize = scale(1000, 3);
/// 10 chains x 10,000 strand posts, all on one strand (seeds included).
const STRAND_CHAINS: usize = 10;
const PER_STRAND_CHAIN: usize = scale(10_000, 3);

struct State {
    ctx: &'static Ctx,
    strand: FStrand,
    plain: AtomicUsize,
    stranded: AtomicUsize,
}

fn plain_step(st: &'static State, left: usize) {
    st.plain.fetch_add(1, Ordering::Relaxed);
    if left > 1 && st.ctx.post(move || plain_step(st, left - 1)).is_err() {
        panic!("pool sized for every chain");
    }
}

fn strand_step(st: &'static State, left: usize) {
    st.stranded.fetch_add(1, Ordering::Relaxed);
    if left > 1 && st.strand.post(move || strand_step(st, left - 1)).is_err() {
        panic!("pool sized for every chain");
    }
}

fn run_case(threads: usize) {
    // ---- build (allocations allowed) ----
    let slots: &'static mut [OpSlot] = Box::leak(
        (0..1024)
            .map(|_| OpSlot::EMPTY)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    KEPT.lock().unwrap().push(Kept(slots.as_ptr() as *const u8));
    let ctx: &'static Ctx = leak_box(Box::new(Scheduler::new(
        NoTask,
        Storage::from_static(slots),
        threads,
    )));
    let st: &'static State = leak_box(Box::new(State {
        ctx,
        strand: Strand::new(ctx).unwrap(),
        plain: AtomicUsize::new(0),
        stranded: AtomicUsize::new(0),
    }));
    let start: &'static Barrier = leak_box(Box::new(Barrier::new(threads + 1)));
    let end: &'static Barrier = leak_box(Box::new(Barrier::new(threads + 1)));
    let ran: &'static AtomicUsize = leak_box(Box::new(AtomicUsize::new(0)));
    let runners: Vec<_> = (0..threads)
        .map(|_| {
            thread::spawn(move || {
                start.wait();
                ran.fetch_add(ctx.run(), Ordering::SeqCst);
                end.wait();
            })
        })
        .collect();
    let t0 = Instant::now();

    // ---- from here on: no allocation ----
    let baseline = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..CHAINS {
        if ctx.post(move || plain_step(st, PER_CHAIN)).is_err() {
            panic!("pool sized for every seed");
        }
    }
    for _ in 0..STRAND_CHAINS {
        if st
            .strand
            .post(move || strand_step(st, PER_STRAND_CHAIN))
            .is_err()
        {
            panic!("pool sized for every seed");
        }
    }
    // A strand made now takes a pool slot, not heap memory.
    let extra = Strand::new(ctx).unwrap();
    for _ in 0..10 {
        if extra.post(|| {}).is_err() {
            panic!("pool sized");
        }
    }
    drop(extra);
    start.wait();
    end.wait();
    let after = ALLOCS.load(Ordering::SeqCst);
    // ---- end of the no-allocation stretch ----

    assert_eq!(
        after - baseline,
        0,
        "heap allocations while posting and running on {threads} thread(s)"
    );
    assert_eq!(st.plain.load(Ordering::SeqCst), CHAINS * PER_CHAIN);
    assert_eq!(
        st.stranded.load(Ordering::SeqCst),
        STRAND_CHAINS * PER_STRAND_CHAIN
    );
    assert!(ran.load(Ordering::SeqCst) >= CHAINS * PER_CHAIN);
    assert_eq!(ctx.outstanding_work(), 0);
    assert_eq!(ctx.ops_in_use().0, 1, "only the strand in `State`");
    while !runners.iter().all(|h| h.is_finished()) {
        assert!(t0.elapsed() < Duration::from_secs(60), "run threads stuck");
        thread::sleep(Duration::from_millis(1));
    }
    for h in runners {
        h.join().unwrap();
    }
}

#[test]
fn no_heap_allocation_after_build_on_1_and_2_threads() {
    // A watchdog that allocates nothing once started (the barriers below
    // would otherwise hang the binary if `run` never returned).
    static DONE: AtomicUsize = AtomicUsize::new(0);
    static STARTED: AtomicUsize = AtomicUsize::new(if cfg!(miri) { 1 } else { 0 });
    #[cfg(not(miri))]
    thread::spawn(|| {
        let t0 = Instant::now();
        STARTED.store(1, Ordering::SeqCst);
        while DONE.load(Ordering::SeqCst) == 0 {
            if t0.elapsed() > Duration::from_secs(60) {
                eprintln!("watchdog: no_alloc test still running after 60 s, aborting");
                std::process::abort();
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    // Let it finish starting (thread start-up may allocate) first.
    let t0 = Instant::now();
    while STARTED.load(Ordering::SeqCst) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(60));
        thread::sleep(Duration::from_millis(1));
    }
    run_case(1);
    run_case(2);
    DONE.store(1, Ordering::SeqCst);
}
