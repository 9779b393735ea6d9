//! Task-bound I/O (`pinion_core::task::io`) without a backend: a stand-in
//! operation hands its `TaskLink` to the test, which completes it from a
//! handler, from another thread, after the future is gone, or never.
//! Checks that the result lands in the future, that a completion on a
//! run thread polls the task in place, that a dropped future cancels
//! once and its result is dropped when it comes, and that wakers other
//! than the task's are woken instead. Runs under miri too.

mod common;

use std::future::Future;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use common::{watchdog, Ctx};
use pinion_core::backend::OpId;
use pinion_core::task::io::{IoSlot, TaskLink};
use pinion_core::Operation;

fn ctx() -> &'static Ctx {
    common::with_tasks(4, 512, 1)
}

/// A result that counts its drops.
struct Val(u32, Arc<AtomicUsize>);
impl Drop for Val {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

type Links = Arc<Mutex<Vec<TaskLink<Val>>>>;

/// A stand-in I/O future: arms its slot on the first poll and hands the
/// link out (where a backend would keep it as the operation's handler).
struct FakeIo {
    owner: *const (),
    slot: IoSlot<Val>,
    armed: bool,
    taken: bool,
    links: Links,
    cancels: Arc<AtomicUsize>,
    _pin: PhantomPinned,
}

// SAFETY (test): the raw owner pointer is only compared.
unsafe impl Send for FakeIo {}

impl FakeIo {
    fn new(c: &Ctx, links: &Links, cancels: &Arc<AtomicUsize>) -> Self {
        FakeIo {
            owner: c.owner(),
            slot: IoSlot::new(()),
            armed: false,
            taken: false,
            links: links.clone(),
            cancels: cancels.clone(),
            _pin: PhantomPinned,
        }
    }
}

impl Future for FakeIo {
    type Output = Option<u32>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
        // SAFETY: nothing is moved out; the slot stays pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if !this.armed {
            // SAFETY: pinned, never armed, its `()` arguments taken.
            unsafe { this.slot.take_args() };
            // SAFETY: as above; abandoned in drop.
            let Some(mut link) = (unsafe { this.slot.arm(cx.waker(), this.owner) }) else {
                return Poll::Ready(None);
            };
            link.bind(OpId::new(NonNull::<Operation>::dangling()));
            this.armed = true;
            this.links.lock().unwrap().push(link);
            return Poll::Pending;
        }
        // SAFETY: armed, not taken yet.
        let v = std::task::ready!(unsafe { this.slot.take(cx.waker()) });
        this.taken = true;
        Poll::Ready(Some(v.0))
    }
}

impl Drop for FakeIo {
    fn drop(&mut self) {
        if self.armed && !self.taken {
            let cancels = self.cancels.clone();
            // SAFETY: armed, result not taken.
            unsafe {
                self.slot.abandon(|_| {
                    cancels.fetch_add(1, Ordering::SeqCst);
                })
            };
        }
    }
}

fn take_link(links: &Links) -> TaskLink<Val> {
    links.lock().unwrap().pop().expect("a link")
}

/// The completion's side: what a backend does for a finished operation.
fn complete(c: &'static Ctx, link: TaskLink<Val>, v: Val) {
    link.completing();
    // SAFETY: called from a handler of `c` (no task poll above it).
    unsafe { link.deliver(v, c.here()) };
}

#[test]
fn a_completion_on_the_run_thread_polls_the_task_in_place() {
    let c = ctx();
    let _w = watchdog("in place", 20);
    let (links, cancels, drops) = (
        Links::default(),
        Arc::default(),
        Arc::new(AtomicUsize::new(0)),
    );
    let h = c.spawn(FakeIo::new(c, &links, &cancels)).unwrap();
    assert_eq!(c.poll(), 1, "the task ran once and waits");
    let link = take_link(&links);
    let d = drops.clone();
    c.post(move || complete(c, link, Val(7, d))).unwrap();
    // One handler ran: the completion, which polled the task itself.
    assert_eq!(c.poll(), 1);
    assert!(h.is_finished(), "polled in place, not queued");
    assert_eq!(c.block_on(h).unwrap(), Ok(Some(7)));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the value was taken, then dropped once"
    );
    assert_eq!(cancels.load(Ordering::SeqCst), 0);
    assert_eq!(c.tasks_in_use().0, 0);
}

#[test]
fn a_completion_from_another_thread_queues_the_task() {
    let c = ctx();
    let _w = watchdog("other thread", 20);
    let (links, cancels, drops) = (
        Links::default(),
        Arc::default(),
        Arc::new(AtomicUsize::new(0)),
    );
    let h = c.spawn(FakeIo::new(c, &links, &cancels)).unwrap();
    c.poll();
    let link = take_link(&links);
    let d = drops.clone();
    thread::spawn(move || {
        link.completing();
        // SAFETY: not a run thread: no task poll anywhere on it.
        unsafe { link.deliver(Val(9, d), None) };
    })
    .join()
    .unwrap();
    assert_eq!(c.block_on(h).unwrap(), Ok(Some(9)));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// Polls `inner` once, then drops it: a future given up mid-flight.
struct GiveUp<F>(Option<Pin<Box<F>>>);
impl<F: Future> Future for GiveUp<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(f) = self.0.as_mut() {
            let _ = f.as_mut().poll(cx);
        }
        self.0 = None;
        Poll::Ready(())
    }
}

#[test]
fn a_future_dropped_mid_flight_cancels_once_and_its_result_is_dropped_later() {
    let c = ctx();
    let _w = watchdog("dropped", 20);
    let (links, cancels, drops) = (
        Links::default(),
        Arc::default(),
        Arc::new(AtomicUsize::new(0)),
    );
    let h = c
        .spawn(GiveUp(Some(Box::pin(FakeIo::new(c, &links, &cancels)))))
        .unwrap();
    assert_eq!(c.block_on(h).unwrap(), Ok(()));
    assert_eq!(
        cancels.load(Ordering::SeqCst),
        1,
        "cancelled once, while in flight"
    );
    // The task is done but its slot is held for the link that comes.
    assert_eq!(c.tasks_in_use().0, 1);
    let link = take_link(&links);
    let d = drops.clone();
    c.post(move || complete(c, link, Val(1, d))).unwrap();
    c.poll();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the late result was dropped"
    );
    assert_eq!(c.tasks_in_use().0, 0, "and the slot went back");
}

#[test]
fn a_link_dropped_unrun_leaves_nothing_behind() {
    let c = ctx();
    let _w = watchdog("destroyed", 20);
    let (links, cancels) = (Links::default(), Arc::default());
    let h = c.spawn(FakeIo::new(c, &links, &cancels)).unwrap();
    c.poll();
    // A backend destroying the operation at shutdown drops its handler.
    drop(take_link(&links));
    h.abort();
    assert_eq!(
        c.block_on(h).unwrap(),
        Err(pinion_core::Error::OperationAborted)
    );
    assert_eq!(cancels.load(Ordering::SeqCst), 0, "nothing left to cancel");
    assert_eq!(c.tasks_in_use().0, 0);
}

/// Polls `inner` with the task's waker first, then with one of its own
/// (as combinators with per-child wakers do), which wakes the task.
struct OwnWaker<F> {
    inner: Pin<Box<F>>,
    polls: usize,
    woken: Arc<Woken>,
}

#[derive(Default)]
struct Woken {
    count: AtomicUsize,
    task: Mutex<Option<Waker>>,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.count.fetch_add(1, Ordering::SeqCst);
        if let Some(w) = self.task.lock().unwrap().take() {
            w.wake();
        }
    }
}

impl<F: Future> Future for OwnWaker<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls += 1;
        if self.polls == 1 {
            let r = self.inner.as_mut().poll(cx);
            // Ask to be polled again at once, with the other waker.
            cx.waker().wake_by_ref();
            return r;
        }
        *self.woken.task.lock().unwrap() = Some(cx.waker().clone());
        let own = Waker::from(self.woken.clone());
        self.inner.as_mut().poll(&mut Context::from_waker(&own))
    }
}

#[test]
fn a_waker_other_than_the_tasks_is_woken_instead() {
    let c = ctx();
    let _w = watchdog("own waker", 20);
    let (links, cancels, drops) = (
        Links::default(),
        Arc::default(),
        Arc::new(AtomicUsize::new(0)),
    );
    let woken = Arc::new(Woken::default());
    let h = c
        .spawn(OwnWaker {
            inner: Box::pin(FakeIo::new(c, &links, &cancels)),
            polls: 0,
            woken: woken.clone(),
        })
        .unwrap();
    assert_eq!(
        c.poll(),
        2,
        "polled with the task's waker, then with its own"
    );
    let link = take_link(&links);
    let d = drops.clone();
    c.post(move || complete(c, link, Val(3, d))).unwrap();
    assert_eq!(c.block_on(h).unwrap(), Ok(Some(3)));
    assert_eq!(
        woken.count.load(Ordering::SeqCst),
        1,
        "the last waker was woken"
    );
}

/// Polls several stand-ins at once, each once, then waits for all.
struct Many(Vec<Pin<Box<FakeIo>>>, Vec<Option<Option<u32>>>);
impl Future for Many {
    type Output = Vec<Option<u32>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        for (f, out) in this.0.iter_mut().zip(this.1.iter_mut()) {
            if out.is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    *out = Some(v);
                }
            }
        }
        if this.1.iter().all(Option::is_some) {
            Poll::Ready(this.1.iter().map(|o| o.unwrap()).collect())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn a_task_arms_at_most_its_entries_the_rest_go_elsewhere() {
    let c = ctx();
    let _w = watchdog("entries", 20);
    let (links, cancels, drops) = (
        Links::default(),
        Arc::default(),
        Arc::new(AtomicUsize::new(0)),
    );
    let n = pinion_core::task::io::IO_ENTRIES + 1;
    let futs = (0..n)
        .map(|_| Box::pin(FakeIo::new(c, &links, &cancels)))
        .collect();
    let h = c.spawn(Many(futs, vec![None; n])).unwrap();
    c.poll();
    // The last one found no entry free (a real future would use its
    // rendezvous instead); the others wait for their links.
    let mut got = Vec::new();
    while let Some(link) = links.lock().unwrap().pop() {
        got.push(link);
    }
    assert_eq!(got.len(), n - 1);
    for (i, link) in got.into_iter().enumerate() {
        let d = drops.clone();
        c.post(move || complete(c, link, Val(i as u32, d))).unwrap();
    }
    let out = c.block_on(h).unwrap().unwrap();
    assert_eq!(out.iter().filter(|v| v.is_none()).count(), 1);
    assert_eq!(drops.load(Ordering::SeqCst), n - 1);
}

#[test]
fn a_refused_start_frees_the_entry() {
    let c = ctx();
    let (links, cancels) = (Links::default(), Arc::default());
    let _h = c.spawn(FakeIo::new(c, &links, &cancels)).unwrap();
    c.poll();
    // The backend refused the start and handed the link back; the
    // future would give its output without a drop needing a cancel.
    take_link(&links).refused();
    let (links2, cancels2) = (Links::default(), Arc::default());
    let n = pinion_core::task::io::IO_ENTRIES;
    let futs = (0..n)
        .map(|_| Box::pin(FakeIo::new(c, &links2, &cancels2)))
        .collect();
    let _h2 = c.spawn(Many(futs, vec![None; n])).unwrap();
    c.poll();
    assert_eq!(
        links2.lock().unwrap().len(),
        n,
        "another task's entries are its own"
    );
    drop(links2.lock().unwrap().drain(..).collect::<Vec<_>>());
}

/// Completions racing the future's drop on another thread, many times:
/// every result is dropped exactly once, whoever goes first.
#[test]
fn completions_race_drops_from_other_threads() {
    let c = common::with_tasks(4, 512, 2);
    let _w = watchdog("race", 60);
    let rounds = if cfg!(miri) { 8 } else { 300 };
    let drops = Arc::new(AtomicUsize::new(0));
    // The guard first: a runner that found no work would leave run() at once.
    let guard = c.work_guard();
    let runners = common::spawn_runners(c, 1);
    for _ in 0..rounds {
        let (links, cancels) = (Links::default(), Arc::new(AtomicUsize::new(0)));
        let h = c.spawn(FakeIo::new(c, &links, &cancels)).unwrap();
        common::wait_until("armed", 20, || !links.lock().unwrap().is_empty());
        let link = take_link(&links);
        let d = drops.clone();
        let t = thread::spawn(move || {
            link.completing();
            // SAFETY: not a run thread.
            unsafe { link.deliver(Val(0, d), None) };
        });
        h.abort();
        t.join().unwrap();
        common::wait_until("finished", 20, || h.is_finished());
    }
    common::wait_until("all dropped", 20, || drops.load(Ordering::SeqCst) == rounds);
    common::wait_until("slots back", 20, || c.tasks_in_use().0 == 0);
    drop(guard);
    c.stop();
    common::join_all("runners", 20, runners);
}
