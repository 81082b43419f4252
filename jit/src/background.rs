//! Background compilation: a [`Translator`] on its own compiler thread.
//!
//! The vCPU thread hands over [`TranslationJob`]s (plain data) and keeps
//! interpreting the block; the compiler thread translates the newest
//! first and sends back the entry point with its generation. Cranelift's
//! `JITModule` is not `Sync`, so it never leaves the compiler thread: only
//! entry addresses travel back.
//!
//! Flushes keep the dispatcher's protocol: the interpreter calls
//! [`BlockTranslator::flush`] at a block boundary after dropping every
//! block, so nothing of the old generation can run or be installed again;
//! [`Background`] then bumps its own generation at once (answers of the old
//! one still in the channel are dropped) and queues the flush, and the
//! compiler thread frees the old module when it gets there, after the jobs
//! queued before it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use emu_core::interp::{BlockTranslator, Finished, NativeBlock, TranslationJob, TranslationRequest};

use crate::Translator;

enum Msg {
    Job(TranslationJob),
    Flush,
}

struct Done {
    ticket: u64,
    native: Option<NativeBlock>,
    /// The code bytes of the generation after this job.
    code_bytes: usize,
    generation: u64,
}

/// What the two threads share besides the channels.
#[derive(Default)]
struct Shared {
    /// While set, the compiler thread waits before its next message
    /// (tests hold translations in flight with it).
    held: Mutex<bool>,
    wake: Condvar,
    stats: Mutex<Vec<(String, u64)>>,
    /// Messages sent and messages handled.
    sent: AtomicU64,
    handled: AtomicU64,
    /// Jobs a flush dropped before they were compiled.
    dropped: AtomicU64,
    /// Raised when an answer is sent, lowered when the vCPU takes them.
    ready: Arc<std::sync::atomic::AtomicBool>,
}

/// A handle on the compiler thread for tests: hold translations in flight,
/// release them, wait until the queue is empty.
#[derive(Clone)]
pub struct Gate(Arc<Shared>);

impl Gate {
    /// Makes the compiler thread wait before its next message.
    pub fn hold(&self) {
        *self.0.held.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Whether the compiler thread is held.
    pub fn held_now(&self) -> bool {
        *self.0.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets the compiler thread go on.
    pub fn release(&self) {
        *self.0.held.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0.wake.notify_all();
    }

    /// Waits (up to `limit`) until every message sent so far is handled;
    /// whether it was.
    pub fn settle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.0.handled.load(Ordering::Acquire) < self.0.sent.load(Ordering::Acquire) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
}

/// A translator whose compiles run on a compiler thread.
pub struct Background {
    jobs: Option<Sender<Msg>>,
    results: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// The vCPU side's generation, bumped by `flush` before the compiler
    /// thread sees it.
    generation: u64,
    code_bytes: usize,
    /// Answers received while waiting for a synchronous one.
    early: Vec<Finished>,
    next_sync: u64,
    stale: u64,
    hot_threshold: u32,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background").field("generation", &self.generation).finish_non_exhaustive()
    }
}

/// Synchronous requests' tickets, apart from the interpreter's.
const SYNC_TICKET: u64 = 1 << 63;

impl Background {
    /// Moves `translator` to a new compiler thread.
    pub fn new(translator: Translator) -> std::io::Result<Self> {
        let (jobs, inbox) = channel::<Msg>();
        let (outbox, results) = channel::<Done>();
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let generation = translator.generation();
        let hot_threshold = translator.hot_threshold();
        let thread = std::thread::Builder::new().name("popek-jit".into()).spawn(move || compiler(translator, &inbox, &outbox, &theirs))?;
        Ok(Self {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
            shared,
            generation,
            code_bytes: 0,
            early: Vec::new(),
            next_sync: 0,
            stale: 0,
            hot_threshold,
        })
    }

    /// The test handle on the compiler thread.
    pub fn gate(&self) -> Gate {
        Gate(Arc::clone(&self.shared))
    }

    fn send(&mut self, msg: Msg) -> bool {
        self.shared.sent.fetch_add(1, Ordering::AcqRel);
        let ok = self.jobs.as_ref().is_some_and(|j| j.send(msg).is_ok());
        if !ok {
            self.shared.sent.fetch_sub(1, Ordering::AcqRel);
        }
        ok
    }

    /// Takes an answer: `None` when it is of an older generation.
    fn accept(&mut self, d: Done) -> Option<Finished> {
        if d.generation != self.generation {
            self.stale += 1;
            return None;
        }
        self.code_bytes = d.code_bytes;
        Some(Finished { ticket: d.ticket, native: d.native })
    }
}

/// The compiler thread: translates the newest job first (what the guest
/// runs now; a job queued during a burst of start-up code may have gone
/// cold meanwhile), and flushes when asked, dropping the jobs queued
/// before the flush (their answers would be of the old generation).
fn compiler(mut t: Translator, inbox: &Receiver<Msg>, outbox: &Sender<Done>, shared: &Shared) {
    let mut pending: Vec<TranslationJob> = Vec::new();
    loop {
        // Everything sent so far, without waiting unless there is nothing.
        let first = if pending.is_empty() {
            match inbox.recv() {
                Ok(msg) => Some(msg),
                Err(_) => break,
            }
        } else {
            None
        };
        for msg in first.into_iter().chain(std::iter::from_fn(|| inbox.try_recv().ok())) {
            match msg {
                Msg::Job(job) => pending.push(job),
                // The vCPU dropped every block of the old generation before
                // asking, and never installs its answers: its code is unused.
                Msg::Flush => {
                    shared.handled.fetch_add(pending.len() as u64 + 1, Ordering::AcqRel);
                    shared.dropped.fetch_add(pending.len() as u64, Ordering::AcqRel);
                    pending.clear();
                    t.flush();
                }
            }
        }
        {
            let mut held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
            while *held {
                held = shared.wake.wait(held).unwrap_or_else(|e| e.into_inner());
            }
        }
        let Some(job) = pending.pop() else { continue };
        let native = t.translate(&job.request());
        let done = Done { ticket: job.ticket, native, code_bytes: t.code_bytes, generation: t.generation() };
        *shared.stats.lock().unwrap_or_else(|e| e.into_inner()) = t.stats();
        if outbox.send(done).is_err() {
            break;
        }
        shared.ready.store(true, Ordering::Release);
        shared.handled.fetch_add(1, Ordering::AcqRel);
    }
}

impl BlockTranslator for Background {
    fn translate(&mut self, req: &TranslationRequest<'_>) -> Option<NativeBlock> {
        let ticket = SYNC_TICKET | self.next_sync;
        self.next_sync += 1;
        let job = TranslationJob {
            ticket,
            rip: req.rip,
            bitness: req.bitness,
            instructions: req.instructions.to_vec(),
            long_mode: req.long_mode,
            helpers: req.helpers,
            links: req.links,
            blocks: req.blocks.to_vec(),
            journal_writes: req.journal_writes,
            optimized_slot: req.optimized_slot,
            optimize: req.optimize,
            identity_pages: req.identity_pages,
            misses_to_interpreter: req.misses_to_interpreter,
        };
        if !self.send(Msg::Job(job)) {
            return None;
        }
        while let Ok(d) = self.results.recv() {
            let Some(f) = self.accept(d) else { continue };
            if f.ticket == ticket {
                return f.native;
            }
            self.early.push(f);
        }
        None
    }

    fn submit(&mut self, job: TranslationJob) -> Result<(), TranslationJob> {
        let Some(jobs) = &self.jobs else { return Err(job) };
        self.shared.sent.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = jobs.send(Msg::Job(job)) {
            self.shared.sent.fetch_sub(1, Ordering::AcqRel);
            if let Msg::Job(job) = e.0 {
                return Err(job);
            }
        }
        Ok(())
    }

    fn finished(&mut self, out: &mut Vec<Finished>) {
        // Lowered first: an answer sent while draining raises it again.
        self.shared.ready.store(false, Ordering::Release);
        out.append(&mut self.early);
        while let Ok(d) = self.results.try_recv() {
            if let Some(f) = self.accept(d) {
                out.push(f);
            }
        }
    }

    fn results_flag(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        Some(Arc::clone(&self.shared.ready))
    }

    fn wants_flush(&self) -> bool {
        self.code_bytes > crate::CODE_LIMIT
    }

    fn flush(&mut self) {
        self.generation += 1;
        self.code_bytes = 0;
        self.early.clear();
        self.send(Msg::Flush);
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn hot_threshold(&self) -> u32 {
        self.hot_threshold
    }

    fn stats(&self) -> Vec<(String, u64)> {
        let mut v = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.push(("stale answers dropped".into(), self.stale));
        v.push(("jobs dropped by flushes".into(), self.shared.dropped.load(Ordering::Acquire)));
        v
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Closing the queue ends the thread; a held gate must not keep it.
        self.jobs = None;
        *self.shared.held.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
