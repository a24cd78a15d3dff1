//! Coalescing of placements from the front doors: one queue per shard that the shard drains in
//! one step, so that concurrent requests share one mailbox message, one log batch and one group
//! commit, and come back through one reply per submission.
//!
//! Smart batching, never a timer: a submitter appends to the queue and, only when no wake-up
//! is outstanding, sends the shard one `Drain` message. The shard takes everything queued when
//! it handles that message (which clears the flag), so whatever arrives while it works goes
//! out with the next wake-up, the moment the previous one was taken. Under load a shard sees
//! one message per round however many requests arrive; idle, a request costs one message as
//! before.
//!
//! Bounded: at most `capacity_orders` orders wait in a shard's queue; past that a submission is
//! refused at once (the front doors answer 503 `unavailable`).

use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::domain::{CommandError, OrderView, PlaceOrder};

/// The outcome of each placement of a submission, in submission order.
pub type PlaceOutcomes = Vec<Result<OrderView, CommandError>>;

/// Placements handed over together, answered together.
pub struct Submission {
    pub places: Vec<PlaceOrder>,
    pub reply: oneshot::Sender<Result<PlaceOutcomes, CommandError>>,
}

#[derive(Default)]
struct Queue {
    submissions: Vec<Submission>,
    orders: usize,
    /// A `Drain` was sent and not yet taken by the shard.
    signaled: bool,
}

/// One shard's queue of placements.
pub struct Inbox {
    queue: Mutex<Queue>,
    capacity_orders: usize,
}

/// What [`Inbox::push`] asks of the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; a wake-up is outstanding already.
    Queued,
    /// Queued; the caller must send the shard a `Drain`.
    Wake,
}

impl Inbox {
    pub fn new(capacity_orders: usize) -> Inbox {
        Inbox {
            queue: Mutex::new(Queue::default()),
            capacity_orders: capacity_orders.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a submission, or gives it back when the queue would hold more than its capacity
    /// (a submission larger than the whole capacity is taken when the queue is empty, so a
    /// bounded batch is never refused forever).
    pub fn push(&self, submission: Submission) -> Result<Pushed, Submission> {
        let mut queue = self.lock();
        let count = submission.places.len();
        if queue.orders > 0 && queue.orders + count > self.capacity_orders {
            return Err(submission);
        }
        queue.orders += count;
        queue.submissions.push(submission);
        if queue.signaled {
            Ok(Pushed::Queued)
        } else {
            queue.signaled = true;
            Ok(Pushed::Wake)
        }
    }

    /// Takes everything queued (the shard, handling a `Drain` or starting): later pushes send a
    /// new wake-up.
    pub fn take(&self) -> Vec<Submission> {
        let mut queue = self.lock();
        queue.signaled = false;
        queue.orders = 0;
        std::mem::take(&mut queue.submissions)
    }

    /// Orders waiting.
    pub fn queued_orders(&self) -> usize {
        self.lock().orders
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CustomerId;

    fn submission(
        n: usize,
    ) -> (
        Submission,
        oneshot::Receiver<Result<PlaceOutcomes, CommandError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let place = PlaceOrder {
            refusal: None,
            customer_id: CustomerId::new(0, 1),
            lines: Vec::new(),
            shipping_address: None,
            note: None,
            idempotency: None,
            actor: "k".into(),
        };
        (
            Submission {
                places: vec![place; n],
                reply,
            },
            answer,
        )
    }

    #[test]
    fn one_wake_up_per_round_and_a_bound_in_orders() {
        let inbox = Inbox::new(10);
        assert_eq!(inbox.push(submission(4).0).ok(), Some(Pushed::Wake));
        assert_eq!(inbox.push(submission(4).0).ok(), Some(Pushed::Queued));
        // 8 + 4 > 10: refused, and the queue is unchanged.
        assert!(inbox.push(submission(4).0).is_err());
        assert_eq!(inbox.queued_orders(), 8);
        assert_eq!(inbox.take().len(), 2);
        assert_eq!(inbox.queued_orders(), 0);
        // Taken: the next push wakes the shard again.
        assert_eq!(inbox.push(submission(20).0).ok(), Some(Pushed::Wake));
        assert_eq!(
            inbox.push(submission(1).0).err().map(|s| s.places.len()),
            Some(1)
        );
    }
}
