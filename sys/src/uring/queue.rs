//! The submission and completion rings as pinion reads and writes them:
//! in place, through pointers into the ring's mappings.
//!
//! [`Sq`] writes each SQE into its slot and publishes the tail; the hot
//! operations write only the fields they use ([`Sq::push_lean`]: the rest
//! are kept zero in every slot), and the tail is kept here instead of
//! being read back from the shared page. [`Cq`] reads the CQEs where the
//! kernel put them.
//!
//! Nothing here is synchronised: an [`Sq`] is used by one thread at a time
//! (pinion's proactor: under its SQ lock), a [`Cq`] likewise (the thread
//! running the proactor's task).

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use super::abi::{Cqe, Sqe, IORING_SQ_CQ_OVERFLOW};

impl Sqe {
    /// `true` if the fields that no hot operation (`RECV`, `SEND`) uses
    /// are zero: `off`, `addr3` and `pad`. Such an SQE may be pushed with
    /// [`Sq::push_lean`], which does not write them.
    #[inline(always)]
    pub fn is_lean(&self) -> bool {
        self.off | self.addr3 | self.pad == 0
    }
}

/// The submission ring: where the next SQE goes and when it is full.
///
/// Made by [`Ring::queues`](super::Ring::queues); points into that ring's
/// mappings.
pub struct Sq {
    khead: *const AtomicU32,
    ktail: *const AtomicU32,
    kflags: *const AtomicU32,
    sqes: *mut Sqe,
    mask: u32,
    entries: u32,
    /// Our tail, the only writer's copy (published after every push),
    /// counting every push since the ring was mapped: the ring's tail is
    /// its low 32 bits.
    tail: u64,
    /// `tail` when the ring was mapped.
    start: u64,
    /// The kernel's head as last read plus `entries`: the ring is full
    /// when the tail's low 32 bits reach it (the tail is never more than
    /// `entries` ahead of the head), one compare per push. Re-read only
    /// when the ring looks full.
    limit: u32,
    /// Positions (counted like `tail`) from `dirty.0` to `dirty.1`
    /// inclusive may hold a full push whose [`Sqe::is_lean`] fields are
    /// not zero; `dirty.0 > dirty.1` when none does. See [`push_lean`].
    ///
    /// [`push_lean`]: Self::push_lean
    dirty: (u64, u64),
}

/// `Sq::dirty` when no slot is dirty.
const CLEAN: (u64, u64) = (1, 0);

// SAFETY: an `Sq` is raw pointers into a ring's mappings, which stay put
// (Ring::queues' contract); it is used by one thread at a time (`&mut`).
unsafe impl Send for Sq {}

impl Sq {
    /// The view of an SQ ring whose head, tail and flags words are at
    /// `khead`, `ktail`, `kflags`, with `mask + 1` entries at `sqes`, all
    /// zero (every slot starts clean for [`push_lean`](Self::push_lean)).
    ///
    /// # Safety
    /// The pointers stay valid (mapped, aligned) while the `Sq` is used;
    /// the `Sq` is the ring's only submitter; `mask + 1` is a power of two.
    pub(crate) unsafe fn from_raw(
        khead: *const AtomicU32, ktail: *const AtomicU32, kflags: *const AtomicU32, sqes: *mut Sqe,
        mask: u32,
    ) -> Sq {
        let entries = mask + 1;
        // SAFETY: per contract.
        let (tail, head) = unsafe {
            (
                (*ktail).load(Ordering::Acquire) as u64,
                (*khead).load(Ordering::Acquire),
            )
        };
        Sq {
            khead,
            ktail,
            kflags,
            sqes,
            mask,
            entries,
            tail,
            start: tail,
            limit: head.wrapping_add(entries),
            dirty: CLEAN,
        }
    }

    /// Entries in the ring.
    #[inline]
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// `true` if the SQ has no room by the last head read.
    #[inline(always)]
    pub fn looks_full(&self) -> bool {
        self.tail as u32 == self.limit
    }

    /// Makes the SQ look full until the next [`sync_head`](Self::sync_head),
    /// so that the next push takes its slow path.
    #[inline]
    pub fn look_full(&mut self) {
        self.limit = self.tail as u32;
    }

    /// Re-reads the kernel's head; `true` if there is room now.
    #[inline]
    pub fn sync_head(&mut self) -> bool {
        // SAFETY: `khead` points into the live SQ ring (from_raw).
        let head = unsafe { (*self.khead).load(Ordering::Acquire) };
        if self.dirty.0 <= self.dirty.1 {
            self.clean_consumed(head);
        }
        self.limit = head.wrapping_add(self.entries);
        !self.looks_full()
    }

    /// Zeroes the lean fields of the dirty slots the kernel has consumed
    /// (positions before `head`), before `limit` lets the tail reach them
    /// again.
    #[cold]
    #[inline(never)]
    fn clean_consumed(&mut self, head: u32) {
        let head = self.pos_of(head);
        let (from, to) = self.dirty;
        for pos in from..(to + 1).min(head) {
            // The kernel has consumed position `pos` (before its head) and
            // the tail has not come round to the slot again (it is less
            // than `entries` past `pos`): nobody reads or writes it now.
            // SAFETY: a masked index into the live SQE array, unused (above).
            unsafe {
                let e = self.sqes.add((pos as u32 & self.mask) as usize);
                (*e).off = 0;
                (*e).addr3 = 0;
                (*e).pad = 0;
            }
        }
        self.dirty = if to < head {
            CLEAN
        } else {
            (head.max(from), to)
        };
    }

    /// A ring index (the kernel's head) as a position counted like our
    /// tail: the tail is never more than `entries` ahead of the head.
    #[inline(always)]
    fn pos_of(&self, head: u32) -> u64 {
        self.tail - (self.tail as u32).wrapping_sub(head) as u64
    }

    /// Writes all of `sqe` at the tail and publishes it.
    ///
    /// # Safety
    /// There is room (`!looks_full()`); every pointer the SQE carries
    /// (buffer, address, `msghdr`, and whatever its `user_data` names for
    /// the caller) stays valid, unmoved and unfreed until the kernel has
    /// posted the SQE's final CQE and the caller has handled it.
    #[inline(always)]
    pub unsafe fn push(&mut self, sqe: &Sqe) {
        let tail = self.tail;
        if !sqe.is_lean() {
            // The slot must be cleaned before a lean push comes round.
            if self.dirty.0 > self.dirty.1 {
                self.dirty.0 = tail;
            }
            self.dirty.1 = tail;
        }
        // SAFETY: `tail & mask` indexes the SQE array; the slot is free
        // because the ring is not full (per contract), so the kernel does
        // not read it until the tail store below publishes it.
        unsafe {
            ptr::write(self.sqes.add((tail as u32 & self.mask) as usize), *sqe);
            self.publish(tail + 1);
        }
    }

    /// [`push`](Self::push) for a lean SQE, writing only the fields that
    /// are not always zero in one: every slot's lean fields are zero by
    /// the time a push reaches it (zeroed at mapping; a full push that
    /// sets them marks its slot dirty, and the slot is cleaned once the
    /// kernel has consumed it, before the tail can come round to it).
    ///
    /// # Safety
    /// As for `push`, and `sqe.is_lean()`.
    #[inline(always)]
    pub unsafe fn push_lean(&mut self, sqe: &Sqe) {
        debug_assert!(sqe.is_lean());
        let tail = self.tail;
        // SAFETY: as in `push`; the fields not written here are zero in
        // the slot (this fn's docs), as they are in `sqe` (per contract).
        unsafe {
            let e = self.sqes.add((tail as u32 & self.mask) as usize);
            (*e).opcode = sqe.opcode;
            (*e).flags = sqe.flags;
            (*e).ioprio = sqe.ioprio;
            (*e).fd = sqe.fd;
            (*e).addr = sqe.addr;
            (*e).len = sqe.len;
            (*e).op_flags = sqe.op_flags;
            (*e).user_data = sqe.user_data;
            (*e).buf_index = sqe.buf_index;
            (*e).personality = sqe.personality;
            (*e).splice_fd_in = sqe.splice_fd_in;
            self.publish(tail + 1);
        }
    }

    /// Moves the tail on to `tail`, for the kernel to see.
    ///
    /// # Safety
    /// Every entry before `tail` has been written.
    #[inline(always)]
    unsafe fn publish(&mut self, tail: u64) {
        self.tail = tail;
        // SAFETY: `ktail` points into the live SQ ring (from_raw).
        unsafe { (*self.ktail).store(tail as u32, Ordering::Release) };
    }

    /// SQEs published that the kernel has not consumed yet.
    #[inline]
    pub fn pending(&self) -> bool {
        // SAFETY: `khead` points into the live SQ ring (from_raw).
        self.tail as u32 != unsafe { (*self.khead).load(Ordering::Acquire) }
    }

    /// The position the next push takes: pushes since the ring was mapped
    /// plus a fixed start. After a push, the position just past it.
    #[inline]
    pub fn tail_pos(&self) -> u64 {
        self.tail
    }

    /// The kernel's head as a position comparable with [`tail_pos`](Self::tail_pos):
    /// every SQE before it has been consumed, i.e. issued (the kernel
    /// moves its head only after submitting the SQEs it took, SQPOLL's
    /// thread too).
    #[inline]
    pub fn head_pos(&self) -> u64 {
        // SAFETY: `khead` points into the live SQ ring (from_raw).
        self.pos_of(unsafe { (*self.khead).load(Ordering::Acquire) })
    }

    /// `true` once the kernel has consumed every SQE before position `pos`.
    #[inline]
    pub fn consumed_before(&self, pos: u64) -> bool {
        self.head_pos() >= pos
    }

    /// SQEs pushed since the ring was mapped.
    #[inline]
    pub fn pushed(&self) -> u64 {
        self.tail - self.start
    }

    /// The CQ overflowed into the kernel's backlog (`IORING_SQ_CQ_OVERFLOW`).
    #[inline]
    pub fn cq_overflow(&self) -> bool {
        // SAFETY: `kflags` points into the live SQ ring (from_raw).
        unsafe { (*self.kflags).load(Ordering::Acquire) & IORING_SQ_CQ_OVERFLOW != 0 }
    }
}

/// The completion ring, read by one thread at a time.
///
/// Made by [`Ring::queues`](super::Ring::queues); points into that ring's
/// mappings.
pub struct Cq {
    khead: *const AtomicU32,
    ktail: *const AtomicU32,
    cqes: *const Cqe,
    mask: u32,
}

// SAFETY: raw pointers into a ring's mappings, which stay put
// (Ring::queues' contract); the head is written only by the one reaper
// (`head`/`set_head` are unsafe for that), the rest is atomic loads.
unsafe impl Send for Cq {}
// SAFETY: as above.
unsafe impl Sync for Cq {}

impl Cq {
    /// The view of a CQ ring whose head and tail words are at `khead`,
    /// `ktail`, with `mask + 1` entries at `cqes`.
    ///
    /// # Safety
    /// The pointers stay valid (mapped, aligned) while the `Cq` is used;
    /// `mask + 1` is a power of two.
    pub(crate) unsafe fn from_raw(
        khead: *const AtomicU32, ktail: *const AtomicU32, cqes: *const Cqe, mask: u32,
    ) -> Cq {
        Cq {
            khead,
            ktail,
            cqes,
            mask,
        }
    }

    /// Our head: the next CQE to read.
    ///
    /// # Safety
    /// Only one thread reaps at a time (it alone writes the head).
    #[inline(always)]
    pub unsafe fn head(&self) -> u32 {
        // SAFETY: `khead` points into the live CQ ring (from_raw).
        unsafe { (*self.khead).load(Ordering::Relaxed) }
    }

    /// The kernel's tail: CQEs before it are published.
    #[inline(always)]
    pub fn tail(&self) -> u32 {
        // SAFETY: `ktail` points into the live CQ ring (from_raw); Acquire
        // orders the entries' contents before our reads of them.
        unsafe { (*self.ktail).load(Ordering::Acquire) }
    }

    /// The CQE array and its index mask, to be copied into locals: a
    /// reaping loop that read them through `self` would reload them
    /// after every store to an operation.
    #[inline(always)]
    pub fn entries(&self) -> CqEntries {
        CqEntries {
            cqes: self.cqes,
            mask: self.mask,
        }
    }

    /// Hands the entries before `head` back to the kernel.
    ///
    /// # Safety
    /// As for [`head`](Self::head); every entry before `head` was read.
    #[inline(always)]
    pub unsafe fn set_head(&self, head: u32) {
        // SAFETY: `khead` points into the live CQ ring (from_raw).
        unsafe { (*self.khead).store(head, Ordering::Release) }
    }
}

/// [`Cq::entries`].
#[derive(Clone, Copy)]
pub struct CqEntries {
    cqes: *const Cqe,
    mask: u32,
}

impl CqEntries {
    /// The entries from position `head` on, up to `tail` or the end of the
    /// array, whichever comes first, as (first, count): a stretch the
    /// reaper walks by pointer, without masking each position.
    ///
    /// # Safety
    /// `head` and `tail` are positions of the `Cq` these came from with
    /// `head <= tail` in ring order; the entries are read before its head
    /// moves past them.
    #[inline(always)]
    pub unsafe fn run(self, head: u32, tail: u32) -> (*const Cqe, u32) {
        let i = head & self.mask;
        let n = tail.wrapping_sub(head).min(self.mask - i + 1);
        // SAFETY: `i` indexes the CQE array (masked).
        (unsafe { self.cqes.add(i as usize) }, n)
    }
}

#[cfg(test)]
mod tests {
    //! The ring index math over plain memory standing in for the kernel's
    //! mapping (no system call: these run under miri).
    use super::*;
    use crate::uring::abi::IORING_OP_NOP;
    use core::cell::UnsafeCell;

    /// An SQ ring's words and SQE array, with the test as the kernel.
    /// Reached only through shared references (the SQEs in cells), so
    /// the `Sq`'s pointers stay valid under miri's aliasing model.
    struct FakeSq {
        words: [AtomicU32; 3], // head, tail, flags
        sqes: Vec<UnsafeCell<Sqe>>,
    }

    impl FakeSq {
        fn new(entries: usize, start: u32) -> FakeSq {
            FakeSq {
                words: [
                    AtomicU32::new(start),
                    AtomicU32::new(start),
                    AtomicU32::new(0),
                ],
                sqes: (0..entries)
                    .map(|_| UnsafeCell::new(Sqe::default()))
                    .collect(),
            }
        }

        fn sq(&self) -> Sq {
            let mask = self.sqes.len() as u32 - 1;
            // SAFETY: the fake outlives the `Sq` in every test (declared
            // first); one submitter; `UnsafeCell<Sqe>` is laid out as `Sqe`.
            unsafe {
                Sq::from_raw(
                    &self.words[0],
                    &self.words[1],
                    &self.words[2],
                    self.sqes.as_ptr() as *mut Sqe,
                    mask,
                )
            }
        }

        /// SQE slot `i` as the kernel would read it.
        fn slot(&self, i: usize) -> Sqe {
            // SAFETY: no push is under way (the test is single-threaded).
            unsafe { *self.sqes[i].get() }
        }

        /// The kernel consumes the published SQEs up to `head`.
        fn consume_to(&self, head: u32) {
            self.words[0].store(head, Ordering::Release);
        }

        /// The kernel consumes every published SQE.
        fn consume(&self) {
            self.consume_to(self.words[1].load(Ordering::Acquire));
        }
    }

    fn nop(ud: u64) -> Sqe {
        Sqe {
            opcode: IORING_OP_NOP,
            user_data: ud,
            ..Sqe::default()
        }
    }

    #[test]
    fn lean_pushes_find_a_full_pushs_slot_clean_again() {
        let k = FakeSq::new(4, 0);
        let mut sq = k.sq();
        let mut full = nop(1);
        full.off = 7;
        full.addr3 = 8;
        full.pad = 9;
        assert!(!full.is_lean() && nop(2).is_lean());
        // SAFETY: room in the ring; NOPs carry no pointer.
        unsafe { sq.push(&full) };
        for ud in 2..=4 {
            assert!(!sq.looks_full());
            // SAFETY: as above.
            unsafe { sq.push_lean(&nop(ud)) };
        }
        assert!(sq.looks_full());
        assert!(sq.pending());
        k.consume();
        assert!(!sq.pending());
        assert!(sq.sync_head(), "the kernel consumed the ring");
        // The next lean push lands in the full push's slot, which must
        // read as if written whole.
        // SAFETY: as above.
        unsafe { sq.push_lean(&nop(5)) };
        assert_eq!(k.slot(0), nop(5));
        assert_eq!(sq.dirty, CLEAN);
        assert_eq!(sq.pushed(), 5);
    }

    #[test]
    fn a_dirty_slot_the_kernel_has_not_consumed_stays_dirty() {
        let k = FakeSq::new(4, 0);
        let mut sq = k.sq();
        let mut full = nop(1);
        full.off = 1;
        // SAFETY: room; NOPs carry no pointer.
        unsafe {
            sq.push(&nop(0));
            sq.push(&full);
        }
        // The kernel took only the first.
        k.consume_to(1);
        assert!(sq.sync_head());
        assert_eq!(sq.dirty, (1, 1), "position 1 is still the kernel's");
        assert_eq!(k.slot(1).off, 1);
        k.consume();
        sq.sync_head();
        assert_eq!((sq.dirty, k.slot(1).off), (CLEAN, 0));
    }

    #[test]
    fn positions_count_on_across_the_32_bit_wrap() {
        // The kernel's indices start just below 2^32: positions must keep
        // growing while the ring's words wrap.
        let start = u32::MAX - 1;
        let k = FakeSq::new(2, start);
        let mut sq = k.sq();
        let base = sq.tail_pos();
        for ud in 0..6u64 {
            if sq.looks_full() {
                k.consume();
                assert!(sq.sync_head());
            }
            // SAFETY: room (checked above); NOPs carry no pointer.
            unsafe { sq.push_lean(&nop(ud)) };
            assert_eq!(sq.tail_pos(), base + ud + 1);
        }
        assert_eq!(k.words[1].load(Ordering::Relaxed), start.wrapping_add(6));
        assert!(!sq.consumed_before(base + 6));
        k.consume();
        assert_eq!(sq.head_pos(), base + 6);
        assert!(sq.consumed_before(base + 6));
        // `start` is even: push `n` went to slot `n % 2`.
        assert_eq!((k.slot(0).user_data, k.slot(1).user_data), (4, 5));
    }

    #[test]
    fn cq_runs_stop_at_the_end_of_the_array() {
        let cqes: Vec<Cqe> = (0..4)
            .map(|i| Cqe {
                user_data: i,
                res: 0,
                flags: 0,
            })
            .collect();
        let words = [AtomicU32::new(0), AtomicU32::new(0)];
        // SAFETY: `words` and `cqes` outlive the view.
        let cq = unsafe { Cq::from_raw(&words[0], &words[1], cqes.as_ptr(), 3) };
        let e = cq.entries();
        // SAFETY: positions in ring order; the entries are alive.
        unsafe {
            // Head at 2, tail at 7 (wrapped): slots 2,3 then 0,1,2.
            let (p, n) = e.run(2, 7);
            assert_eq!((*p).user_data, 2);
            assert_eq!(n, 2);
            let (p, n) = e.run(4, 7);
            assert_eq!(((*p).user_data, n), (0, 3));
            // Across the 32-bit wrap of the indices.
            let (p, n) = e.run(u32::MAX, 1);
            assert_eq!(((*p).user_data, n), (3, 1));
            cq.set_head(7);
            assert_eq!(cq.head(), 7);
        }
        words[1].store(9, Ordering::Release);
        assert_eq!(cq.tail(), 9);
    }
}
