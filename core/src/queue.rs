//! The intrusive FIFO of operations (Asio's `op_queue`).
//!
//! All O(1), no allocation: the link lives in each [`Operation`] header.
//! This module and `pool` are where pinion's raw-pointer invariants live;
//! both are exercised under miri.
//!
//! Invariants: an operation is on at most one queue at a time; while on a
//! queue its `next` is owned by that queue; `tail`'s `next` is null.
//!
//! Drop rule: a queue does not own its operations and cannot destroy them
//! (that needs their owner). Whoever holds a queue drains it first: the
//! scheduler and reactors destroy what is left at shutdown. Dropping a
//! non-empty queue is a bug, caught by a debug assertion.

use core::ptr::{self, NonNull};

use crate::op::Operation;

/// An intrusive singly linked FIFO of [`Operation`] headers.
pub struct OpQueue {
    head: *mut Operation,
    tail: *mut Operation,
}

// SAFETY: a queue is only a pair of pointers to operations whose ownership
// travels with the queue; the scheduler moves queues between threads under
// its mutex. Operations themselves are `Send` by construction (handlers are
// required to be `Send` where a context is shared).
unsafe impl Send for OpQueue {}

impl Default for OpQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl OpQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        OpQueue {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
        }
    }

    /// `true` when the queue holds nothing.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// The first operation, if any, without removing it.
    #[inline]
    pub fn front(&self) -> Option<NonNull<Operation>> {
        NonNull::new(self.head)
    }

    /// Appends `op`.
    ///
    /// # Safety
    /// `op` is live, on no queue, and stays live until popped.
    #[inline]
    pub unsafe fn push(&mut self, op: NonNull<Operation>) {
        let p = op.as_ptr();
        // SAFETY: `op` is live and on no queue, so its link is ours to set.
        unsafe { (*p).next.set(ptr::null_mut()) };
        if self.tail.is_null() {
            self.head = p;
        } else {
            // SAFETY: `tail` is a live operation on this queue (invariant).
            unsafe {
                debug_assert!((*self.tail).next.get().is_null());
                (*self.tail).next.set(p);
            }
        }
        self.tail = p;
    }

    /// Puts `op` in front of every queued operation.
    ///
    /// # Safety
    /// As for [`push`](Self::push).
    #[inline]
    pub unsafe fn push_front(&mut self, op: NonNull<Operation>) {
        let p = op.as_ptr();
        // SAFETY: `op` is live and on no queue, so its link is ours to set.
        unsafe { (*p).next.set(self.head) };
        if self.head.is_null() {
            self.tail = p;
        }
        self.head = p;
    }

    /// Removes and returns the first operation.
    #[inline]
    pub fn pop(&mut self) -> Option<NonNull<Operation>> {
        let op = NonNull::new(self.head)?;
        // SAFETY: `head` is a live operation on this queue (invariant).
        unsafe {
            self.head = op.as_ref().next.get();
            op.as_ref().next.set(ptr::null_mut());
        }
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        Some(op)
    }

    /// Removes the first operation like [`pop`](Self::pop), without
    /// clearing the popped operation's link or, when the queue runs empty,
    /// the tail: two stores and a branch fewer per operation for a queue
    /// that is only drained (the batch the run loop works through). The
    /// stale link is never read: `push` sets it again.
    ///
    /// # Safety
    /// Nothing is pushed onto this queue, and it is not passed as the
    /// receiving queue of `push_queue`/`push_queue_front`, from its first
    /// `pop_drain` until it is replaced with [`OpQueue::new`]. It may still
    /// be tested (`is_empty`) and moved onto another queue while
    /// non-empty (its tail is then still right).
    #[inline(always)]
    pub unsafe fn pop_drain(&mut self) -> Option<NonNull<Operation>> {
        let op = NonNull::new(self.head)?;
        // SAFETY: `head` is a live operation on this queue (invariant).
        self.head = unsafe { op.as_ref().next.get() };
        Some(op)
    }

    /// Appends the operations linked from `head` to `tail` (each one's
    /// link naming the next, `tail`'s null), in order.
    ///
    /// # Safety
    /// The chain is well formed as described, its operations are live and
    /// on no queue (the scheduler's continuation chain).
    #[inline]
    pub unsafe fn push_chain(&mut self, head: NonNull<Operation>, tail: NonNull<Operation>) {
        // SAFETY: per contract.
        debug_assert!(unsafe { tail.as_ref().next.get().is_null() });
        if self.tail.is_null() {
            self.head = head.as_ptr();
        } else {
            // SAFETY: `tail` is live and on this queue; we own its link.
            unsafe { (*self.tail).next.set(head.as_ptr()) };
        }
        self.tail = tail.as_ptr();
    }

    /// Moves every operation of `other` to the back of this queue, in order
    /// (Asio's `push(op_queue&)`), leaving `other` empty.
    #[inline]
    pub fn push_queue(&mut self, other: &mut OpQueue) {
        if other.head.is_null() {
            return;
        }
        if self.tail.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: `tail` is live and on this queue; we own its link.
            unsafe { (*self.tail).next.set(other.head) };
        }
        self.tail = other.tail;
        other.head = ptr::null_mut();
        other.tail = ptr::null_mut();
    }

    /// Moves every operation of `other` to the front of this queue, in
    /// order, leaving `other` empty (returning an unfinished batch).
    #[inline]
    pub fn push_queue_front(&mut self, other: &mut OpQueue) {
        if other.head.is_null() {
            return;
        }
        // SAFETY: `other.tail` is live and on `other`; we own its link.
        unsafe { (*other.tail).next.set(self.head) };
        if self.tail.is_null() {
            self.tail = other.tail;
        }
        self.head = other.head;
        other.head = ptr::null_mut();
        other.tail = ptr::null_mut();
    }

    /// Moves up to `max` operations from the front of this queue to the
    /// back of `out`, stopping before `stop_at` (the task sentinel).
    /// Returns how many moved. O(moved).
    #[inline]
    pub fn take_front(
        &mut self, out: &mut OpQueue, max: usize, stop_at: *const Operation,
    ) -> usize {
        let first = self.head;
        if first.is_null() || ptr::eq(first, stop_at) || max == 0 {
            return 0;
        }
        let mut last = first;
        let mut n = 1;
        // SAFETY: every pointer walked is a live operation on this queue.
        unsafe {
            while n < max {
                let nx = (*last).next.get();
                if nx.is_null() || ptr::eq(nx, stop_at) {
                    break;
                }
                last = nx;
                n += 1;
            }
            self.head = (*last).next.get();
            (*last).next.set(ptr::null_mut());
        }
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        if out.tail.is_null() {
            out.head = first;
        } else {
            // SAFETY: `out.tail` is live and on `out`.
            unsafe { (*out.tail).next.set(first) };
        }
        out.tail = last;
        n
    }

    /// Takes `op` out of this queue if it is on it; `false` if it is not.
    /// O(position): for a descriptor's few pending operations (Asio's
    /// per-operation cancellation walks the same way).
    pub fn remove(&mut self, op: NonNull<Operation>) -> bool {
        let target = op.as_ptr();
        let mut prev: *mut Operation = ptr::null_mut();
        let mut cur = self.head;
        // SAFETY: every pointer walked is a live operation on this queue,
        // whose link the queue owns.
        unsafe {
            while !cur.is_null() {
                let next = (*cur).next.get();
                if ptr::eq(cur, target) {
                    if prev.is_null() {
                        self.head = next;
                    } else {
                        (*prev).next.set(next);
                    }
                    if ptr::eq(self.tail, cur) {
                        self.tail = prev;
                    }
                    (*cur).next.set(ptr::null_mut());
                    return true;
                }
                prev = cur;
                cur = next;
            }
        }
        false
    }

    /// `true` if `op` is on this queue (Asio's `is_enqueued`): O(1) by the
    /// rule that only the tail has a null link.
    ///
    /// # Safety
    /// `op` is live and is on this queue or on none.
    #[inline]
    pub unsafe fn is_enqueued(&self, op: NonNull<Operation>) -> bool {
        // SAFETY: `op` is live by contract.
        let next = unsafe { op.as_ref().next.get() };
        !next.is_null() || ptr::eq(self.tail, op.as_ptr())
    }
}

impl Drop for OpQueue {
    fn drop(&mut self) {
        debug_assert!(
            self.is_empty(),
            "an OpQueue was dropped with operations on it; owners drain and destroy first"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Invoke;

    unsafe fn nop(_: NonNull<Operation>, _: *const (), _: Invoke<'_>) {}

    fn ops<const N: usize>() -> [Operation; N] {
        core::array::from_fn(|_| Operation::new(nop))
    }

    fn ptrs(q: &mut OpQueue) -> std::vec::Vec<*const Operation> {
        let mut v = std::vec::Vec::new();
        while let Some(p) = q.pop() {
            v.push(p.as_ptr() as *const _);
        }
        v
    }

    fn nn(o: &Operation) -> NonNull<Operation> {
        NonNull::from(o)
    }

    #[test]
    fn fifo_order_and_empty() {
        let o = ops::<4>();
        let mut q = OpQueue::new();
        assert!(q.is_empty() && q.pop().is_none() && q.front().is_none());
        for op in &o {
            // SAFETY: each op is live for the test and on no queue.
            unsafe { q.push(nn(op)) };
        }
        assert_eq!(q.front(), Some(nn(&o[0])));
        let got = ptrs(&mut q);
        let want: std::vec::Vec<_> = o.iter().map(|x| x as *const _).collect();
        assert_eq!(got, want);
        assert!(q.is_empty());
    }

    #[test]
    fn is_enqueued_tracks_membership() {
        let o = ops::<3>();
        let mut q = OpQueue::new();
        // SAFETY: ops are live and on no other queue.
        unsafe {
            assert!(!q.is_enqueued(nn(&o[0])));
            q.push(nn(&o[0]));
            assert!(q.is_enqueued(nn(&o[0])));
            q.push(nn(&o[1]));
            assert!(q.is_enqueued(nn(&o[0])) && q.is_enqueued(nn(&o[1])));
            assert!(!q.is_enqueued(nn(&o[2])));
        }
        q.pop();
        // SAFETY: as above.
        unsafe { assert!(!q.is_enqueued(nn(&o[0]))) };
        ptrs(&mut q);
    }

    #[test]
    fn splice_back_and_front_keep_order() {
        let o = ops::<6>();
        let (mut a, mut b) = (OpQueue::new(), OpQueue::new());
        // SAFETY: ops are live and on no other queue.
        unsafe {
            a.push(nn(&o[2]));
            a.push(nn(&o[3]));
            b.push(nn(&o[4]));
            b.push(nn(&o[5]));
        }
        a.push_queue(&mut b);
        assert!(b.is_empty());
        // SAFETY: as above.
        unsafe {
            b.push(nn(&o[0]));
            b.push(nn(&o[1]));
        }
        a.push_queue_front(&mut b);
        assert!(b.is_empty());
        let mut empty = OpQueue::new();
        a.push_queue(&mut empty);
        a.push_queue_front(&mut empty);
        let got = ptrs(&mut a);
        let want: std::vec::Vec<_> = o.iter().map(|x| x as *const _).collect();
        assert_eq!(got, want);
        // splice into an empty queue, then push after it
        // SAFETY: as above.
        unsafe { b.push(nn(&o[0])) };
        a.push_queue(&mut b);
        // SAFETY: as above.
        unsafe { a.push(nn(&o[1])) };
        assert_eq!(ptrs(&mut a).len(), 2);
    }

    #[test]
    fn take_front_stops_at_sentinel_and_max() {
        let o = ops::<6>();
        let mut q = OpQueue::new();
        for op in &o {
            // SAFETY: ops are live and on no other queue.
            unsafe { q.push(nn(op)) };
        }
        let mut out = OpQueue::new();
        assert_eq!(q.take_front(&mut out, 2, ptr::null()), 2);
        assert_eq!(q.take_front(&mut out, 10, &o[4]), 2);
        assert_eq!(q.take_front(&mut out, 10, &o[4]), 0);
        assert_eq!(q.front(), Some(nn(&o[4])));
        assert_eq!(q.take_front(&mut out, 10, ptr::null()), 2);
        assert!(q.is_empty());
        assert_eq!(ptrs(&mut out).len(), 6);
        // taking everything then pushing again keeps the tail right
        // SAFETY: ops are live and on no other queue.
        unsafe { q.push(nn(&o[0])) };
        assert_eq!(q.take_front(&mut out, 1, ptr::null()), 1);
        // SAFETY: as above.
        unsafe { q.push(nn(&o[1])) };
        assert_eq!(ptrs(&mut q).len(), 1);
        assert_eq!(ptrs(&mut out).len(), 1);
    }

    #[test]
    fn pop_drain_then_hand_the_rest_over() {
        let o = ops::<4>();
        let mut q = OpQueue::new();
        for op in &o {
            // SAFETY: live for the test, on no queue.
            unsafe { q.push(nn(op)) };
        }
        // SAFETY: nothing is pushed onto `q` until it is replaced.
        assert_eq!(unsafe { q.pop_drain() }, Some(nn(&o[0])));
        // SAFETY: as above.
        assert_eq!(unsafe { q.pop_drain() }, Some(nn(&o[1])));
        // The rest (a stopped batch) goes in front of another queue whole.
        let mut other = OpQueue::new();
        other.push_queue_front(&mut q);
        assert!(q.is_empty());
        let want: std::vec::Vec<_> = o[2..].iter().map(|x| x as *const _).collect();
        assert_eq!(ptrs(&mut other), want);
        // Drained to the end: empty, and reusable once replaced.
        let mut q = OpQueue::new();
        // SAFETY: live, on no queue.
        unsafe { q.push(nn(&o[0])) };
        // SAFETY: nothing is pushed onto `q` until it is replaced.
        assert_eq!(unsafe { q.pop_drain() }, Some(nn(&o[0])));
        // SAFETY: as above.
        assert_eq!(unsafe { q.pop_drain() }, None);
        assert!(q.is_empty());
        q = OpQueue::new();
        // SAFETY: live, on no queue (push resets its stale link).
        unsafe { q.push(nn(&o[0])) };
        assert_eq!(q.pop(), Some(nn(&o[0])));
        assert!(q.is_empty());
    }

    #[test]
    fn push_front_on_empty_and_nonempty() {
        let o = ops::<3>();
        let mut q = OpQueue::new();
        // SAFETY: ops are live and on no other queue.
        unsafe {
            q.push_front(nn(&o[1]));
            q.push(nn(&o[2]));
            q.push_front(nn(&o[0]));
        }
        let got = ptrs(&mut q);
        let want: std::vec::Vec<_> = o.iter().map(|x| x as *const _).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn remove_takes_one_op_from_anywhere_and_keeps_the_rest_in_order() {
        let ops: std::vec::Vec<Operation> = (0..4).map(|_| Operation::new(nop)).collect();
        let p = |i: usize| NonNull::from(&ops[i]);
        for victim in 0..4 {
            let mut q = OpQueue::new();
            for i in 0..4 {
                // SAFETY: live, on no queue.
                unsafe { q.push(p(i)) };
            }
            assert!(q.remove(p(victim)));
            assert!(!q.remove(p(victim)), "already gone");
            let mut left = std::vec::Vec::new();
            while let Some(op) = q.pop() {
                left.push(
                    ops.iter()
                        .position(|o| core::ptr::eq(o, op.as_ptr()))
                        .unwrap(),
                );
            }
            let want: std::vec::Vec<usize> = (0..4).filter(|&i| i != victim).collect();
            assert_eq!(left, want);
            // The tail is right after removing the last one.
            // SAFETY: live, on no queue.
            unsafe { q.push(p(victim)) };
            assert_eq!(q.pop(), Some(p(victim)));
            assert!(q.is_empty());
        }
    }
}
