//! The handler pool: ONE process-wide set of OS threads running user callbacks for every
//! `Server` and `Client` of the process, with one ordered queue per connection so that messages
//! of one connection are handled in arrival order while different connections are handled in
//! parallel.
//!
//! Sizing: every server and client *claims* its `max_workers` ([`Claim`]); the pool runs
//! handlers on as many threads as the largest claim (default [`DEFAULT_HANDLER_THREADS`]),
//! unless [`set_handler_threads`] or `VELTIX_HANDLER_THREADS` fixes the size. Threads are
//! started on demand; threads above the size exit after [`IDLE_EXIT`] idle.
//!
//! A handler that blocks inside the runtime (a `send_and_wait` or ping from a handler, a blocking
//! `close_all`...) goes through [`blocking`]: while it waits, a stand-in thread may run other
//! connections' handlers, so N handlers waiting on replies handled by the same pool of N threads
//! do not deadlock.
//!
//! Async handlers do not hold a thread while they wait: the handler defers its future with
//! [`defer`], the connection's queue stops there, the future runs as a task on the runtime, and
//! the queue resumes (on the pool) when it ended.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::util::lock;

use crossbeam_channel::{Receiver, Sender};
use tokio::runtime::Handle;
use tokio::sync::Notify;

/// How many jobs a worker runs from one connection before letting others have a turn.
const BATCH: usize = 64;

/// The handler pool's size when nothing claimed another one and nothing overrides it.
///
/// ```
/// assert_eq!(veltix::DEFAULT_HANDLER_THREADS, 4);
/// ```
pub const DEFAULT_HANDLER_THREADS: usize = 4;

/// How long a thread above the pool's size stays idle before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

thread_local! {
    static IN_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This worker is inside [`blocking`] (not counted as running).
    static BLOCKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Futures deferred by the handler running on this thread (see [`defer`]); `None` when no
    /// queue is running here (a deferred future is then spawned detached).
    static DEFERRED: std::cell::RefCell<Option<Vec<Deferred>>> = const { std::cell::RefCell::new(None) };
}

/// True on a handler-pool thread (i.e. inside a user handler).
pub(crate) fn in_worker() -> bool {
    IN_WORKER.with(|w| w.get())
}

/// Something a worker can run.
pub(crate) trait Task: Send + Sync {
    fn run(self: Arc<Self>);
}

/// The pool's slow-path bookkeeping, under one lock: taken only to start, wake or retire a
/// thread and to change the size, never to queue or take a task.
struct Control {
    /// Claims (size -> how many servers/clients claim it).
    claims: BTreeMap<usize, usize>,
    /// `set_handler_threads` / `VELTIX_HANDLER_THREADS`.
    fixed: Option<usize>,
    /// Threads parked because the pool had more active threads than its size (a handler came
    /// back from [`blocking`] while a stand-in ran); they exit after [`IDLE_EXIT`] unless woken.
    parked: usize,
    /// Parked threads told to become active again (taken by the woken threads).
    grants: usize,
    next_name: usize,
}

impl Control {
    fn size(&self) -> usize {
        self.fixed
            .or_else(|| self.claims.keys().next_back().copied())
            .unwrap_or(DEFAULT_HANDLER_THREADS)
            .max(1)
    }
}

/// The process-wide pool. Tasks go through a crossbeam channel (lock-free, and a worker that
/// just finished spins briefly before it parks, so a busy pool takes its next task without a
/// futex round trip); the counts the hot path reads are atomics.
struct Global {
    tx: Sender<Arc<dyn Task>>,
    rx: Receiver<Arc<dyn Task>>,
    /// Threads running a task (and not inside [`blocking`]) or waiting on the channel: the
    /// pool keeps this at most `size`, apart from handlers that came back from [`blocking`]
    /// and finish their task first.
    active: AtomicUsize,
    /// Threads waiting on the channel.
    idle: AtomicUsize,
    /// `Control::size()`, cached for the hot path.
    size: AtomicUsize,
    ctl: Mutex<Control>,
    /// Parked (excess) threads wait here for a grant.
    unpark: Condvar,
}

fn global() -> &'static Global {
    static POOL: OnceLock<Global> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded();
        let ctl = Control {
            claims: BTreeMap::new(),
            fixed: env_threads(),
            parked: 0,
            grants: 0,
            next_name: 0,
        };
        Global {
            tx,
            rx,
            active: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            size: AtomicUsize::new(ctl.size()),
            ctl: Mutex::new(ctl),
            unpark: Condvar::new(),
        }
    })
}

fn env_threads() -> Option<usize> {
    std::env::var("VELTIX_HANDLER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
}

/// Fixes the size of the process-wide handler pool (`Some(n)`, at least 1) or lets it follow
/// the servers' and clients' claims again (`None`: the largest `max_workers` of the live
/// servers and clients, [`DEFAULT_HANDLER_THREADS`] when there are none). The environment
/// variable `VELTIX_HANDLER_THREADS` sets the initial value. Threads above a smaller size exit
/// once idle for about 10 seconds.
///
/// ```
/// veltix::set_handler_threads(Some(8));
/// assert_eq!(veltix::handler_threads(), 8);
/// veltix::set_handler_threads(None); // back to automatic
/// ```
pub fn set_handler_threads(threads: Option<usize>) {
    let g = global();
    let mut ctl = lock(&g.ctl);
    ctl.fixed = threads.map(|n| n.max(1));
    resized(g, &mut ctl);
}

/// How many threads the process-wide handler pool runs handlers on now (stand-ins for handlers
/// blocked in a request or ping not counted); see [`set_handler_threads`].
///
/// ```
/// let _server = veltix::Server::new(veltix::ServerConfig::local().max_workers(6));
/// assert!(veltix::handler_threads() >= 1);
/// ```
pub fn handler_threads() -> usize {
    lock(&global().ctl).size()
}

/// The size may have changed: cache it and give queued tasks the threads it now allows.
fn resized(g: &'static Global, ctl: &mut Control) {
    g.size.store(ctl.size(), SeqCst);
    while !g.rx.is_empty() && g.idle.load(SeqCst) == 0 && grow(g, ctl) {}
}

/// Makes one more thread active (a parked one if any, else a new one) if the pool is below
/// its size. False when it is not (or no thread could be started).
fn grow(g: &'static Global, ctl: &mut Control) -> bool {
    if g.active.load(SeqCst) >= ctl.size() {
        return false;
    }
    if ctl.parked > ctl.grants {
        ctl.grants += 1;
        g.active.fetch_add(1, SeqCst);
        g.unpark.notify_one();
        return true;
    }
    let name = format!("veltix-worker-{}", ctl.next_name);
    ctl.next_name += 1;
    g.active.fetch_add(1, SeqCst);
    match std::thread::Builder::new()
        .name(name)
        .spawn(move || worker(g))
    {
        Ok(_) => true,
        Err(e) => {
            g.active.fetch_sub(1, SeqCst);
            tracing::error!("cannot start a veltix handler thread: {e}");
            false
        }
    }
}

/// Called after a task was queued or a thread stopped taking tasks: when tasks wait, no
/// thread waits on the channel and the pool is below its size, one more thread is made active.
/// The checks before the lock keep this off the hot path.
fn ensure_taker(g: &'static Global) {
    // Orders this thread's queue push or `idle` decrement before the loads below, so that of a
    // submitter and a worker racing, at least one sees the other (the channel's own atomics
    // are not relied on for this).
    std::sync::atomic::fence(SeqCst);
    if g.rx.is_empty() || g.idle.load(SeqCst) > 0 || g.active.load(SeqCst) >= g.size.load(SeqCst) {
        return;
    }
    let mut ctl = lock(&g.ctl);
    if g.idle.load(SeqCst) == 0 {
        grow(g, &mut ctl);
    }
}

fn worker(g: &'static Global) {
    IN_WORKER.with(|w| w.set(true));
    loop {
        g.idle.fetch_add(1, SeqCst);
        let got = g.rx.recv_timeout(IDLE_EXIT);
        g.idle.fetch_sub(1, SeqCst);
        match got {
            Ok(task) => {
                // More tasks behind this one and nobody else waiting for them: make sure
                // another thread takes them while this one runs.
                ensure_taker(g);
                run_tasks(g, task);
                // A handler that came back from `blocking` while a stand-in ran, or a smaller
                // size: one thread too many is active; this one steps aside.
                if g.active.load(SeqCst) > g.size.load(SeqCst) && !park(g) {
                    return;
                }
            }
            // Idle for long: exit if the pool has more active threads than its size.
            Err(_) => {
                // Under the lock, so that two idle threads cannot both see one too many.
                let ctl = lock(&g.ctl);
                if g.active.load(SeqCst) > ctl.size() {
                    g.active.fetch_sub(1, SeqCst);
                    return;
                }
            }
        }
    }
}

/// How many tasks one worker runs back to back (inside one call of the run wrapper) before it
/// looks at the channel afresh.
const MAX_RUN: usize = 64;

/// See [`wrap_handler_runs`].
static RUN_WRAPPER: OnceLock<fn(&mut dyn FnMut())> = OnceLock::new();

/// Wraps every *run* of the process-wide handler pool: a worker thread that takes a task runs
/// it, then the tasks already queued behind it (up to 64), back to back inside one call of
/// `wrapper`, which must call the closure it is given exactly once. For embeddings that pay a
/// price to enter user code: the Python package takes the GIL once per run instead of once
/// per connection's batch, so a busy pool does not hand the GIL between its threads after
/// every batch. Set once per process; false if a wrapper was already set.
///
/// A worker never waits for work inside the wrapper: when nothing is queued the run ends (and
/// the wrapper returns) before the thread blocks.
///
/// ```
/// fn around(run: &mut dyn FnMut()) {
///     // enter the embedding's context here
///     run();
///     // and leave it here
/// }
/// veltix::wrap_handler_runs(around);
/// assert!(!veltix::wrap_handler_runs(around), "set once per process");
/// ```
pub fn wrap_handler_runs(wrapper: fn(&mut dyn FnMut())) -> bool {
    RUN_WRAPPER.set(wrapper).is_ok()
}

/// Runs `first`, then what is already queued (see [`wrap_handler_runs`]), stopping early when
/// the pool has more active threads than its size (this thread is then to step aside).
fn run_tasks(g: &'static Global, first: Arc<dyn Task>) {
    let mut next = Some(first);
    let mut run = || {
        let mut ran = 0;
        while let Some(task) = next.take() {
            if catch_unwind(AssertUnwindSafe(|| task.run())).is_err() {
                tracing::error!("a veltix handler task panicked; the pool goes on");
            }
            ran += 1;
            if ran == MAX_RUN || g.active.load(SeqCst) > g.size.load(SeqCst) {
                return;
            }
            next = g.rx.try_recv().ok();
            if next.is_some() {
                ensure_taker(g);
            }
        }
    };
    match RUN_WRAPPER.get() {
        Some(wrapper) => wrapper(&mut run),
        None => run(),
    }
}

/// Parks a thread that is one too many; true when it was made active again, false when it
/// should exit (idle for [`IDLE_EXIT`]).
fn park(g: &'static Global) -> bool {
    let mut ctl = lock(&g.ctl);
    if g.active.load(SeqCst) <= ctl.size() {
        return true;
    }
    g.active.fetch_sub(1, SeqCst);
    ctl.parked += 1;
    let deadline = std::time::Instant::now() + IDLE_EXIT;
    loop {
        if ctl.grants > 0 {
            ctl.grants -= 1;
            ctl.parked -= 1;
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            ctl.parked -= 1;
            return false;
        }
        ctl = g
            .unpark
            .wait_timeout(ctl, left)
            .map(|(c, _)| c)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}

/// Queues a task for the pool.
fn submit(task: Arc<dyn Task>) {
    let g = global();
    // The channel lives as long as the process (`global` holds both ends).
    let _ = g.tx.send(task);
    ensure_taker(g);
}

/// True when tasks wait for a worker.
fn others_waiting() -> bool {
    !global().rx.is_empty()
}

/// Runs `f`, which blocks (waits for a reply, a runtime task...), without starving the pool: on
/// a handler thread, the thread stops counting towards the pool's size while `f` runs, so a
/// stand-in worker may run other handlers meanwhile. Elsewhere it just runs `f`.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    if !in_worker() || BLOCKED.with(|b| b.get()) {
        return f();
    }
    struct Resume;
    impl Drop for Resume {
        fn drop(&mut self) {
            BLOCKED.with(|b| b.set(false));
            global().active.fetch_add(1, SeqCst);
        }
    }
    BLOCKED.with(|b| b.set(true));
    let g = global();
    g.active.fetch_sub(1, SeqCst);
    ensure_taker(g);
    let _resume = Resume;
    f()
}

/// A server's or client's claim on the pool's size (its `max_workers`), released on drop.
pub(crate) struct Claim(usize);

impl Claim {
    pub(crate) fn new(workers: usize) -> Claim {
        let workers = workers.max(1);
        let g = global();
        let mut ctl = lock(&g.ctl);
        *ctl.claims.entry(workers).or_insert(0) += 1;
        resized(g, &mut ctl);
        Claim(workers)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let g = global();
        let mut ctl = lock(&g.ctl);
        if let Some(n) = ctl.claims.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                ctl.claims.remove(&self.0);
            }
        }
        resized(g, &mut ctl);
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Deferred {
    rt: Handle,
    fut: BoxFuture,
}

/// Hands the future of an async handler to the connection's queue: the rest of the queue waits
/// until it ended (per-connection order), and it runs as a task on `rt`, not on a pool thread.
/// Outside a queue's run it is simply spawned.
pub(crate) fn defer(rt: Handle, fut: impl Future<Output = ()> + Send + 'static) {
    let fut: BoxFuture = Box::pin(CatchUnwind(Box::pin(fut)));
    let fut = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(list) => {
            list.push(Deferred { rt, fut });
            None
        }
        None => Some((rt, fut)),
    });
    if let Some((rt, fut)) = fut {
        rt.spawn(fut);
    }
}

/// True when the handler that just ran on this thread deferred a future: the runner must stop
/// its batch there (the remaining jobs wait for the future).
pub(crate) fn deferred() -> bool {
    DEFERRED.with(|d| d.borrow().as_ref().is_some_and(|l| !l.is_empty()))
}

/// Polls a future, containing (and logging) a panic like [`guarded`] does.
struct CatchUnwind(BoxFuture);

impl Future for CatchUnwind {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(_) => {
                tracing::error!(
                    "a veltix async handler panicked; the connection and the pool go on"
                );
                Poll::Ready(())
            }
        }
    }
}

/// Runs a batch of jobs of one connection, in order (so per-batch work, such as taking the
/// handler snapshot, is done once), taking them from the front of the deque. It stops early
/// (leaving the rest in the deque) when a handler deferred a future ([`deferred`]). Each user
/// callback should run inside [`guarded`].
pub(crate) type Runner<J> = Arc<dyn Fn(&mut VecDeque<J>) + Send + Sync>;

/// Runs a user callback; a panic is logged and contained (the connection and the pool go on).
pub(crate) fn guarded(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!("a veltix handler panicked; the connection and the pool go on");
    }
}

struct QueueState<J> {
    jobs: VecDeque<(J, usize)>,
    scheduled: bool,
    bytes: usize,
}

/// An ordered queue of jobs of one connection, executed on the pool one at a time.
pub(crate) struct SerialQueue<J: Send + 'static> {
    state: Mutex<QueueState<J>>,
    runner: Runner<J>,
    /// Signalled when the queue drains below half its byte limit (reader backpressure).
    pub(crate) space: Notify,
    limit: usize,
}

impl<J: Send + 'static> SerialQueue<J> {
    pub(crate) fn new(runner: Runner<J>, limit: usize) -> Arc<Self> {
        Arc::new(SerialQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                scheduled: false,
                bytes: 0,
            }),
            runner,
            space: Notify::new(),
            limit,
        })
    }

    /// Queues jobs (each with its weight in bytes) and schedules the queue if it was idle.
    pub(crate) fn push_many(self: &Arc<Self>, jobs: impl IntoIterator<Item = (J, usize)>) {
        let schedule = {
            let mut st = lock(&self.state);
            for (j, w) in jobs {
                st.bytes += w;
                st.jobs.push_back((j, w));
            }
            if st.scheduled || st.jobs.is_empty() {
                false
            } else {
                st.scheduled = true;
                true
            }
        };
        if schedule {
            submit(self.clone() as Arc<dyn Task>);
        }
    }

    pub(crate) fn push(self: &Arc<Self>, job: J, weight: usize) {
        self.push_many(std::iter::once((job, weight)));
    }

    /// True while more than `limit` bytes wait for handlers.
    pub(crate) fn over_limit(&self) -> bool {
        lock(&self.state).bytes > self.limit
    }
}

/// Puts a queue back on the pool when dropped: after its deferred futures ended, or if the
/// runtime dropped them (shutdown), so a queue is never left scheduled with nobody running it.
struct Resume<J: Send + 'static>(Arc<SerialQueue<J>>);

impl<J: Send + 'static> Drop for Resume<J> {
    fn drop(&mut self) {
        submit(self.0.clone() as Arc<dyn Task>);
    }
}

/// Clears this thread's deferral slot when a run ends, even by a panic.
struct DeferScope;

impl DeferScope {
    fn enter() -> DeferScope {
        DEFERRED.with(|d| *d.borrow_mut() = Some(Vec::new()));
        DeferScope
    }
    fn take(&self) -> Vec<Deferred> {
        DEFERRED.with(|d| {
            d.borrow_mut()
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
    }
}

impl Drop for DeferScope {
    fn drop(&mut self) {
        DEFERRED.with(|d| *d.borrow_mut() = None);
    }
}

impl<J: Send + 'static> Task for SerialQueue<J> {
    fn run(self: Arc<Self>) {
        let scope = DeferScope::enter();
        let mut jobs = VecDeque::with_capacity(BATCH);
        let mut weights = VecDeque::with_capacity(BATCH);
        loop {
            {
                let mut st = lock(&self.state);
                while jobs.len() < BATCH {
                    match st.jobs.pop_front() {
                        Some((j, w)) => {
                            jobs.push_back(j);
                            weights.push_back(w);
                        }
                        None => break,
                    }
                }
            }
            if jobs.is_empty() {
                // Resumed after deferred futures with nothing queued since.
                let mut st = lock(&self.state);
                if st.jobs.is_empty() {
                    st.scheduled = false;
                    return;
                }
                continue;
            }
            let taken = jobs.len();
            guarded(|| (self.runner)(&mut jobs));
            let ran = taken.saturating_sub(jobs.len());
            let done: usize = weights.drain(..ran).sum();
            let later = scope.take();
            {
                let mut st = lock(&self.state);
                // Jobs the runner did not reach (a handler deferred a future) go back in front.
                for (j, w) in jobs.drain(..).zip(weights.drain(..)).rev() {
                    st.jobs.push_front((j, w));
                }
                st.bytes -= done;
                if st.bytes <= self.limit / 2 {
                    self.space.notify_one();
                }
                if later.is_empty() && st.jobs.is_empty() {
                    st.scheduled = false;
                    return;
                }
            }
            if !later.is_empty() {
                // Still `scheduled`: nothing else of this connection runs until the futures
                // ended, then `Resume` puts the queue back on the pool.
                let resume = Resume(self.clone());
                let rt = later[0].rt.clone();
                rt.spawn(async move {
                    let _resume = resume;
                    for d in later {
                        d.fut.await;
                    }
                });
                return;
            }
            // More jobs: keep going on this thread unless other connections wait for a worker
            // (then take a turn at the back of the line). Handing the queue to another thread
            // after every batch cost a thread switch per 64 messages in a burst.
            if others_waiting() {
                submit(self.clone() as Arc<dyn Task>);
                return;
            }
        }
    }
}
