//! Threads that tokenize requests before they are queued for a model.
//!
//! Tokenizing a long prompt takes tens of milliseconds. On a model thread it
//! would stall every running stream; on the async executor it would stall
//! every connection of that HTTP worker. So validation hands it to this pool
//! (as TGI's and TEI's validation stages do) and the model threads see only
//! token ids. The pool's queue is bounded: when it is full, the caller is
//! told at once rather than piling up prompts in memory.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

type Work = Box<dyn FnOnce() + Send>;

/// Why a piece of work got no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the tokenizer queue is full")]
    Full,
    /// The work panicked, or the pool has stopped.
    #[error("tokenizing failed: {0}")]
    Failed(String),
}

/// A fixed set of threads sharing one bounded queue; cheap to clone.
#[derive(Clone)]
pub struct TokenizerPool {
    sender: SyncSender<Work>,
}

impl TokenizerPool {
    /// Starts `threads` threads (at least one) with room for `queue_size`
    /// waiting jobs.
    pub fn new(threads: usize, queue_size: usize) -> std::io::Result<TokenizerPool> {
        let (sender, receiver) = mpsc::sync_channel::<Work>(queue_size);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = receiver.clone();
            thread::Builder::new()
                .name(format!("tokenizer-{index}"))
                .spawn(move || serve(&receiver))?;
        }
        Ok(TokenizerPool { sender })
    }

    /// Runs `work` on a pool thread and waits for its result without
    /// blocking the caller's executor.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (reply, result) = oneshot::channel();
        let job: Work = Box::new(move || {
            let _ = reply.send(work());
        });
        match self.sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PoolError::Full),
            Err(TrySendError::Disconnected(_)) => {
                return Err(PoolError::Failed("the tokenizer threads stopped".into()))
            }
        }
        // A panicking job drops its reply sender, which ends up here.
        result
            .await
            .map_err(|_| PoolError::Failed("the tokenizer panicked on this input".into()))
    }
}

fn serve(receiver: &Mutex<Receiver<Work>>) {
    loop {
        // Hold the lock only to take a job, never while running it.
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        // One bad input must not take a thread away from everyone else.
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a tokenizer job panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_survives_a_panic() {
        let pool = TokenizerPool::new(1, 4).expect("pool starts");
        assert_eq!(pool.run(|| 2 + 2).await, Ok(4));
        let panicked = pool.run(|| -> i32 { panic!("bad input") }).await;
        assert!(matches!(panicked, Err(PoolError::Failed(_))));
        // The one thread is still there.
        assert_eq!(pool.run(|| "after").await, Ok("after"));
    }

    // Two runtime threads: the test blocks one waiting for the pool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_at_once() {
        let pool = TokenizerPool::new(1, 1).expect("pool starts");
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        // Occupy the only thread, then the only queue slot.
        let busy = pool.clone();
        let first = tokio::spawn(async move {
            busy.run(move || {
                let _ = started.send(());
                let _ = blocked.recv();
            })
            .await
        });
        running.recv().expect("the first job runs");
        pool.sender
            .try_send(Box::new(|| ()))
            .expect("one queue slot is free");
        assert_eq!(pool.run(|| ()).await, Err(PoolError::Full));
        release.send(()).expect("release");
        first.await.expect("joined").expect("first ran");
    }
}
