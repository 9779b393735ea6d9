//! The deadline heap: pending entries ordered by deadline (Asio's `timer_queue`).
//!
//! A backend keeps one [`TimerQueue`] per context. A timer wait inserts its
//! operation with an absolute deadline and gets a [`TimerHandle`] back; the
//! backend asks [`earliest`](TimerQueue::earliest) how long it may block,
//! and after waking moves what is due onto its ready queue with
//! [`pop_expired`](TimerQueue::pop_expired). Cancelling a wait (Asio's
//! `cancel_timer`) is by handle, in O(log n).
//!
//! Deadlines are nanoseconds of a monotonic clock that the backend supplies;
//! this module never reads a clock. Entries are ordered by
//! `(deadline, insertion sequence)`, so equal deadlines fire first in,
//! first out and the order is deterministic.
//!
//! Like everything in core, the queue has a fixed capacity: its slots are a
//! [`Storage`] handed over when it is built, and a full queue hands the
//! operation back rather than allocating. Internally it is a binary min-heap
//! of slot indices; each slot records its heap position (so a cancel can
//! remove from the middle) and a generation, bumped whenever the slot is
//! freed, so a stale handle is recognised instead of hitting a reused slot.
//!
//! The queue is not synchronised: a backend guards it with its own mutex.
//! It does not own its operations either; like an [`OpQueue`], it must be
//! emptied ([`drain_all`](TimerQueue::drain_all)) before it is dropped.

use core::ptr::{self, NonNull};

use crate::memory::{Contents, MemPool, Region};
use crate::op::{OpResult, Operation};
use crate::{queue::OpQueue, storage::Storage, Error};

/// The most slots a queue uses: indices are `u32` and `u32::MAX` marks "none".
/// Storage beyond this is left unused.
pub const MAX_CAPACITY: usize = u32::MAX as usize - 1;

/// "No slot" in the free list.
const NIL: u32 = u32::MAX;

/// One element of a [`TimerQueue`]'s storage; opaque.
pub struct TimerSlot {
    deadline: u64,
    seq: u64,
    /// The pending operation; null while the slot is free.
    op: *mut Operation,
    /// Where this slot's entry sits in the heap, while pending.
    heap_pos: u32,
    /// Bumped on every free; a handle is valid while it matches.
    gen: u32,
    /// The heap's `i`-th element (a slot index) lives in slot `i`.
    heap_item: u32,
    /// Next free slot, or `NIL`.
    next_free: u32,
}

// SAFETY: a slot is inert data; the operation pointer it holds is never
// dereferenced through the slot, only by the queue that owns it, under
// `&mut`, when it hands the operation out. Operations travel between
// threads like an `OpQueue`'s.
unsafe impl Send for TimerSlot {}
// SAFETY: as above; `&TimerSlot` gives no access to anything.
unsafe impl Sync for TimerSlot {}

impl TimerSlot {
    /// An unused slot, for initialising storage (`static` arrays or
    /// `Storage::boxed_with(n, || TimerSlot::EMPTY)`).
    pub const EMPTY: TimerSlot = TimerSlot {
        deadline: 0,
        seq: 0,
        op: ptr::null_mut(),
        heap_pos: 0,
        gen: 0,
        heap_item: 0,
        next_free: NIL,
    };
}

/// Names one pending entry of a [`TimerQueue`], for
/// [`cancel`](TimerQueue::cancel) and [`deadline`](TimerQueue::deadline).
///
/// Once the entry fires or is cancelled the handle goes stale and is
/// answered with `None`, even after its slot is reused (the generation
/// differs; it would take 2³² reuses of one slot to wrap). A handle is only
/// meaningful to the queue that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerHandle {
    index: u32,
    gen: u32,
}

/// A fixed-capacity deadline queue of operations (Asio's `timer_queue`).
///
/// Every operation is O(log n) except [`drain_all`](Self::drain_all).
pub struct TimerQueue {
    slots: Storage<TimerSlot>,
    /// Slots in use by the queue: at most `MAX_CAPACITY`.
    cap: u32,
    /// Entries in the heap.
    len: u32,
    /// Slots `bump..cap` have never been used (O(1) construction).
    bump: u32,
    /// Head of the free list of used-then-freed slots.
    free: u32,
    /// Insertion counter: the tie-breaker between equal deadlines.
    next_seq: u64,
}

impl TimerQueue {
    /// An empty queue over `storage`: one slot per pending entry. O(1), no
    /// allocation. At most [`MAX_CAPACITY`] slots are used.
    pub fn new(storage: Storage<TimerSlot>) -> Self {
        let cap = storage.len().min(MAX_CAPACITY) as u32;
        TimerQueue {
            slots: storage,
            cap,
            len: 0,
            bump: 0,
            free: NIL,
            next_seq: 0,
        }
    }

    /// The queue's slots, as a region.
    pub fn region(&self) -> Region {
        self.slots.region(MemPool::TimerHeap, Contents::State)
    }

    /// How many entries the queue can hold.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// How many entries are pending.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// `true` when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `op`, due at `deadline_ns`. Hands `op` back when every slot is
    /// in use.
    ///
    /// # Safety
    /// `op` is live and on no queue, and stays live and off every queue
    /// until it leaves this one through [`cancel`](Self::cancel),
    /// [`pop_expired`](Self::pop_expired) or [`drain_all`](Self::drain_all)
    /// (those write its result and push it onto an [`OpQueue`]).
    pub unsafe fn insert(
        &mut self, deadline_ns: u64, op: NonNull<Operation>,
    ) -> Result<TimerHandle, NonNull<Operation>> {
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.slots()[i as usize].next_free;
            i
        } else if self.bump < self.cap {
            self.bump += 1;
            self.bump - 1
        } else {
            return Err(op);
        };
        let (pos, seq) = (self.len, self.next_seq);
        self.next_seq += 1;
        self.len += 1;
        let s = self.slots_mut();
        let slot = &mut s[i as usize];
        slot.deadline = deadline_ns;
        slot.seq = seq;
        slot.op = op.as_ptr();
        let gen = slot.gen;
        s[pos as usize].heap_item = i;
        sift_up(s, pos);
        Ok(TimerHandle { index: i, gen })
    }

    /// Removes a pending entry and returns its operation, without setting a
    /// result (the caller decides; a cancel sets `OperationAborted`).
    /// `None` if the handle is stale.
    pub fn cancel(&mut self, h: TimerHandle) -> Option<NonNull<Operation>> {
        let pos = self.slot_of(h)?.heap_pos;
        Some(self.remove_at(pos))
    }

    /// The deadline of the earliest entry.
    pub fn earliest(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let s = self.slots();
        Some(s[s[0].heap_item as usize].deadline)
    }

    /// The deadline of a pending entry; `None` if the handle is stale.
    pub fn deadline(&self, h: TimerHandle) -> Option<u64> {
        self.slot_of(h).map(|s| s.deadline)
    }

    /// Moves every entry due by `now_ns` (deadline `<= now_ns`) to the back
    /// of `out`, in deadline order (equal deadlines in insertion order),
    /// setting each result to `Ok(0)`. Returns how many moved.
    pub fn pop_expired(&mut self, now_ns: u64, out: &mut OpQueue) -> usize {
        let mut n = 0;
        while self.earliest().is_some_and(|d| d <= now_ns) {
            self.hand_out(0, Ok(0), out);
            n += 1;
        }
        n
    }

    /// Moves every entry to the back of `out` in deadline order, setting
    /// each result to `Err(Error::OperationAborted)` (shutdown, cancel all).
    /// Returns how many moved. O(n log n).
    pub fn drain_all(&mut self, out: &mut OpQueue) -> usize {
        let n = self.len();
        while self.len > 0 {
            self.hand_out(0, Err(Error::OperationAborted), out);
        }
        n
    }

    /// Removes the entry at heap position `pos`, sets its result and
    /// appends it to `out`.
    fn hand_out(&mut self, pos: u32, r: OpResult, out: &mut OpQueue) {
        let op = self.remove_at(pos);
        // SAFETY: by `insert`'s contract `op` is live and on no queue until
        // it leaves this one, which it just did.
        unsafe {
            op.as_ref().set_result(r);
            out.push(op);
        }
    }

    /// The slot a handle names, if it is still pending.
    fn slot_of(&self, h: TimerHandle) -> Option<&TimerSlot> {
        if h.index >= self.bump {
            return None; // never handed out (or garbage)
        }
        let s = &self.slots()[h.index as usize];
        (s.gen == h.gen && !s.op.is_null()).then_some(s)
    }

    /// Takes the entry at heap position `pos < len` out of the heap, frees
    /// its slot and returns its operation.
    fn remove_at(&mut self, pos: u32) -> NonNull<Operation> {
        self.len -= 1;
        let (last, free) = (self.len, self.free);
        let s = self.slots_mut();
        let i = s[pos as usize].heap_item;
        if pos != last {
            // Fill the hole with the last element, then restore heap order
            // in whichever direction it is broken.
            let moved = s[last as usize].heap_item;
            s[pos as usize].heap_item = moved;
            if pos > 0 && less(s, moved, s[((pos - 1) / 2) as usize].heap_item) {
                sift_up(s, pos);
            } else {
                sift_down(s, pos, last);
            }
        }
        let slot = &mut s[i as usize];
        let op = core::mem::replace(&mut slot.op, ptr::null_mut());
        slot.gen = slot.gen.wrapping_add(1);
        slot.next_free = free;
        self.free = i;
        // Not `expect`: its message goes through `Formatter::pad`, a
        // kilobyte of text in a small no_std binary.
        match NonNull::new(op) {
            Some(op) => op,
            None => panic!("a pending slot holds an operation"),
        }
    }

    fn slots(&self) -> &[TimerSlot] {
        // SAFETY: the storage holds at least `cap` initialised slots, owned
        // by this queue alone; no pointer into it is ever handed out.
        unsafe { core::slice::from_raw_parts(self.slots.as_ptr(), self.cap as usize) }
    }

    fn slots_mut(&mut self) -> &mut [TimerSlot] {
        // SAFETY: as in `slots`; `&mut self` makes this the only access.
        unsafe { core::slice::from_raw_parts_mut(self.slots.as_ptr(), self.cap as usize) }
    }
}

impl Drop for TimerQueue {
    fn drop(&mut self) {
        // A failing test unwinds past non-empty queues: report it, not abort.
        #[cfg(test)]
        if std::thread::panicking() {
            return;
        }
        debug_assert!(
            self.is_empty(),
            "a TimerQueue was dropped with operations on it; owners drain and destroy first"
        );
    }
}

/// `true` when slot `a`'s entry is due before slot `b`'s.
fn less(s: &[TimerSlot], a: u32, b: u32) -> bool {
    let (a, b) = (&s[a as usize], &s[b as usize]);
    (a.deadline, a.seq) < (b.deadline, b.seq)
}

/// Puts heap element `i` at position `pos` and records the position.
fn place(s: &mut [TimerSlot], pos: u32, i: u32) {
    s[pos as usize].heap_item = i;
    s[i as usize].heap_pos = pos;
}

/// Moves the element at `pos` up until its parent is due before it.
fn sift_up(s: &mut [TimerSlot], mut pos: u32) {
    let i = s[pos as usize].heap_item;
    while pos > 0 {
        let parent = (pos - 1) / 2;
        let p = s[parent as usize].heap_item;
        if !less(s, i, p) {
            break;
        }
        place(s, pos, p);
        pos = parent;
    }
    place(s, pos, i);
}

/// Moves the element at `pos` down until its children are due after it;
/// the heap holds `len` elements.
fn sift_down(s: &mut [TimerSlot], mut pos: u32, len: u32) {
    let i = s[pos as usize].heap_item;
    loop {
        // `pos < len <= u32::MAX - 1`, so this fits in u64 and is compared
        // before narrowing.
        let left = 2 * pos as u64 + 1;
        if left >= len as u64 {
            break;
        }
        let mut c = left as u32;
        if c + 1 < len && less(s, s[c as usize + 1].heap_item, s[c as usize].heap_item) {
            c += 1;
        }
        let ci = s[c as usize].heap_item;
        if !less(s, ci, i) {
            break;
        }
        place(s, pos, ci);
        pos = c;
    }
    place(s, pos, i);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Invoke;
    use std::vec::Vec;

    unsafe fn nop(_: NonNull<Operation>, _: *const (), _: Invoke<'_>) {}

    fn ops(n: usize) -> Vec<Operation> {
        (0..n).map(|_| Operation::new(nop)).collect()
    }

    fn queue(cap: usize) -> TimerQueue {
        let v: Vec<TimerSlot> = (0..cap).map(|_| TimerSlot::EMPTY).collect();
        TimerQueue::new(Storage::from_static(std::boxed::Box::leak(
            v.into_boxed_slice(),
        )))
    }

    /// Drops an empty queue and frees the storage `queue` leaked (so miri's
    /// leak check stays quiet).
    fn free(q: TimerQueue) {
        assert!(q.is_empty());
        let s = ptr::slice_from_raw_parts_mut(q.slots.as_ptr(), q.slots.len());
        drop(q);
        // SAFETY: `s` is the whole boxed slice leaked in `queue`, whose only
        // user was just dropped.
        drop(unsafe { std::boxed::Box::from_raw(s) });
    }

    /// Heap order holds and every pending slot knows its position.
    fn check_heap(q: &TimerQueue) {
        let s = q.slots();
        for pos in 0..q.len {
            let i = s[pos as usize].heap_item;
            assert_eq!(s[i as usize].heap_pos, pos);
            assert!(!s[i as usize].op.is_null());
            assert!(pos == 0 || !less(s, i, s[((pos - 1) / 2) as usize].heap_item));
        }
    }

    fn nn(o: &Operation) -> NonNull<Operation> {
        NonNull::from(o)
    }

    fn ins(q: &mut TimerQueue, d: u64, o: &Operation) -> TimerHandle {
        // SAFETY: each test declares its ops before the queue (they outlive
        // it) and keeps an op off every other queue while it is in `q`.
        unsafe { q.insert(d, nn(o)) }.expect("queue has room")
    }

    /// Pops everything from `out`, as indices into `o`, checking results.
    fn drain(out: &mut OpQueue, o: &[Operation], want: OpResult) -> Vec<usize> {
        let mut v = Vec::new();
        while let Some(p) = out.pop() {
            // SAFETY: the test's ops outlive `out`.
            assert_eq!(unsafe { p.as_ref() }.result(), want);
            v.push(o.iter().position(|x| ptr::eq(x, p.as_ptr())).unwrap());
        }
        v
    }

    #[test]
    fn pops_in_deadline_order_ties_fifo() {
        let o = ops(6);
        let mut q = queue(8);
        let mut out = OpQueue::new();
        assert_eq!((q.capacity(), q.len(), q.earliest()), (8, 0, None));
        for (i, d) in [50, 10, 30, 10, 20, 30].into_iter().enumerate() {
            o[i].set_result(Err(Error::TimedOut));
            ins(&mut q, d, &o[i]);
        }
        assert_eq!((q.len(), q.earliest()), (6, Some(10)));
        assert_eq!(q.pop_expired(9, &mut out), 0);
        assert_eq!(q.pop_expired(10, &mut out), 2);
        assert_eq!(q.earliest(), Some(20));
        assert_eq!(q.pop_expired(35, &mut out), 3);
        assert_eq!(q.earliest(), Some(50));
        assert_eq!(q.pop_expired(u64::MAX, &mut out), 1);
        assert!(q.is_empty() && q.earliest().is_none());
        assert_eq!(drain(&mut out, &o, Ok(0)), [1, 3, 4, 2, 5, 0]);
        free(q);
    }

    #[test]
    fn cancel_keeps_heap_order_and_goes_stale() {
        let o = ops(8);
        let mut q = queue(8);
        let mut out = OpQueue::new();
        let ds = [40, 10, 70, 20, 60, 30, 80, 50];
        let h: Vec<_> = (0..8).map(|i| ins(&mut q, ds[i], &o[i])).collect();
        assert_eq!(q.deadline(h[4]), Some(60));
        // middle, first (earliest), last (latest)
        assert_eq!(q.cancel(h[4]), Some(nn(&o[4])));
        assert_eq!(q.cancel(h[1]), Some(nn(&o[1])));
        assert_eq!(q.earliest(), Some(20));
        assert_eq!(q.cancel(h[6]), Some(nn(&o[6])));
        assert_eq!(q.cancel(h[4]), None);
        assert_eq!(q.deadline(h[4]), None);
        assert_eq!(q.len(), 5);
        assert_eq!(q.pop_expired(30, &mut out), 2);
        assert_eq!(q.cancel(h[3]), None, "stale after firing");
        assert_eq!(q.pop_expired(u64::MAX, &mut out), 3);
        assert_eq!(drain(&mut out, &o, Ok(0)), [3, 5, 0, 7, 2]);
        let junk = TimerHandle {
            index: u32::MAX,
            gen: 0,
        };
        assert_eq!((q.cancel(junk), q.deadline(junk)), (None, None));
        free(q);
    }

    #[test]
    fn reused_slot_rejects_old_handle() {
        let o = ops(2);
        let mut q = queue(1);
        let old = ins(&mut q, 5, &o[0]);
        assert_eq!(q.cancel(old), Some(nn(&o[0])));
        let new = ins(&mut q, 7, &o[1]);
        assert_eq!(old.index, new.index);
        assert_ne!(old, new);
        assert_eq!((q.cancel(old), q.deadline(old)), (None, None));
        assert_eq!(q.deadline(new), Some(7));
        assert_eq!(q.cancel(new), Some(nn(&o[1])));
        free(q);
    }

    #[test]
    fn full_queue_hands_op_back() {
        let o = ops(5);
        let mut q = queue(3);
        let mut out = OpQueue::new();
        let h: Vec<_> = (0..3).map(|i| ins(&mut q, i as u64, &o[i])).collect();
        // SAFETY: `o[3]` and `o[4]` are live and on no queue.
        assert_eq!(unsafe { q.insert(9, nn(&o[3])) }, Err(nn(&o[3])));
        assert_eq!(q.pop_expired(0, &mut out), 1);
        assert_eq!(drain(&mut out, &o, Ok(0)), [0]);
        ins(&mut q, 9, &o[3]);
        // SAFETY: as above.
        assert_eq!(unsafe { q.insert(9, nn(&o[4])) }, Err(nn(&o[4])));
        assert_eq!(q.cancel(h[1]), Some(nn(&o[1])));
        ins(&mut q, 1, &o[4]);
        assert_eq!(q.len(), 3);
        assert_eq!(q.drain_all(&mut out), 3);
        assert_eq!(drain(&mut out, &o, Err(Error::OperationAborted)), [4, 2, 3]);
        free(q);
    }

    #[test]
    fn drain_all_aborts_everything() {
        let o = ops(5);
        let mut q = queue(5);
        let mut out = OpQueue::new();
        for (i, d) in [3, 1, 4, 1, 5].into_iter().enumerate() {
            ins(&mut q, d, &o[i]);
        }
        assert_eq!(q.drain_all(&mut out), 5);
        assert!(q.is_empty() && q.earliest().is_none());
        assert_eq!(q.drain_all(&mut out), 0);
        let got = drain(&mut out, &o, Err(Error::OperationAborted));
        assert_eq!(got, [1, 3, 0, 2, 4]);
        free(q);
    }

    #[test]
    fn zero_capacity() {
        let o = ops(1);
        let mut q = queue(0);
        // SAFETY: `o[0]` is live and on no queue.
        assert_eq!(unsafe { q.insert(0, nn(&o[0])) }, Err(nn(&o[0])));
        assert_eq!(q.pop_expired(u64::MAX, &mut OpQueue::new()), 0);
        free(q);
    }

    #[test]
    fn randomized_against_sorted_model() {
        const CAP: usize = 64;
        let steps = if cfg!(miri) { 200 } else { 20_000 };
        let o = ops(CAP);
        let mut q = queue(CAP);
        let mut out = OpQueue::new();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // model: (deadline, seq, op index), sorted; plus each op's handle
        let mut model: Vec<(u64, u64, usize)> = Vec::new();
        let mut handle: Vec<Option<TimerHandle>> = std::vec![None; CAP];
        let mut stale: Vec<TimerHandle> = Vec::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for _ in 0..steps {
            let r = next();
            match r % 8 {
                0..=3 => {
                    // insert a free op, or check that a full queue refuses
                    let free = (0..CAP).find(|&i| handle[i].is_none());
                    let d = now + (r >> 8) % 700;
                    match free {
                        Some(i) => {
                            handle[i] = Some(ins(&mut q, d, &o[i]));
                            model.push((d, seq, i));
                            model.sort_unstable();
                            seq += 1;
                        }
                        None => {
                            assert_eq!(q.len(), CAP);
                            // SAFETY: `o[0]` is live; refused untouched.
                            assert!(unsafe { q.insert(d, nn(&o[0])) }.is_err());
                        }
                    }
                }
                4 | 5 if !model.is_empty() => {
                    let k = (r >> 8) as usize % model.len();
                    let (d, _, i) = model.remove(k);
                    let h = handle[i].take().unwrap();
                    assert_eq!(q.deadline(h), Some(d));
                    assert_eq!(q.cancel(h), Some(nn(&o[i])));
                    stale.push(h);
                }
                6 => {
                    now += (r >> 8) % 40;
                    let n = model.iter().take_while(|e| e.0 <= now).count();
                    assert_eq!(q.pop_expired(now, &mut out), n);
                    let want: Vec<usize> = model.drain(..n).map(|e| e.2).collect();
                    for &i in &want {
                        stale.push(handle[i].take().unwrap());
                    }
                    assert_eq!(drain(&mut out, &o, Ok(0)), want);
                }
                _ => {
                    if let Some(&h) = stale.get((r >> 8) as usize % stale.len().max(1)) {
                        assert_eq!((q.cancel(h), q.deadline(h)), (None, None));
                    }
                }
            }
            check_heap(&q);
            assert_eq!(q.len(), model.len());
            assert_eq!(q.earliest(), model.first().map(|e| e.0));
            if stale.len() > 256 {
                stale.drain(..128);
            }
        }
        let want: Vec<usize> = model.iter().map(|e| e.2).collect();
        assert_eq!(q.drain_all(&mut out), want.len());
        assert_eq!(drain(&mut out, &o, Err(Error::OperationAborted)), want);
        free(q);
    }
}
