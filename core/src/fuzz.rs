//! Entry points of the fuzz targets in `fuzz/` (each takes the fuzzer's
//! bytes and panics on a defect), built with `cfg(fuzzing)` and in unit
//! tests, which replay the committed seed corpus (`fuzz/corpus/<target>/`)
//! through them. Each drives one part with a random sequence read from the
//! bytes and checks it against a plain model:
//!
//! - [`read_until`] and [`read`]: the composed reads over a scripted stream
//!   (`compose::script`, the unit tests' stream) with random chunkings,
//!   delimiters, completion conditions and endings, against what the bytes
//!   say the result must be;
//! - [`op_queue`]: two intrusive queues against two `VecDeque`s;
//! - [`slab`]: inserts, retires and releases against a map of live keys;
//! - [`timer_heap`]: inserts, cancels and expiries against a sorted list.

use core::ptr::NonNull;
use std::collections::VecDeque;
use std::vec::Vec;

use crate::compose::script::{
    read as run_read, read_until as run_read_until, ScriptStream, Step, TestBuf,
};
use crate::compose::{Completion, MAX_TRANSFER_SIZE};
use crate::op::{Invoke, Operation};
use crate::queue::OpQueue;
use crate::slab::{Entry, Key, Slab};
use crate::timer::{TimerHandle, TimerQueue, TimerSlot};
use crate::{Error, Storage};

/// The fuzzer's bytes, read front to back; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Delimiters `read_until` is fuzzed with (it takes `'static` ones), over
/// the alphabet the stream's bytes are drawn from, so matches, partial
/// matches and overlaps are frequent.
const DELIMS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"aba",
    b"abab",
    b"aab",
    b"a",
    b"",
];
const ALPHABET: &[u8] = b"ab\r\n";

/// How a script ends once its data is read.
fn ending(b: u8) -> (Step, Error) {
    match b % 3 {
        0 => (Step::Eof, Error::Eof),
        1 => (Step::Err(Error::ConnectionReset), Error::ConnectionReset),
        _ => (Step::Err(Error::OperationAborted), Error::OperationAborted),
    }
}

/// A buffer capacity, bytes already in the buffer, the stream's chunks
/// and its ending, from the fuzzer's bytes.
struct Stream {
    cap: usize,
    pre: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    end: (Step, Error),
}

impl Stream {
    fn read(inp: &mut Input<'_>) -> Stream {
        let cap = 1 + inp.u8() as usize % 48;
        let pre_len = (inp.u8() as usize % 8).min(cap);
        let end = ending(inp.u8());
        let letter = |inp: &mut Input<'_>| ALPHABET[inp.u8() as usize % ALPHABET.len()];
        let pre = (0..pre_len).map(|_| letter(inp)).collect();
        let mut chunks = Vec::new();
        while !inp.is_empty() && chunks.len() < 32 {
            let len = 1 + inp.u8() as usize % 12;
            chunks.push((0..len).map(|_| letter(inp)).collect());
        }
        Stream {
            cap,
            pre,
            chunks,
            end,
        }
    }

    fn script(self) -> (ScriptStream, TestBuf, Vec<u8>, usize, Error) {
        let mut all = self.pre.clone();
        self.chunks.iter().for_each(|c| all.extend_from_slice(c));
        let reads = self.chunks.into_iter().map(Step::Owned);
        let s = ScriptStream::with_reads(reads.chain([self.end.0]));
        (
            s,
            TestBuf::with(&self.pre, self.cap),
            all,
            self.pre.len(),
            self.end.1,
        )
    }
}

/// Where reads end: each takes what is left of the chunk, up to the room
/// a step asks for (`ask(len)`); `None` from `ask` ends the reads.
fn read_ends(
    chunks_from: usize, all_len: usize, chunk_lens: &[usize], mut ask: impl FnMut(usize) -> usize,
) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut len = chunks_from;
    for &c in chunk_lens {
        let mut left = c;
        while left > 0 {
            let room = ask(len);
            if room == 0 {
                return ends;
            }
            let n = left.min(room);
            len += n;
            left -= n;
            ends.push(len);
        }
    }
    debug_assert_eq!(len, all_len);
    ends
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    (0..hay.len()).find(|&i| hay[i..].starts_with(needle))
}

/// `read_until` over a random chunking, delimiter and ending: found at the
/// first occurrence, with the buffer holding exactly the reads up to the
/// one that completed it; `NotFound` with a full buffer; or the stream's
/// ending with every byte read.
pub fn read_until(data: &[u8]) {
    let mut inp = Input(data);
    let delim = DELIMS[inp.u8() as usize % DELIMS.len()];
    let st = Stream::read(&mut inp);
    let lens: Vec<usize> = st.chunks.iter().map(Vec::len).collect();
    let (s, buf, all, pre, end_err) = st.script();
    let cap = buf.cap;
    let (got, bytes) = run_read_until(&s, buf, delim);
    let ends = read_ends(pre, all.len(), &lens, |len| {
        (cap - len).min(MAX_TRANSFER_SIZE)
    });
    // Bytes in the buffer after each step (no read at all: `pre`).
    let steps: Vec<usize> = [pre].into_iter().chain(ends.iter().copied()).collect();
    let found = find(&all, delim)
        .map(|i| i + delim.len())
        .filter(|&e| e <= cap);
    let (want, held) = match found {
        Some(e) => (
            Ok(e),
            *steps
                .iter()
                .find(|&&l| l >= e)
                .expect("found in the bytes read"),
        ),
        None if all.len() >= cap => (Err(Error::NotFound), cap),
        None => (Err(end_err), all.len()),
    };
    assert_eq!(got, want, "delim {delim:?} cap {cap} stream {all:?}");
    assert_eq!(bytes, &all[..held], "delim {delim:?} cap {cap}");
    let spares = &s.script().read_spares;
    // Up to the step that held the result, plus the read that met the
    // stream's ending.
    let ended = found.is_none() && all.len() < cap;
    let reads = steps.iter().position(|&l| l == held).expect("a step's end") + ended as usize;
    assert_eq!(
        spares.len(),
        reads,
        "reads issued; delim {delim:?} cap {cap} stream {all:?}"
    );
    assert!(spares.iter().all(|&n| n > 0 && n <= MAX_TRANSFER_SIZE));
}

/// `read` with a random completion condition over a random chunking: the
/// condition's count (never more for `Exactly`), or the buffer full, or
/// the stream's ending.
pub fn read(data: &[u8]) {
    let mut inp = Input(data);
    let (kind, n) = (inp.u8() % 3, inp.u8() as usize % 64);
    let cond = match kind {
        0 => Completion::TransferAll,
        1 => Completion::AtLeast(n),
        _ => Completion::Exactly(n),
    };
    let st = Stream::read(&mut inp);
    let lens: Vec<usize> = st.chunks.iter().map(Vec::len).collect();
    let (s, buf, all, pre, end_err) = st.script();
    let cap = buf.cap;
    let (got, bytes) = run_read(&s, buf, cond);
    let met = |total: usize| match cond {
        Completion::TransferAll => false,
        Completion::AtLeast(n) | Completion::Exactly(n) => total >= n,
    };
    let ends = read_ends(pre, all.len(), &lens, |len| {
        if len == cap || met(len - pre) {
            return 0;
        }
        let room = (cap - len).min(MAX_TRANSFER_SIZE);
        match cond {
            Completion::Exactly(n) => room.min(n - (len - pre)),
            _ => room,
        }
    });
    let last = ends.last().copied().unwrap_or(pre);
    let (want, held) = if last == cap || met(last - pre) {
        (Ok(last - pre), last)
    } else {
        (Err(end_err), last)
    };
    assert_eq!(got, want, "{cond:?} cap {cap} pre {pre} stream {all:?}");
    assert_eq!(bytes, &all[..held], "{cond:?} cap {cap} pre {pre}");
    if let Completion::Exactly(n) = cond {
        assert!(held - pre <= n, "read past Exactly({n})");
    }
    let spares = &s.script().read_spares;
    assert!(spares.iter().all(|&n| n > 0 && n <= MAX_TRANSFER_SIZE));
}

/// Operations for the structure targets: headers only, never completed.
fn ops(n: usize) -> Vec<Operation> {
    /// Never called: the targets only queue and unqueue.
    unsafe fn never(_: NonNull<Operation>, _: *const (), _: Invoke<'_>) {
        unreachable!("a fuzzed operation was completed")
    }
    (0..n).map(|_| Operation::new(never)).collect()
}

/// Two op queues under random pushes, pops, splices, partial takes and
/// removals, against two `VecDeque`s of indices; `is_enqueued` and `front`
/// checked after every step.
pub fn op_queue(data: &[u8]) {
    const N: usize = 8;
    let ops = ops(N);
    let ptr = |i: usize| NonNull::from(&ops[i]);
    let idx = |p: NonNull<Operation>| {
        (p.as_ptr() as usize - ops.as_ptr() as usize) / core::mem::size_of::<Operation>()
    };
    let mut q = [OpQueue::new(), OpQueue::new()];
    let mut m: [VecDeque<usize>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut inp = Input(data);
    while !inp.is_empty() {
        let b = inp.u8();
        let (a, o) = ((b >> 3) as usize & 1, (b >> 4) as usize % N);
        let free = !m[0].contains(&o) && !m[1].contains(&o);
        match b & 7 {
            0 if free => {
                // SAFETY: `ops` outlives the queues' use of it (drained
                // below), and `o` is on no queue.
                unsafe { q[a].push(ptr(o)) };
                m[a].push_back(o);
            }
            1 if free => {
                // SAFETY: as for `push`.
                unsafe { q[a].push_front(ptr(o)) };
                m[a].push_front(o);
            }
            2 => assert_eq!(q[a].pop().map(idx), m[a].pop_front()),
            3 => {
                let [x, y] = &mut q;
                let (into, from) = if a == 0 { (x, y) } else { (y, x) };
                into.push_queue(from);
                let moved: Vec<usize> = m[1 - a].drain(..).collect();
                m[a].extend(moved);
            }
            4 => {
                let [x, y] = &mut q;
                let (into, from) = if a == 0 { (x, y) } else { (y, x) };
                into.push_queue_front(from);
                let moved: Vec<usize> = m[1 - a].drain(..).collect();
                moved.into_iter().rev().for_each(|i| m[a].push_front(i));
            }
            5 => {
                let max = (b >> 4) as usize % 4;
                // Sometimes the second operation stands for the task
                // sentinel that a take stops before.
                let stop: *const Operation = match m[a].get(1) {
                    Some(&i) if b & 0x80 != 0 => ptr(i).as_ptr(),
                    _ => core::ptr::null(),
                };
                let [x, y] = &mut q;
                let (from, into) = if a == 0 { (x, y) } else { (y, x) };
                let n = from.take_front(into, max, stop);
                let mut want = 0;
                while want < max
                    && m[a]
                        .front()
                        .is_some_and(|&i| !core::ptr::eq(ptr(i).as_ptr(), stop))
                {
                    let i = m[a].pop_front().unwrap();
                    m[1 - a].push_back(i);
                    want += 1;
                }
                assert_eq!(n, want, "take_front({max})");
            }
            6 => {
                let on = m[a].iter().position(|&i| i == o);
                assert_eq!(q[a].remove(ptr(o)), on.is_some());
                if let Some(p) = on {
                    m[a].remove(p);
                }
            }
            _ => {}
        }
        for k in 0..2 {
            assert_eq!(q[k].is_empty(), m[k].is_empty());
            assert_eq!(q[k].front().map(idx), m[k].front().copied());
        }
        for i in 0..N {
            for k in 0..2 {
                if !m[1 - k].contains(&i) {
                    // SAFETY: `i` is live and on `q[k]` or on none.
                    assert_eq!(
                        unsafe { q[k].is_enqueued(ptr(i)) },
                        m[k].contains(&i),
                        "is_enqueued({i})"
                    );
                }
            }
        }
    }
    for k in 0..2 {
        let mut got = Vec::new();
        while let Some(p) = q[k].pop() {
            got.push(idx(p));
        }
        assert_eq!(got, Vec::from(m[k].clone()));
    }
}

/// A small slab under random inserts, gets, retires and releases, against
/// the set of live keys: a stale key never finds an entry, a full slab
/// says so, and `in_use` counts taken entries.
pub fn slab(data: &[u8]) {
    let show = |k: Key| (k.index(), k.gen());
    const N: usize = 6;
    let slab: Slab<u32, pinion_sync::SpinMutex> =
        Slab::new(Storage::boxed_with(N, || Entry::new(0)));
    // Taken entries: (key, still current).
    let mut taken: Vec<(Key, bool)> = Vec::new();
    let mut stale: Vec<Key> = Vec::new();
    let mut inp = Input(data);
    while !inp.is_empty() {
        let b = inp.u8();
        let pick = (b >> 2) as usize;
        match b & 3 {
            0 => match slab.insert() {
                Some((k, _)) => {
                    assert!(taken.len() < N, "more entries than capacity");
                    assert!(
                        taken.iter().all(|&(t, _)| t.index() != k.index()),
                        "entry given twice"
                    );
                    assert!(!stale.contains(&k), "a fresh key equals a stale one");
                    taken.push((k, true));
                }
                None => assert_eq!(taken.len(), N, "refused with room"),
            },
            1 if !taken.is_empty() => {
                let i = pick % taken.len();
                let (k, current) = taken[i];
                assert_eq!(slab.get(k).is_some(), current);
                assert_eq!(slab.retire(k), current, "retire of {:?}", show(k));
                if current {
                    taken[i].1 = false;
                    stale.push(k);
                }
            }
            2 if !taken.is_empty() => {
                let i = pick % taken.len();
                let (k, current) = taken.swap_remove(i);
                if current {
                    assert!(slab.retire(k));
                    stale.push(k);
                }
                // SAFETY: the entry is taken and retired, released once.
                unsafe { slab.release(k.index()) };
            }
            _ => {
                for &k in &stale {
                    assert!(
                        slab.get(k).is_none(),
                        "stale key {:?} still finds its entry",
                        show(k)
                    );
                }
            }
        }
        assert_eq!(slab.in_use(), taken.len());
        for &(k, current) in &taken {
            assert_eq!(slab.get(k).is_some(), current, "{:?}", show(k));
        }
    }
}

/// The timer heap under random inserts, cancels and expiries against a
/// list sorted by (deadline, insertion): expiries come out in that order,
/// cancelled and fired handles go stale, a full heap refuses.
pub fn timer_heap(data: &[u8]) {
    // More operations than slots, so that a full heap is met.
    const N: usize = 8;
    const CAP: usize = 6;
    let ops = ops(N);
    let ptr = |i: usize| NonNull::from(&ops[i]);
    let idx = |p: NonNull<Operation>| {
        (p.as_ptr() as usize - ops.as_ptr() as usize) / core::mem::size_of::<Operation>()
    };
    let mut heap = TimerQueue::new(Storage::boxed_with(CAP, || TimerSlot::EMPTY));
    // Pending: (deadline, seq, op index, handle).
    let mut model: Vec<(u64, u64, usize, TimerHandle)> = Vec::new();
    let mut dead: Vec<TimerHandle> = Vec::new();
    let mut seq = 0u64;
    let mut inp = Input(data);
    while !inp.is_empty() {
        let b = inp.u8();
        match b & 3 {
            0 | 1 => {
                let deadline = (inp.u8() % 16) as u64;
                let o = (0..N)
                    .find(|i| !model.iter().any(|m| m.2 == *i))
                    .expect("CAP < N");
                // SAFETY: `ops` outlives the heap's use (drained below);
                // `o` is on no queue.
                let h = match unsafe { heap.insert(deadline, ptr(o)) } {
                    Ok(h) => h,
                    Err(back) => {
                        assert_eq!((model.len(), idx(back)), (CAP, o), "refused with room");
                        continue;
                    }
                };
                assert!(model.len() < CAP, "more pending than slots");
                assert!(!dead.contains(&h), "a new handle equals a stale one");
                model.push((deadline, seq, o, h));
                seq += 1;
            }
            2 if !model.is_empty() => {
                let (_, _, o, h) = model.remove((b >> 2) as usize % model.len());
                assert_eq!(heap.cancel(h).map(idx), Some(o));
                assert_eq!(heap.cancel(h), None, "cancelled twice");
                dead.push(h);
            }
            _ => {
                let now = (b >> 2) as u64 % 16;
                let mut out = OpQueue::new();
                let n = heap.pop_expired(now, &mut out);
                model.sort_by_key(|m| (m.0, m.1));
                let due: Vec<_> = model.iter().take_while(|m| m.0 <= now).copied().collect();
                model.drain(..due.len());
                assert_eq!(n, due.len());
                for m in &due {
                    let p = out.pop().expect("as many out as counted");
                    assert_eq!(idx(p), m.2, "expiry order at now={now}");
                    // SAFETY: a live operation of `ops`.
                    assert_eq!(unsafe { p.as_ref() }.result(), Ok(0));
                    assert_eq!(heap.deadline(m.3), None, "fired handle still pending");
                    dead.push(m.3);
                }
                assert!(out.is_empty());
            }
        }
        assert_eq!(heap.len(), model.len());
        assert_eq!(heap.earliest(), model.iter().map(|m| m.0).min());
        for m in &model {
            assert_eq!(heap.deadline(m.3), Some(m.0));
        }
    }
    let mut out = OpQueue::new();
    heap.drain_all(&mut out);
    while out.pop().is_some() {}
}

#[cfg(test)]
mod tests {
    /// Replays every committed seed of `fuzz/corpus/<target>/` through
    /// its entry point, so the seeds are regression tests of the normal
    /// suite too (and the fuzz crate need not be built to run them).
    fn replay(target: &str, run: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "reads the corpus from disk; the unit tests cover these paths"
    )]
    fn fuzz_seeds_replay() {
        replay("read_until", super::read_until);
        replay("read", super::read);
        replay("op_queue", super::op_queue);
        replay("slab", super::slab);
        replay("timer_heap", super::timer_heap);
    }
}
