//! Helpers shared by core's integration tests: leaked contexts that miri
//! still sees as reachable, bounded waits, a watchdog, drop counters.
//! Each test binary uses a subset.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pinion_core::backend::NoTask;
use pinion_core::{OpSlot, Scheduler, Storage};
use pinion_sync::{FutexKit, SyncKit};

#[path = "../../../tests/util/blocked.rs"]
mod blocked;
#[allow(unused_imports)] // each binary uses a different subset
pub use blocked::{current_tid, wait_blocked};

pub type Ctx<K = FutexKit> = Scheduler<NoTask, K>;

/// `normal` natively, `miri` under miri.
pub const fn scale(normal: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        normal
    }
}

/// Whether the scheduler can recognise its own threads here.
pub fn ids_available() -> bool {
    pinion_sync::current_thread_id() != 0
}

/// Leaked test state stays reachable from this static, so miri's leak
/// check (which accepts memory reachable from statics) passes.
pub static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());
pub struct Kept(#[allow(dead_code)] *const u8);
// SAFETY: never dereferenced; only keeps leaked allocations reachable.
unsafe impl Send for Kept {}

pub fn leak_box<T>(b: Box<T>) -> &'static T {
    let r: &'static T = Box::leak(b);
    KEPT.lock().unwrap().push(Kept(r as *const T as *const u8));
    r
}

pub fn leak_slice_mut<T>(b: Box<[T]>) -> &'static mut [T] {
    let r: &'static mut [T] = Box::leak(b);
    KEPT.lock().unwrap().push(Kept(r.as_ptr() as *const u8));
    r
}

/// `n` operation slots in leaked memory (works without core's `alloc`
/// feature, which `cargo test -p pinion-core` does not enable).
pub fn slots(n: usize) -> Storage<OpSlot> {
    let v: Vec<OpSlot> = (0..n).map(|_| OpSlot::EMPTY).collect();
    Storage::from_static(leak_slice_mut(v.into_boxed_slice()))
}

/// Task storage for `tasks` futures of up to `bytes` each, in leaked
/// memory.
pub fn task_storage(tasks: usize, bytes: usize) -> pinion_core::task::TaskStorage {
    use pinion_core::slab::Entry;
    use pinion_core::task::{TaskChunk, TaskHeader, TaskStorage};
    let headers: Vec<Entry<TaskHeader>> =
        (0..tasks).map(|_| Entry::new(TaskHeader::EMPTY)).collect();
    let per = TaskStorage::chunks_for(bytes);
    let chunks: Vec<TaskChunk> = (0..tasks * per).map(|_| TaskChunk::EMPTY).collect();
    TaskStorage::from_static(
        leak_slice_mut(headers.into_boxed_slice()),
        leak_slice_mut(chunks.into_boxed_slice()),
    )
}

/// A leaked scheduler with `tasks` task slots of `bytes` each (and 64
/// operation slots).
pub fn with_tasks(tasks: usize, bytes: usize, hint: usize) -> &'static Ctx {
    leak_box(Box::new(
        Scheduler::<NoTask, FutexKit>::new(NoTask, slots(64), hint)
            .with_tasks(task_storage(tasks, bytes)),
    ))
}

/// A leaked context, for handlers that reference it.
pub fn leak<K: SyncKit>(n_slots: usize, hint: usize) -> &'static Ctx<K> {
    leak_box(Box::new(Scheduler::new(NoTask, slots(n_slots), hint)))
}

pub fn leak_slice<T>(n: usize, f: impl FnMut(usize) -> T) -> &'static [T] {
    leak_slice_mut((0..n).map(f).collect::<Vec<T>>().into_boxed_slice())
}

/// Time bound of the bounded waits (a hang guard, not a measurement).
pub fn limit(secs: u64) -> Duration {
    // Miri's clock is virtual and it detects real deadlocks itself.
    Duration::from_secs(if cfg!(miri) { 100_000 } else { secs })
}

/// Aborts the process if the test is still running after `secs`: a hang
/// inside `run` would otherwise block the whole test binary.
pub struct Watchdog(Arc<AtomicBool>);

pub fn watchdog(name: &'static str, secs: u64) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    if !cfg!(miri) {
        let d = done.clone();
        thread::spawn(move || {
            let t0 = Instant::now();
            while !d.load(Ordering::Acquire) {
                if t0.elapsed() > Duration::from_secs(secs) {
                    eprintln!("watchdog: `{name}` still running after {secs} s, aborting");
                    std::process::abort();
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
    }
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Polls `cond` until true; fails the test after `secs`.
pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    let mut polls = 0u32;
    while !cond() {
        assert!(t0.elapsed() < limit(secs), "timed out waiting for {what}");
        // Yield first (quick hand-offs), then sleep.
        if polls < 200 {
            polls += 1;
            thread::yield_now();
        } else {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Joins threads, failing (not hanging) if one does not finish in time.
pub fn join_all<T>(what: &str, secs: u64, hs: Vec<JoinHandle<T>>) -> Vec<T> {
    wait_until(what, secs, || hs.iter().all(|h| h.is_finished()));
    hs.into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .collect()
}

pub fn spawn_runners<K: SyncKit>(ctx: &'static Ctx<K>, n: usize) -> Vec<JoinHandle<usize>>
where
    Ctx<K>: Sync,
{
    (0..n).map(|_| thread::spawn(move || ctx.run())).collect()
}

/// Index of the first counter that is not exactly 1, if any.
pub fn first_not_once(c: &[AtomicU8]) -> Option<(usize, u8)> {
    c.iter()
        .enumerate()
        .map(|(i, a)| (i, a.load(Ordering::Relaxed)))
        .find(|&(_, v)| v != 1)
}

/// Counts its drops; handlers capture one to show they were destroyed.
pub struct DropCount(pub Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
