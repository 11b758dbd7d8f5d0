//! The model's worker: one dedicated thread owns the [`Engine`] (candle is synchronous) and runs one request at a time
//! from a bounded queue. A full queue refuses the request at once (the server answers 503). A request is dropped
//! without running when its client has gone or its deadline has passed, and stopped between two tokens when either
//! happens while it runs, or when the server shuts down.

use crate::api::retrievals_json;
use crate::engine::{Completion, Engine, GenerateRequest, InvalidRequest, Prompt};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// One request for the worker.
pub struct Job {
    pub prompt: Prompt,
    pub request: GenerateRequest,
    /// When to give up.
    pub deadline: Instant,
    /// Send the text pieces as they come (else only the end).
    pub stream: bool,
    pub events: UnboundedSender<Event>,
}

/// What the worker reports about a job.
#[derive(Debug)]
pub enum Event {
    /// Newly decoded text (streamed jobs only; never empty).
    Piece(String),
    /// The completion and its retrievals as JSON.
    Done(Box<Completion>, serde_json::Value),
    Failed(JobError),
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// The request cannot be served as asked (a 400).
    Invalid(String),
    /// Past its deadline.
    Timeout,
    /// The server is shutting down.
    ShuttingDown,
    /// The engine failed.
    Internal(String),
}

/// Why the worker stopped a generation from inside its callback.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error("the client went away")]
    Cancelled,
    #[error("timeout")]
    Timeout,
    #[error("shutting down")]
    ShuttingDown,
}

/// Handle to the worker thread and its queue.
pub struct Worker {
    tx: Mutex<Option<SyncSender<Job>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
    queued: Arc<AtomicUsize>,
    busy: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    capacity: usize,
}

impl Worker {
    /// Starts the thread; up to `capacity` (at least 1) requests wait while one runs.
    pub fn start(mut engine: Engine, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (tx, rx) = sync_channel::<Job>(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicBool::new(false));
        let shutdown = Arc::new(AtomicBool::new(false));
        let (q, b, s) = (queued.clone(), busy.clone(), shutdown.clone());
        let handle = std::thread::Builder::new()
            .name("retro-model".into())
            .spawn(move || {
                for job in rx {
                    b.store(true, Ordering::SeqCst);
                    q.fetch_sub(1, Ordering::SeqCst);
                    let event = run_job(&mut engine, &job, &s);
                    let _ = job.events.send(event);
                    b.store(false, Ordering::SeqCst);
                }
            })
            .expect("cannot start the model thread");
        Self {
            tx: Mutex::new(Some(tx)),
            handle: Mutex::new(Some(handle)),
            queued,
            busy,
            shutdown,
            capacity,
        }
    }

    /// Queues a job; gives it back when the queue is full or the worker has stopped.
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(Box::new(job));
        };
        self.queued.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                Err(Box::new(job))
            }
        }
    }

    /// Requests waiting (not counting the one running).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Whether a request is running.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stops the running generation at its next token and refuses what is queued (they fail with "shutting down").
    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    /// Closes the queue and waits for the thread to finish.
    pub fn stop(&self) {
        self.begin_shutdown();
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

fn run_job(engine: &mut Engine, job: &Job, shutdown: &AtomicBool) -> Event {
    if shutdown.load(Ordering::SeqCst) {
        return Event::Failed(JobError::ShuttingDown);
    }
    if Instant::now() >= job.deadline {
        return Event::Failed(JobError::Timeout);
    }
    if job.events.is_closed() {
        return Event::Failed(JobError::Internal(Stopped::Cancelled.to_string()));
    }
    let mut on_piece = |piece: &str| -> anyhow::Result<()> {
        if shutdown.load(Ordering::SeqCst) {
            return Err(Stopped::ShuttingDown.into());
        }
        if job.events.is_closed() {
            return Err(Stopped::Cancelled.into());
        }
        if Instant::now() >= job.deadline {
            return Err(Stopped::Timeout.into());
        }
        if job.stream && !piece.is_empty() {
            let _ = job.events.send(Event::Piece(piece.to_string()));
        }
        Ok(())
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        engine.generate(&job.prompt, &job.request, &mut on_piece)
    }));
    match result {
        Ok(Ok(c)) => {
            let retrieval = retrievals_json(engine, &c.retrievals);
            Event::Done(Box::new(c), retrieval)
        }
        Ok(Err(e)) => Event::Failed(match e.downcast_ref::<Stopped>() {
            Some(Stopped::Timeout) => JobError::Timeout,
            Some(Stopped::ShuttingDown) => JobError::ShuttingDown,
            Some(Stopped::Cancelled) => JobError::Internal(Stopped::Cancelled.to_string()),
            None => match e.downcast_ref::<InvalidRequest>() {
                Some(InvalidRequest(m)) => JobError::Invalid(m.clone()),
                None => JobError::Internal(format!("{e:#}")),
            },
        }),
        Err(_) => JobError::Internal("the model panicked".into()).into(),
    }
}

impl From<JobError> for Event {
    fn from(e: JobError) -> Self {
        Event::Failed(e)
    }
}
