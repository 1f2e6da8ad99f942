//! Reusing the pages that copy-on-write frees, without ever overwriting a
//! page that a reader, or a commit a crash could fall back to, still needs.
//!
//! A commit that rewrites a node frees the node's old pages: the previous
//! commit still references them. They become reusable by a later commit once
//! both of these hold:
//!
//! - **Durable**: the commit that freed them is at least two commits old.
//!   Commit `w` writes meta slot `w % 2`, so while it writes its nodes the
//!   file holds commit `w - 1` (the last durable one) and commit `w - 2` (in
//!   the slot being replaced, which `Tree::open_at_most` may still pick after
//!   a crash). Pages freed by commit `c` are referenced by `c - 1` and
//!   earlier only, so commit `w ≥ c + 2` may overwrite them.
//! - **Unpinned**: no [`super::Snapshot`] of a commit older than the one that
//!   freed them is alive. Every snapshot holds a [`ReadPin`] naming the
//!   sequence number of its commit; sequence numbers come from the file's
//!   [`Pins`], which every open of the same file in this process shares (via
//!   the map's retirement record), so snapshots of an earlier open of the
//!   file, or of a timeline rolled back by `open_at_most`, pin it too.
//!
//! Nothing about free pages is written to the file: on open they are rebuilt
//! by a walk of what both meta slots reach (a page neither reaches is free),
//! which reads every branch and the header of every leaf once. A torn commit
//! only ever wrote to pages free in this sense, so a crash at any point
//! leaves both slots' trees intact.
//!
//! A branch must sit at a higher page than its children (`page.rs` relies on
//! it to rule out cycles in a damaged file), so a branch takes the lowest
//! free page above its highest child, or is appended. Nodes spanning several
//! pages are always appended.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::meta::{Meta, FIRST_NODE_PAGE};
use super::page::{Header, HEADER_LEN, KIND_BRANCH};
use super::pagefile::MappedFile;
use super::snapshot::read_node;

/// The read pins of one file, shared by every map of it in this process.
#[derive(Default)]
pub(crate) struct Pins {
    state: Mutex<PinState>,
}

#[derive(Default)]
struct PinState {
    next_seq: u64,
    /// Sequence number → live pins of it.
    live: BTreeMap<u64, usize>,
}

impl Pins {
    fn state(&self) -> std::sync::MutexGuard<'_, PinState> {
        // One insert or remove at a time: poisoning cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sequence number above every one handed out for this file so far.
    pub(crate) fn next_seq(&self) -> u64 {
        let mut s = self.state();
        s.next_seq += 1;
        s.next_seq
    }

    pub(crate) fn pin(self: &Arc<Pins>, seq: u64) -> ReadPin {
        *self.state().live.entry(seq).or_insert(0) += 1;
        ReadPin {
            pins: self.clone(),
            seq,
        }
    }

    /// The oldest pinned sequence number, if any snapshot is alive.
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.state().live.keys().next().copied()
    }
}

/// Keeps the pages of one commit (by sequence number) from being reused.
pub(crate) struct ReadPin {
    pins: Arc<Pins>,
    seq: u64,
}

impl Drop for ReadPin {
    fn drop(&mut self) {
        let mut s = self.pins.state();
        if let Some(n) = s.live.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                s.live.remove(&self.seq);
            }
        }
    }
}

/// Pages freed by one commit, waiting until they are durable and unpinned.
struct Freed {
    /// The first commit (counted by [`Freelist::commits`]) allowed to reuse them.
    ready_at: u64,
    /// The freeing commit's sequence number: a pin below it blocks them.
    seq: u64,
    pages: Vec<u64>,
}

/// The writer's record of free pages.
#[derive(Default)]
pub(crate) struct Freelist {
    /// Pages the next commit may overwrite.
    free: BTreeSet<u64>,
    pending: VecDeque<Freed>,
    /// Commits made through this freelist (the durability clock; commit ids
    /// cannot serve, a compaction's catch-up raises them by leaps).
    commits: u64,
}

impl Freelist {
    /// The free pages found on open by [`unreachable_pages`]: `free` no slot
    /// reaches, so only pins (of an earlier open; `seq` is this open's) hold
    /// them back; `other_only` only the other slot's commit reaches, so they
    /// wait until a commit has replaced that slot, like pages freed by the
    /// commit in the chosen slot.
    pub(crate) fn from_open(free: Vec<u64>, other_only: Vec<u64>, seq: u64) -> Freelist {
        let mut list = Freelist::default();
        for (ready_at, pages) in [(0, free), (2, other_only)] {
            if !pages.is_empty() {
                list.pending.push_back(Freed {
                    ready_at,
                    seq,
                    pages,
                });
            }
        }
        list
    }

    /// Takes the pages the next commit may overwrite, given the oldest pinned
    /// sequence number. Hand back what it did not use with
    /// [`Freelist::committed`] (or [`Freelist::abandoned`]).
    pub(crate) fn take_reusable(&mut self, oldest_pin: Option<u64>) -> BTreeSet<u64> {
        let next = self.commits + 1;
        while let Some(f) = self.pending.front() {
            let durable = f.ready_at <= next;
            let unpinned = oldest_pin.is_none_or(|p| p >= f.seq);
            if !(durable && unpinned) {
                break;
            }
            let f = self.pending.pop_front().expect("front exists");
            self.free.extend(f.pages);
        }
        std::mem::take(&mut self.free)
    }

    /// A commit with sequence number `seq` succeeded: `unused` goes back to
    /// the free pages, and the pages it freed wait two commits and for the
    /// pins below `seq` to go.
    pub(crate) fn committed(&mut self, unused: BTreeSet<u64>, freed: Vec<u64>, seq: u64) {
        self.commits += 1;
        self.free = unused;
        if !freed.is_empty() {
            self.pending.push_back(Freed {
                ready_at: self.commits + 2,
                seq,
                pages: freed,
            });
        }
    }

    /// A commit failed before its meta was written: what it took and did
    /// not write is free again (pages it wrote are lost until the next open
    /// or compaction, which is safe).
    pub(crate) fn abandoned(&mut self, unused: BTreeSet<u64>) {
        self.free = unused;
    }

    /// Pages free now or once durable and unpinned.
    pub(crate) fn free_pages(&self) -> u64 {
        self.free.len() as u64
            + self
                .pending
                .iter()
                .map(|f| f.pages.len() as u64)
                .sum::<u64>()
    }
}

/// Pages below `chosen.page_count` that neither `chosen` nor `other`
/// reaches, and those only `other` reaches; `None` if `chosen`'s tree cannot
/// be walked in full (a damaged page): then nothing is reused until a
/// compaction, rather than risk overwriting a page a damaged branch hides.
/// `other` (the second slot, possibly torn) is walked leniently: what it
/// reaches is kept, what it cannot read is skipped.
pub(crate) fn unreachable_pages(
    map: &MappedFile,
    path: &Path,
    chosen: &Meta,
    other: Option<&Meta>,
) -> Option<(Vec<u64>, Vec<u64>)> {
    // No page past the file's end can be reached (reads check it), and a
    // damaged count must not size the table.
    let page_count = chosen
        .page_count
        .min(map.len() as u64 / u64::from(chosen.page_size));
    let mut used = vec![0u8; page_count as usize];
    let mut walk = Reach {
        map,
        path,
        ps: chosen.page_size as usize,
        used: &mut used,
        mark: CHOSEN,
    };
    if chosen.root != 0 && !walk.node(chosen.root, page_count, true) {
        return None;
    }
    if let Some(o) = other.filter(|o| o.root != 0 && o.page_size == chosen.page_size) {
        walk.mark = OTHER;
        walk.node(
            o.root,
            o.page_count.min(map.len() as u64 / o.page_size as u64),
            false,
        );
    }
    let with = |mark: u8| {
        (FIRST_NODE_PAGE..page_count)
            .filter(|&p| used[p as usize] == mark)
            .collect()
    };
    Some((with(0), with(OTHER)))
}

const CHOSEN: u8 = 1;
const OTHER: u8 = 2;

struct Reach<'a> {
    map: &'a MappedFile,
    path: &'a Path,
    ps: usize,
    /// Per page: 0, or who reaches it first ([`CHOSEN`] walks first).
    used: &'a mut [u8],
    mark: u8,
}

impl Reach<'_> {
    /// Marks the subtree at `page` used. Branches are read in full (checksum
    /// included); of a leaf only the header is read, for its span. Returns
    /// whether everything below was readable; `strict` stops at the first
    /// failure.
    fn node(&mut self, page: u64, page_count: u64, strict: bool) -> bool {
        let Some(h) = self.header(page, page_count) else {
            return false;
        };
        let span = u64::from(h.span).max(1);
        for p in page..(page + span).min(self.used.len() as u64) {
            if self.used[p as usize] == 0 {
                self.used[p as usize] = self.mark;
            }
        }
        if h.kind != KIND_BRANCH {
            return true;
        }
        let Ok(node) = read_node(self.map, true, self.path, self.ps, page_count, page) else {
            return false;
        };
        let mut ok = true;
        for i in 0..node.len() {
            // `parse` checked every child lies below its parent: no cycles.
            ok &= self.node(node.child_page(i), page_count, strict);
            if strict && !ok {
                return false;
            }
        }
        ok
    }

    fn header(&self, page: u64, page_count: u64) -> Option<Header> {
        if !(FIRST_NODE_PAGE..page_count).contains(&page) {
            return None;
        }
        let off = usize::try_from(page).ok()?.checked_mul(self.ps)?;
        let bytes = self.map.get(off..off.checked_add(HEADER_LEN)?)?;
        let h = Header::read(bytes);
        (h.page == page && h.span >= 1 && page + u64::from(h.span) <= page_count).then_some(h)
    }
}
