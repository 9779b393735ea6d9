//! Shared by the callback servers: a failing accept (EMFILE at the fd
//! limit) is logged once per run of failures and retried after 50 ms, so
//! a storm of connections past the limit neither floods the log nor spins
//! a core (Asio's advice: keep the accept going; a connection closing
//! meanwhile makes room).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pinion::{Error, IoContext, SteadyTimer};

pub struct AcceptBackoff {
    name: &'static str,
    timer: SteadyTimer<'static>,
    /// A failure was logged and no accept has succeeded since.
    failing: AtomicBool,
}

impl AcceptBackoff {
    pub fn new(ctx: &'static IoContext, name: &'static str) -> Self {
        let timer = SteadyTimer::new(ctx).unwrap_or_else(|e| {
            eprintln!("{name}: timer: {e}");
            std::process::exit(1)
        });
        AcceptBackoff {
            name,
            timer,
            failing: AtomicBool::new(false),
        }
    }

    /// An accept succeeded: the next failure is logged again.
    pub fn succeeded(&self) {
        self.failing.store(false, Ordering::Relaxed);
    }

    /// Logs `e` (once per run of failures) and calls `retry` in 50 ms.
    pub fn retry_later(&'static self, e: Error, retry: impl FnOnce() + Send + 'static) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            eprintln!("{}: accept failed: {e}; retrying every 50 ms", self.name);
        }
        let armed = self.timer.expires_after(Duration::from_millis(50)).is_ok()
            && self
                .timer
                .async_wait(move |r| {
                    if r.is_ok() {
                        retry();
                    }
                })
                .is_ok();
        if !armed {
            eprintln!("{}: accept: cannot arm the retry timer", self.name);
            std::process::exit(1);
        }
    }
}
