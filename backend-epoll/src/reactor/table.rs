//! Descriptor states in a fixed [`Slab`] (Asio's `descriptor_state` in its
//! `object_pool`): registration, the speculative `start_op`, cancel, close.
//!
//! Every socket lives in one [`DescriptorSlot`] named by a [`Key`] (index,
//! generation). Closing retires the key under the slot's lock, the same
//! lock under which `start_op` checks it, so an operation is either queued
//! on (or performed against) the socket its key named, or refused with
//! `BadDescriptor`; and a stale epoll event, whose data is the key, is
//! ignored. A slot whose descriptor operation is still queued in the
//! scheduler is not reused until that operation has run: the release waits
//! for its complete function.

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use pinion_core::backend::{Fd, Here, Key, Sched};
use pinion_core::slab::Slab;
use pinion_core::{Error, OpQueue, Operation, Pool, Result};
use pinion_sync::{FutexMutex, RawMutex};

use super::perform::{descriptor_complete, FirstAttempt, Status};
use super::{Reactor, CONNECT_OP, EXCEPT_OP, MAX_OPS, READ_OP, WRITE_OP};
use crate::stats::stat;

/// Registration of every socket, once: edge-triggered, no `EPOLLOUT`.
/// Asio's mask plus `EPOLLRDHUP`: a short read marks the read side
/// exhausted, which is only safe while the peer has not shut down its side
/// (data and FIN that arrive in one edge would otherwise leave the next
/// read waiting for an edge that never comes); `EPOLLRDHUP` tells us, as
/// `EPOLLPRI` tells of urgent data (a read stops at its mark).
pub(crate) const REGISTER_EVENTS: u32 = (libc::EPOLLIN
    | libc::EPOLLERR
    | libc::EPOLLHUP
    | libc::EPOLLPRI
    | libc::EPOLLRDHUP
    | libc::EPOLLET) as u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Free,
    Socket,
}

/// A slot's state, guarded by the slot's lock.
pub(crate) struct State {
    pub(crate) kind: Kind,
    pub(crate) fd: i32,
    pub(crate) registered_events: u32,
    pub(crate) ready_events: u32,
    /// The descriptor op is on a queue (local, batch or scheduler's).
    pub(crate) queued: bool,
    /// Closed while queued: its complete function releases the slot.
    pub(crate) free_pending: bool,
    /// The peer shut down its side, the socket failed, or urgent data
    /// arrived (sticky): a short read no longer means "wait for the next
    /// edge".
    pub(crate) short_read_unsure: bool,
    pub(crate) try_speculative: [bool; MAX_OPS],
    /// Socket ops per type.
    pub(crate) queues: [OpQueue; MAX_OPS],
}

impl State {
    /// An operation of `op_type` moved fewer bytes than asked: the next
    /// one waits for readiness instead of trying at once, unless the read
    /// side is closed or had urgent data (the next read would return at
    /// once, and no edge would come to wake it).
    #[inline]
    pub(crate) fn exhausted(&mut self, op_type: usize) {
        if op_type != READ_OP || !self.short_read_unsure {
            self.try_speculative[op_type] = false;
        }
    }

    const EMPTY: State = State {
        kind: Kind::Free,
        fd: -1,
        registered_events: 0,
        ready_events: 0,
        queued: false,
        free_pending: false,
        short_read_unsure: false,
        try_speculative: [true; MAX_OPS],
        queues: [const { OpQueue::new() }; MAX_OPS],
    };
}

/// One entry of the reactor's descriptor table (Asio's
/// `descriptor_state`). Opaque: storage for
/// [`Parts::from_static`](crate::Parts::from_static).
#[repr(C, align(64))]
pub struct DescriptorSlot {
    /// The descriptor operation. First, so a header pointer is a slot
    /// pointer.
    pub(crate) op: Operation,
    pub(crate) lock: FutexMutex,
    state: UnsafeCell<State>,
}

// SAFETY: `state` is guarded by the slot's lock; the header is only linked
// by whoever holds the `queued` flag (under that lock).
unsafe impl Sync for DescriptorSlot {}
// SAFETY: as above; the fd it may hold is owned.
unsafe impl Send for DescriptorSlot {}

impl DescriptorSlot {
    /// An unused slot, for `static` initialisers.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: DescriptorSlot = DescriptorSlot {
        op: Operation::new(descriptor_complete),
        lock: FutexMutex::new(),
        state: UnsafeCell::new(State::EMPTY),
    };

    #[inline]
    pub(crate) fn header(&self) -> NonNull<Operation> {
        NonNull::from(&self.op)
    }

    /// Locks the slot.
    #[inline]
    pub(crate) fn locked(&self) -> Locked<'_> {
        self.lock.lock();
        Locked { slot: self }
    }
}

/// The descriptor table.
pub(crate) type Table = Slab<DescriptorSlot, FutexMutex>;

/// A slot, locked; unlocks on drop.
pub(crate) struct Locked<'a> {
    pub(crate) slot: &'a DescriptorSlot,
}

impl Locked<'_> {
    #[inline]
    pub(crate) fn state(&mut self) -> &mut State {
        // SAFETY: the slot's lock is held while `self` lives, and the
        // returned borrow is tied to `&mut self`.
        unsafe { &mut *self.slot.state.get() }
    }
}

impl Drop for Locked<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: locked in `DescriptorSlot::locked`.
        unsafe { self.slot.lock.unlock() }
    }
}

/// Moves every op of `q` to `out` with `OperationAborted`; returns how many.
pub(crate) fn abort_all(q: &mut OpQueue, out: &mut OpQueue) -> usize {
    let mut n = 0;
    while let Some(op) = q.pop() {
        // SAFETY: ops on a reactor queue are live; it now leaves for `out`.
        unsafe {
            op.as_ref().set_result(Err(Error::OperationAborted));
            out.push(op);
        }
        n += 1;
    }
    n
}

impl Reactor {
    /// The slot `key` names, locked, if the key is current.
    #[inline]
    pub(crate) fn lock_socket(&self, key: Key) -> Result<Locked<'_>> {
        let slot = self.table.slot(key.index()).ok_or(Error::BadDescriptor)?;
        let mut l = slot.value().locked();
        if !slot.is_current(key) {
            return Err(Error::BadDescriptor);
        }
        debug_assert_eq!(l.state().kind, Kind::Socket);
        Ok(l)
    }

    /// Takes a slot for `fd` and registers it once, edge-triggered, with
    /// [`REGISTER_EVENTS`] (Asio's `register_descriptor`). On error `fd`
    /// is closed; a full table is `PoolFull(Descriptors)`.
    pub(crate) fn register(&self, fd: Fd) -> Result<Key> {
        let (key, _) = self
            .table
            .insert()
            .ok_or(Error::PoolFull(Pool::Descriptors))?;
        self.register_in(key, fd)
    }

    /// [`register`](Self::register) into a slot taken already (an accept
    /// reserves its slot before it accepts).
    pub(crate) fn register_in(&self, key: Key, fd: Fd) -> Result<Key> {
        // Not `expect`: its message goes through `Formatter::pad`, a
        // kilobyte of text in a small no_std binary.
        let Some(slot) = self.table.at(key.index()) else {
            panic!("a taken slot")
        };
        let mut l = slot.locked();
        let st = l.state();
        debug_assert!(st.kind == Kind::Free && !st.queued);
        if self.table.is_closed() {
            // Shut down since the slot was taken: `close_all` has passed
            // (or will find it free), so it is not opened at all.
            drop(l);
            self.table.retire(key);
            // SAFETY: retired above; no handle was handed out.
            unsafe { self.table.release(key.index()) };
            return Err(Error::PoolFull(Pool::Descriptors));
        }
        st.kind = Kind::Socket;
        st.fd = fd.raw();
        st.registered_events = REGISTER_EVENTS;
        st.ready_events = 0;
        st.short_read_unsure = false;
        st.try_speculative = [true; MAX_OPS];
        let added = match pinion_sys::fault::fail(pinion_sys::fault::Site::EpollCtlAdd) {
            Some(e) => Err(e.into()),
            None => self.ctl(
                libc::EPOLL_CTL_ADD,
                fd.raw(),
                REGISTER_EVENTS,
                key.to_bits(),
            ),
        };
        match added {
            Ok(()) => stat!(self, ctl_add),
            // Not pollable (a regular file): operations on it complete
            // with OperationNotSupported, as in Asio.
            Err(Error::OperationNotSupported) | Err(Error::Os(pinion_sys::Errno::PERM)) => {
                st.registered_events = 0
            }
            Err(e) => {
                st.kind = Kind::Free;
                st.fd = -1;
                drop(l);
                self.table.retire(key);
                // SAFETY: retired above; no handle was handed out.
                unsafe { self.table.release(key.index()) };
                return Err(e);
            }
        }
        // The slot owns the descriptor from here on.
        fd.into_raw();
        Ok(key)
    }

    /// Asio's `epoll_reactor::start_op`, with the `done_and_exhausted`
    /// patch, for an op of queue `OP_TYPE`. `perform` is the operation's
    /// own attempt, called inline (the caller knows its type) under the
    /// descriptor's lock. Returns `BadDescriptor` for a stale key, with
    /// `op` untouched.
    ///
    /// # Safety
    /// `here` is `sched.here()` of the calling thread; `op` is live, on no
    /// queue, and completes with `sched` as owner.
    #[inline(always)]
    pub(crate) unsafe fn start_op<const OP_TYPE: usize>(
        &self, sched: &Sched<Self>, here: Option<Here<'_>>, key: Key, op: NonNull<Operation>,
        allow_speculative: bool, first: impl FirstAttempt,
    ) -> Result<()> {
        let op_type = OP_TYPE;
        let mut l = self.lock_socket(key)?;
        let st = l.state();
        if st.queues[op_type].is_empty() {
            let outcome = if allow_speculative
                && (op_type != READ_OP || st.queues[EXCEPT_OP].is_empty())
            {
                if st.try_speculative[op_type] {
                    stat!(self, op_attempts);
                    let status = first.attempt(st.fd);
                    if status != Status::NotDone {
                        if status == Status::DoneAndExhausted && st.registered_events != 0 {
                            st.exhausted(op_type);
                        }
                        drop(l);
                        stat!(self, speculative_hits);
                        // SAFETY: completed, on no queue, owned by `sched`,
                        // whose thread `here` is (the caller's contract).
                        // Runs right after the calling handler: the
                        // connection is served until it would block.
                        unsafe { sched.post_continuation_in(here, op) };
                        return Ok(());
                    }
                    stat!(self, speculative_misses);
                }
                if st.registered_events == 0
                    || (op_type == WRITE_OP && st.registered_events & libc::EPOLLOUT as u32 == 0)
                {
                    self.register_interest(st, key, op_type)
                } else {
                    Ok(())
                }
            } else {
                self.rearm(st, key, op_type)
            };
            if let Err(e) = outcome {
                drop(l);
                // SAFETY: `op` is live and on no queue (contract).
                unsafe {
                    op.as_ref().set_result(Err(e));
                    sched.post_immediate_completion_in(here, op);
                }
                return Ok(());
            }
        }
        // SAFETY: `op` is live, on no queue, and stays live until it leaves
        // this queue (perform_io, cancel, close or shutdown); its work is
        // counted before the lock that lets anyone complete it drops.
        unsafe {
            st.queues[op_type].push(op);
            sched.io_work_started();
        }
        Ok(())
    }

    /// Performs `first` now, outside any operation, if `start_op` would
    /// have tried an operation of type `OP_TYPE` speculatively: none is
    /// queued, the last did not exhaust the descriptor (and for reads, no
    /// out-of-band read waits). A would-block attempt clears the
    /// speculation flag, as the edge it now needs sets it again; so the
    /// operation started next does not try the call a second time.
    /// Returns whether `first` ran to a result (a stale key: no).
    #[inline(always)]
    pub(crate) fn perform_now<const OP_TYPE: usize>(
        &self, key: Key, first: impl FirstAttempt,
    ) -> bool {
        let Ok(mut l) = self.lock_socket(key) else {
            return false;
        };
        let st = l.state();
        if !st.queues[OP_TYPE].is_empty()
            || !st.try_speculative[OP_TYPE]
            || (OP_TYPE == READ_OP && !st.queues[EXCEPT_OP].is_empty())
            || st.registered_events == 0
        {
            return false;
        }
        stat!(self, op_attempts);
        match first.attempt(st.fd) {
            Status::NotDone => {
                stat!(self, speculative_misses);
                st.exhausted(OP_TYPE);
                false
            }
            status => {
                if status == Status::DoneAndExhausted {
                    st.exhausted(OP_TYPE);
                }
                stat!(self, speculative_hits);
                true
            }
        }
    }

    /// `start_op`'s speculative branch when the op must wait: not
    /// registered at all (`OperationNotSupported`), or a write while
    /// `EPOLLOUT` is not registered yet (added now, once, for good).
    #[cold]
    fn register_interest(&self, st: &mut State, key: Key, op_type: usize) -> Result<()> {
        if st.registered_events == 0 {
            return Err(Error::OperationNotSupported);
        }
        if op_type == WRITE_OP && st.registered_events & libc::EPOLLOUT as u32 == 0 {
            let events = st.registered_events | libc::EPOLLOUT as u32;
            self.ctl(libc::EPOLL_CTL_MOD, st.fd, events, key.to_bits())?;
            stat!(self, ctl_mod);
            st.registered_events = events;
        }
        Ok(())
    }

    /// `start_op`'s non-speculative branch (connect): re-arm, which
    /// reports readiness that is already there.
    #[cold]
    fn rearm(&self, st: &mut State, key: Key, op_type: usize) -> Result<()> {
        if st.registered_events == 0 {
            return Err(Error::OperationNotSupported);
        }
        if op_type == CONNECT_OP {
            st.registered_events |= libc::EPOLLOUT as u32;
        }
        let _ = self.ctl(
            libc::EPOLL_CTL_MOD,
            st.fd,
            st.registered_events,
            key.to_bits(),
        );
        stat!(self, ctl_mod);
        Ok(())
    }

    /// Runs `f` on the socket's fd, under its lock (so a concurrent close
    /// cannot recycle the number meanwhile).
    pub(crate) fn with_fd<T>(&self, key: Key, f: impl FnOnce(i32) -> Result<T>) -> Result<T> {
        let mut l = self.lock_socket(key)?;
        f(l.state().fd)
    }

    /// Completes every pending op of the socket with `OperationAborted`
    /// (Asio's `cancel_ops`).
    pub(crate) fn cancel(&self, sched: &Sched<Self>, key: Key) -> Result<()> {
        let mut aborted = OpQueue::new();
        {
            let mut l = self.lock_socket(key)?;
            for q in l.state().queues.iter_mut() {
                abort_all(q, &mut aborted);
            }
        }
        // SAFETY: aborted ops were queued with their work counted.
        unsafe { sched.post_deferred_completions(&mut aborted) };
        Ok(())
    }

    /// Cancels the one operation `op` of socket `key` if it still waits
    /// in one of the socket's queues; otherwise (performed and queued for
    /// completion, or never queued) it completes on its own.
    pub(crate) fn cancel_one(&self, sched: &Sched<Self>, key: Key, op: NonNull<Operation>) {
        let found = {
            let Ok(mut l) = self.lock_socket(key) else {
                return;
            };
            l.state().queues.iter_mut().any(|q| q.remove(op))
        };
        if found {
            // SAFETY: it was on a reactor queue: live, its work counted;
            // now on no queue.
            unsafe {
                op.as_ref().set_result(Err(Error::OperationAborted));
                sched.post_deferred_completion(op);
            }
        }
    }

    /// Cancels, closes the fd and frees the slot (Asio's
    /// `deregister_descriptor(closing = true)`: closing the fd removes it
    /// from the epoll set, so no `EPOLL_CTL_DEL`). The release waits for
    /// the descriptor op if it is queued.
    pub(crate) fn close(&self, sched: &Sched<Self>, key: Key) -> Result<()> {
        let mut aborted = OpQueue::new();
        let (fd, release_now) = {
            let mut l = self.lock_socket(key)?;
            let st = l.state();
            for q in st.queues.iter_mut() {
                abort_all(q, &mut aborted);
            }
            let fd = core::mem::replace(&mut st.fd, -1);
            st.kind = Kind::Free;
            st.registered_events = 0;
            // Under the slot's lock, where every start checks the key.
            self.table.retire(key);
            st.free_pending = st.queued;
            (fd, !st.queued)
        };
        if release_now {
            // SAFETY: retired above; the descriptor op is on no queue, so
            // nothing refers to the slot any more.
            unsafe { self.table.release(key.index()) };
        }
        // SAFETY: the slot owned `fd`; it was taken out above, once.
        drop(unsafe { Fd::from_raw(fd) });
        // SAFETY: aborted ops were queued with their work counted.
        unsafe { sched.post_deferred_completions(&mut aborted) };
        Ok(())
    }

    /// Sockets open in the table (O(slots ever used); diagnostics). A
    /// closed socket whose descriptor op is still queued counts until that
    /// op has run.
    pub(crate) fn sockets_in_use(&self) -> usize {
        (0..self.table.used())
            .filter_map(|i| self.table.at(i))
            .filter(|slot| {
                let mut l = slot.locked();
                let st = l.state();
                st.kind == Kind::Socket || st.free_pending
            })
            .count()
    }

    /// Closes every socket still open and hands its pending ops to `ops`
    /// (shutdown: no thread runs the context). Each is retired under its
    /// lock, as `close` does, so a start racing with this on another
    /// thread is either handed over here or refused.
    pub(crate) fn close_all(&self, ops: &mut OpQueue) {
        for index in 0..self.table.used() {
            let Some(slot) = self.table.at(index) else {
                break;
            };
            let mut l = slot.locked();
            let st = l.state();
            if st.kind == Kind::Free {
                continue;
            }
            for q in st.queues.iter_mut() {
                ops.push_queue(q);
            }
            // SAFETY: the slot owns its fd; taken out once.
            drop(unsafe { Fd::from_raw(core::mem::replace(&mut st.fd, -1)) });
            st.kind = Kind::Free;
            st.free_pending = st.queued;
            if let Some(k) = self.table.key_of(index) {
                self.table.retire(k);
            }
        }
    }

    /// An event for `key` arrived: `Some(locked slot)` when the key is
    /// still current (the socket was not closed since the event was
    /// queued).
    #[inline]
    pub(crate) fn event_slot(&self, key: Key) -> Option<Locked<'_>> {
        let slot = self.table.slot(key.index())?;
        let l = slot.value().locked();
        slot.is_current(key).then_some(l)
    }

    /// Releases the slot a queued descriptor op's close left for it.
    pub(crate) fn release_slot(&self, slot: &DescriptorSlot) {
        // SAFETY: called by the descriptor op's complete function after a
        // close retired the slot while the op was queued: now nothing
        // refers to it.
        unsafe { self.table.release(self.table.index_of(slot)) };
    }
}

/// The descriptor-state rules that need no kernel, so miri runs them
/// (`cargo +nightly miri test -p pinion-epoll`).
#[cfg(test)]
mod tests {
    use super::*;
    use pinion_core::backend::Invoke;
    use pinion_core::{StaticArray, Storage};

    unsafe fn never(_: NonNull<Operation>, _: *const (), _: Invoke<'_>) {
        unreachable!("not completed in these tests")
    }

    #[test]
    fn a_short_read_waits_for_an_edge_only_while_the_read_side_is_open_without_urgent_data() {
        let mut st = State::EMPTY;
        st.exhausted(READ_OP);
        assert!(!st.try_speculative[READ_OP]);
        st.try_speculative[READ_OP] = true;
        st.short_read_unsure = true;
        st.exhausted(READ_OP);
        assert!(
            st.try_speculative[READ_OP],
            "after EPOLLRDHUP or EPOLLPRI no edge would wake the next read"
        );
        st.exhausted(WRITE_OP);
        assert!(!st.try_speculative[WRITE_OP]);
        assert!(st.try_speculative[EXCEPT_OP]);
    }

    #[test]
    fn abort_all_aborts_every_queued_op_in_order() {
        let ops = [const { Operation::new(never) }; 3];
        let mut q = OpQueue::new();
        for op in &ops {
            op.set_result(Ok(7));
            // SAFETY: live for the test, on no other queue.
            unsafe { q.push(NonNull::from(op)) };
        }
        let mut out = OpQueue::new();
        assert_eq!(abort_all(&mut q, &mut out), 3);
        assert!(q.is_empty());
        for op in &ops {
            assert_eq!(out.pop(), Some(NonNull::from(op)));
            assert_eq!(op.result(), Err(Error::OperationAborted));
        }
        assert!(out.pop().is_none());
    }

    #[test]
    fn a_retired_slot_refuses_its_old_key_and_comes_back_with_a_new_one() {
        static SLOTS: StaticArray<pinion_core::slab::Entry<DescriptorSlot>, 2> =
            StaticArray::new([DescriptorSlot::ENTRY; 2]);
        let table = Table::new(Storage::from_static(SLOTS.take().expect("taken once")));
        let (k1, slot) = table.insert().expect("a free slot");
        {
            let mut l = slot.locked();
            let st = l.state();
            assert_eq!((st.kind, st.fd, st.queued), (Kind::Free, -1, false));
            st.kind = Kind::Socket;
        }
        assert!(table.slot(k1.index()).unwrap().is_current(k1));
        assert!(table.retire(k1));
        assert!(!table.slot(k1.index()).unwrap().is_current(k1));
        // SAFETY: retired, and nothing refers to the slot.
        unsafe { table.release(k1.index()) };
        let (k2, _) = table.insert().expect("the slot again");
        assert_eq!(k2.index(), k1.index());
        assert_ne!(k2, k1, "a new generation");
        assert!(!table.slot(k1.index()).unwrap().is_current(k1));
        let (_, _) = table.insert().expect("the second slot");
        assert!(table.insert().is_none(), "an exact cap");
    }
}
