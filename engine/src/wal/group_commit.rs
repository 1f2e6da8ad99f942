//! Group commit: operations queue up in bounded batches; one write plus one
//! fdatasync makes a whole batch durable and wakes every caller in it.
//!
//! The writer takes the oldest batch as soon as it is idle, so a lone caller
//! pays exactly one write+sync; callers that arrive while that I/O is in
//! flight all land in the next batch and share its sync.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::bounds::Bounds;
use super::error::WalError;

/// The outcome of one batch, shared by every caller in it.
#[derive(Default)]
pub(crate) struct Completion {
    result: RefCell<Option<Result<(), WalError>>>,
    wakers: RefCell<Vec<Option<Waker>>>,
}

impl Completion {
    /// Records the outcome and wakes every waiter. Only the first call counts.
    pub fn complete(&self, result: Result<(), WalError>) {
        {
            let mut r = self.result.borrow_mut();
            if r.is_some() {
                return;
            }
            *r = Some(result);
        }
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    /// A future that resolves with the batch's outcome.
    pub fn wait(self: &Rc<Self>) -> Durable {
        Durable {
            done: Rc::clone(self),
            slot: None,
        }
    }
}

/// Resolves when the batch holding the caller's records is durable.
pub(crate) struct Durable {
    done: Rc<Completion>,
    /// Where this future's waker sits in `done.wakers` (so a re-poll
    /// replaces it instead of growing the list).
    slot: Option<usize>,
}

impl Future for Durable {
    type Output = Result<(), WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.done.result.borrow().as_ref() {
            return Poll::Ready(r.clone());
        }
        let mut wakers = self.done.wakers.borrow_mut();
        match self.slot {
            Some(i) => wakers[i] = Some(cx.waker().clone()),
            None => {
                wakers.push(Some(cx.waker().clone()));
                let i = wakers.len() - 1;
                drop(wakers);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

/// Records waiting for one write+fdatasync.
pub(crate) struct Batch {
    /// Position in the queue's order, from 1.
    pub serial: u64,
    /// Framed records, back to back (the writer adds the batch start and,
    /// for a segment's first batch, the preamble).
    pub bytes: Vec<u8>,
    pub records: u32,
    pub entries: usize,
    /// Highest entry index in the batch.
    pub max_entry_index: Option<u64>,
    /// Log state once this batch is applied.
    pub after: Bounds,
    pub done: Rc<Completion>,
}

/// Limits on batching; see `WalOptions`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_batch_bytes: usize,
    pub max_batch_entries: usize,
    pub max_queued_batches: usize,
}

/// Batches not yet taken by the writer, oldest first. Only the newest one
/// accepts more records.
pub(crate) struct Queue {
    batches: VecDeque<Batch>,
    limits: Limits,
    /// Completion of the most recently queued batch: an operation with
    /// nothing to write still waits for everything accepted before it.
    last: Option<Rc<Completion>>,
    /// Serial of the most recently created batch.
    last_serial: u64,
}

impl Queue {
    pub fn new(limits: Limits) -> Self {
        Queue {
            batches: VecDeque::new(),
            limits,
            last: None,
            last_serial: 0,
        }
    }

    fn fits_in_open(&self, bytes: usize, entries: usize) -> bool {
        self.batches.back().is_some_and(|b| {
            b.bytes.len() + bytes <= self.limits.max_batch_bytes
                && b.entries + entries <= self.limits.max_batch_entries
        })
    }

    /// Can an operation of this size be queued now?
    pub fn has_room(&self, bytes: usize, entries: usize) -> bool {
        self.batches.len() < self.limits.max_queued_batches || self.fits_in_open(bytes, entries)
    }

    /// The batch an operation of this size goes into: the open one if it
    /// fits, else a new one. An operation larger than a whole batch gets a
    /// batch of its own (callers bound it by the segment size).
    pub fn batch_for(&mut self, bytes: usize, entries: usize, now: Bounds) -> &mut Batch {
        if !self.fits_in_open(bytes, entries) {
            let done = Rc::new(Completion::default());
            self.last = Some(Rc::clone(&done));
            self.last_serial += 1;
            self.batches.push_back(Batch {
                serial: self.last_serial,
                bytes: Vec::with_capacity(bytes.min(self.limits.max_batch_bytes)),
                records: 0,
                entries: 0,
                max_entry_index: None,
                after: now,
                done,
            });
        }
        self.batches
            .back_mut()
            .expect("a batch was just ensured to exist")
    }

    pub fn pop(&mut self) -> Option<Batch> {
        self.batches.pop_front()
    }

    pub fn last_completion(&self) -> Option<Rc<Completion>> {
        self.last.clone()
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Batch> + '_ {
        self.batches.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_batch_bytes: 100,
            max_batch_entries: 3,
            max_queued_batches: 2,
        }
    }

    #[test]
    fn batches_fill_up_to_their_limits() {
        let mut q = Queue::new(limits());
        let b = q.batch_for(60, 1, Bounds::fresh());
        b.bytes.extend_from_slice(&[0; 60]);
        b.entries += 1;
        // 60 + 50 bytes would exceed 100: a second batch opens.
        let b = q.batch_for(50, 1, Bounds::fresh());
        assert!(b.bytes.is_empty());
        b.bytes.extend_from_slice(&[0; 50]);
        b.entries += 3;
        assert!(
            !q.has_room(1, 1),
            "two batches queued, the open one is full"
        );
        assert!(q.pop().is_some());
        assert!(q.has_room(1, 1));
    }

    #[test]
    fn completion_wakes_and_reports_to_every_waiter() {
        let done = Rc::new(Completion::default());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut a = done.wait();
        let mut b = done.wait();
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        assert_eq!(done.wakers.borrow().len(), 1, "re-poll replaced its waker");
        done.complete(Err(WalError::Closed));
        done.complete(Ok(()));
        assert!(matches!(
            Pin::new(&mut a).poll(&mut cx),
            Poll::Ready(Err(WalError::Closed))
        ));
        assert!(matches!(
            Pin::new(&mut b).poll(&mut cx),
            Poll::Ready(Err(WalError::Closed))
        ));
    }
}
