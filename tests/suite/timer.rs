//! Steady timers: deadline order, cancellation, many timers at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinion::{Error, Instant, Result};

use super::{b, run_until};

/// (deadline in ns of the context's clock, or a tag; the wait's result)
type Fired = Arc<Mutex<Vec<(u64, Result<()>)>>>;

fn wait_at(c: &'static b::IoContext, deadline: Instant, fired: &Fired) -> b::SteadyTimer<'static> {
    let t = b::SteadyTimer::new(c).expect("timer");
    assert_eq!(t.expires_at(deadline), Ok(0), "no wait pending yet");
    assert_eq!(t.expiry(), Ok(deadline));
    let f = fired.clone();
    t.async_wait(move |r| f.lock().unwrap().push((deadline.as_nanos(), r)))
        .map_err(|r| r.error)
        .unwrap();
    t
}

#[test]
fn timers_fire_in_deadline_order() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let now = c.now();
    let fired: Fired = Default::default();
    let ms = Duration::from_millis(1);
    let timers: Vec<_> = [7u32, 2, 9, 1, 5, 3, 8, 4, 6, 0]
        .iter()
        .map(|&k| wait_at(c, now + 5 * ms + k * ms, &fired))
        .collect();
    run_until(c, "all timers", || {
        fired.lock().unwrap().len() == timers.len()
    });
    let v = fired.lock().unwrap();
    assert!(v.iter().all(|(_, r)| *r == Ok(())));
    let deadlines: Vec<u64> = v.iter().map(|e| e.0).collect();
    let mut sorted = deadlines.clone();
    sorted.sort();
    assert_eq!(deadlines, sorted);
    assert!(
        c.now().as_nanos() >= *sorted.last().unwrap(),
        "fired before its deadline"
    );
    for t in timers {
        t.close().unwrap();
    }
}

#[test]
fn a_thousand_timers_in_one_context() {
    const N: u64 = 1000;
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let now = c.now();
    let fired: Fired = Default::default();
    let timers: Vec<_> = (0..N)
        .map(|i| {
            wait_at(
                c,
                now + Duration::from_nanos((i * 7919 % N) * 20_000),
                &fired,
            )
        })
        .collect();
    run_until(c, "1000 timers", || {
        fired.lock().unwrap().len() == N as usize
    });
    let deadlines: Vec<u64> = fired.lock().unwrap().iter().map(|e| e.0).collect();
    assert!(
        deadlines.windows(2).all(|w| w[0] <= w[1]),
        "out of deadline order"
    );
    for t in timers {
        t.close().unwrap();
    }
    assert_eq!(c.ops_in_use().0, 0);
}

#[test]
fn cancel_and_reset_abort_pending_waits() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let fired: Fired = Default::default();
    let t = b::SteadyTimer::new(c).unwrap();
    assert_eq!(t.expires_after(Duration::from_secs(3600)), Ok(0));
    for _ in 0..3 {
        let f = fired.clone();
        t.async_wait(move |r| f.lock().unwrap().push((1, r)))
            .map_err(|r| r.error)
            .unwrap();
    }
    assert_eq!(t.cancel(), Ok(3));
    assert_eq!(t.cancel(), Ok(0));
    run_until(c, "cancelled waits", || fired.lock().unwrap().len() == 3);

    // Setting the expiry cancels the pending wait; a new wait fires.
    let f = fired.clone();
    t.async_wait(move |r| f.lock().unwrap().push((2, r)))
        .map_err(|r| r.error)
        .unwrap();
    assert_eq!(t.expires_after(Duration::from_millis(2)), Ok(1));
    let f = fired.clone();
    t.async_wait(move |r| f.lock().unwrap().push((3, r)))
        .map_err(|r| r.error)
        .unwrap();
    run_until(c, "second wait", || fired.lock().unwrap().len() == 5);
    let v = fired.lock().unwrap().clone();
    assert!(v[..4]
        .iter()
        .all(|(_, r)| *r == Err(Error::OperationAborted)));
    assert_eq!(v[4], (3, Ok(())));

    // A closed timer refuses, handing the handler back.
    t.close().unwrap();
    let r = t.async_wait(|_| panic!("never runs")).expect_err("closed");
    assert_eq!(r.error, Error::BadDescriptor);
    // Nothing left to cancel or close: the stale handle says so.
    assert_eq!(t.cancel(), Err(Error::BadDescriptor));
    assert_eq!(t.close(), Err(Error::BadDescriptor));
    assert_eq!(c.outstanding_work(), 0);
}

#[test]
fn a_past_deadline_fires_from_the_run_loop() {
    let ctx = ctx_or_skip!();
    let c = ctx.get();
    let fired: Fired = Default::default();
    let t = b::SteadyTimer::new(c).unwrap(); // expiry in the past
    let f = fired.clone();
    t.async_wait(move |r| f.lock().unwrap().push((0, r)))
        .map_err(|r| r.error)
        .unwrap();
    assert!(fired.lock().unwrap().is_empty(), "ran inside async_wait");
    run_until(c, "past deadline", || fired.lock().unwrap().len() == 1);
    assert_eq!(fired.lock().unwrap()[0].1, Ok(()));
    t.close().unwrap();
}
