//! Reading the WAL back (`Wal::entries`, `Wal::term`) checked against a
//! plain `Vec<Entry>` model through random appends, replacing appends,
//! truncations, releases and reopens, across many small segments.
//!
//! Seeded: a failure prints its seed; `WAL_READ_SEEDS=n` runs more seeds
//! and `WAL_READ_SEED=s` replays one.

use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use basalt_engine::wal::{Entry, EntryKind, HardState, Wal, WalError, WalOptions};

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("test body does not panic");
}

async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// SplitMix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn small_segments() -> WalOptions {
    WalOptions {
        segment_bytes: 64 << 10,
        max_batch_bytes: 16 << 10,
        ..WalOptions::default()
    }
}

/// The log as it should be: entries `first..first + entries.len()`.
struct Model {
    first: u64,
    entries: Vec<Entry>,
    term: u64,
    hard_state: HardState,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn get(&self, index: u64) -> &Entry {
        &self.entries[(index - self.first) as usize]
    }

    fn make(&self, index: u64, rng: &mut Rng) -> Entry {
        // Mostly small, sometimes empty, sometimes several blocks long.
        let len = match rng.next() % 10 {
            0 => 0,
            1 => rng.range(4096, 12_000) as usize,
            _ => rng.range(1, 600) as usize,
        };
        let salt = rng.next();
        Entry {
            term: self.term,
            index,
            kind: if salt % 5 == 0 {
                EntryKind::ConfChange
            } else {
                EntryKind::Normal
            },
            data: (0..len)
                .map(|i| (salt >> (i % 8)) as u8 ^ i as u8)
                .collect(),
        }
    }

    fn truncate(&mut self, from: u64) {
        if from < self.next() {
            self.entries.truncate((from - self.first) as usize);
        }
    }

    fn release(&mut self, below: u64) {
        if below <= self.first {
            return;
        }
        if below >= self.next() {
            self.entries.clear();
        } else {
            self.entries.drain(..(below - self.first) as usize);
        }
        self.first = below;
    }

    /// What `entries(lo, hi, max_bytes)` must return (the range is valid).
    fn slice(&self, lo: u64, hi: u64, max_bytes: u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        let mut total = 0u64;
        for i in lo..hi {
            let e = self.get(i);
            total += e.data.len() as u64;
            if !out.is_empty() && total > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }
}

/// Every read the WAL answers agrees with the model.
fn check(wal: &Wal, m: &Model, rng: &mut Rng, ctx: &str) {
    let (first, next) = (m.first, m.next());
    assert_eq!(wal.first_index(), first, "{ctx}: first_index");
    assert_eq!(wal.last_index(), next - 1, "{ctx}: last_index");
    assert_eq!(wal.last_readable_index(), next - 1, "{ctx}: readable");
    for i in first..next {
        assert_eq!(wal.term(i).unwrap(), m.get(i).term, "{ctx}: term({i})");
    }
    if first > 1 {
        assert!(
            matches!(wal.term(first - 1), Err(WalError::Released { .. })),
            "{ctx}: term below first"
        );
        assert!(
            matches!(
                wal.entries(first - 1, next, u64::MAX),
                Err(WalError::Released { .. })
            ),
            "{ctx}: entries below first"
        );
    }
    assert!(
        matches!(wal.term(next), Err(WalError::Unavailable { .. })),
        "{ctx}: term past the end"
    );
    assert!(
        matches!(
            wal.entries(first, next + 1, u64::MAX),
            Err(WalError::Unavailable { .. })
        ),
        "{ctx}: entries past the end"
    );
    assert_eq!(wal.entries(next, next, 0).unwrap(), Vec::new(), "{ctx}");
    if first == next {
        return;
    }
    // The whole log, then random ranges and budgets.
    assert_eq!(
        wal.entries(first, next, u64::MAX).unwrap(),
        m.entries,
        "{ctx}: whole log"
    );
    for _ in 0..8 {
        let lo = rng.range(first, next - 1);
        let hi = rng.range(lo + 1, next);
        let max = match rng.next() % 4 {
            0 => 0,
            1 => u64::MAX,
            _ => rng.range(0, 40_000),
        };
        let got = wal.entries(lo, hi, max).unwrap();
        assert_eq!(
            got,
            m.slice(lo, hi, max),
            "{ctx}: entries({lo}, {hi}, {max})"
        );
    }
}

async fn reopen(wal: Rc<Wal>, dir: &Path, m: &Model, materialize: bool) -> Rc<Wal> {
    Rc::try_unwrap(wal)
        .ok()
        .expect("no other owner")
        .close()
        .await
        .unwrap();
    let opts = WalOptions {
        materialize_recovered: materialize,
        ..small_segments()
    };
    let (wal, rec) = Wal::open(dir, opts).await.unwrap();
    assert_eq!(rec.hard_state, m.hard_state);
    if materialize {
        assert_eq!(rec.entries, m.entries, "recovered entries");
    } else {
        assert!(
            rec.entries.is_empty(),
            "entries were not to be materialized"
        );
    }
    Rc::new(wal)
}

async fn random_history(seed: u64, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let (wal, _) = Wal::open(dir.path(), small_segments()).await.unwrap();
    let mut wal = Rc::new(wal);
    let mut m = Model {
        first: 1,
        entries: Vec::new(),
        term: 1,
        hard_state: HardState::default(),
    };
    for step in 0..steps {
        if rng.chance(10) {
            m.term += 1;
        }
        let op = rng.next() % 100;
        let ctx = format!("seed {seed} step {step} op {op}");
        match op {
            // Plain appends, several per batch.
            0..=39 => {
                let n = rng.range(1, 12);
                let es: Vec<Entry> = (0..n).map(|k| m.make(m.next() + k, &mut rng)).collect();
                wal.append(&es).await.unwrap();
                m.entries.extend(es);
            }
            // Raft-style replacing append (possibly just appending).
            40..=54 => {
                let from = rng.range(m.first, m.next());
                let n = rng.range(1, 6);
                let es: Vec<Entry> = (0..n).map(|k| m.make(from + k, &mut rng)).collect();
                let hs = rng.chance(50).then(|| HardState {
                    term: m.term,
                    vote: rng.range(0, 3),
                    commit: from.saturating_sub(1),
                });
                wal.append_replacing(&es, hs).await.unwrap();
                m.truncate(from);
                m.entries.extend(es);
                if let Some(hs) = hs {
                    m.hard_state = hs;
                }
            }
            55..=64 => {
                let from = rng.range(m.first, m.next() + 2);
                wal.truncate_from(from).await.unwrap();
                m.truncate(from);
            }
            65..=74 => {
                // Mostly a little, sometimes past the end (snapshot).
                let below = if rng.chance(15) {
                    m.next() + rng.range(0, 3)
                } else {
                    rng.range(m.first.saturating_sub(2).max(1), m.next())
                };
                wal.release_below(below).await.unwrap();
                m.release(below);
            }
            75..=79 => {
                let hs = HardState {
                    term: m.term,
                    vote: rng.range(0, 3),
                    commit: m.next() - 1,
                };
                wal.save_hard_state(hs).await.unwrap();
                m.hard_state = hs;
            }
            80..=84 => {
                let materialize = rng.chance(50);
                wal = reopen(wal, dir.path(), &m, materialize).await;
            }
            // Bad requests leave no trace.
            85..=89 => {
                if m.first > 1 {
                    let e = m.make(m.first - 1, &mut rng);
                    assert!(matches!(
                        wal.append_replacing(&[e], None).await,
                        Err(WalError::Released { .. })
                    ));
                }
                let e = m.make(m.next() + 1, &mut rng);
                assert!(matches!(
                    wal.append_replacing(&[e], None).await,
                    Err(WalError::NotContiguous { .. })
                ));
            }
            _ => {}
        }
        check(&wal, &m, &mut rng, &ctx);
    }
    assert!(
        wal.segment_paths().len() > 1 || m.first > 1,
        "seed {seed}: the history should have spanned segments"
    );
    wal = reopen(wal, dir.path(), &m, false).await;
    check(&wal, &m, &mut rng, &format!("seed {seed} final"));
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("WAL_READ_SEED") {
        return vec![s.parse().expect("WAL_READ_SEED is a number")];
    }
    let n = std::env::var("WAL_READ_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    (1..=n).map(|k| k * 0x5DEE_CE66).collect()
}

#[test]
fn reads_match_a_model_through_random_histories() {
    for seed in seeds() {
        run(move || random_history(seed, 250));
    }
}

#[test]
fn a_truncated_suffix_is_never_readable_even_before_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _) = Wal::open(&d, small_segments()).await.unwrap();
        let wal = Rc::new(wal);
        let old: Vec<Entry> = (1..=40)
            .map(|i| Entry {
                term: 1,
                index: i,
                kind: EntryKind::Normal,
                data: vec![1; 300],
            })
            .collect();
        wal.append(&old).await.unwrap();
        let new: Vec<Entry> = (20..=30)
            .map(|i| Entry {
                term: 2,
                index: i,
                kind: EntryKind::Normal,
                data: vec![2; 300],
            })
            .collect();
        let w = Rc::clone(&wal);
        let write = glommio::spawn_local(async move { w.append_replacing(&new, None).await });
        // Once the replacement is accepted, no term-1 entry at or above 20
        // may be read, durable or not.
        let mut saw_pending = false;
        while wal.last_index() != 30 {
            yield_once().await;
        }
        loop {
            let readable = wal.last_readable_index();
            if readable < 30 {
                saw_pending = true;
            }
            let got = wal.entries(1, readable + 1, u64::MAX).unwrap();
            assert!(
                got.iter().all(|e| e.index < 20 || e.term == 2),
                "an entry of the truncated suffix was returned"
            );
            assert!(wal.term(25).map_or(true, |t| t == 2));
            if readable == 30 {
                break;
            }
            yield_once().await;
        }
        write.await.unwrap();
        assert!(
            saw_pending,
            "the check ran only after the write was durable"
        );
        assert_eq!(wal.entries(19, 31, u64::MAX).unwrap().len(), 12);
        assert!(matches!(wal.term(31), Err(WalError::Unavailable { .. })));
    });
}

#[test]
fn appends_in_flight_are_not_readable_until_durable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _) = Wal::open(&d, small_segments()).await.unwrap();
        let wal = Rc::new(wal);
        let w = Rc::clone(&wal);
        let write = glommio::spawn_local(async move {
            let e = Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Normal,
                data: b"x".to_vec(),
            };
            w.append(&[e]).await
        });
        while wal.last_index() != 1 {
            yield_once().await;
        }
        if wal.last_readable_index() == 0 {
            assert!(matches!(
                wal.entries(1, 2, u64::MAX),
                Err(WalError::Unavailable {
                    index: 1,
                    last_index: 0
                })
            ));
        }
        write.await.unwrap();
        assert_eq!(wal.last_readable_index(), 1);
        assert_eq!(wal.entries(1, 2, 0).unwrap()[0].data, b"x");
    });
}

#[test]
fn damage_under_a_retained_entry_is_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _) = Wal::open(&d, small_segments()).await.unwrap();
        let es: Vec<Entry> = (1..=5)
            .map(|i| Entry {
                term: 1,
                index: i,
                kind: EntryKind::Normal,
                data: vec![i as u8; 100],
            })
            .collect();
        wal.append(&es).await.unwrap();
        assert_eq!(wal.entries(1, 6, u64::MAX).unwrap(), es);
        // Flip a byte of entry 3's data behind the WAL's back.
        let seg = wal.segment_paths()[0].clone();
        let bytes = std::fs::read(&seg).unwrap();
        let at = bytes
            .windows(100)
            .position(|w| w.iter().all(|&b| b == 3))
            .expect("entry 3's data is in the segment");
        let mut patched = bytes[at..at + 1].to_vec();
        patched[0] ^= 0xff;
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .write_all_at(&patched, at as u64)
            .unwrap();
        assert_eq!(wal.entries(1, 3, u64::MAX).unwrap(), es[..2].to_vec());
        match wal.entries(1, 6, u64::MAX) {
            Err(WalError::Corrupt { path, .. }) => assert_eq!(path, seg),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(matches!(
            wal.entries(3, 4, 0),
            Err(WalError::Corrupt { .. })
        ));
        wal.close().await.unwrap();
    });
}

#[test]
fn max_append_bytes_is_what_one_append_can_take() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _) = Wal::open(&d, small_segments()).await.unwrap();
        let limit = wal.max_append_bytes();
        let per = Wal::entry_bytes(1000);
        let n = limit / per;
        let es: Vec<Entry> = (1..=n)
            .map(|index| Entry {
                term: 1,
                index,
                kind: EntryKind::Normal,
                data: vec![9; 1000],
            })
            .collect();
        // The last entry grows to use up the limit exactly.
        let mut full = es.clone();
        full.last_mut()
            .unwrap()
            .data
            .resize(1000 + (limit - n * per) as usize, 9);
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: 0,
        };
        let mut over = full.clone();
        over.last_mut().unwrap().data.push(9);
        assert!(matches!(
            wal.append_replacing(&over, Some(hs)).await,
            Err(WalError::TooLarge { .. })
        ));
        wal.append(&es[..1]).await.unwrap();
        // Replacing entry 1 too: truncation, entries and hard state in one.
        wal.append_replacing(&full, Some(hs)).await.unwrap();
        assert_eq!(wal.entries(1, n + 1, u64::MAX).unwrap(), full);
        wal.close().await.unwrap();
    });
}
