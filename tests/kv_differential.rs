//! Differential tests for the KV service: every scenario runs against a real
//! etcd 3.4 and against basalt, and the normalised responses must match.

mod support;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp,
};
use support::{differential, Transcript};

async fn put(c: &mut Client, t: &mut Transcript, k: &str, v: &str) {
    let r = c.put(k, v, None).await;
    t.record(&format!("put {k}={v}"), r);
}

#[tokio::test]
async fn put_and_get() {
    differential("put_and_get", |mut c| async move {
        let mut t = Transcript::default();
        put(&mut c, &mut t, "a", "1").await;
        let r = c
            .put("a", "2", Some(PutOptions::new().with_prev_key()))
            .await;
        t.record("put a=2 prev_kv", r);
        let r = c.get("a", None).await;
        t.record("get a", r);
        let r = c.get("missing", None).await;
        t.record("get missing", r);
        let r = c.put("empty-value", "", None).await;
        t.record("put empty value", r);
        let r = c.get("empty-value", None).await;
        t.record("get empty value", r);
        let r = c.put(vec![0u8, 255, 10], vec![1u8, 2, 3], None).await;
        t.record("put binary key", r);
        let r = c.get(vec![0u8, 255, 10], None).await;
        t.record("get binary key", r);
        t
    })
    .await;
}

#[tokio::test]
async fn ranges_limits_and_sorting() {
    differential("ranges_limits_and_sorting", |mut c| async move {
        let mut t = Transcript::default();
        for (k, v) in [
            ("b", "x"),
            ("a", "z"),
            ("c", "y"),
            ("b", "w"),
            ("d", "v"),
            ("ab", "u"),
        ] {
            put(&mut c, &mut t, k, v).await;
        }
        let cases: Vec<(&str, &str, GetOptions)> = vec![
            ("range a..c", "a", GetOptions::new().with_range("c")),
            ("prefix a", "a", GetOptions::new().with_prefix()),
            ("from b", "b", GetOptions::new().with_from_key()),
            ("all", "", GetOptions::new().with_all_keys()),
            (
                "all limit 2",
                "",
                GetOptions::new().with_all_keys().with_limit(2),
            ),
            (
                "all limit 5",
                "",
                GetOptions::new().with_all_keys().with_limit(5),
            ),
            (
                "all limit 6",
                "",
                GetOptions::new().with_all_keys().with_limit(6),
            ),
            (
                "keys only",
                "",
                GetOptions::new().with_all_keys().with_keys_only(),
            ),
            (
                "count only",
                "",
                GetOptions::new().with_all_keys().with_count_only(),
            ),
            (
                "count only limit 1",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_count_only()
                    .with_limit(1),
            ),
            (
                "at revision 3",
                "",
                GetOptions::new().with_all_keys().with_revision(3),
            ),
            (
                "at revision 1",
                "a",
                GetOptions::new().with_prefix().with_revision(1),
            ),
            (
                "sort key descend",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
            (
                "sort value ascend",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Value, SortOrder::Ascend),
            ),
            (
                "sort value descend limit 2",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Value, SortOrder::Descend)
                    .with_limit(2),
            ),
            (
                "sort mod descend",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Mod, SortOrder::Descend),
            ),
            (
                "sort create ascend",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Create, SortOrder::Ascend),
            ),
            (
                "sort version descend",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Version, SortOrder::Descend),
            ),
            (
                "sort key none-order",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Key, SortOrder::None),
            ),
            (
                "min mod 4",
                "",
                GetOptions::new().with_all_keys().with_min_mod_revision(4),
            ),
            (
                "max mod 3",
                "",
                GetOptions::new().with_all_keys().with_max_mod_revision(3),
            ),
            (
                "min create 3 limit 1",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_min_create_revision(3)
                    .with_limit(1),
            ),
            (
                "max create 2",
                "",
                GetOptions::new()
                    .with_all_keys()
                    .with_max_create_revision(2),
            ),
            ("empty range c..a", "c", GetOptions::new().with_range("a")),
        ];
        for (label, key, opts) in cases {
            let r = c.get(key, Some(opts)).await;
            t.record(label, r);
        }
        t
    })
    .await;
}

#[tokio::test]
async fn deletes_and_generations() {
    differential("deletes_and_generations", |mut c| async move {
        let mut t = Transcript::default();
        for k in ["k1", "k2", "k3", "other"] {
            put(&mut c, &mut t, k, "v").await;
        }
        put(&mut c, &mut t, "k1", "v2").await;
        let r = c.delete("k1", None).await;
        t.record("delete k1", r);
        let r = c.delete("k1", None).await;
        t.record("delete k1 again (no revision bump)", r);
        let r = c.get("k1", None).await;
        t.record("get k1 after delete", r);
        put(&mut c, &mut t, "k1", "new-generation").await;
        let r = c.get("k1", None).await;
        t.record("get k1 new generation", r);
        let r = c.get("k1", Some(GetOptions::new().with_revision(5))).await;
        t.record("get k1 at 5", r);
        let r = c.get("k1", Some(GetOptions::new().with_revision(6))).await;
        t.record("get k1 at 6 (deleted)", r);
        let r = c
            .delete(
                "k",
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
            )
            .await;
        t.record("delete prefix k with prev_kv", r);
        let r = c
            .delete("", Some(DeleteOptions::new().with_all_keys()))
            .await;
        t.record("delete all", r);
        let r = c.get("", Some(GetOptions::new().with_all_keys())).await;
        t.record("get all after delete all", r);
        t
    })
    .await;
}

#[tokio::test]
async fn transactions() {
    differential("transactions", |mut c| async move {
        let mut t = Transcript::default();
        put(&mut c, &mut t, "x", "1").await;
        put(&mut c, &mut t, "y", "2").await;
        let txns: Vec<(&str, Txn)> = vec![
            (
                "create if absent (succeeds for new key)",
                Txn::new()
                    .when([Compare::mod_revision("new", CompareOp::Equal, 0)])
                    .and_then([TxnOp::put("new", "v", None)])
                    .or_else([TxnOp::get("new", None)]),
            ),
            (
                "create if absent (fails for existing key)",
                Txn::new()
                    .when([Compare::mod_revision("x", CompareOp::Equal, 0)])
                    .and_then([TxnOp::put("x", "v", None)])
                    .or_else([TxnOp::get("x", None)]),
            ),
            (
                "update if mod rev matches",
                Txn::new()
                    .when([Compare::mod_revision("x", CompareOp::Equal, 1)])
                    .and_then([TxnOp::put(
                        "x",
                        "updated",
                        Some(PutOptions::new().with_prev_key()),
                    )])
                    .or_else([TxnOp::get("x", None)]),
            ),
            (
                "value compares",
                Txn::new()
                    .when([
                        Compare::value("x", CompareOp::Equal, "updated"),
                        Compare::value("y", CompareOp::Greater, "1"),
                        Compare::value("y", CompareOp::Less, "3"),
                        Compare::value("y", CompareOp::NotEqual, "9"),
                    ])
                    .and_then([TxnOp::get("", Some(GetOptions::new().with_all_keys()))]),
            ),
            (
                "version and create compares on missing key",
                Txn::new()
                    .when([
                        Compare::version("nope", CompareOp::Equal, 0),
                        Compare::create_revision("nope", CompareOp::Less, 1),
                    ])
                    .and_then([TxnOp::delete(
                        "y",
                        Some(DeleteOptions::new().with_prev_key()),
                    )]),
            ),
            (
                "value compare on missing key is false",
                Txn::new()
                    .when([Compare::value("nope", CompareOp::NotEqual, "a")])
                    .and_then([TxnOp::put("should-not", "exist", None)])
                    .or_else([TxnOp::get("should-not", None)]),
            ),
            (
                "range compare",
                Txn::new()
                    .when([Compare::version("a", CompareOp::Greater, 0).with_range("z")])
                    .and_then([TxnOp::put("range-ok", "1", None)]),
            ),
            (
                "lease compare",
                Txn::new()
                    .when([Compare::lease("x", CompareOp::Equal, 0)])
                    .and_then([TxnOp::put("lease-ok", "1", None)]),
            ),
            (
                "nested txn",
                Txn::new().and_then([
                    TxnOp::put("n1", "1", None),
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::version("n1", CompareOp::Equal, 1)])
                            .and_then([TxnOp::put("n2", "2", None)]),
                    ),
                ]),
            ),
            ("empty txn", Txn::new()),
            (
                "read-only txn (no revision bump)",
                Txn::new().and_then([TxnOp::get("x", None), TxnOp::get("n2", None)]),
            ),
            (
                "put and delete same key: duplicate",
                Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::delete("d", None)]),
            ),
            (
                "put same key twice: duplicate",
                Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]),
            ),
            (
                "put in one branch and delete in other: allowed",
                Txn::new()
                    .when([Compare::version("x", CompareOp::Greater, 0)])
                    .and_then([TxnOp::put("d", "1", None)])
                    .or_else([TxnOp::delete("d", None)]),
            ),
            (
                "delete range overlapping put: duplicate",
                Txn::new().and_then([
                    TxnOp::delete("a", Some(DeleteOptions::new().with_range("z"))),
                    TxnOp::put("m", "1", None),
                ]),
            ),
            (
                "get and put same key: allowed",
                Txn::new().and_then([TxnOp::get("g", None), TxnOp::put("g", "1", None)]),
            ),
        ];
        for (label, txn) in txns {
            let r = c.txn(txn).await;
            t.record(label, r);
        }
        let r = c.get("", Some(GetOptions::new().with_all_keys())).await;
        t.record("final state", r);
        t
    })
    .await;
}

#[tokio::test]
async fn validation_errors() {
    differential("validation_errors", |mut c| async move {
        let mut t = Transcript::default();
        put(&mut c, &mut t, "a", "1").await;
        let r = c.put("", "v", None).await;
        t.record("put empty key", r);
        let r = c.get("", None).await;
        t.record("get empty key", r);
        let r = c.delete("", None).await;
        t.record("delete empty key", r);
        let r = c.get("a", Some(GetOptions::new().with_revision(100))).await;
        t.record("get future revision", r);
        let r = c
            .put("a", "v", Some(PutOptions::new().with_lease(12345)))
            .await;
        t.record("put with unknown lease", r);
        let r = c
            .put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await;
        t.record("ignore_value on missing key", r);
        let r = c
            .put("missing", "v", Some(PutOptions::new().with_ignore_lease()))
            .await;
        t.record("ignore_lease on missing key", r);
        let r = c
            .put(
                "a",
                "",
                Some(PutOptions::new().with_ignore_value().with_prev_key()),
            )
            .await;
        t.record("ignore_value keeps value", r);
        let r = c
            .put("a", "x", Some(PutOptions::new().with_ignore_value()))
            .await;
        t.record("ignore_value with a value", r);
        let ops: Vec<TxnOp> = (0..129)
            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
            .collect();
        let r = c.txn(Txn::new().and_then(ops)).await;
        t.record("txn with 129 ops", r);
        let ops: Vec<TxnOp> = (0..128)
            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
            .collect();
        let r = c.txn(Txn::new().and_then(ops)).await;
        t.record("txn with 128 ops", r);
        let large = vec![b'v'; 1024 * 1024 + 600 * 1024];
        let r = c.put("large", large, None).await;
        t.record("put 1.6 MiB value (over --max-request-bytes)", r);
        let big = vec![b'v'; 2 * 1024 * 1024];
        let r = c.put("big", big, None).await;
        t.record("put 2 MiB value", r);
        let r = c.get("a", None).await;
        t.record("state unchanged", r);
        t
    })
    .await;
}

#[tokio::test]
async fn compaction() {
    differential("compaction", |mut c| async move {
        let mut t = Transcript::default();
        for v in ["1", "2", "3", "4"] {
            put(&mut c, &mut t, "k", v).await;
        }
        put(&mut c, &mut t, "gone", "x").await;
        let r = c.delete("gone", None).await;
        t.record("delete gone", r);
        let r = c.compact(3, None).await;
        t.record("compact 3", r);
        let r = c.get("k", Some(GetOptions::new().with_revision(2))).await;
        t.record("get at 2 (compacted)", r);
        let r = c.get("k", Some(GetOptions::new().with_revision(3))).await;
        t.record("get at 3", r);
        let r = c
            .get("", Some(GetOptions::new().with_all_keys().with_revision(5)))
            .await;
        t.record("get all at 5", r);
        let r = c.compact(3, None).await;
        t.record("compact 3 again", r);
        let r = c.compact(2, None).await;
        t.record("compact 2 (below)", r);
        let r = c.compact(100, None).await;
        t.record("compact 100 (future)", r);
        let r = c
            .compact(6, Some(CompactionOptions::new().with_physical()))
            .await;
        t.record("compact 6 physical", r);
        let r = c.get("", Some(GetOptions::new().with_all_keys())).await;
        t.record("get all", r);
        let r = c
            .get("gone", Some(GetOptions::new().with_revision(5)))
            .await;
        t.record("get gone at 5 (compacted)", r);
        t
    })
    .await;
}
