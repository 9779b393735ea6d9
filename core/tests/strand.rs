//! Integration tests of pinion-core's strand (Asio's `io_context::strand`):
//! no two handlers of one strand overlap, each posting thread's handlers
//! run in its posting order, `dispatch` runs inline where allowed,
//! `running_in_this_thread`, pool exhaustion, and shutdown with handlers
//! still queued in a strand.
//!
//! Every wait is bounded and nothing asserts on elapsed time. These tests
//! also run under `cargo +nightly miri test -p pinion-core --test strand`
//! with small counts. There `current_thread_id()` is 0, so the scheduler
//! cannot recognise its own threads: checks of inline dispatch and
//! `running_in_this_thread` are skipped (everything else still holds).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use pinion_core::backend::NoTask;
use pinion_core::{Error, Pool, Rejected, Scheduler, Strand};
use pinion_sync::{FutexKit, SpinKit, SyncKit};

mod common;
use common::*;

type FStrand<'s> = Strand<'s, NoTask, FutexKit>;

thread_local! {
    /// Which poster this thread is (runner threads: set before `run`).
    static POSTER: Cell<usize> = const { Cell::new(usize::MAX) };
    /// This thread's post counters, one per strand.
    static SEQ: Cell<[usize; STRANDS]> = const { Cell::new([0; STRANDS]) };
    /// Set by handlers dispatched inline, read right after `dispatch`.
    static MARK: Cell<u32> = const { Cell::new(0) };
}

// ------------------------------------- exclusion and per-poster ordering

const STRANDS: usize = 4;

struct World<K: SyncKit + 'static> {
    ctx: &'static Ctx<K>,
    strands: [Strand<'static, NoTask, K>; STRANDS],
    in_flight: [AtomicU8; STRANDS],
    /// Last sequence number seen, per (poster, strand).
    last: Box<[[AtomicUsize; STRANDS]]>,
    overlaps: AtomicUsize,
    order_errors: AtomicUsize,
    flag_errors: AtomicUsize,
    inline_dispatches: AtomicUsize,
    done: AtomicUsize,
}

/// Takes this thread's next sequence number for strand `s`.
fn next_seq(s: usize) -> usize {
    SEQ.with(|c| {
        let mut v = c.get();
        v[s] += 1;
        c.set(v);
        v[s]
    })
}

fn post_numbered<K: SyncKit>(w: &'static World<K>, s: usize, poster: usize, follow: bool)
where
    Strand<'static, NoTask, K>: Send + Sync,
    Ctx<K>: Sync,
{
    let seq = next_seq(s);
    let h = move || on_strand(w, s, poster, seq, follow);
    if w.strands[s].post(h).is_err() {
        panic!("pool sized for every handler");
    }
}

fn on_strand<K: SyncKit>(w: &'static World<K>, s: usize, poster: usize, seq: usize, follow: bool)
where
    Strand<'static, NoTask, K>: Send + Sync,
    Ctx<K>: Sync,
{
    if w.in_flight[s].swap(1, Ordering::Acquire) != 0 {
        w.overlaps.fetch_add(1, Ordering::Relaxed);
    }
    let last = &w.last[poster][s];
    if last.load(Ordering::Relaxed) + 1 != seq {
        w.order_errors.fetch_add(1, Ordering::Relaxed);
    }
    last.store(seq, Ordering::Relaxed);
    if ids_available() {
        let other = &w.strands[(s + 1) % STRANDS];
        if !w.strands[s].running_in_this_thread()
            || other.running_in_this_thread()
            || !w.ctx.running_in_this_thread()
        {
            w.flag_errors.fetch_add(1, Ordering::Relaxed);
        }
        if seq % 16 == 1 {
            // dispatch from inside the strand runs inline, in the strand.
            MARK.with(|m| m.set(0));
            let r = w.strands[s].dispatch(move || {
                MARK.with(|m| m.set(1));
            });
            assert!(r.is_ok());
            if MARK.with(|m| m.get()) == 1 {
                w.inline_dispatches.fetch_add(1, Ordering::Relaxed);
            } else {
                w.flag_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if follow {
        // A post from inside a handler, numbered by this run thread.
        post_numbered(w, (s + 1) % STRANDS, POSTER.with(|p| p.get()), false);
    }
    for _ in 0..20 {
        std::hint::spin_loop();
    }
    if w.in_flight[s].swap(0, Ordering::Release) != 1 {
        w.overlaps.fetch_add(1, Ordering::Relaxed);
    }
    w.done.fetch_add(1, Ordering::Release);
}

/// `outside` threads each post `per_poster` handlers to every strand while
/// `runners` threads run the context; the first `follow` of each
/// (poster, strand) post a follow-up to the next strand from inside `run`.
fn strands_exclusive_and_ordered<K: SyncKit>(
    outside: usize, runners: usize, per_poster: usize, follow: usize,
) where
    Strand<'static, NoTask, K>: Send + Sync,
    Ctx<K>: Sync,
{
    let _w = watchdog("strands", 60);
    let per_strand = outside * (per_poster + follow);
    let total = STRANDS * per_strand;
    let ctx: &'static Ctx<K> = leak(total + STRANDS + 64 * runners, runners);
    let w: &'static World<K> = leak_box(Box::new(World {
        ctx,
        strands: core::array::from_fn(|_| Strand::new(ctx).unwrap()),
        in_flight: core::array::from_fn(|_| AtomicU8::new(0)),
        last: (0..outside + runners)
            .map(|_| core::array::from_fn(|_| AtomicUsize::new(0)))
            .collect(),
        overlaps: AtomicUsize::new(0),
        order_errors: AtomicUsize::new(0),
        flag_errors: AtomicUsize::new(0),
        inline_dispatches: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    }));
    let guard = ctx.work_guard();
    let run_threads: Vec<_> = (0..runners)
        .map(|r| {
            thread::spawn(move || {
                POSTER.with(|p| p.set(outside + r));
                let n = ctx.run();
                (n, SEQ.with(|c| c.get()))
            })
        })
        .collect();
    let posters: Vec<_> = (0..outside)
        .map(|p| {
            thread::spawn(move || {
                for i in 0..per_poster {
                    for s in 0..STRANDS {
                        post_numbered(w, s, p, i < follow);
                    }
                }
                w.strands.iter().all(|s| !s.running_in_this_thread())
                    && !ctx.running_in_this_thread()
            })
        })
        .collect();
    let outside_flags = join_all("outside posters", 50, posters);
    assert!(
        outside_flags.iter().all(|&ok| ok),
        "running_in_this_thread is false outside run"
    );
    drop(guard);
    let runs = join_all("run threads", 50, run_threads);

    assert_eq!(
        w.overlaps.load(Ordering::SeqCst),
        0,
        "handlers of a strand overlapped"
    );
    assert_eq!(
        w.order_errors.load(Ordering::SeqCst),
        0,
        "out-of-order handlers"
    );
    assert_eq!(
        w.flag_errors.load(Ordering::SeqCst),
        0,
        "inline dispatch / running_in_this_thread"
    );
    assert_eq!(w.done.load(Ordering::SeqCst), total, "every handler ran");
    for p in 0..outside {
        for s in 0..STRANDS {
            assert_eq!(w.last[p][s].load(Ordering::SeqCst), per_poster);
        }
    }
    let mut inside = [0usize; STRANDS];
    for (r, (_, seq)) in runs.iter().enumerate() {
        for s in 0..STRANDS {
            assert_eq!(w.last[outside + r][s].load(Ordering::SeqCst), seq[s]);
            inside[s] += seq[s];
        }
    }
    assert_eq!(inside, [outside * follow; STRANDS], "follow-ups per strand");
    if ids_available() {
        assert!(w.inline_dispatches.load(Ordering::SeqCst) > 0);
    }
    assert!(runs.iter().map(|(n, _)| n).sum::<usize>() > 0);
    assert_eq!(ctx.outstanding_work(), 0);
    assert_eq!(ctx.ops_in_use().0, STRANDS, "only the strands' own slots");
}

/// 4 strands x 20,000 handlers: 8 outside threads post 1,500 per strand
/// each, and 8,000 per strand are posted from inside handlers on the 8
/// threads in `run`.
#[test]
fn four_strands_exclusive_and_ordered_futex() {
    strands_exclusive_and_ordered::<FutexKit>(
        scale(8, 2),
        scale(8, 3),
        scale(1500, 4),
        scale(1000, 2),
    );
}

#[test]
fn four_strands_exclusive_and_ordered_spin() {
    strands_exclusive_and_ordered::<SpinKit>(
        scale(2, 2),
        scale(3, 2),
        scale(1500, 3),
        scale(1000, 2),
    );
}

// -------------------------------------------- dispatch, running_in_this_thread

#[test]
fn strand_runs_in_post_order_on_one_thread() {
    let _w = watchdog("strand_order", 60);
    let ctx: Ctx = Scheduler::new(NoTask, slots(256), 1);
    let strand = Strand::new(&ctx).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..100 {
        let o = order.clone();
        strand.post(move || o.lock().unwrap().push(i)).unwrap();
        if i % 10 == 9 {
            ctx.post(|| {}).unwrap();
        }
    }
    let n = ctx.run();
    assert!(n >= 11);
    assert_eq!(*order.lock().unwrap(), (0..100).collect::<Vec<_>>());
    drop(strand);
    assert_eq!(ctx.ops_in_use().0, 0);
}

#[test]
fn dispatch_and_running_in_this_thread() {
    let _w = watchdog("strand_dispatch", 60);
    let ctx: &'static Ctx = leak(64, 2);
    let a: &'static FStrand<'static> = leak_box(Box::new(Strand::new(ctx).unwrap()));
    let b: &'static FStrand<'static> = leak_box(Box::new(Strand::new(ctx).unwrap()));
    let log: &'static Mutex<Vec<&'static str>> = leak_box(Box::new(Mutex::new(Vec::new())));
    let push = move |s: &'static str| log.lock().unwrap().push(s);
    let ids = ids_available();

    assert!(!a.running_in_this_thread() && !b.running_in_this_thread());
    // Outside run, dispatch posts.
    a.dispatch(move || push("outside dispatch")).unwrap();
    assert!(log.lock().unwrap().is_empty(), "not inline outside run");

    // Inside a plain handler: no strand is running here.
    ctx.post(move || {
        if ids {
            assert!(!a.running_in_this_thread() && !b.running_in_this_thread());
        }
        push("plain");
    })
    .unwrap();

    a.post(move || {
        if ids {
            assert!(a.running_in_this_thread(), "inside a's handler");
            assert!(!b.running_in_this_thread());
        }
        push("a1 start");
        // dispatch into the strand we are in: inline.
        MARK.with(|m| m.set(0));
        a.dispatch(move || {
            if ids {
                assert!(a.running_in_this_thread());
            }
            MARK.with(|m| m.set(1));
            push("a inline");
        })
        .unwrap();
        if ids {
            assert_eq!(
                MARK.with(|m| m.get()),
                1,
                "dispatch inside the strand is inline"
            );
        }
        // post into the strand we are in: after this handler.
        a.post(move || push("a posted from a1")).unwrap();
        push("a1 end");
    })
    .unwrap();
    // The strand op runs once per hand-over; run() counts ops, not the
    // strand's handlers.
    assert!(ctx.run() >= 3);
    let got = log.lock().unwrap().clone();
    if ids {
        assert_eq!(
            got,
            [
                "outside dispatch",
                "plain",
                "a1 start",
                "a inline",
                "a1 end",
                "a posted from a1",
            ]
        );
    } else {
        // Without thread ids dispatch can never run inline: it posts.
        assert_eq!(
            got,
            [
                "outside dispatch",
                "plain",
                "a1 start",
                "a1 end",
                "a inline",
                "a posted from a1",
            ]
        );
    }
    assert!(!a.running_in_this_thread(), "false again outside run");
    assert_eq!(ctx.ops_in_use().0, 2, "the two strands");
}

/// Inside `run`, dispatch to an idle strand runs inline (the strand is
/// free); to a strand whose op is queued it posts behind the queued work.
#[test]
fn dispatch_inside_run_to_idle_and_to_busy_strand() {
    let _w = watchdog("strand_dispatch_busy", 60);
    let ctx: &'static Ctx = leak(64, 1);
    let s: &'static FStrand<'static> = leak_box(Box::new(Strand::new(ctx).unwrap()));
    let log: &'static Mutex<Vec<&'static str>> = leak_box(Box::new(Mutex::new(Vec::new())));
    let push = move |x: &'static str| log.lock().unwrap().push(x);
    let ids = ids_available();

    // Idle strand.
    ctx.post(move || {
        MARK.with(|m| m.set(0));
        s.dispatch(move || {
            if ids {
                assert!(s.running_in_this_thread());
            }
            MARK.with(|m| m.set(1));
            push("idle dispatch");
        })
        .unwrap();
        if ids {
            assert_eq!(MARK.with(|m| m.get()), 1, "idle strand: inline");
        }
        push("after idle dispatch");
    })
    .unwrap();
    ctx.run();
    ctx.restart();

    // Busy strand: its op (with h1) is queued behind the plain handler.
    log.lock().unwrap().clear();
    ctx.post(move || {
        s.dispatch(move || push("h2")).unwrap();
        push("plain");
    })
    .unwrap();
    s.post(move || push("h1")).unwrap();
    ctx.run();
    assert_eq!(*log.lock().unwrap(), ["plain", "h1", "h2"]);
    assert_eq!(ctx.ops_in_use().0, 1);
}

/// Asio's `strand::running_in_this_thread()` is true while any handler of
/// the strand is on the calling thread's stack (its call_stack holds every
/// strand entered). pinion's `ThreadInfo::strand` holds a single pointer,
/// replaced when a handler of strand B is dispatched inline from a handler
/// of strand A (strand.rs `dispatch`, `ti.strand.replace`), so inside B's
/// handler A reports false although A's handler is still running below it,
/// and a nested `a.dispatch` from there is posted rather than run inline.
#[test]
fn running_in_this_thread_holds_for_every_strand_on_the_stack() {
    let _w = watchdog("strand_nested", 60);
    if !ids_available() {
        return;
    }
    let ctx: &'static Ctx = leak(64, 1);
    let a: &'static FStrand<'static> = leak_box(Box::new(Strand::new(ctx).unwrap()));
    let b: &'static FStrand<'static> = leak_box(Box::new(Strand::new(ctx).unwrap()));
    let seen: &'static Mutex<Vec<(bool, bool)>> = leak_box(Box::new(Mutex::new(Vec::new())));
    a.post(move || {
        b.dispatch(move || {
            let both = (a.running_in_this_thread(), b.running_in_this_thread());
            seen.lock().unwrap().push(both);
        })
        .unwrap();
    })
    .unwrap();
    ctx.run();
    assert_eq!(*seen.lock().unwrap(), [(true, true)]);
}

#[test]
fn clones_share_one_strand_and_last_drop_frees_it_after_pending_run() {
    let _w = watchdog("strand_clone", 60);
    let ctx: Ctx = Scheduler::new(NoTask, slots(64), 2);
    let order = Arc::new(Mutex::new(Vec::new()));
    let s1 = Strand::new(&ctx).unwrap();
    let s2 = s1.clone();
    for i in 0..10 {
        let o = order.clone();
        let s = if i % 2 == 1 { &s2 } else { &s1 };
        s.post(move || o.lock().unwrap().push(i)).unwrap();
    }
    drop(s1);
    drop(s2);
    // Both handles gone, handlers pending: the slot stays until they ran.
    assert_eq!(ctx.ops_in_use().0, 1 + 10);
    ctx.run();
    assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(
        ctx.ops_in_use().0,
        0,
        "strand slot freed after its last handler"
    );
}

// ----------------------------------------------------- pool exhaustion

#[test]
fn strand_pool_exhaustion() {
    let _w = watchdog("strand_pool", 60);
    let ctx: Ctx = Scheduler::new(NoTask, slots(8), 1);
    let count = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let strand = Strand::new(&ctx).unwrap();
    for i in 0..7 {
        let o = order.clone();
        strand
            .post(move || o.lock().unwrap().push(i))
            .expect("7 free slots");
    }
    assert_eq!(ctx.ops_in_use().0, 8);
    let c = count.clone();
    match strand.post(move || {
        c.fetch_add(1, Ordering::SeqCst);
    }) {
        Err(Rejected {
            error: Error::PoolFull(Pool::Ops),
            handler,
        }) => {
            handler();
            assert_eq!(count.load(Ordering::SeqCst), 1, "handed-back handler works");
        }
        Err(r) => panic!("wrong error {r:?}"),
        Ok(()) => panic!("strand.post accepted with a full pool"),
    }
    let c = count.clone();
    let r = strand
        .dispatch(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
    assert_eq!(r.error, Error::PoolFull(Pool::Ops));
    (r.handler)();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(
        ctx.post(|| {}).unwrap_err().error,
        Error::PoolFull(Pool::Ops)
    );
    assert!(matches!(Strand::new(&ctx), Err(Error::PoolFull(Pool::Ops))));
    assert_eq!(ctx.ops_in_use().0, 8, "failed attempts took nothing");

    ctx.run();
    assert_eq!(*order.lock().unwrap(), (0..7).collect::<Vec<_>>());
    assert_eq!(ctx.ops_in_use().0, 1, "the strand itself");
    ctx.restart();
    let c = count.clone();
    strand
        .post(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .expect("slots free again");
    ctx.run();
    assert_eq!(count.load(Ordering::SeqCst), 3);
    drop(strand);
    assert_eq!(ctx.ops_in_use().0, 0);

    // Strands alone: 8 fit, the 9th does not.
    let strands: Vec<_> = (0..8).map(|_| Strand::new(&ctx).unwrap()).collect();
    assert!(matches!(Strand::new(&ctx), Err(Error::PoolFull(Pool::Ops))));
    drop(strands);
    assert_eq!(ctx.ops_in_use().0, 0);
}

// ------------------------------------------------------------ shutdown

/// A raw pointer a test handler may carry; it is only dereferenced while
/// the pointee is alive (see the use below).
struct SendPtr(*const ());
// SAFETY: only dereferenced on the thread that owns the pointee, while it
// lives (the handler runs inside `run_one` on the test's own thread).
unsafe impl Send for SendPtr {}
impl SendPtr {
    // A method, so closures capture the whole `SendPtr`, not its field.
    fn get(&self) -> *const () {
        self.0
    }
}

#[test]
fn dropping_the_context_drops_strand_handlers_unrun() {
    let _w = watchdog("strand_drop", 60);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let handler = |drops: &Arc<AtomicUsize>, ran: &Arc<AtomicUsize>| {
        let d = DropCount(drops.clone());
        let r = ran.clone();
        move || {
            let _keep = &d;
            r.fetch_add(1, Ordering::SeqCst);
        }
    };
    let spawner_ran = Arc::new(AtomicBool::new(false));
    let ctx: Box<Ctx> = Box::new(Scheduler::new(NoTask, slots(64), 1));
    {
        // Strand `s` runs once: its first handler posts three more into
        // the strand, which the hand-over moves to `ready` before
        // re-queueing the strand op. Then two more are posted from
        // outside, into `waiting`.
        let s = Strand::new(&*ctx).unwrap();
        let sp = SendPtr(&s as *const FStrand<'_> as *const ());
        let (d2, r2, sr) = (drops.clone(), ran.clone(), spawner_ran.clone());
        s.post(move || {
            // SAFETY: the handler runs inside the `run_one` below, on this
            // thread, while `s` is alive (and unmoved) on its stack.
            let s = unsafe { &*(sp.get() as *const FStrand<'_>) };
            for _ in 0..3 {
                s.post(handler(&d2, &r2)).unwrap();
            }
            sr.store(true, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(ctx.run_one(), 1);
        assert!(spawner_ran.load(Ordering::SeqCst));
        assert_eq!(ctx.outstanding_work(), 1, "the re-queued strand op");
        for _ in 0..2 {
            s.post(handler(&drops, &ran)).unwrap();
        }
        // Strand `idle` never runs: one handler in `ready`, three waiting.
        let idle = Strand::new(&*ctx).unwrap();
        for _ in 0..4 {
            idle.post(handler(&drops, &ran)).unwrap();
        }
        // And two plain handlers.
        for _ in 0..2 {
            ctx.post(handler(&drops, &ran)).unwrap();
        }
        // Bookkeeping: 2 strand slots + 11 handlers, nothing leaked.
        assert_eq!(ctx.ops_in_use().0, 2 + 3 + 2 + 4 + 2);
        assert_eq!(ctx.outstanding_work(), 2 + 2, "2 strand ops + 2 posts");
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        // Handles go before the context (they borrow it).
    }
    drop(ctx);
    assert_eq!(drops.load(Ordering::SeqCst), 11, "every handler dropped");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "none ran");
}
