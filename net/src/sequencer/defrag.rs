//! Online defragmentation driven by the sequencer.
//!
//! The store pins its tree ([`Store::begin_defragment`], a checkpoint), a
//! plain thread copies the live pages into a new file while this executor
//! keeps appending, applying and checkpointing, then the sequencer copies
//! over what was committed meanwhile in short catch-ups between which writes
//! run, and switches files. Writes wait only for the final catch-up (at most
//! [`SWITCH_BACKLOG`] committed keys plus what is not yet checkpointed);
//! the Defragment RPC is answered after the switch, as etcd answers after
//! its copy.
//!
//! [`Store::begin_defragment`]: basalt_engine::mvcc::Store::begin_defragment

use std::time::{Duration, Instant};

use basalt_engine::mvcc::{DefragCopy, DefragJob, MvccError};
use futures_channel::oneshot;

use crate::error::Error;

use super::Sequencer;

/// Committed keys still to copy below which the copy is switched to.
const SWITCH_BACKLOG: usize = 1024;
/// Most catch-ups before switching regardless: under a write load that
/// outruns the copy, the last catch-up simply takes longer.
const MAX_CATCH_UPS: usize = 32;
/// Pause between catch-ups, so queued writes and checkpoints run.
const CATCH_UP_PAUSE: Duration = Duration::from_millis(5);

/// etcd's `etcd_disk_defrag_inflight`: 1 while a defragmentation runs,
/// however it ends.
struct InFlight<'a>(&'a std::cell::Cell<bool>);

impl<'a> InFlight<'a> {
    fn new(flag: &'a std::cell::Cell<bool>) -> InFlight<'a> {
        flag.set(true);
        InFlight(flag)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Sequencer {
    /// etcd's Defragment without stopping writes. One at a time: a second
    /// call waits for the first (starting another would abandon it).
    pub(super) async fn defragment(&self) -> Result<(), Error> {
        let _one_at_a_time = self
            .defrag_lock
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Stopped)?;
        let started = Instant::now();
        let before = self.store.borrow().db_size();
        let _in_flight = InFlight::new(&self.disk.defrag_inflight);
        // Checkpoint in the background first, so the one `begin` makes
        // inline (under the permit, stalling this executor) is small.
        self.checkpoint().await?;
        let job = {
            let _no_checkpoint = self.checkpoint_permit().await?;
            let job = self.store.borrow_mut().begin_defragment();
            self.publish();
            job?
        };
        let copy = build_off_executor(job).await?;
        if self.stopping.get() {
            // Dropping the copy abandons it; the next begin removes its file.
            return Err(Error::Stopped);
        }
        let catch_ups = self.catch_up(copy).await?;
        self.disk.defrag.observe(started.elapsed());
        self.check_quota_alarm();
        tracing::info!(
            before,
            after = self.store.borrow().db_size(),
            catch_ups,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "defragmented"
        );
        Ok(())
    }

    /// Catches the copy up until its backlog is small, then switches.
    async fn catch_up(&self, mut copy: DefragCopy) -> Result<usize, Error> {
        let mut rounds = 0;
        while rounds < MAX_CATCH_UPS && self.store.borrow().defragment_backlog() > SWITCH_BACKLOG {
            {
                let _no_checkpoint = self.checkpoint_permit().await?;
                self.store.borrow_mut().defragment_catch_up(&mut copy)?;
            }
            rounds += 1;
            glommio::timer::sleep(CATCH_UP_PAUSE).await;
            if self.stopping.get() {
                return Err(Error::Stopped);
            }
        }
        self.checkpoint().await?;
        let _no_checkpoint = self.checkpoint_permit().await?;
        let finished = self.store.borrow_mut().finish_defragment(copy);
        // Views stop holding the old files, which can then be freed.
        self.publish();
        finished?;
        Ok(rounds)
    }

    /// Waits out a running checkpoint (the store refuses defragment steps
    /// while a checkpoint task holds its trees) and keeps new ones out.
    async fn checkpoint_permit(&self) -> Result<glommio::sync::Permit<'_>, Error> {
        self.checkpoint_lock
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Stopped)
    }
}

/// Runs the copy on its own thread: it reads and writes whole files, and
/// this executor must keep serving meanwhile.
async fn build_off_executor(job: DefragJob) -> Result<DefragCopy, Error> {
    let (tx, rx) = oneshot::channel::<Result<DefragCopy, MvccError>>();
    std::thread::Builder::new()
        .name("basalt-defrag".into())
        .spawn(move || {
            // The receiver is gone only if the server stopped meanwhile.
            let _ = tx.send(job.build());
        })
        .map_err(|e| Error::io("spawn the defragmentation thread", e))?;
    match rx.await {
        Ok(built) => Ok(built?),
        Err(_) => Err(Error::io(
            "defragmentation copy",
            std::io::Error::other("the copy thread panicked"),
        )),
    }
}
