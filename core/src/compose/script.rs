//! An in-memory stream that follows a script, and a fixed-capacity test
//! buffer: what the composed operations' unit tests and the fuzz targets
//! (`crate::fuzz`) drive them with.
#![allow(dead_code)]

use super::*;
use crate::Error;
use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::vec::Vec;

/// One scripted result of `read_some`.
#[derive(Debug)]
pub(crate) enum Step {
    /// Bytes the peer sent; a read takes as many as fit, the rest
    /// stays for the next read.
    Data(&'static [u8]),
    /// As `Data`, owned (the fuzz targets' bytes are not `'static`).
    Owned(Vec<u8>),
    Eof,
    Err(Error),
}

pub(crate) type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub(crate) struct Script {
    pub(crate) reads: VecDeque<Step>,
    /// `spare()` of every accepted `read_some`.
    pub(crate) read_spares: Vec<usize>,
    pub(crate) written: Vec<u8>,
    /// `bytes_len()` of every accepted `write_some`.
    pub(crate) write_lens: Vec<usize>,
    /// Most bytes each write takes, cycling; empty: no limit.
    pub(crate) write_max: Vec<usize>,
    /// The write with this index (0-based) fails with this error.
    pub(crate) write_error: Option<(usize, Error)>,
    /// Refuse the read/write issued after this many accepted ones.
    pub(crate) refuse_read_at: Option<usize>,
    pub(crate) refuse_write_at: Option<usize>,
    pub(crate) refuse_posts: bool,
    pub(crate) posts: usize,
    /// Completions, run by `drive` (never inline).
    pub(crate) queue: VecDeque<Job>,
}

/// An in-memory stream following a script; its completions are queued
/// and run by `drive`, like a context's run loop.
#[derive(Clone, Default)]
pub(crate) struct ScriptStream(pub(crate) Arc<Mutex<Script>>);

impl ScriptStream {
    pub(crate) fn with_reads(reads: impl IntoIterator<Item = Step>) -> Self {
        let s = ScriptStream::default();
        s.0.lock().unwrap().reads.extend(reads);
        s
    }
    pub(crate) fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().unwrap()
    }
    /// Runs queued completions until none is left; returns how many.
    pub(crate) fn drive(&self) -> usize {
        let mut ran = 0;
        loop {
            let job = self.script().queue.pop_front();
            match job {
                Some(job) => job(),
                None => return ran,
            }
            ran += 1;
            assert!(ran < 1_000_000, "runaway operation");
        }
    }
    pub(crate) fn queued(&self) -> usize {
        self.script().queue.len()
    }
}

/// Copies `src` into `buf`'s room and marks it initialised.
pub(crate) fn fill<B: IoBufMut>(buf: &mut B, src: &[u8]) {
    assert!(src.len() <= buf.spare());
    // SAFETY: `src.len() <= spare()` bytes are written at write_ptr,
    // then exactly those are marked initialised.
    unsafe {
        buf.write_ptr()
            .copy_from_nonoverlapping(src.as_ptr(), src.len());
        buf.advance(src.len());
    }
}

impl AsyncReadSome for ScriptStream {
    fn async_read_some<B, F>(
        &self, mut buf: B, handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBufMut,
        F: FnOnce(Result<usize>, B) + Send + 'static,
    {
        let mut s = self.script();
        if s.refuse_read_at == Some(s.read_spares.len()) {
            return Err(Rejected {
                error: Error::PoolFull(crate::Pool::Ops),
                handler: (buf, handler),
            });
        }
        let spare = buf.spare();
        assert!(spare > 0, "composed operations never ask for 0 bytes");
        s.read_spares.push(spare);
        let res = match s.reads.pop_front().expect("unscripted read_some") {
            Step::Data(d) => {
                let n = d.len().min(spare);
                fill(&mut buf, &d[..n]);
                if n < d.len() {
                    s.reads.push_front(Step::Data(&d[n..]));
                }
                Ok(n)
            }
            Step::Owned(d) => {
                let n = d.len().min(spare);
                fill(&mut buf, &d[..n]);
                if n < d.len() {
                    s.reads.push_front(Step::Owned(d[n..].to_vec()));
                }
                Ok(n)
            }
            Step::Eof => Err(Error::Eof),
            Step::Err(e) => Err(e),
        };
        s.queue.push_back(Box::new(move || handler(res, buf)));
        Ok(())
    }
}

impl AsyncWriteSome for ScriptStream {
    fn async_write_some<B, F>(
        &self, buf: B, handler: F,
    ) -> core::result::Result<(), Rejected<(B, F)>>
    where
        B: IoBuf,
        F: FnOnce(Result<usize>, B) + Send + 'static,
    {
        let mut s = self.script();
        let call = s.write_lens.len();
        if s.refuse_write_at == Some(call) {
            return Err(Rejected {
                error: Error::PoolFull(crate::Pool::Ops),
                handler: (buf, handler),
            });
        }
        let len = buf.bytes_len();
        assert!(len > 0, "composed operations never write 0 bytes");
        s.write_lens.push(len);
        let res = match s.write_error {
            Some((at, e)) if at == call => Err(e),
            _ => {
                let max = match s.write_max.len() {
                    0 => usize::MAX,
                    k => s.write_max[call % k],
                };
                let n = len.min(max);
                s.written.extend_from_slice(&buf.as_slice()[..n]);
                Ok(n)
            }
        };
        s.queue.push_back(Box::new(move || handler(res, buf)));
        Ok(())
    }
}

impl Post for ScriptStream {
    fn post_handler<T: Send + 'static>(
        &self, value: T, run: fn(T),
    ) -> core::result::Result<(), Rejected<T>> {
        let mut s = self.script();
        if s.refuse_posts {
            return Err(Rejected {
                error: Error::PoolFull(crate::Pool::Ops),
                handler: value,
            });
        }
        s.posts += 1;
        s.queue.push_back(Box::new(move || run(value)));
        Ok(())
    }
}

/// A fixed-capacity read buffer (works without the `alloc` feature).
pub(crate) struct TestBuf {
    pub(crate) v: Vec<u8>,
    pub(crate) cap: usize,
}

impl TestBuf {
    pub(crate) fn new(cap: usize) -> Self {
        Self::with(b"", cap)
    }
    pub(crate) fn with(init: &[u8], cap: usize) -> Self {
        let mut v = Vec::with_capacity(cap);
        v.extend_from_slice(init);
        TestBuf { v, cap }
    }
}

// SAFETY: a Vec's heap block does not move when the Vec moves.
unsafe impl IoBuf for TestBuf {
    fn read_ptr(&self) -> *const u8 {
        self.v.as_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.v.len()
    }
}

// SAFETY: the room is the Vec's spare capacity, up to `cap`.
unsafe impl IoBufMut for TestBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.v.spare_capacity_mut().as_mut_ptr().cast()
    }
    fn spare(&self) -> usize {
        self.cap - self.v.len()
    }
    unsafe fn advance(&mut self, n: usize) {
        assert!(n <= self.spare());
        // SAFETY: the caller wrote `n` bytes of spare capacity.
        unsafe { self.v.set_len(self.v.len() + n) }
    }
    fn clear(&mut self) {
        self.v.clear()
    }
}

pub(crate) type Out<B> = Arc<Mutex<Option<(Result<usize>, B)>>>;

/// A handler that stores what it is given.
pub(crate) fn catcher<B: Send + 'static>(
) -> (Out<B>, impl FnOnce(Result<usize>, B) + Send + 'static) {
    let out: Out<B> = Arc::new(Mutex::new(None));
    let o = out.clone();
    (out, move |res, buf| *o.lock().unwrap() = Some((res, buf)))
}

/// Starts an operation and checks its handler did not run inline, then
/// drives the stream to the end and returns what the handler got.
pub(crate) fn run_op<B: Send + 'static>(
    s: &ScriptStream,
    start: impl FnOnce(
        Box<dyn FnOnce(Result<usize>, B) + Send>,
    ) -> core::result::Result<
        (),
        Rejected<(B, Box<dyn FnOnce(Result<usize>, B) + Send>)>,
    >,
) -> (Result<usize>, B) {
    let (out, h) = catcher::<B>();
    start(Box::new(h)).expect("operation refused at initiation");
    assert!(out.lock().unwrap().is_none(), "handler ran inline");
    s.drive();
    let got = out.lock().unwrap().take();
    got.expect("handler never ran")
}

pub(crate) fn read_until(
    s: &ScriptStream, buf: TestBuf, delim: &'static [u8],
) -> (Result<usize>, Vec<u8>) {
    let (r, b) = run_op(s, |h| async_read_until(s, buf, delim, h));
    (r, b.v)
}

pub(crate) fn read(s: &ScriptStream, buf: TestBuf, cond: Completion) -> (Result<usize>, Vec<u8>) {
    let (r, b) = run_op(s, |h| async_read(s, buf, cond, h));
    (r, b.v)
}
