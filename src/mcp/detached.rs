//! A future polled where it is awaited, which, if dropped unfinished (its
//! request went away), is cancelled and left to finish in a task: what it
//! does on cancellation (tell the upstream, write the audit line) still
//! happens. Polling in place spares the spawn and the hand-off between
//! threads that a task per call costs on every call.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct DetachOnDrop<F: Future + Send + 'static>
where
    F::Output: Send,
{
    running: Option<Pin<Box<F>>>,
    /// Cancelled when the future is dropped unfinished.
    cancel: CancellationToken,
}

impl<F: Future + Send + 'static> DetachOnDrop<F>
where
    F::Output: Send,
{
    pub fn new(future: F, cancel: CancellationToken) -> Self {
        DetachOnDrop {
            running: Some(Box::pin(future)),
            cancel,
        }
    }

    /// The rest of the future in a task of its own (`None` once finished).
    pub fn into_task(mut self) -> Option<JoinHandle<F::Output>> {
        self.running.take().map(tokio::spawn)
    }
}

impl<F: Future + Send + 'static> Future for DetachOnDrop<F>
where
    F::Output: Send,
{
    /// `None` when polled again after it finished.
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(running) = self.running.as_mut() else {
            return Poll::Ready(None);
        };
        let output = std::task::ready!(running.as_mut().poll(cx));
        self.running = None;
        Poll::Ready(Some(output))
    }
}

impl<F: Future + Send + 'static> Drop for DetachOnDrop<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.cancel.cancel();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(running);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    #[tokio::test]
    async fn a_finished_future_gives_its_output_once() {
        let mut running = DetachOnDrop::new(async { 7 }, CancellationToken::new());
        assert_eq!((&mut running).await, Some(7));
        assert_eq!((&mut running).await, None);
        assert!(running.into_task().is_none());
    }

    #[tokio::test]
    async fn dropped_unfinished_it_is_cancelled_and_still_finishes() {
        let cancel = CancellationToken::new();
        let (done, finished) = (Arc::new(AtomicBool::new(false)), tokio::sync::Notify::new());
        let finished = Arc::new(finished);
        let (seen, notify) = (done.clone(), finished.clone());
        let token = cancel.clone();
        let running = DetachOnDrop::new(
            async move {
                token.cancelled().await;
                seen.store(true, Ordering::SeqCst);
                notify.notify_one();
            },
            cancel.clone(),
        );
        let polled = tokio::time::timeout(std::time::Duration::from_millis(20), running).await;
        assert!(polled.is_err(), "it cannot finish before it is cancelled");
        assert!(cancel.is_cancelled());
        tokio::time::timeout(std::time::Duration::from_secs(5), finished.notified())
            .await
            .expect("the rest ran in a task");
        assert!(done.load(Ordering::SeqCst));
    }
}
