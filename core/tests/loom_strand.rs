//! loom model of the strand hand-over, on the real `Strand` and
//! `Scheduler` (through core's `src/loom.rs` facade): a handler posted to
//! a strand while another thread runs or releases it runs exactly once,
//! never at the same time as another of the strand's handlers, and after
//! the handlers posted before it from the same thread.
//!
//! The handlers write one loom cell without a lock: two of them
//! overlapping, or one not ordered after the previous (a hand-over that
//! publishes the queue without the strand's lock), fails loom's cell check.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p
//! pinion-core --release --test loom_strand`.
#![cfg(loom)]

mod loom_util;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use loom_util::{post, scoped, Ctx};
use pinion_core::backend::NoTask;
use pinion_core::Strand;

/// What the strand's handlers ran, in order; touched without a lock.
struct Log(UnsafeCell<Vec<u8>>);

// SAFETY: only the strand's handlers touch the log, which the strand
// serialises; loom checks that claim on every access.
unsafe impl Sync for Log {}
// SAFETY: as above.
unsafe impl Send for Log {}

impl Log {
    fn push(&self, id: u8) {
        // SAFETY: see the `Sync` impl; loom fails the model if it is
        // false.
        self.0.with_mut(|v| unsafe { (*v).push(id) });
    }

    fn take(&self) -> Vec<u8> {
        // SAFETY: called after every thread was joined.
        self.0.with_mut(|v| unsafe { core::mem::take(&mut *v) })
    }
}

/// Two run threads race each other; everything is posted before they
/// start, so the model's steps are theirs alone: handler 1 to the strand,
/// then a plain handler that posts 2 to the strand from a run thread (the
/// private path) while the other thread may be running 1 or handing the
/// strand over. Handler 1 posts 3 from inside the strand. Each runs once,
/// alone; 3 after 1.
#[test]
fn strand_handover_runs_each_handler_once_and_alone() {
    loom::model(|| {
        // SAFETY: both threads are joined inside.
        unsafe {
            scoped(Ctx::new(NoTask, 6, 0), |c| {
                let s = &*c.sched;
                let strand = Strand::new(s).expect("a free slot");
                let log = Arc::new(Log(UnsafeCell::new(Vec::new())));
                let (l1, st1) = (log.clone(), strand.clone());
                assert!(strand
                    .post(move || {
                        l1.push(1);
                        let l3 = l1.clone();
                        assert!(st1.post(move || l3.push(3)).is_ok());
                    })
                    .is_ok());
                let (l2, st2) = (log.clone(), strand.clone());
                post(s, move || {
                    assert!(st2.post(move || l2.push(2)).is_ok());
                });
                drop(strand);
                let a = thread::spawn(move || s.run());
                let b = thread::spawn(move || s.run());
                let ran = a.join().unwrap() + b.join().unwrap();
                let order = log.take();
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, [1, 2, 3], "each once: {order:?}");
                let pos = |id| order.iter().position(|&x| x == id);
                assert!(pos(1) < pos(3), "3 was posted by 1: {order:?}");
                // The plain handler and at least one run of the strand op
                // (the handlers inside it are the strand's to count).
                assert!(ran >= 2, "ran {ran}");
                assert_eq!(s.outstanding_work(), 0);
                assert_eq!(s.ops_in_use().0, 0, "strand and handler slots all back");
            })
        }
    });
}
