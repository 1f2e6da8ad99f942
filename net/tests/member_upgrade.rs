//! A data dir written before members ran Raft (entries with no request
//! ids, a hard state voting for itself, a store checkpointed part way and
//! the WAL released below it, no member metadata) opens as a one-voter
//! cluster of itself: every write is there, new writes work, and it
//! restarts again.

use basalt_engine::mvcc::{Store, StoreOptions};
use basalt_engine::wal::{Entry, EntryKind, HardState, Wal, WalOptions};
use basalt_net::sequencer::{store_dir, wal_dir, LogEntry, LogRequest};
use basalt_net::Config;
use etcd_client::{Client, GetOptions};
use prost::Message;

const ENTRIES: u64 = 300;
const CHECKPOINTED: u64 = 180;

fn old_entry(i: u64) -> Vec<u8> {
    LogEntry::new(LogRequest::Put(
        basalt_net::proto::etcdserverpb::PutRequest {
            key: format!("old/{i:04}").into_bytes(),
            value: format!("v{i}").into_bytes(),
            ..Default::default()
        },
    ))
    .encode_to_vec()
}

/// Writes what the single-member sequencer of 2026-11 left on disk.
fn write_old_data_dir(data_dir: std::path::PathBuf, member_id: u64) {
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut store = Store::open(
                &store_dir(&data_dir),
                StoreOptions {
                    shards: 1,
                    ..StoreOptions::default()
                },
            )
            .unwrap();
            let opts = WalOptions {
                segment_bytes: 1 << 20,
                max_batch_bytes: 256 << 10,
                materialize_recovered: false,
                ..WalOptions::default()
            };
            let (wal, _) = Wal::open(&wal_dir(&data_dir), opts).await.unwrap();
            // Its term at first start was 2; one restart made it 3.
            wal.save_hard_state(HardState {
                term: 2,
                vote: member_id,
                commit: 0,
            })
            .await
            .unwrap();
            for i in 1..=ENTRIES {
                let term = if i <= 100 { 2 } else { 3 };
                wal.append(&[Entry {
                    term,
                    index: i,
                    kind: EntryKind::Normal,
                    data: old_entry(i),
                }])
                .await
                .unwrap();
                if i == 100 {
                    wal.save_hard_state(HardState {
                        term: 3,
                        vote: member_id,
                        commit: 100,
                    })
                    .await
                    .unwrap();
                }
                if i <= CHECKPOINTED {
                    let op = LogEntry::decode_from(&old_entry(i)).unwrap().op().unwrap();
                    store.apply(i, &op).unwrap();
                }
            }
            store.checkpoint().unwrap();
            assert_eq!(store.applied_index(), CHECKPOINTED);
            wal.release_below(CHECKPOINTED + 1).await.unwrap();
            wal.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn count(c: &mut Client) -> i64 {
    c.get(
        "old/",
        Some(GetOptions::new().with_prefix().with_count_only()),
    )
    .await
    .unwrap()
    .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_single_member_data_dir_opens_as_a_one_voter_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::for_test(dir.path());
    let member_id =
        basalt_net::member::member_id(&cfg.initial_advertise_peer_urls, &cfg.initial_cluster_token);
    write_old_data_dir(cfg.data_dir.clone(), member_id);

    let server = basalt_net::start(cfg.clone()).expect("the old data dir opens");
    assert_eq!(server.member_id(), member_id);
    let mut c = Client::connect([server.client_url()], None).await.unwrap();
    assert_eq!(
        count(&mut c).await,
        ENTRIES as i64,
        "every old write is there"
    );
    let put = c.put("new", "1", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), ENTRIES as i64 + 2);
    let status = c.status().await.unwrap();
    assert_eq!(status.leader(), member_id);
    assert!(
        status.raft_term() > 3,
        "a new term after the old ones: {}",
        status.raft_term()
    );
    drop(c);
    server.shutdown().unwrap();

    let server = basalt_net::start(cfg).expect("restarts after the migration");
    let mut c = Client::connect([server.client_url()], None).await.unwrap();
    assert_eq!(count(&mut c).await, ENTRIES as i64);
    assert_eq!(c.get("new", None).await.unwrap().kvs().len(), 1);
    drop(c);
    server.shutdown().unwrap();
}
