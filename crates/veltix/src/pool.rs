//! The handler pool: `max_workers` OS threads running user callbacks, with one ordered queue per
//! connection so that messages of one connection are handled in arrival order while different
//! connections are handled in parallel.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::conn::lock;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use tokio::sync::Notify;

/// How many jobs a worker runs from one connection before letting others have a turn.
const BATCH: usize = 64;

thread_local! {
    static IN_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a handler-pool thread (i.e. inside a user handler).
pub(crate) fn in_worker() -> bool {
    IN_WORKER.with(|w| w.get())
}

/// Something a worker can run.
pub(crate) trait Task: Send + Sync {
    fn run(self: Arc<Self>);
}

/// A fixed pool of worker threads fed by an MPMC channel.
pub(crate) struct Pool {
    tx: Sender<Arc<dyn Task>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(crate) fn new(workers: usize, name: &str) -> Pool {
        let (tx, rx) = crossbeam_channel::unbounded::<Arc<dyn Task>>();
        let threads = (0..workers.max(1))
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        IN_WORKER.with(|w| w.set(true));
                        while let Ok(task) = rx.recv() {
                            task.run();
                        }
                    })
                    .unwrap_or_else(|e| panic!("cannot spawn a veltix worker thread: {e}"))
            })
            .collect();
        Pool { tx, threads }
    }

    pub(crate) fn sender(&self) -> Sender<Arc<dyn Task>> {
        self.tx.clone()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Workers end once every queue holding a sender is gone and the channel is empty;
        // they are detached so that dropping a Server from inside a handler cannot deadlock.
        self.threads.clear();
    }
}

/// Runs a batch of jobs of one connection, in order (so per-batch work, such as taking the
/// handler snapshot, is done once). Each user callback should run inside [`guarded`].
pub(crate) type Runner<J> = Arc<dyn Fn(Vec<J>) + Send + Sync>;

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
    pool: Sender<Arc<dyn Task>>,
    /// Signalled when the queue drains below half its byte limit (reader backpressure).
    pub(crate) space: Notify,
    limit: usize,
}

impl<J: Send + 'static> SerialQueue<J> {
    pub(crate) fn new(pool: &Pool, runner: Runner<J>, limit: usize) -> Arc<Self> {
        Arc::new(SerialQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                scheduled: false,
                bytes: 0,
            }),
            runner,
            pool: pool.sender(),
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
            let _ = self.pool.send(self.clone() as Arc<dyn Task>);
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

impl<J: Send + 'static> Task for SerialQueue<J> {
    fn run(self: Arc<Self>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            {
                let mut st = lock(&self.state);
                while batch.len() < BATCH {
                    match st.jobs.pop_front() {
                        Some(j) => batch.push(j),
                        None => break,
                    }
                }
            }
            let done: usize = batch.iter().map(|(_, w)| w).sum();
            let jobs: Vec<J> = batch.drain(..).map(|(j, _)| j).collect();
            guarded(|| (self.runner)(jobs));
            {
                let mut st = lock(&self.state);
                st.bytes -= done;
                if st.bytes <= self.limit / 2 {
                    self.space.notify_one();
                }
                if st.jobs.is_empty() {
                    st.scheduled = false;
                    return;
                }
            }
            // More jobs: keep going on this thread unless other connections wait for a worker
            // (then take a turn at the back of the line). Handing the queue to another thread
            // after every batch cost a thread switch per 64 messages in a burst.
            if !self.pool.is_empty() {
                let _ = self.pool.send(self.clone() as Arc<dyn Task>);
                return;
            }
        }
    }
}
