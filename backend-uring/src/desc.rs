//! The descriptor table: sockets in a fixed [`Slab`], how SQEs name them,
//! and closing under the start/close protocol.
//!
//! Handles are `Copy` and `Send`, so one thread may start an operation
//! while another closes the socket and opens the next one, which takes the
//! same descriptor slot, registered-file index and fd number. The rule:
//! an operation runs on the socket its handle named or is refused with
//! `BadDescriptor`, never on a successor. It holds because
//! - every SQE that names a socket is written by `push_sqe_on`/`push_on`,
//!   which check the key and write the SQE in one stretch under `sq_lock`
//!   (the check reads [`Desc`]'s `sqe_key`, kept under that lock);
//! - [`close_desc`](crate::Proactor::close_desc) moves the generation on
//!   and queues its cancel in one stretch under the same lock, so every SQE
//!   of the old key is ahead of the cancel in the SQ and none can follow;
//! - the socket is torn down (registered file removed, fd closed, slot
//!   freed) only once the kernel's SQ head has passed the cancel: every
//!   earlier SQE has been issued, its file looked up, and the cancel has
//!   found it. `close` submits until then; if the kernel has not got
//!   there (an SQPOLL thread busy elsewhere, a failed submission) the
//!   teardown waits in a list that is finished by the runner after its
//!   next `io_uring_enter`, by the next close that gets its own cancel
//!   consumed, by a registration that finds the table full (it submits
//!   the parked cancels again), and by shutdown at the latest;
//! - calls that use the fd directly (options, addresses, `shutdown`) run
//!   under the descriptor's lock, which `close` takes to retire the key.
//!
//! With registered files (the default) a socket entering the table is
//! installed at its slot's index (`IORING_REGISTER_FILES_UPDATE`), and its
//! SQEs name it as `Target::Fixed(index)`; cancels add
//! `IORING_ASYNC_CANCEL_FD_FIXED`. Teardown removes it (update to `-1`)
//! before the fd is closed and the index freed, so an index never names an
//! old socket. Two `io_uring_register` calls per socket, none per message.

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use pinion_core::backend::{DescKind, Fd, Key};
use pinion_core::slab::{Entry, Slab};
use pinion_core::{Error, OpQueue, Pool, Result};
use pinion_sync::{FutexMutex, RawMutex};
use pinion_sys::uring::abi::IOSQE_CQE_SKIP_SUCCESS;
use pinion_sys::uring::Sqe;

use crate::accept::{take_waiters, ListenerState};
use crate::proactor::{stat, Proactor, Sched, UD_IGNORE};

/// The most descriptors the table can hold: indices fit a key's 31 low
/// bits (and an SQE's `i32` fd field).
pub(crate) const MAX_DESCRIPTORS: usize = KEY_CLOSED as usize - 1;

/// End of a list of descriptor indices.
pub(crate) const NIL: u32 = u32::MAX;

/// An SQE key's flag: the low bits are a registered-file index.
const KEY_FIXED: u64 = 1 << 31;
/// An SQE key's low 31 bits: the fd or the registered-file index.
const KEY_LOW: u64 = 0x7FFF_FFFF;
/// Low bits of the key of a descriptor with no socket open (neither an fd
/// nor an index can be this large).
const KEY_CLOSED: u64 = KEY_LOW;

/// An SQE key: the generation in the high half, then [`KEY_FIXED`] and the
/// fd or registered-file index (or [`KEY_CLOSED`]).
#[inline]
const fn sqe_key(gen: u32, low: u64) -> u64 {
    (gen as u64) << 32 | low
}

/// How an SQE names a socket: a registered file (by its descriptor-table
/// index) or its fd.
pub(crate) use pinion_sys::uring::Target;

/// A descriptor's state under its lock.
pub(crate) struct DescState {
    /// A handle may use the socket (from open to `close_desc`).
    pub(crate) open: bool,
    /// After `close_desc`: what the slot still waits for before it may be
    /// reused. One for the teardown, one more while a listener's multishot
    /// accept is still in the kernel (its final CQE). The last to finish
    /// frees the slot.
    pub(crate) holds: u8,
    pub(crate) listener: ListenerState,
}

/// One entry of the descriptor table. Opaque: storage for [`Parts`](crate::Parts).
pub struct Desc {
    lock: FutexMutex,
    /// What an SQE needs to name the socket, and the generation a key must
    /// have, in one word: guarded by the proactor's `sq_lock`, where the
    /// start/close protocol reads and writes it.
    sqe_key: UnsafeCell<u64>,
    pub(crate) fd: AtomicI32,
    /// `fd` is installed in the ring's registered-file table at this
    /// slot's index: SQEs name it as `Target::Fixed(index)`.
    fixed: AtomicBool,
    /// The socket takes zero-copy sends (TCP, with `Options::send_zc`
    /// on): set before its key is published, read under `sq_lock` by the
    /// writes that check that key.
    pub(crate) zc: AtomicBool,
    /// Link in a listener's list of accepted connections, guarded by that
    /// listener's lock (nobody else can reach a pending descriptor).
    pub(crate) pending_next: Cell<u32>,
    /// Link in the proactor's list of closes waiting for the kernel, and
    /// the SQ position their cancel must be consumed before; guarded by
    /// that list's lock.
    closing_next: Cell<u32>,
    closing_fence: Cell<u64>,
    st: UnsafeCell<DescState>,
}

// SAFETY: `st` is guarded by `lock`, `sqe_key` by the proactor's
// `sq_lock`, the links by the locks their docs name; the rest is atomic.
unsafe impl Sync for Desc {}
// SAFETY: as above; the fd is owned.
unsafe impl Send for Desc {}

impl Desc {
    /// An unused entry, for the table's storage.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const ENTRY: Entry<Desc> = Entry::new(Desc {
        lock: FutexMutex::INIT,
        sqe_key: UnsafeCell::new(sqe_key(0, KEY_CLOSED)),
        fd: AtomicI32::new(-1),
        fixed: AtomicBool::new(false),
        zc: AtomicBool::new(false),
        pending_next: Cell::new(NIL),
        closing_next: Cell::new(NIL),
        closing_fence: Cell::new(0),
        st: UnsafeCell::new(DescState {
            open: false,
            holds: 0,
            listener: ListenerState::new(),
        }),
    });

    /// Runs `f` with the state, under the descriptor's lock (released on
    /// unwind).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut DescState) -> R) -> R {
        struct Unlock<'a>(&'a FutexMutex);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                // SAFETY: made right after locking; unlocks once.
                unsafe { self.0.unlock() }
            }
        }
        self.lock.lock();
        let _u = Unlock(&self.lock);
        // SAFETY: `st` is only reached with `lock` held; `f` does not call
        // `with` on the same descriptor.
        f(unsafe { &mut *self.st.get() })
    }
}

/// The fixed table of open sockets.
pub(crate) type DescTable = Slab<Desc, FutexMutex>;

/// `IORING_OP_ASYNC_CANCEL` for every request on the socket `target`
/// names (`IORING_ASYNC_CANCEL_FD`, with `_FD_FIXED` for a registered
/// file: the kernel matches requests by file, however they named it).
fn cancel_entry(target: Target) -> Sqe {
    Sqe::cancel_fd_all(target)
        .with_flags(IOSQE_CQE_SKIP_SUCCESS)
        .user_data(UD_IGNORE)
}

impl Proactor {
    /// The descriptor `key` names, whatever its generation (callers check).
    #[inline]
    pub(crate) fn desc(&self, key: Key) -> Result<&Desc> {
        self.descs.at(key.index()).ok_or(Error::BadDescriptor)
    }

    /// How SQEs name the socket `key` names, if the key is current.
    ///
    /// # Safety
    /// `sq_lock` is held (it guards `sqe_key`).
    #[inline(always)]
    pub(crate) unsafe fn sqe_target(&self, key: Key) -> Result<Target> {
        let d = self.descs.at(key.index()).ok_or(Error::BadDescriptor)?;
        // SAFETY: `sq_lock` is held (contract).
        let k = unsafe { *d.sqe_key.get() };
        // One load: a matching generation means the socket is open (close
        // moves the generation on in the store that marks the key closed).
        if (k >> 32) as u32 != key.gen() {
            return Err(Error::BadDescriptor);
        }
        debug_assert_ne!(k & KEY_LOW, KEY_CLOSED);
        let low = (k & KEY_LOW) as u32;
        Ok(if k & KEY_FIXED != 0 {
            Target::Fixed(low)
        } else {
            Target::Fd(low as i32)
        })
    }

    /// Takes a free descriptor slot without opening it (an accept reserves
    /// one before the kernel accepts into it). A full table first finishes
    /// the closes parked for the kernel, whose slots it may need.
    pub(crate) fn reserve_desc(&self) -> Result<Key> {
        match self.descs.insert() {
            Some((key, _)) => Ok(key),
            None => self.reserve_after_parked_closes(),
        }
    }

    /// [`reserve_desc`](Self::reserve_desc) on a full table: closes parked
    /// by a failed submission hold their slots until the kernel has
    /// consumed their cancels, which the runner sees to, but a context with
    /// no work runs nothing; so their cancels are submitted here (within
    /// the close's bound) and the slots they free are taken.
    #[cold]
    #[inline(never)]
    fn reserve_after_parked_closes(&self) -> Result<Key> {
        if self.closes_pending.load(Ordering::Acquire) {
            self.retry_parked_closes();
        }
        Ok(self
            .descs
            .insert()
            .ok_or(Error::PoolFull(Pool::Descriptors))?
            .0)
    }

    /// Gives back a slot [`reserve_desc`](Self::reserve_desc) took and
    /// nothing was opened in.
    pub(crate) fn unreserve_desc(&self, key: Key) {
        // SAFETY: reserved and never opened: its key was never handed out.
        unsafe { self.descs.release(key.index()) };
    }

    /// Puts `fd` in the descriptor table and, with registered files on,
    /// installs it in the ring's file table at the same index (one
    /// `io_uring_register`). If the kernel refuses that one update, the
    /// socket simply keeps being named by fd. A full table is
    /// `PoolFull(Descriptors)`, the fd closed.
    pub(crate) fn open_desc(&self, fd: Fd, kind: DescKind) -> Result<Key> {
        let key = self.reserve_desc()?;
        self.open_reserved(key, fd, kind)
    }

    /// [`open_desc`](Self::open_desc) into a slot reserved already.
    pub(crate) fn open_reserved(&self, key: Key, fd: Fd, kind: DescKind) -> Result<Key> {
        let d = self.descs.at(key.index()).expect("a reserved slot");
        // Everything an SQE or a close needs is set up before the slot is
        // marked open: from then on a shutdown's `close_all_descs` may
        // close it (nobody else knows the key yet).
        // Only TCP takes `SEND_ZC` (Unix sockets answer EOPNOTSUPP): one
        // getsockopt per socket, and only with zero-copy sends on.
        let zc = self.zc_min != u32::MAX
            && kind == DescKind::Stream
            && matches!(
                pinion_sys::socket::get_int_opt(fd.raw(), libc::SOL_SOCKET, libc::SO_DOMAIN),
                Ok(libc::AF_INET | libc::AF_INET6)
            );
        d.zc.store(zc, Ordering::Relaxed);
        let mut low = fd.raw() as u32 as u64 & KEY_LOW;
        if self.info.registered_files {
            stat!(self, files_updates);
            let ok = matches!(
                self.ring.register_files_update(key.index(), &[fd.raw()]),
                Ok(1)
            );
            d.fixed.store(ok, Ordering::Release);
            if ok {
                low = KEY_FIXED | key.index() as u64;
            }
        }
        d.fd.store(fd.raw(), Ordering::Release);
        // SAFETY: `sqe_key` is guarded by `sq_lock`, held by `with_sq`.
        self.with_sq(|_| unsafe { *d.sqe_key.get() = sqe_key(key.gen(), low) });
        let opened = d.with(|st| {
            // Shut down since the slot was reserved: `close_all_descs` has
            // passed it, so it is not opened at all.
            if self.descs.is_closed() {
                return false;
            }
            st.open = true;
            st.holds = 0;
            st.listener = ListenerState::new();
            true
        });
        if !opened {
            // SAFETY: `sqe_key` is guarded by `sq_lock`, held by `with_sq`.
            self.with_sq(|_| unsafe {
                *d.sqe_key.get() = sqe_key(key.gen().wrapping_add(1), KEY_CLOSED)
            });
            self.unregister_file(key.index());
            d.fd.store(-1, Ordering::Release);
            self.unreserve_desc(key);
            // `fd` is still ours: closed as it drops.
            return Err(Error::PoolFull(Pool::Descriptors));
        }
        fd.into_raw();
        Ok(key)
    }

    /// Runs `f` on the fd of a live key, under the descriptor's lock:
    /// `close_desc` retires the key under the same lock, so the fd cannot
    /// be closed (and its number reused) while `f` runs.
    pub(crate) fn with_desc_fd<R>(&self, key: Key, f: impl FnOnce(i32) -> Result<R>) -> Result<R> {
        let d = self.desc(key)?;
        d.with(|st| {
            if !st.open || self.descs.gen(key.index()) != Some(key.gen()) {
                return Err(Error::BadDescriptor);
            }
            f(d.fd.load(Ordering::Relaxed))
        })
    }

    /// Empties registered-file slot `idx` if it holds a file. Called
    /// once no SQE can name the index any more and before the slot is
    /// freed, so the index is never reused while the old file sits in it.
    fn unregister_file(&self, idx: u32) {
        let Some(d) = self.descs.at(idx) else { return };
        if d.fixed.swap(false, Ordering::AcqRel) {
            stat!(self, files_updates);
            let _ = self.ring.register_files_update(idx, &[-1]);
        }
    }

    /// How SQEs name the socket in slot `idx` (its registered file, or
    /// its fd while the slot holds one).
    pub(crate) fn slot_target(&self, idx: u32) -> Target {
        let d = self.descs.at(idx).expect("a table index");
        if d.fixed.load(Ordering::Acquire) {
            Target::Fixed(idx)
        } else {
            Target::Fd(d.fd.load(Ordering::Acquire))
        }
    }

    /// Cancels every pending operation of a socket: parked accepts at
    /// once, kernel requests by `IORING_OP_ASYNC_CANCEL` (their CQEs then
    /// complete them).
    pub(crate) fn cancel_desc(&self, sched: &Sched, key: Key) -> Result<()> {
        let d = self.desc(key)?;
        let mut aborted = OpQueue::new();
        d.with(|st| {
            if !st.open || self.descs.gen(key.index()) != Some(key.gen()) {
                return Err(Error::BadDescriptor);
            }
            take_waiters(&mut st.listener, &mut aborted);
            // Under the descriptor's lock, which `close_desc` needs, and
            // checked under `sq_lock`: the cancel names this socket and no
            // successor.
            // SAFETY: a cancel carries no pointer.
            unsafe { self.push_on(key, false, || {}, cancel_entry) }
        })?;
        // SAFETY: parked accepts had their work counted when parked.
        unsafe { sched.post_deferred_completions(&mut aborted) };
        Ok(())
    }

    /// Cancels everything pending on the socket and closes it: the key is
    /// stale from here on, and the socket is torn down once the kernel has
    /// taken every SQE queued for it (see the module docs). A listener's
    /// accepted-but-unclaimed connections are closed too.
    pub(crate) fn close_desc(&self, sched: &Sched, key: Key) -> Result<()> {
        let mut aborted = OpQueue::new();
        let closed = self.close_desc_into(key, &mut aborted);
        // SAFETY: aborted accepts had their work counted when parked.
        unsafe { sched.post_deferred_completions(&mut aborted) };
        closed
    }

    /// [`close_desc`](Self::close_desc), with the parked accepts it aborts
    /// handed to `aborted`.
    fn close_desc_into(&self, key: Key, aborted: &mut OpQueue) -> Result<()> {
        let d = self.desc(key)?;
        let fence = d.with(|st| {
            if !st.open || self.descs.gen(key.index()) != Some(key.gen()) {
                return Err(Error::BadDescriptor);
            }
            st.open = false;
            take_waiters(&mut st.listener, aborted);
            st.holds = 1 + st.listener.armed as u8;
            let target = self.slot_target(key.index());
            // The generation moves on and the cancel is queued in one
            // stretch under `sq_lock`: every SQE a copy of this key pushed
            // (under the same lock, checking the generation) is ahead of
            // the cancel, and none can follow it.
            Ok(self.with_sq(|sq| {
                self.descs.retire(key);
                // SAFETY: `sqe_key` is guarded by `sq_lock`, held.
                unsafe { *d.sqe_key.get() = sqe_key(key.gen().wrapping_add(1), KEY_CLOSED) };
                // SAFETY: a cancel carries no pointer.
                unsafe { self.push_locked(sq, false, |q| q.push(&cancel_entry(target))) };
                sq.sq.tail_pos()
            }))
        })?;
        // Closed, the listener gets no new pending connections; hand back
        // the ones it holds (one at a time: each close takes locks). No
        // SQE ever named them, so they go at once.
        while let Some(i) = d.with(|st| st.listener.pop_pending(&self.descs)) {
            self.close_unused(i);
        }
        if self.submit_through(fence) {
            self.teardown(key.index());
            // Earlier closes parked by a failed submission have their
            // cancels ahead of ours: consumed too, so they finish now
            // rather than at the runner's next turn (which a context with
            // no work never takes).
            if self.closes_pending.load(Ordering::Acquire) {
                self.finish_closes();
            }
        } else {
            self.defer_teardown(key.index(), fence);
        }
        Ok(())
    }

    /// Closes a descriptor no operation ever used (a connection a listener
    /// accepted and nobody claimed) and frees its slot.
    pub(crate) fn close_unused(&self, idx: u32) {
        let Some(d) = self.descs.at(idx) else { return };
        let Some(key) = self.descs.key_of(idx) else {
            return;
        };
        d.with(|st| st.open = false);
        self.with_sq(|_| {
            self.descs.retire(key);
            // SAFETY: `sqe_key` is guarded by `sq_lock`, held.
            unsafe { *d.sqe_key.get() = sqe_key(key.gen().wrapping_add(1), KEY_CLOSED) };
        });
        self.unregister_file(idx);
        let fd = d.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: the slot owned `fd`; swapped out once.
            drop(unsafe { Fd::from_raw(fd) });
        }
        // SAFETY: retired above; no SQE or handle refers to it.
        unsafe { self.descs.release(idx) };
    }

    /// The end of a close, once the kernel has consumed its cancel: no SQE
    /// can name the socket any more, so its registered file goes, its fd
    /// is closed, and its slot is freed unless a multishot accept still
    /// holds it.
    fn teardown(&self, idx: u32) {
        self.unregister_file(idx);
        let d = self.descs.at(idx).expect("a table index");
        let fd = d.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: the slot owned `fd`; swapped out once.
            drop(unsafe { Fd::from_raw(fd) });
        }
        self.release_hold(idx);
    }

    /// One of a closed slot's holds ended; the last frees it.
    pub(crate) fn release_hold(&self, idx: u32) {
        let d = self.descs.at(idx).expect("a table index");
        let free = d.with(|st| {
            debug_assert!(st.holds > 0);
            st.holds -= 1;
            st.holds == 0
        });
        if free {
            // SAFETY: retired at close; no SQE names it (the teardown ran)
            // and no multishot accept holds it (its final CQE came).
            unsafe { self.descs.release(idx) };
        }
    }

    /// Parks a close whose cancel the kernel has not consumed yet (an
    /// SQPOLL thread that has not got to it, or a failed submission);
    /// [`finish_closes`](Self::finish_closes) tears it down once it has.
    #[cold]
    fn defer_teardown(&self, idx: u32, fence: u64) {
        let descs = &self.descs;
        {
            let mut c = self.closing.lock();
            let (head, tail) = &mut *c;
            let d = descs.at(idx).expect("a table index");
            d.closing_fence.set(fence);
            d.closing_next.set(NIL);
            if *tail == NIL {
                *head = idx;
            } else {
                descs
                    .at(*tail)
                    .expect("a table index")
                    .closing_next
                    .set(idx);
            }
            *tail = idx;
        }
        self.closes_pending.store(true, Ordering::Release);
    }

    /// Submits the SQ through the last parked close's cancel (bounded as
    /// a close's own submission is) and tears down what the kernel has
    /// consumed.
    #[cold]
    pub(crate) fn retry_parked_closes(&self) {
        let last = {
            let c = self.closing.lock();
            let tail = c.1;
            if tail == NIL {
                return;
            }
            self.descs
                .at(tail)
                .expect("a table index")
                .closing_fence
                .get()
        };
        self.submit_through(last);
        self.finish_closes();
    }

    /// Tears down the parked closes whose cancels the kernel has consumed
    /// (in close order; fences grow along the list). `true` if one is
    /// still parked.
    #[cold]
    #[inline(never)]
    pub(crate) fn finish_closes(&self) -> bool {
        let head_pos = self.with_sq(|st| st.sq.head_pos());
        let descs = &self.descs;
        loop {
            let next = {
                let mut c = self.closing.lock();
                let (head, tail) = &mut *c;
                let first = (*head != NIL).then(|| descs.at(*head).expect("a table index"));
                match first {
                    None => {
                        self.closes_pending.store(false, Ordering::Release);
                        return false;
                    }
                    Some(d) if d.closing_fence.get() > head_pos => return true,
                    Some(d) => {
                        let idx = *head;
                        *head = d.closing_next.get();
                        if *head == NIL {
                            *tail = NIL;
                        }
                        Some(idx)
                    }
                }
            };
            if let Some(idx) = next {
                self.teardown(idx);
            }
        }
    }

    /// Closes every socket still open as [`close_desc`](Self::close_desc)
    /// does, and takes no new one (shutdown, before the kernel is
    /// drained): from here on no SQE can name any of them.
    pub(crate) fn close_all_descs(&self, aborted: &mut OpQueue) {
        self.descs.close();
        for i in 0..self.descs.used() {
            if let Some(key) = self.descs.key_of(i) {
                // A slot that is not open (free, reserved, closing) answers
                // BadDescriptor: nothing to do.
                let _ = self.close_desc_into(key, aborted);
            }
        }
    }

    /// Closes every socket's fd still open (the proactor's drop, after
    /// shutdown drained the kernel).
    pub(crate) fn close_all_fds(&mut self) {
        for d in self.descs.taken_mut() {
            let fd = d.fd.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                // SAFETY: the slot owned `fd`; swapped out once.
                drop(unsafe { Fd::from_raw(fd) });
            }
        }
    }

    /// Hands every parked accept over for destruction (shutdown).
    pub(crate) fn take_all_waiters(&self, ops: &mut OpQueue) {
        for i in 0..self.descs.used() {
            if let Some(d) = self.descs.at(i) {
                d.with(|st| take_waiters(&mut st.listener, ops));
            }
        }
    }
}
