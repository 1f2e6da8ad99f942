//! The write-ahead log, which is the Raft log plus the Raft hard state.
//!
//! ```no_run
//! use basalt_engine::wal::{Entry, EntryKind, HardState, Wal, WalOptions};
//! use std::rc::Rc;
//!
//! glommio::LocalExecutorBuilder::default().make().unwrap().run(async {
//!     let (wal, recovered) = Wal::open("/var/lib/basalt/wal".as_ref(), WalOptions::default())
//!         .await
//!         .unwrap();
//!     let wal = Rc::new(wal);
//!     let next = wal.last_index() + 1;
//!     // Resolves once the entry is on disk; concurrent appends share one fdatasync.
//!     wal.append(&[Entry { term: 1, index: next, kind: EntryKind::Normal, data: b"req".to_vec() }])
//!         .await
//!         .unwrap();
//!     wal.save_hard_state(HardState { term: 1, vote: 1, commit: next }).await.unwrap();
//!     # drop(recovered);
//! });
//! ```
//!
//! # Layout
//! A directory of fixed-size segment files, each fully written with zeros
//! before first use (`segment.rs`), so appends only ever overwrite blocks in
//! place with O_DIRECT. Records carry a length, a CRC32 and a kind
//! (`record.rs`); each write+fdatasync writes one batch of records padded to
//! 4 KiB (`group_commit.rs`, `writer.rs`). Each segment begins with a
//! preamble holding the log bounds and the hard state, so whole old
//! segments can be deleted without losing either.
//!
//! An in-memory index (`index.rs`: segment, offset and length of every
//! retained entry, terms as runs) lets entries be read back from the
//! segment files (`reader.rs`) without keeping their data in memory.
//!
//! # API in one breath
//! `open` recovers (and, unless `WalOptions::materialize_recovered` is
//! off, returns every retained entry); `append` / `save_hard_state` /
//! `append_with_hard_state` (both in one write) / `append_replacing`
//! (what a Raft `Ready` needs: a conflicting suffix dropped, entries and
//! hard state, one write) resolve when durable; `truncate_from` drops a
//! conflicting suffix; `release_below` drops a prefix and deletes whole
//! segments below it; `entries` / `term` / `last_readable_index` read the
//! durable log back (what Raft's `Storage` needs); `close` drains and
//! stops. The directory is locked (`flock`) while open.
//!
//! # Invariants
//! - An operation's future resolves `Ok` only after the batch holding its
//!   records was written and fdatasync'ed; batches are written strictly one
//!   after another.
//! - Entries are contiguous: `append` must continue at `last_index() + 1`;
//!   `truncate_from` drops a suffix; `release_below` drops a prefix.
//! - After a failed write or sync the WAL refuses all further work
//!   (`WalError::Poisoned`); restart and recover.
//! - `entries` and `term` return only durable entries, and never an entry
//!   of a suffix whose truncation was accepted, durable or not.
//! - Recovery cuts a torn tail (reported in `Recovered::torn_tail_cut`) and
//!   refuses to start on damage anywhere else (`WalError::Corrupt` with file
//!   and offset).
//!
//! The WAL lives on one glommio executor (`!Send`); share it between tasks
//! with `Rc<Wal>`.

mod bounds;
mod dir_lock;
mod entry;
mod error;
mod fault;
mod group_commit;
mod index;
mod reader;
mod record;
mod recovery;
mod segment;
mod writer;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use bounds::Bounds;
use group_commit::{Durable, Limits, Queue};
use index::LogIndex;
use reader::SegmentReader;
use record::Record;
use recovery::SegmentMeta;
use segment::BLOCK;

pub use entry::{Entry, EntryKind, HardState};
pub use error::WalError;
#[doc(hidden)]
pub use fault::Fault;

/// Tuning of the WAL. `Default` gives the production values.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size of each segment file (a multiple of 4 KiB). Default 64 MiB.
    pub segment_bytes: u64,
    /// Records per write+fdatasync are capped at this many bytes (an append
    /// larger than this goes alone). Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Entries per write+fdatasync. Default 8192.
    pub max_batch_entries: usize,
    /// Batches waiting behind the one being written; further operations
    /// wait for room (backpressure). Default 64.
    pub max_queued_batches: usize,
    /// Whether `open` returns every retained entry in
    /// `Recovered::entries`. Default `true` (what the server relied on
    /// before `Wal::entries` existed). With `false`, recovery keeps only
    /// the log index (16 bytes per entry plus one pair per term), so memory
    /// after open does not grow with the payload size; read entries back
    /// with `Wal::entries`.
    pub materialize_recovered: bool,
    /// Whether each batch is made durable with fdatasync before it is
    /// acknowledged. `false` is etcd's `--unsafe-no-fsync`: the O_DIRECT
    /// write still reaches the device, so a killed process loses nothing,
    /// but a power loss can lose acknowledged batches. Default `true`.
    pub sync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_batch_bytes: 1 << 20,
            max_batch_entries: 8192,
            max_queued_batches: 64,
            materialize_recovered: true,
            sync: true,
        }
    }
}

impl WalOptions {
    /// Largest encoded size of one operation: it must fit in one segment
    /// together with the batch start and preamble.
    fn max_op_bytes(&self) -> u64 {
        self.segment_bytes - BLOCK - (record::BATCH_START_BYTES + writer::PREAMBLE_BYTES) as u64
    }

    fn validate(&self) -> Result<(), WalError> {
        if self.segment_bytes % BLOCK != 0 || self.segment_bytes < 4 * BLOCK {
            return Err(WalError::InvalidOptions(format!(
                "segment_bytes {} must be a multiple of {BLOCK} and at least {}",
                self.segment_bytes,
                4 * BLOCK
            )));
        }
        if self.segment_bytes > u32::MAX as u64 {
            return Err(WalError::InvalidOptions(
                "segment_bytes must be below 4 GiB".into(),
            ));
        }
        if self.max_batch_bytes as u64 > self.max_op_bytes() {
            return Err(WalError::InvalidOptions(format!(
                "max_batch_bytes {} does not fit in a segment of {} bytes",
                self.max_batch_bytes, self.segment_bytes
            )));
        }
        if self.max_batch_bytes == 0 || self.max_batch_entries == 0 || self.max_queued_batches == 0
        {
            return Err(WalError::InvalidOptions(
                "batch and queue limits must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// What `Wal::open` found on disk.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The last saved hard state (all zeros for a new log).
    pub hard_state: HardState,
    /// Every retained entry, ascending and contiguous from `first_index()`;
    /// empty when `WalOptions::materialize_recovered` is off.
    pub entries: Vec<Entry>,
    /// A torn or garbage tail of the last written segment was cut off.
    pub torn_tail_cut: bool,
}

/// Counters of the I/O the WAL did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Batches written (one write+fdatasync each, or a write alone
    /// without [`WalOptions::sync`]).
    pub syncs: u64,
    /// Entries those batches carried.
    pub entries: u64,
    /// fdatasyncs issued for batches (0 without [`WalOptions::sync`]).
    pub fdatasyncs: u64,
    /// Bytes those batches wrote (padded to the block size).
    pub bytes: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    syncs: Cell<u64>,
    entries: Cell<u64>,
    fdatasyncs: Cell<u64>,
    bytes: Cell<u64>,
}

impl Counters {
    pub(crate) fn note_sync(&self, entries: usize, fdatasync: bool, bytes: usize) {
        self.bytes.set(self.bytes.get() + bytes as u64);
        self.syncs.set(self.syncs.get() + 1);
        self.entries.set(self.entries.get() + entries as u64);
        self.fdatasyncs
            .set(self.fdatasyncs.get() + u64::from(fdatasync));
    }
}

/// State shared by the `Wal` handle and its writer task.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) opts: WalOptions,
    pub(crate) st: RefCell<State>,
    /// Test hook: what goes wrong with the next batch.
    pub(crate) fault: Cell<Option<Fault>>,
    /// Read handles for `Wal::entries`.
    reader: RefCell<SegmentReader>,
    /// Released when the last owner (handle or writer task) is gone, or
    /// by [`Wal::close_shared`].
    lock: RefCell<Option<dir_lock::DirLock>>,
}

pub(crate) struct State {
    /// The log as accepted so far (including operations not yet durable).
    pub(crate) bounds: Bounds,
    /// Where the durable entries are: updated after each batch is written
    /// and synced, in record order (see `index.rs`).
    pub(crate) index: LogIndex,
    /// Entries at or above this index are not readable while a truncation
    /// of them is accepted but not yet durable: the index still shows the
    /// old suffix, which must never be returned. `u64::MAX` when none.
    pub(crate) hide_from: u64,
    /// Serial of the batch holding the latest such truncation; once it is
    /// durable, the index itself reflects every truncation.
    pub(crate) hide_until_batch: u64,
    pub(crate) queue: Queue,
    pub(crate) writer_waker: Option<Waker>,
    /// Callers waiting for room in the queue.
    pub(crate) room: Vec<Waker>,
    pub(crate) failed: Option<WalError>,
    pub(crate) closing: bool,
    /// Retained segments, ascending; the last is being written.
    pub(crate) segments: Vec<SegmentMeta>,
    pub(crate) counters: Counters,
}

/// One WAL operation as queued.
enum Op<'a> {
    /// Entries, then optionally the hard state, in one batch.
    Append {
        entries: &'a [Entry],
        hard_state: Option<HardState>,
        /// The entries may start at or below the last index: drop that
        /// suffix first, in the same batch.
        overwrite: bool,
    },
    Truncate(u64),
    Release(u64),
}

/// The WAL handle. See the module documentation.
pub struct Wal {
    shared: Rc<Shared>,
    writer: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, recovering what is there.
    /// Must run inside a glommio executor.
    pub async fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| WalError::io("creating directory", dir, e))?;
        let lock = dir_lock::DirLock::acquire(dir)?;
        let mut log = recovery::recover(dir, opts.materialize_recovered).await?;
        let shared = Rc::new(Shared {
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            st: RefCell::new(State {
                bounds: log.bounds,
                index: std::mem::replace(&mut log.index, LogIndex::new(1)),
                hide_from: u64::MAX,
                hide_until_batch: 0,
                queue: Queue::new(Limits {
                    max_batch_bytes: opts.max_batch_bytes,
                    max_batch_entries: opts.max_batch_entries,
                    max_queued_batches: opts.max_queued_batches,
                }),
                writer_waker: None,
                room: Vec::new(),
                failed: None,
                closing: false,
                segments: Vec::new(),
                counters: Counters::default(),
            }),
            fault: Cell::new(None),
            reader: RefCell::new(SegmentReader::new(dir)),
            lock: RefCell::new(Some(lock)),
        });

        if log.segments.is_empty() {
            // A new log: its first segment is prepared before open returns.
            let file = segment::prepare(dir, 1, opts.segment_bytes, || false).await?;
            file.close()
                .await
                .map_err(|e| WalError::glommio("closing segment", dir, e))?;
            log.segments.push(SegmentMeta {
                id: 1,
                path: segment::segment_path(dir, 1),
                capacity: opts.segment_bytes,
                max_entry_index: None,
            });
            log.write_pos = BLOCK;
            log.active_has_batches = false;
        }
        let active = log.segments.last().expect("at least one segment").clone();
        let file = segment::open_rw(&active.path).await?;
        let spare = match log.spare {
            Some(meta) => writer::spawn_open(meta),
            None => writer::spawn_prepare(&shared, active.id + 1),
        };
        shared.st.borrow_mut().segments = log.segments;

        let w = writer::Writer {
            shared: Rc::clone(&shared),
            file,
            path: active.path,
            id: active.id,
            capacity: active.capacity,
            pos: log.write_pos,
            has_preamble: log.active_has_batches,
            next_seq: log.next_batch_seq,
            written: log.bounds,
            spare: Some(spare),
        };
        let writer = glommio::spawn_local(w.run()).detach();
        let recovered = Recovered {
            hard_state: log.bounds.hard_state,
            entries: log.entries,
            torn_tail_cut: log.torn_tail_cut,
        };
        Ok((
            Wal {
                shared,
                writer: RefCell::new(Some(writer)),
            },
            recovered,
        ))
    }

    /// Appends entries; resolves when they are durable. The first entry
    /// must have index `last_index() + 1` and the rest must follow it.
    /// Concurrent callers share one write+fdatasync (group commit).
    ///
    /// The entries are checked and queued in the call's first poll unless
    /// the queue is full (`max_queued_batches`), in which case the call
    /// first waits for room; concurrent callers that pick their index from
    /// `last_index()` rely on the former. Dropping the future after the
    /// entries were queued does not withdraw them.
    pub async fn append(&self, entries: &[Entry]) -> Result<(), WalError> {
        self.submit(Op::Append {
            entries,
            hard_state: None,
            overwrite: false,
        })
        .await
    }

    /// Saves the hard state; resolves when durable.
    pub async fn save_hard_state(&self, hs: HardState) -> Result<(), WalError> {
        self.submit(Op::Append {
            entries: &[],
            hard_state: Some(hs),
            overwrite: false,
        })
        .await
    }

    /// Appends entries and saves the hard state in the same batch (one
    /// write+fdatasync, both or neither on disk): what a Raft `Ready` asks
    /// to persist. Same rules as `append`.
    pub async fn append_with_hard_state(
        &self,
        entries: &[Entry],
        hs: HardState,
    ) -> Result<(), WalError> {
        self.submit(Op::Append {
            entries,
            hard_state: Some(hs),
            overwrite: false,
        })
        .await
    }

    /// Persists what a Raft `Ready` hands over, in one batch (one
    /// write+fdatasync, all or nothing on disk): entries that may replace a
    /// conflicting suffix, and optionally the hard state. The entries must
    /// be contiguous and start within `first_index()..=last_index() + 1`;
    /// every retained entry at or above the first one is dropped before
    /// they are appended. Otherwise the same rules as `append`.
    pub async fn append_replacing(
        &self,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), WalError> {
        self.submit(Op::Append {
            entries,
            hard_state,
            overwrite: true,
        })
        .await
    }

    /// Drops every entry with index `>= index` (a conflicting suffix);
    /// resolves when durable. Dropping nothing is not an error.
    pub async fn truncate_from(&self, index: u64) -> Result<(), WalError> {
        self.submit(Op::Truncate(index)).await
    }

    /// Declares entries below `index` unneeded and deletes every segment
    /// holding only such entries. Releasing past the last entry (after
    /// installing a snapshot) empties the log so that the next append
    /// starts at `index`.
    pub async fn release_below(&self, index: u64) -> Result<(), WalError> {
        self.submit(Op::Release(index)).await?;
        self.delete_released_segments(index).await
    }

    /// First retained index (`last_index() + 1` when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.shared.st.borrow().bounds.first
    }

    /// Last accepted index (0 for a new log). Counts appends that were
    /// accepted but are not yet durable.
    pub fn last_index(&self) -> u64 {
        self.shared.st.borrow().bounds.next - 1
    }

    /// Entries whose `entry_bytes` add up to at most this many can be
    /// passed to one `append`, `append_with_hard_state` or
    /// `append_replacing` (which are refused with `TooLarge` above what
    /// fits in one segment); a caller with more splits them.
    pub fn max_append_bytes(&self) -> u64 {
        let extra = record::record_bytes(&Record::HardState(HardState::default()))
            + record::record_bytes(&Record::Truncate { from: 0 });
        self.shared.opts.max_op_bytes() - extra as u64
    }

    /// What an entry with `data_len` bytes of data counts towards
    /// `max_append_bytes`.
    pub fn entry_bytes(data_len: usize) -> u64 {
        record::entry_record_bytes(data_len) as u64
    }

    /// The last entry `entries` and `term` can return: durable, and not
    /// covered by a truncation still in flight. Equals `last_index()` once
    /// every accepted operation is durable (after its future resolved).
    pub fn last_readable_index(&self) -> u64 {
        let st = self.shared.st.borrow();
        readable_end(&st).max(st.bounds.first) - 1
    }

    /// Term of the retained entry at `index`, answered from memory.
    /// `Released` below `first_index()`, `Unavailable` above
    /// `last_readable_index()`.
    pub fn term(&self, index: u64) -> Result<u64, WalError> {
        let st = self.shared.st.borrow();
        check_readable(&st, index, index.saturating_add(1))?;
        st.index.term(index).ok_or(WalError::Unavailable {
            index,
            last_index: st.index.next() - 1,
        })
    }

    /// Reads the retained entries `lo..hi` back from the segment files,
    /// stopping early once their data exceeds `max_bytes` in total (but
    /// always returning at least one entry when `lo < hi`). `Released` if
    /// `lo < first_index()`, `Unavailable` if `hi - 1` is above
    /// `last_readable_index()`. Every record is checked (CRC, index, term)
    /// as it is read; a mismatch is `Corrupt`.
    ///
    /// Synchronous `pread`s on the executor thread (see `reader.rs` for why
    /// that is coherent with the O_DIRECT writes): microseconds per call
    /// when the pages are cached.
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, WalError> {
        let st = self.shared.st.borrow();
        check_readable(&st, lo, hi)?;
        let mut out = Vec::new();
        if lo < hi {
            self.shared
                .reader
                .borrow_mut()
                .read(&st.index, lo, hi, max_bytes, &mut out)?;
        }
        Ok(out)
    }

    /// I/O counters since open.
    pub fn stats(&self) -> WalStats {
        let st = self.shared.st.borrow();
        WalStats {
            syncs: st.counters.syncs.get(),
            entries: st.counters.entries.get(),
            fdatasyncs: st.counters.fdatasyncs.get(),
            bytes: st.counters.bytes.get(),
        }
    }

    /// Test hook: the next batch written fails (or tears) as `fault` says;
    /// like any I/O failure this poisons the WAL.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.fault.set(Some(fault));
    }

    /// The segment files currently retained, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        let st = self.shared.st.borrow();
        st.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// Writes everything accepted so far, then stops the writer and closes
    /// the files.
    pub async fn close(self) -> Result<(), WalError> {
        self.close_shared().await
    }

    /// [`Wal::close`] for a log with several owners (an `Rc<Wal>`): writes
    /// everything accepted so far, stops the writer and releases the
    /// directory lock now, while the handles live on (the log is closed:
    /// nothing more is written through them).
    pub async fn close_shared(&self) -> Result<(), WalError> {
        self.begin_close();
        let writer = self.writer.borrow_mut().take();
        if let Some(w) = writer {
            w.await;
        }
        self.shared.lock.borrow_mut().take();
        let st = self.shared.st.borrow();
        match &st.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn begin_close(&self) {
        let mut st = self.shared.st.borrow_mut();
        st.closing = true;
        if let Some(w) = st.writer_waker.take() {
            w.wake();
        }
    }

    async fn submit(&self, op: Op<'_>) -> Result<(), WalError> {
        let (bytes, entries) = op_size(&op);
        if bytes as u64 > self.shared.opts.max_op_bytes() {
            return Err(WalError::TooLarge {
                bytes: bytes as u64,
                limit: self.shared.opts.max_op_bytes(),
            });
        }
        self.wait_for_room(bytes, entries).await?;
        let durable = self.enqueue(op, bytes, entries)?;
        match durable {
            Some(d) => d.await,
            None => Ok(()),
        }
    }

    async fn wait_for_room(&self, bytes: usize, entries: usize) -> Result<(), WalError> {
        poll_fn(|cx| {
            let mut st = self.shared.st.borrow_mut();
            if let Some(e) = &st.failed {
                return Poll::Ready(Err(e.clone()));
            }
            if st.closing {
                return Poll::Ready(Err(WalError::Closed));
            }
            if st.queue.has_room(bytes, entries) {
                return Poll::Ready(Ok(()));
            }
            st.room.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Validates `op` against the accepted log state, encodes it into the
    /// open batch and wakes the writer. `None` means nothing to wait for.
    fn enqueue(
        &self,
        op: Op<'_>,
        bytes: usize,
        entries: usize,
    ) -> Result<Option<Durable>, WalError> {
        let mut guard = self.shared.st.borrow_mut();
        let st = &mut *guard;
        let b = st.bounds;
        // Validate first: a rejected operation must leave no trace.
        let nothing_to_write = match op {
            Op::Append {
                entries: es,
                hard_state,
                overwrite,
            } => {
                let start = match es.first() {
                    Some(e) if overwrite => {
                        if e.index < b.first {
                            return Err(WalError::Released {
                                index: e.index,
                                first_index: b.first,
                            });
                        }
                        e.index.min(b.next)
                    }
                    _ => b.next,
                };
                check_contiguous(es, start)?;
                es.is_empty() && hard_state.is_none()
            }
            Op::Truncate(from) => {
                if from < b.first {
                    return Err(WalError::Released {
                        index: from,
                        first_index: b.first,
                    });
                }
                from >= b.next
            }
            Op::Release(below) => below <= b.first,
        };
        if nothing_to_write {
            return Ok(st.queue.last_completion().map(|c| c.wait()));
        }

        let batch = st.queue.batch_for(bytes, entries, b);
        let serial = batch.serial;
        let mut after = b;
        let mut truncated = None;
        let control = match op {
            Op::Append {
                entries: es,
                hard_state,
                overwrite,
            } => {
                if let Some(from) = es
                    .first()
                    .map(|e| e.index)
                    .filter(|&i| overwrite && i < b.next)
                {
                    record::encode(&Record::Truncate { from }, &mut batch.bytes);
                    batch.records += 1;
                    after.truncate(from);
                    truncated = Some(from);
                }
                for e in es {
                    record::encode_entry(e, &mut batch.bytes);
                }
                after.next += es.len() as u64;
                batch.records += es.len() as u32;
                batch.entries += es.len();
                if !es.is_empty() {
                    batch.max_entry_index = Some(after.next - 1);
                }
                hard_state.map(|hs| {
                    after.hard_state = hs;
                    Record::HardState(hs)
                })
            }
            Op::Truncate(from) => {
                after.truncate(from);
                truncated = Some(from);
                Some(Record::Truncate { from })
            }
            Op::Release(below) => {
                after.release(below);
                Some(Record::Release { below })
            }
        };
        if let Some(r) = control {
            record::encode(&r, &mut batch.bytes);
            batch.records += 1;
        }
        batch.after = after;
        let durable = batch.done.wait();
        st.bounds = after;
        if let Some(from) = truncated {
            st.hide_from = st.hide_from.min(from);
            st.hide_until_batch = serial;
        }
        if let Some(w) = st.writer_waker.take() {
            w.wake();
        }
        Ok(Some(durable))
    }

    /// Deletes the oldest segments whose entries all lie below `below`,
    /// a release point that is already durable (not `bounds.first`, which
    /// may include a later release still in flight: deleting up to that
    /// one before its record is durable would leave a gap after a crash).
    /// The segment being written is never deleted, and it starts with a
    /// preamble, so the hard state and bounds survive.
    async fn delete_released_segments(&self, below: u64) -> Result<(), WalError> {
        let doomed: Vec<PathBuf> = {
            let mut st = self.shared.st.borrow_mut();
            let first = below;
            let keep_last = st.segments.len().saturating_sub(1);
            let n = st.segments[..keep_last]
                .iter()
                .take_while(|s| s.max_entry_index.is_none_or(|m| m < first))
                .count();
            if let Some(kept) = st.segments.get(n) {
                self.shared.reader.borrow_mut().forget_below(kept.id);
            }
            st.segments.drain(..n).map(|s| s.path).collect()
        };
        if !doomed.is_empty() {
            tracing::debug!(count = doomed.len(), "wal deleting released segments");
        }
        segment::remove(&self.shared.dir, &doomed).await
    }
}

impl Drop for Wal {
    /// Without `close`, the writer still finishes what was accepted and
    /// then stops (as long as the executor keeps running).
    fn drop(&mut self) {
        self.begin_close();
    }
}

fn op_size(op: &Op<'_>) -> (usize, usize) {
    match op {
        Op::Append {
            entries,
            hard_state,
            overwrite,
        } => (
            entries
                .iter()
                .map(|e| record::entry_record_bytes(e.data.len()))
                .sum::<usize>()
                + hard_state.map_or(0, |hs| record::record_bytes(&Record::HardState(hs)))
                // A truncation may precede the entries.
                + if *overwrite {
                    record::record_bytes(&Record::Truncate { from: 0 })
                } else {
                    0
                },
            entries.len(),
        ),
        Op::Truncate(from) => (record::record_bytes(&Record::Truncate { from: *from }), 0),
        Op::Release(below) => (record::record_bytes(&Record::Release { below: *below }), 0),
    }
}

/// End (exclusive) of the readable entries: durable and not hidden by a
/// truncation in flight.
fn readable_end(st: &State) -> u64 {
    st.index.next().min(st.hide_from)
}

/// Checks that `lo..hi` (or just `lo` when `lo >= hi`) can be read.
fn check_readable(st: &State, lo: u64, hi: u64) -> Result<(), WalError> {
    let first = st.bounds.first;
    if lo < first {
        return Err(WalError::Released {
            index: lo,
            first_index: first,
        });
    }
    let end = readable_end(st).max(first);
    if hi > end {
        return Err(WalError::Unavailable {
            index: hi - 1,
            last_index: end - 1,
        });
    }
    Ok(())
}

fn check_contiguous(entries: &[Entry], next: u64) -> Result<(), WalError> {
    for (expected, e) in (next..).zip(entries) {
        if e.index != expected {
            return Err(WalError::NotContiguous {
                expected,
                found: e.index,
            });
        }
    }
    Ok(())
}
