//! The response stream of a watch: the subscriber's buffered messages,
//! then the error it ended with.
//!
//! The final status does not go through the bounded buffer, so it is never
//! lost when the buffer is full: the client receives every buffered message
//! and then the status (with the cursor to resume from).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use super::{WatchError, encoded::Encoded};

/// What the subscriber task holds: the buffer's sending side and the slot
/// for the final status.
pub(super) struct Outlet {
    pub messages: mpsc::Sender<Encoded>,
    pub end: oneshot::Sender<WatchError>,
}

/// The stream tonic sends to the client.
pub struct ResponseStream {
    messages: mpsc::Receiver<Encoded>,
    end: Option<oneshot::Receiver<WatchError>>,
}

/// A bounded buffer of `capacity` messages and its final-status slot.
pub(super) fn channel(capacity: usize) -> (Outlet, ResponseStream) {
    let (messages_tx, messages) = mpsc::channel(capacity.max(1));
    let (end_tx, end) = oneshot::channel();
    (
        Outlet {
            messages: messages_tx,
            end: end_tx,
        },
        ResponseStream {
            messages,
            end: Some(end),
        },
    )
}

impl Stream for ResponseStream {
    type Item = Result<Encoded, WatchError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.messages.poll_recv(cx) {
            Poll::Ready(Some(message)) => return Poll::Ready(Some(Ok(message))),
            Poll::Pending => return Poll::Pending,
            // The subscriber is done: its status, if it left one, comes last.
            Poll::Ready(None) => {}
        }
        let Some(end) = this.end.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(end).poll(cx) {
            Poll::Ready(Ok(error)) => {
                this.end = None;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(Err(_)) => {
                this.end = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
