//! The writer task: takes batches off the queue one at a time and makes
//! each durable with one O_DIRECT write and one fdatasync, rolling over to
//! the next pre-written segment when the current one is full.

use std::future::poll_fn;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::Poll;

use glommio::io::DmaFile;
use glommio::Task;

use super::bounds::Bounds;
use super::error::WalError;
use super::fault;
use super::group_commit::Batch;
use super::record::{self, BatchStart, Record, BATCH_START_BYTES, HEADER_BYTES};
use super::recovery::SegmentMeta;
use super::segment::{self, align_up, BLOCK};
use super::{Shared, State};

/// Largest preamble: LogBounds (16-byte payload) + HardState (24).
pub(crate) const PREAMBLE_BYTES: usize = 2 * HEADER_BYTES + 16 + 24;

/// A segment being prepared in the background: (file, its size).
type Spare = Task<Result<(DmaFile, u64), WalError>>;

pub(crate) struct Writer {
    pub shared: Rc<Shared>,
    pub file: DmaFile,
    pub path: PathBuf,
    pub id: u64,
    pub capacity: u64,
    pub pos: u64,
    /// Whether the active segment already starts with its preamble.
    pub has_preamble: bool,
    pub next_seq: u64,
    /// Log state after the last written batch (what a preamble records).
    pub written: Bounds,
    pub spare: Option<Spare>,
}

/// Starts preparing segment `id` in the background.
pub(crate) fn spawn_prepare(shared: &Rc<Shared>, id: u64) -> Spare {
    let dir = shared.dir.clone();
    let bytes = shared.opts.segment_bytes;
    let shared = Rc::clone(shared);
    glommio::spawn_local(async move {
        let stop = || {
            let st = shared.st.borrow();
            st.closing || st.failed.is_some()
        };
        let file = segment::prepare(&dir, id, bytes, stop).await?;
        Ok((file, bytes))
    })
}

/// Hands over a spare segment that recovery found already prepared.
pub(crate) fn spawn_open(meta: SegmentMeta) -> Spare {
    glommio::spawn_local(async move {
        let file = segment::open_rw(&meta.path).await?;
        Ok((file, meta.capacity))
    })
}

impl Writer {
    /// Runs until the WAL closes or a write fails.
    pub async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            match self.write(&batch).await {
                Ok(()) => batch.done.complete(Ok(())),
                Err(e) => {
                    tracing::error!(error = %e, "wal write failed; refusing further writes");
                    self.fail(&e);
                    batch.done.complete(Err(e));
                    break;
                }
            }
        }
        // Let a preparation in progress stop at its next step (it sees
        // `closing`/`failed`) rather than dropping it: see `segment::prepare`.
        // An abandoned temporary file is deleted by the next recovery.
        if let Some(spare) = self.spare.take() {
            if let Ok((file, _)) = spare.await {
                if let Err(e) = file.close().await {
                    tracing::warn!(error = %e, "closing the spare wal segment");
                }
            }
        }
        if let Err(e) = self.file.close().await {
            tracing::warn!(error = %e, segment = %self.path.display(), "closing wal segment");
        }
    }

    /// The oldest queued batch, or `None` once the WAL is closing and
    /// drained (or has failed).
    async fn next_batch(&self) -> Option<Batch> {
        poll_fn(|cx| {
            let mut st = self.shared.st.borrow_mut();
            if st.failed.is_some() {
                return Poll::Ready(None);
            }
            if let Some(b) = st.queue.pop() {
                for w in st.room.drain(..) {
                    w.wake();
                }
                return Poll::Ready(Some(b));
            }
            if st.closing {
                return Poll::Ready(None);
            }
            st.writer_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// After a failed write or sync nothing more may be written: the
    /// kernel may have dropped the dirty state, so a retry could report
    /// success for data that is gone.
    fn fail(&self, e: &WalError) {
        let mut st = self.shared.st.borrow_mut();
        st.failed = Some(WalError::Poisoned(e.to_string()));
        let poisoned = WalError::Poisoned(e.to_string());
        for b in st.queue.drain() {
            b.done.complete(Err(poisoned.clone()));
        }
        for w in st.room.drain(..) {
            w.wake();
        }
    }

    async fn write(&mut self, batch: &Batch) -> Result<(), WalError> {
        let worst = BATCH_START_BYTES + PREAMBLE_BYTES + batch.bytes.len();
        // A loop, not an if: a spare prepared under older options may be
        // too small for this batch; it is then skipped (left empty) and the
        // next one, prepared with the current options, always fits.
        while self.pos + align_up(worst as u64) > self.capacity {
            self.roll_over().await?;
        }
        let mut preamble = Vec::new();
        let mut preamble_records = 0;
        if !self.has_preamble {
            record::encode(
                &Record::LogBounds {
                    first: self.written.first,
                    next: self.written.next,
                },
                &mut preamble,
            );
            record::encode(&Record::HardState(self.written.hard_state), &mut preamble);
            preamble_records = 2;
        }
        let len = BATCH_START_BYTES + preamble.len() + batch.bytes.len();
        let padded = align_up(len as u64) as usize;
        debug_assert!(self.pos + padded as u64 <= self.capacity);

        let mut buf = self.file.alloc_dma_buffer(padded);
        let out = buf.as_bytes_mut();
        let start = BatchStart {
            segment_id: self.id,
            batch_seq: self.next_seq,
            batch_bytes: len as u32,
            record_count: batch.records + preamble_records,
        };
        record::encode_batch_start(&start, &mut out[..BATCH_START_BYTES]);
        let mut at = BATCH_START_BYTES;
        out[at..at + preamble.len()].copy_from_slice(&preamble);
        at += preamble.len();
        out[at..at + batch.bytes.len()].copy_from_slice(&batch.bytes);
        at += batch.bytes.len();
        // The buffer may be recycled memory: padding must be zero so a
        // scan never mistakes old bytes for a record.
        out[at..].fill(0);

        let fault = self.shared.fault.take();
        let sync = self.shared.opts.sync;
        fault::write_and_sync(fault, &self.file, &self.path, buf, self.pos, sync).await?;

        let body_at = self.pos + (BATCH_START_BYTES + preamble.len()) as u64;
        self.pos += padded as u64;
        self.next_seq += 1;
        self.has_preamble = true;
        self.written = batch.after;
        let mut st = self.shared.st.borrow_mut();
        if let Some(max) = batch.max_entry_index {
            if let Some(seg) = st.segments.last_mut() {
                seg.max_entry_index = Some(max);
            }
        }
        index_batch(&mut st, batch, self.id, body_at).map_err(|reason| WalError::Corrupt {
            path: self.path.clone(),
            offset: body_at,
            reason,
        })?;
        drop(st);
        self.shared
            .st
            .borrow()
            .counters
            .note_sync(batch.entries, sync, padded);
        Ok(())
    }

    /// Switches to the pre-written spare segment and starts preparing the
    /// one after it.
    async fn roll_over(&mut self) -> Result<(), WalError> {
        let next_id = self.id + 1;
        let spare = match self.spare.take() {
            Some(s) => s,
            None => spawn_prepare(&self.shared, next_id),
        };
        let (file, capacity) = spare.await?;
        let old = std::mem::replace(&mut self.file, file);
        old.close()
            .await
            .map_err(|e| WalError::glommio("closing segment", &self.path, e))?;
        self.id = next_id;
        self.path = segment::segment_path(&self.shared.dir, next_id);
        self.capacity = capacity;
        self.pos = BLOCK;
        self.has_preamble = false;
        self.shared.st.borrow_mut().segments.push(SegmentMeta {
            id: next_id,
            path: self.path.clone(),
            capacity,
            max_entry_index: None,
        });
        self.spare = Some(spawn_prepare(&self.shared, next_id + 1));
        tracing::debug!(segment = %self.path.display(), "wal rolled over to a new segment");
        Ok(())
    }
}

/// Records where the entries of a batch that just became durable lie (its
/// records start at `body_at` in segment `segment`), applying its
/// truncations and releases in order, as recovery would.
fn index_batch(st: &mut State, batch: &Batch, segment: u64, body_at: u64) -> Result<(), String> {
    let walked = record::walk_trusted(&batch.bytes, |r, at, len| {
        st.index.apply(&r, segment, body_at + at as u64, len)
    });
    match walked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("indexing a written batch: {}", e.0)),
        Err(e) => return Err(format!("walking a batch this process encoded: {e}")),
    }
    if batch.serial >= st.hide_until_batch {
        st.hide_from = u64::MAX;
    }
    Ok(())
}
