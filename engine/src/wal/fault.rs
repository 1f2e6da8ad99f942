//! Fault injection for crash and error tests: make the next batch's I/O
//! fail, or tear it, as a dying disk or a crash mid-write would.
//!
//! The check is one `Cell::take` per batch, so it stays compiled in; the
//! API is `#[doc(hidden)]` on `Wal`.

use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile};

use super::error::WalError;
use super::segment;

/// What goes wrong with the next batch the writer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write fails; nothing reaches the file.
    FailWrite,
    /// The write lands, the fdatasync fails.
    FailSync,
    /// Only the first `blocks` 4 KiB blocks of the batch reach the file
    /// (and are synced), then the write fails: the on-disk state a crash
    /// mid-write leaves behind.
    TornWrite {
        /// Blocks that land.
        blocks: usize,
    },
}

fn injected(what: &str) -> std::io::Error {
    std::io::Error::other(format!("injected fault: {what}"))
}

/// Performs the batch's write+fdatasync (the write alone without `sync`),
/// or the injected failure.
pub(crate) async fn write_and_sync(
    fault: Option<Fault>,
    file: &DmaFile,
    path: &Path,
    buf: DmaBuffer,
    pos: u64,
    sync: bool,
) -> Result<(), WalError> {
    let sync_enabled = sync;
    let sync = || async {
        file.fdatasync()
            .await
            .map_err(|e| WalError::glommio("fdatasync", path, e))
    };
    match fault {
        None => {
            segment::write_all(file, path, Rc::new(buf), pos).await?;
            if sync_enabled {
                sync().await
            } else {
                Ok(())
            }
        }
        Some(Fault::FailWrite) => Err(WalError::io("writing", path, injected("write"))),
        Some(Fault::FailSync) => {
            segment::write_all(file, path, Rc::new(buf), pos).await?;
            Err(WalError::io("fdatasync", path, injected("fdatasync")))
        }
        Some(Fault::TornWrite { blocks }) => {
            let keep = (blocks * segment::BLOCK as usize).min(buf.len());
            if keep > 0 {
                let mut part = file.alloc_dma_buffer(keep);
                part.as_bytes_mut().copy_from_slice(&buf.as_bytes()[..keep]);
                segment::write_all(file, path, Rc::new(part), pos).await?;
                sync().await?;
            }
            Err(WalError::io("writing", path, injected("torn write")))
        }
    }
}
