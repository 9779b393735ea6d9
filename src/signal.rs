//! Signals as completions (Asio's `signal_set`), through one `signalfd`.
//!
//! The signals a [`SignalSet`] waits for must be **blocked in every
//! thread**, or the kernel runs their default action (terminating the
//! process) instead of queueing them: call [`block`] in `main` before any
//! other thread is spawned (threads inherit the mask). [`SignalSet::add`]
//! refuses a signal the calling thread has not blocked
//! (`SignalNotBlocked`).
//!
//! One process-wide `signalfd` holds the union of every set's signals;
//! each set watches its own duplicate of it, registered in its context
//! like a socket (a readiness wait: epoll, or io_uring's `POLL_ADD`). A
//! signal read by any set is counted for **every** set that holds it, so
//! two sets (in one context or in two) both see it, and a signal that
//! arrives while a set has no wait pending is delivered to its next wait.
//! The kernel keeps one pending instance of each standard signal: the
//! same signal raised twice before anyone reads it counts once
//! (real-time signals queue). Signals sent to one thread (`tgkill`) are
//! not seen; send them to the process (`kill`).
//!
//! At most [`MAX_SETS`] sets exist at once in a process (`PoolFull(Signals)`
//! after that); each takes a descriptor slot of its context.

use core::future::Future;
use core::task::Poll;

use pinion_core::backend::{Backend, Handler, OpHooks, Readiness, Sched};
use pinion_core::compose::post_value;
use pinion_core::{Error, Pool, Rejected, Result};
use pinion_sync::{FutexMutex, Locked};
use pinion_sys::Fd;

use crate::context::IoContext;
use crate::fd::StreamDescriptor;
use crate::owned::Close;

/// Sets that may exist at once, in the whole process.
pub const MAX_SETS: usize = 32;
/// Signal numbers are `1..NSIG` (64 on Linux, real-time ones included).
const NSIG: usize = 65;

/// Blocks `signals` in the calling thread (`pthread_sigmask`), so that
/// they are queued for a [`SignalSet`] instead of acted on. Call it in
/// `main` before spawning threads: they inherit the mask.
///
/// ```
/// pinion::signal::block(&[libc::SIGTERM, libc::SIGINT]).unwrap();
/// ```
pub fn block(signals: &[i32]) -> Result<()> {
    let set = sigset(signals.iter().copied())?;
    // SAFETY: `set` is an initialised sigset_t; no old mask is asked for.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut()) };
    if r != 0 {
        return Err(Error::Os(pinion_core::Errno(r)));
    }
    Ok(())
}

fn valid(sig: i32) -> Result<()> {
    // SIGKILL and SIGSTOP can be neither blocked nor caught.
    if sig <= 0 || sig as usize >= NSIG || sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return Err(Error::InvalidSignal(sig));
    }
    Ok(())
}

fn sigset(signals: impl Iterator<Item = i32>) -> Result<libc::sigset_t> {
    // SAFETY: sigemptyset initialises the set it is given.
    let mut set = unsafe { core::mem::zeroed::<libc::sigset_t>() };
    // SAFETY: as above.
    unsafe { libc::sigemptyset(&mut set) };
    for s in signals {
        valid(s)?;
        // SAFETY: `set` is initialised and `s` a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    Ok(set)
}

fn blocked_here(sig: i32) -> bool {
    // SAFETY: as in `sigset`; a null new mask only reads the old one.
    unsafe {
        let mut cur = core::mem::zeroed::<libc::sigset_t>();
        libc::pthread_sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut cur) == 0
            && libc::sigismember(&cur, sig) == 1
    }
}

/// One set's record in the process-wide table.
#[derive(Clone, Copy)]
struct Slot {
    used: bool,
    gen: u32,
    /// Bit `s - 1` for signal `s`.
    mask: u64,
    /// Signals counted for this set and not yet delivered.
    pending: [u16; NSIG],
    /// `cancel` was called while a wait was pending.
    cancelled: bool,
    /// The scheduler of the set's context, as an address (its
    /// `IoContext::shutdown` frees the set's slot and signals).
    owner: usize,
}

impl Slot {
    const EMPTY: Slot = Slot {
        used: false,
        gen: 0,
        mask: 0,
        pending: [0; NSIG],
        cancelled: false,
        owner: 0,
    };

    /// The lowest pending signal, taken.
    fn take(&mut self) -> Option<i32> {
        let s = self.pending.iter().position(|&n| n > 0)?;
        self.pending[s] -= 1;
        Some(s as i32)
    }
}

struct Registry {
    /// The process's signalfd (-1 while no set exists).
    fd: i32,
    /// How many sets hold each signal.
    users: [u16; NSIG],
    sets: [Slot; MAX_SETS],
}

static REG: Locked<FutexMutex, Registry> = Locked::new(Registry {
    fd: -1,
    users: [0; NSIG],
    sets: [Slot::EMPTY; MAX_SETS],
});

/// Frees the slot and the signals of every set of the context whose
/// scheduler is at `owner` (its shutdown: their descriptors are closed
/// already). A handle to such a set then answers `BadDescriptor`.
pub(crate) fn release_context(owner: *const ()) {
    let mut reg = REG.lock();
    for i in 0..MAX_SETS {
        if !reg.sets[i].used || reg.sets[i].owner != owner as usize {
            continue;
        }
        for sig in 1..NSIG as i32 {
            // A failing mask update leaves the signal in the union; the
            // set is freed all the same.
            let _ = reg.drop_signal(i, sig);
        }
        let gen = reg.sets[i].gen;
        reg.sets[i] = Slot {
            gen: gen.wrapping_add(1),
            ..Slot::EMPTY
        };
    }
    reg.close_if_unused();
}

impl Registry {
    /// Closes the process's signalfd once no set exists.
    fn close_if_unused(&mut self) {
        if self.sets.iter().all(|s| !s.used) && self.fd >= 0 {
            // SAFETY: the process signalfd, ours; no set refers to it now
            // (each watched a duplicate).
            drop(unsafe { Fd::from_raw(self.fd) });
            self.fd = -1;
        }
    }

    /// Takes `sig` out of set `i`, and out of the signalfd's mask when no
    /// set holds it any more.
    fn drop_signal(&mut self, i: usize, sig: i32) -> Result<()> {
        let bit = 1u64 << (sig - 1);
        if self.sets[i].mask & bit != 0 {
            self.sets[i].mask &= !bit;
            self.sets[i].pending[sig as usize] = 0;
            self.users[sig as usize] -= 1;
            if self.users[sig as usize] == 0 {
                return self.update_mask();
            }
        }
        Ok(())
    }

    /// The union of every set's signals, as the signalfd's mask.
    fn update_mask(&self) -> Result<()> {
        let union = (1..NSIG as i32).filter(|&s| self.users[s as usize] > 0);
        let set = sigset(union)?;
        let flags = libc::SFD_NONBLOCK | libc::SFD_CLOEXEC;
        // SAFETY: `set` is initialised; `fd` is our signalfd.
        if unsafe { libc::signalfd(self.fd, &set, flags) } < 0 {
            return Err(Error::Os(pinion_core::Errno::last()));
        }
        Ok(())
    }

    /// Reads every queued signal and counts it for each set holding it.
    fn drain(&mut self) {
        let mut info = [0u8; core::mem::size_of::<libc::signalfd_siginfo>()];
        while self.fd >= 0 && pinion_sys::fd::read(self.fd, &mut info) == Ok(info.len()) {
            let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as usize;
            if signo == 0 || signo >= NSIG {
                continue;
            }
            for s in self
                .sets
                .iter_mut()
                .filter(|s| s.used && s.mask & (1u64 << (signo - 1)) != 0)
            {
                s.pending[signo] = s.pending[signo].saturating_add(1);
            }
        }
    }
}

/// A set of signals to wait for (see the [module docs](self)). A `Copy`
/// handle, like the socket handles; [`Owned`](crate::Owned) closes it on
/// drop, which removes its signals.
pub struct SignalSet<'c, B: Backend> {
    desc: StreamDescriptor<'c, B>,
    slot: u32,
    gen: u32,
}

impl<B: Backend> Clone for SignalSet<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for SignalSet<'_, B> {}

impl<'c, B: Backend> SignalSet<'c, B> {
    /// An empty set on `ctx`: a descriptor slot, and a slot of the
    /// process's table (`PoolFull(Signals)` when [`MAX_SETS`] exist).
    pub fn new(ctx: &'c IoContext<B>) -> Result<Self> {
        let mut reg = REG.lock();
        let Some(i) = reg.sets.iter().position(|s| !s.used) else {
            return Err(Error::PoolFull(Pool::Signals));
        };
        if reg.fd < 0 {
            let empty = sigset(core::iter::empty())?;
            let flags = libc::SFD_NONBLOCK | libc::SFD_CLOEXEC;
            // SAFETY: `empty` is initialised; -1 asks for a new signalfd.
            let fd = unsafe { libc::signalfd(-1, &empty, flags) };
            if fd < 0 {
                return Err(Error::Os(pinion_core::Errno::last()));
            }
            reg.fd = fd;
        }
        let dup = pinion_sys::fd::duplicate(reg.fd)?;
        let gen = reg.sets[i].gen;
        reg.sets[i] = Slot {
            used: true,
            gen,
            owner: ctx.sched().owner() as usize,
            ..Slot::EMPTY
        };
        drop(reg);
        match StreamDescriptor::from_fd(ctx, dup) {
            Ok(desc) => Ok(SignalSet {
                desc,
                slot: i as u32,
                gen,
            }),
            Err(e) => {
                Self::free_slot(i, gen);
                Err(e)
            }
        }
    }

    /// Adds `sig` (`InvalidSignal` out of range or for SIGKILL/SIGSTOP,
    /// `SignalNotBlocked` unless the calling thread blocks it: see
    /// [`block`]). Adding it twice is harmless.
    pub fn add(&self, sig: i32) -> Result<()> {
        valid(sig)?;
        if !blocked_here(sig) {
            return Err(Error::SignalNotBlocked(sig));
        }
        self.with_slot(|reg, i| {
            let bit = 1u64 << (sig - 1);
            if reg.sets[i].mask & bit == 0 {
                reg.sets[i].mask |= bit;
                reg.users[sig as usize] += 1;
                if reg.users[sig as usize] == 1 {
                    return reg.update_mask();
                }
            }
            Ok(())
        })
    }

    /// Removes `sig`; its undelivered instances go with it.
    pub fn remove(&self, sig: i32) -> Result<()> {
        valid(sig)?;
        self.with_slot(|reg, i| reg.drop_signal(i, sig))
    }

    /// Removes every signal.
    pub fn clear(&self) -> Result<()> {
        self.with_slot(|reg, i| {
            for s in 1..NSIG as i32 {
                reg.drop_signal(i, s)?;
            }
            Ok(())
        })
    }

    /// Calls `handler` with the next signal of the set (one already
    /// counted, or the next to arrive); `OperationAborted` after
    /// [`cancel`](Self::cancel) or [`close`](Self::close). One wait at a
    /// time per set.
    pub fn async_wait<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<i32>) + Send + 'static,
    {
        match self.look(true) {
            Err(error) => Err(Rejected { error, handler }),
            Ok(Some(sig)) => {
                let sched = self.desc.context().sched();
                post_value(sched, (handler, sig), |(h, s)| h(Ok(s))).map_err(|r| {
                    // Not delivered: counted again for the next wait.
                    let (handler, sig) = r.handler;
                    let _ = self.with_slot(|reg, i| {
                        reg.sets[i].pending[sig as usize] += 1;
                        Ok(())
                    });
                    Rejected {
                        error: r.error,
                        handler,
                    }
                })
            }
            Ok(None) => self.arm(handler),
        }
    }

    /// Waits for the descriptor; on readiness (or a recheck), delivers or
    /// waits again.
    fn arm<F>(&self, handler: F) -> core::result::Result<(), Rejected<F>>
    where
        F: FnOnce(Result<i32>) + Send + 'static,
    {
        let step = OnReady {
            set: *self,
            f: handler,
        };
        self.desc
            .wait_with(Readiness::Readable, step)
            .map_err(|r| r.map(|s| s.f))?;
        // A signal another set read between our look and the wait's start
        // made no edge for us: look again, and if it is ours, end the wait
        // (its completion then delivers it).
        let ours = self
            .with_slot(|reg, i| {
                reg.drain();
                Ok(reg.sets[i].pending.iter().any(|&n| n > 0))
            })
            .unwrap_or(false);
        if ours {
            let _ = self.desc.cancel();
        }
        Ok(())
    }

    /// Reads what the signalfd holds and takes this set's lowest counted
    /// signal, if any; `fresh`: a new wait starts (an earlier `cancel` is
    /// forgotten).
    fn look(&self, fresh: bool) -> Result<Option<i32>> {
        self.with_slot(|reg, i| {
            reg.drain();
            if fresh {
                reg.sets[i].cancelled = false;
            }
            Ok(reg.sets[i].take())
        })
    }

    /// A readiness wait ended with `r`: the signal it brought, `None` to
    /// wait again (readable for another set's signal, or our own recheck),
    /// or `OperationAborted` after `cancel` or `close`.
    fn after_ready(&self, r: Result<()>) -> Result<Option<i32>> {
        let next = self.with_slot(|reg, i| {
            if r.is_err() && reg.sets[i].cancelled {
                reg.sets[i].cancelled = false;
                return Err(Error::OperationAborted);
            }
            reg.drain();
            Ok(reg.sets[i].take())
        });
        match next {
            // Closed meanwhile: the slot is stale.
            Err(Error::BadDescriptor) => Err(Error::OperationAborted),
            next => next,
        }
    }

    fn on_ready<F>(self, r: Result<()>, handler: F)
    where
        F: FnOnce(Result<i32>) + Send + 'static,
    {
        match self.after_ready(r) {
            Ok(Some(sig)) => handler(Ok(sig)),
            Err(e) => handler(Err(e)),
            Ok(None) => {
                if let Err(rej) = self.arm(handler) {
                    (rej.handler)(Err(rej.error));
                }
            }
        }
    }

    /// The next signal of the set (one already counted, or the next to
    /// arrive), as a future: [`async_wait`](Self::async_wait)'s form for
    /// tasks. `OperationAborted` after [`cancel`](Self::cancel) or
    /// [`close`](Self::close). Dropping the future loses no signal: it
    /// waits for the signalfd's readiness, and a signal is taken only in
    /// the poll that returns it. One wait at a time per set.
    pub async fn wait(&self) -> Result<i32> {
        let mut fresh = true;
        loop {
            if let Some(sig) = self.look(core::mem::take(&mut fresh))? {
                return Ok(sig);
            }
            let mut ready = core::pin::pin!(self.desc.ready(Readiness::Readable));
            let mut started = false;
            // `Err(sig)`: the recheck found one, and the wait is dropped
            // (cancelled) unfinished.
            let woke = core::future::poll_fn(|cx| match ready.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(Ok(r)),
                Poll::Pending if !started => {
                    started = true;
                    // As in `arm`: a signal another set read between our
                    // look and the wait's start made no edge for us.
                    match self.look(false) {
                        Ok(Some(sig)) => Poll::Ready(Err(sig)),
                        _ => Poll::Pending,
                    }
                }
                Poll::Pending => Poll::Pending,
            })
            .await;
            match woke {
                Err(sig) => return Ok(sig),
                Ok(r) => {
                    if let Some(sig) = self.after_ready(r)? {
                        return Ok(sig);
                    }
                }
            }
        }
    }

    /// A pending wait completes with `OperationAborted`; counted signals
    /// stay for the next wait.
    pub fn cancel(&self) -> Result<()> {
        self.with_slot(|reg, i| {
            reg.sets[i].cancelled = true;
            Ok(())
        })?;
        self.desc.cancel()
    }

    /// Removes the set's signals, aborts its wait, frees its slots.
    pub fn close(&self) -> Result<()> {
        self.clear()?;
        Self::free_slot(self.slot as usize, self.gen);
        self.desc.close()
    }

    fn free_slot(i: usize, gen: u32) {
        let mut reg = REG.lock();
        if reg.sets[i].used && reg.sets[i].gen == gen {
            reg.sets[i] = Slot {
                gen: gen.wrapping_add(1),
                ..Slot::EMPTY
            };
        }
        reg.close_if_unused();
    }

    /// Runs `f` on the registry and this set's index, or `BadDescriptor`
    /// for a closed set.
    fn with_slot<T>(&self, f: impl FnOnce(&mut Registry, usize) -> Result<T>) -> Result<T> {
        let mut reg = REG.lock();
        let i = self.slot as usize;
        if !reg.sets[i].used || reg.sets[i].gen != self.gen {
            return Err(Error::BadDescriptor);
        }
        f(&mut reg, i)
    }
}

/// A set's readiness wait: the set and the user's handler.
struct OnReady<'c, B: Backend, F> {
    set: SignalSet<'c, B>,
    f: F,
}

impl<B: Backend, F> Handler<B, Result<()>> for OnReady<'_, B, F>
where
    F: FnOnce(Result<i32>) + Send + 'static,
{
    fn call(self, _: &Sched<B>, r: Result<()>) {
        self.set.on_ready(r, self.f)
    }
}
impl<B: Backend, F> OpHooks for OnReady<'_, B, F> {}

impl<B: Backend> Close for SignalSet<'_, B> {
    fn close(&self) -> Result<()> {
        SignalSet::close(self)
    }
}
