//! Hand-written KV histories, each with the verdict it must get. Times are
//! in nanoseconds; revisions follow etcd (the empty store is at 1).

mod support;

use basalt_check::{check_linearizability, History, Limits, OpId, Verdict, ViolationKind};
use support::*;

use ViolationKind::*;

/// The report has `kind`, and nothing else.
fn assert_violates(report: &basalt_check::Report, kind: ViolationKind) {
    assert_only(report, &[kind]);
}

fn assert_only(report: &basalt_check::Report, kinds: &[ViolationKind]) {
    let expected: std::collections::BTreeSet<ViolationKind> = kinds.iter().copied().collect();
    assert_eq!(
        report.kinds(),
        expected,
        "expected only {kinds:?}, got:\n{report}"
    );
}

// ---- linearizable ---------------------------------------------------------

#[test]
fn sequential_puts_gets_and_deletes() {
    assert_ok(&linearizability(vec![
        get(1, 0, 10, "k", None, 0, 1),
        put(1, 20, 30, "k", "a", 2),
        get(1, 40, 50, "k", Some("a"), 2, 2),
        delete(1, 60, 70, "k", 1, 3),
        get(1, 80, 90, "k", None, 0, 3),
        // Deleting an absent key does not bump the revision.
        delete(1, 100, 110, "k", 0, 3),
        put(1, 120, 130, "k", "b", 4),
        get(1, 140, 150, "k", Some("b"), 4, 4),
    ]));
}

#[test]
fn reads_may_see_either_side_of_a_concurrent_write() {
    assert_ok(&linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        put(2, 20, 60, "k", "b", 3),
        // Both overlap the put of b: one saw it, one did not, in either
        // real-time order as long as they overlap each other.
        get(3, 25, 50, "k", Some("b"), 3, 3),
        get(4, 30, 55, "k", Some("a"), 2, 2),
        get(5, 70, 80, "k", Some("b"), 3, 3),
    ]));
}

#[test]
fn concurrent_writes_take_the_order_of_their_revisions() {
    assert_ok(&linearizability(vec![
        put(1, 0, 50, "k", "a", 3),
        put(2, 5, 40, "k", "b", 2),
        get(3, 60, 70, "k", Some("a"), 3, 3),
    ]));
}

#[test]
fn revisions_skip_over_other_keys_writes() {
    assert_ok(&linearizability(vec![
        put(1, 0, 10, "x", "1", 2),
        put(2, 20, 30, "y", "1", 3),
        put(1, 40, 50, "x", "2", 4),
        get(2, 60, 70, "y", Some("1"), 3, 4),
        get(1, 80, 90, "x", Some("2"), 4, 4),
    ]));
}

#[test]
fn an_indeterminate_put_that_took_effect_binds_its_revision_from_a_read() {
    assert_ok(&linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        put_lost(2, 20, "k", "b"),
        put(3, 30, 40, "other", "x", 3),
        // Revision 4 was nobody's acknowledged write: it is b's.
        get(1, 50, 60, "k", Some("b"), 4, 5),
        get(3, 70, 80, "k", Some("b"), 4, 5),
    ]));
}

#[test]
fn an_indeterminate_put_that_did_not_take_effect_is_never_seen() {
    assert_ok(&linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        put_lost(2, 20, "k", "b"),
        get(1, 30, 40, "k", Some("a"), 2, 2),
        get(1, 50, 60, "k", Some("a"), 2, 2),
    ]));
}

#[test]
fn an_indeterminate_put_may_take_effect_late_after_other_operations() {
    assert_ok(&linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        put_lost(2, 5, "k", "b"),
        get(1, 30, 40, "k", Some("a"), 2, 2),
        put(3, 50, 60, "k", "c", 3),
        // b lands after c, long after its client gave up.
        get(1, 70, 80, "k", Some("b"), 4, 4),
    ]));
}

#[test]
fn an_indeterminate_put_overwritten_unseen_needs_no_revision() {
    assert_ok(&linearizability(vec![
        put_lost(2, 0, "k", "b"),
        put(1, 10, 20, "k", "c", 3),
        get(1, 30, 40, "k", Some("c"), 3, 3),
    ]));
}

#[test]
fn an_indeterminate_delete_that_took_effect() {
    assert_ok(&linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        delete_lost(2, 20, "k"),
        get(1, 30, 40, "k", None, 0, 3),
    ]));
}

#[test]
fn indeterminate_reads_and_failed_writes_constrain_nothing() {
    assert_ok(&linearizability(vec![
        get_lost(1, 0, "k"),
        put_failed(2, 5, "k", "never"),
        put(1, 10, 20, "k", "a", 2),
        get(3, 30, 40, "k", Some("a"), 2, 2),
    ]));
}

#[test]
fn compare_and_put_succeeds_and_fails_on_mod_revision() {
    assert_ok(&linearizability(vec![
        cas(1, 0, 10, "k", 0, "a", 2),
        cas_failed(2, 20, 30, "k", 0, "b", 2, Some(("a", 2))),
        cas(2, 40, 50, "k", 2, "b", 3),
        get(1, 60, 70, "k", Some("b"), 3, 3),
    ]));
}

#[test]
fn compare_and_put_on_the_revision_a_read_bound_for_an_indeterminate_put() {
    assert_ok(&linearizability(vec![
        put_lost(1, 0, "k", "a"),
        get(2, 10, 20, "k", Some("a"), 5, 6),
        cas(2, 30, 40, "k", 5, "b", 7),
        get(3, 50, 60, "k", Some("b"), 7, 7),
    ]));
}

#[test]
fn an_indeterminate_compare_and_put_that_took_effect() {
    assert_ok(&linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        cas_lost(2, 20, "k", 2, "b"),
        get(1, 30, 40, "k", Some("b"), 3, 3),
    ]));
}

#[test]
fn many_indeterminate_writes_of_which_one_is_seen() {
    let mut ops = vec![put(1, 0, 10, "k", "a", 2)];
    for i in 0..30 {
        ops.push(put_lost(2 + i, 20 + i, "k", &format!("lost{i}")));
    }
    ops.push(get(1, 100, 110, "k", Some("lost17"), 40, 40));
    ops.push(get(1, 120, 130, "k", Some("lost17"), 40, 40));
    assert_ok(&linearizability(ops));
}

// ---- not linearizable -------------------------------------------------------

#[test]
fn stale_read_after_a_completed_write() {
    let report = linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        put(1, 20, 30, "k", "b", 3),
        get(2, 40, 50, "k", Some("a"), 2, 3),
    ]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn lost_acknowledged_write() {
    let report = linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        get(2, 20, 30, "k", None, 0, 2),
    ]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn two_acknowledged_writes_with_one_revision() {
    let report = linearizability(vec![put(1, 0, 10, "x", "a", 2), put(2, 0, 10, "y", "b", 2)]);
    assert_violates(&report, DuplicateRevision);
}

#[test]
fn revision_going_backwards_in_real_time_across_keys() {
    let report = linearizability(vec![
        put(1, 0, 10, "x", "a", 9),
        get(2, 20, 30, "y", None, 0, 8),
    ]);
    assert_violates(&report, RevisionWentBackwards);
}

#[test]
fn a_write_after_a_read_must_get_a_higher_revision() {
    let report = linearizability(vec![
        get(1, 0, 10, "x", None, 0, 5),
        put(2, 20, 30, "y", "b", 5),
    ]);
    assert_violates(&report, RevisionWentBackwards);
}

#[test]
fn compare_and_put_succeeding_on_a_stale_mod_revision() {
    let report = linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        put(1, 20, 30, "k", "b", 3),
        cas(2, 40, 50, "k", 2, "c", 4),
    ]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn compare_and_put_failing_although_it_held() {
    let report = linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        cas_failed(2, 20, 30, "k", 2, "c", 2, Some(("a", 2))),
    ]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn read_of_a_value_never_written() {
    let report = linearizability(vec![
        put(1, 0, 10, "k", "a", 2),
        get(2, 20, 30, "k", Some("ghost"), 3, 3),
    ]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn read_of_a_failed_write() {
    let report = linearizability(vec![
        put_failed(1, 0, "k", "a"),
        get(2, 20, 30, "k", Some("a"), 2, 2),
    ]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn an_indeterminate_write_cannot_take_an_acknowledged_writes_revision() {
    let report = linearizability(vec![
        put_lost(1, 0, "k", "a"),
        put(2, 10, 20, "other", "x", 2),
        get(3, 30, 40, "k", Some("a"), 2, 2),
    ]);
    assert_only(&report, &[NotLinearizable, RevisionConflict]);
}

#[test]
fn an_indeterminate_write_takes_effect_at_most_once() {
    let report = linearizability(vec![
        put_lost(1, 0, "k", "a"),
        get(2, 10, 20, "k", Some("a"), 2, 2),
        put(3, 30, 40, "k", "b", 3),
        get(2, 50, 60, "k", Some("a"), 4, 4),
    ]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn a_read_cannot_see_an_indeterminate_write_before_its_call() {
    let report = linearizability(vec![
        get(2, 0, 10, "k", Some("a"), 2, 2),
        put_lost(1, 20, "k", "a"),
    ]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn delete_of_a_key_that_never_existed() {
    let report = linearizability(vec![delete(1, 0, 10, "k", 1, 2)]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn read_at_a_revision_behind_the_write_it_follows() {
    let report = linearizability(vec![
        put(1, 0, 10, "k", "a", 5),
        // Overlaps it, sees its value, but reports a header behind it.
        get(2, 5, 30, "k", Some("a"), 5, 4),
    ]);
    assert_violates(&report, NotLinearizable);
}

#[test]
fn a_read_seeing_a_revision_of_another_key() {
    let report = linearizability(vec![
        put(1, 0, 10, "x", "a", 2),
        put(1, 20, 30, "y", "b", 3),
        get(2, 40, 50, "y", Some("b"), 2, 3),
    ]);
    assert_only(&report, &[NotLinearizable, RevisionConflict]);
}

// ---- the report -------------------------------------------------------------

#[test]
fn the_counterexample_is_shrunk_to_the_operations_that_conflict() {
    let mut ops = Vec::new();
    let mut revision = 1;
    for i in 0..20u64 {
        revision += 1;
        ops.push(put(
            1,
            i * 100,
            i * 100 + 10,
            "k",
            &format!("v{i}"),
            revision,
        ));
        ops.push(get(
            2,
            i * 100 + 20,
            i * 100 + 30,
            "k",
            Some(&format!("v{i}")),
            revision,
            revision,
        ));
    }
    // #40 reads v5 long after v19 was written and read.
    ops.push(get(3, 5000, 5010, "k", Some("v5"), 7, revision));
    let report = linearizability(ops);
    let violation = report
        .violations
        .iter()
        .find(|v| v.kind == NotLinearizable)
        .expect("found");
    println!("{report}");
    assert!(violation.ops.contains(&OpId(40)), "{report}");
    assert!(violation.ops.len() <= 3, "shrunk to a handful: {report}");
    assert!(
        violation.detail.contains("#40 client 3"),
        "{}",
        violation.detail
    );
}

#[test]
fn a_search_over_budget_answers_unknown_not_ok() {
    let mut ops = Vec::new();
    for i in 0..8u64 {
        ops.push(put_lost(i, i, "k", &format!("v{i}")));
    }
    ops.push(get(9, 100, 110, "k", Some("v3"), 5, 9));
    let limits = Limits {
        max_states_per_key: 2,
        ..Limits::default()
    };
    let report = check_linearizability(&History::from(ops), &limits).unwrap();
    assert_eq!(report.verdict(), Verdict::Unknown, "{report}");
    assert!(report.to_string().contains("gave up"), "{report}");
}
