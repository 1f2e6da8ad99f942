//! Hand-written watch streams, each with the verdict it must get.

mod support;

use std::collections::BTreeSet;

use basalt_check::{
    check_watches, Event, History, KeyValue, Report, ViolationKind, WatchRequest, WatchResponse,
    Watcher,
};
use support::*;

use ViolationKind::*;

/// The report has `kind`, and nothing else: a broken guarantee is not
/// reported as others it does not break.
fn assert_violates(report: &Report, kind: ViolationKind) {
    assert_only(report, &[kind]);
}

fn assert_only(report: &Report, kinds: &[ViolationKind]) {
    let expected: BTreeSet<ViolationKind> = kinds.iter().copied().collect();
    assert_eq!(
        report.kinds(),
        expected,
        "expected only {kinds:?}, got:\n{report}"
    );
}

/// k = a @2, k = b @3, delete k @4, k = c @5.
fn history() -> Vec<basalt_check::Operation> {
    vec![
        put(1, 0, 10, "k", "a", 2),
        put(1, 20, 30, "k", "b", 3),
        delete(1, 40, 50, "k", 1, 4),
        put(1, 60, 70, "k", "c", 5),
    ]
}

fn kv(value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
    KeyValue {
        key: "k".into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
    }
}

fn a2() -> Event {
    Event::put("k", "a", 2, 2, 1)
}

fn b3() -> Event {
    Event::put("k", "b", 2, 3, 2).with_prev_kv(kv("a", 2, 2, 1))
}

fn del4() -> Event {
    Event::delete("k", 4).with_prev_kv(kv("b", 2, 3, 2))
}

fn c5() -> Event {
    Event::put("k", "c", 5, 5, 1)
}

fn from(start: i64) -> WatchRequest {
    WatchRequest::key("k").starting_at(start).with_prev_kv()
}

// ---- guarantees kept ----------------------------------------------------

#[test]
fn a_complete_stream_passes() {
    let w = watcher(
        1,
        from(2),
        vec![
            events(vec![a2(), b3()]),
            events(vec![del4()]),
            events(vec![c5()]),
        ],
    );
    assert_ok(&watching(history(), &[w]));
}

#[test]
fn a_stream_from_now_starts_after_the_created_header() {
    let created = WatchResponse {
        header_revision: 3,
        created: true,
        ..WatchResponse::default()
    };
    let w = watcher(
        1,
        WatchRequest::key("k").with_prev_kv(),
        vec![created, events(vec![del4()]), events(vec![c5()])],
    );
    assert_ok(&watching(history(), &[w]));
}

#[test]
fn a_stream_from_now_may_include_the_created_header_revision() {
    // The server registered the watcher, then a write landed, then it read
    // the header for the created response.
    let created = WatchResponse {
        header_revision: 3,
        created: true,
        ..WatchResponse::default()
    };
    let w = watcher(
        1,
        WatchRequest::key("k").with_prev_kv(),
        vec![created, events(vec![b3(), del4()])],
    );
    assert_ok(&watching(history(), &[w]));
    let created = WatchResponse {
        header_revision: 3,
        created: true,
        ..WatchResponse::default()
    };
    let w = watcher(
        1,
        WatchRequest::key("k").with_prev_kv(),
        vec![created, events(vec![a2(), b3(), del4()])],
    );
    assert_violates(&watching(history(), &[w]), WatchEventBeforeStart);
}

#[test]
fn prefix_watchers_agree_with_each_other_and_with_key_watchers() {
    let ops = vec![
        put(1, 0, 10, "k", "a", 2),
        put(2, 20, 30, "l", "x", 3),
        put(1, 40, 50, "k", "b", 4),
    ];
    let prefix = watcher(
        1,
        WatchRequest::prefix("").starting_at(1),
        vec![
            events(vec![
                Event::put("k", "a", 2, 2, 1),
                Event::put("l", "x", 3, 3, 1),
            ]),
            events(vec![Event::put("k", "b", 2, 4, 2)]),
        ],
    );
    let key = watcher(
        2,
        WatchRequest::key("k").starting_at(3),
        vec![events(vec![Event::put("k", "b", 2, 4, 2)])],
    );
    assert_ok(&watching(ops, &[prefix, key]));
}

#[test]
fn a_stream_resumed_on_another_member_is_exactly_once() {
    let first = watcher(1, from(2), vec![events(vec![a2(), b3()])]);
    let mut resumed = watcher(2, from(4), vec![events(vec![del4()]), events(vec![c5()])]);
    resumed.resumes = Some(1);
    assert_ok(&watching(history(), &[first, resumed]));
}

#[test]
fn a_progress_notification_that_skipped_an_event_is_caught_across_a_resume() {
    // The notification at 5 claims c @5 was delivered; it was not, and
    // the resume at 6 relies on the claim.
    let first = watcher(
        1,
        from(2),
        vec![events(vec![a2(), b3()]), events(vec![del4()]), progress(5)],
    );
    let mut resumed = watcher(2, from(6), vec![]);
    resumed.resumes = Some(1);
    let report = watching(history(), &[first, resumed]);
    assert_violates(&report, WatchMissingEvent);
}

#[test]
fn an_indeterminate_write_that_took_effect_is_delivered() {
    let ops = vec![put(1, 0, 10, "k", "a", 2), put_lost(2, 20, "k", "b")];
    let w = watcher(1, from(2), vec![events(vec![a2()]), events(vec![b3()])]);
    assert_ok(&watching(ops, &[w]));
}

#[test]
fn a_compacted_watch_is_canceled_without_events() {
    let canceled = WatchResponse {
        header_revision: 5,
        canceled: true,
        compact_revision: 4,
        cancel_reason: "mvcc: required revision has been compacted".into(),
        ..WatchResponse::default()
    };
    assert_ok(&watching(history(), &[watcher(1, from(2), vec![canceled])]));
}

// ---- guarantees broken ----------------------------------------------------

#[test]
fn a_missing_event() {
    let w = watcher(
        1,
        from(2),
        vec![events(vec![a2()]), events(vec![del4()]), events(vec![c5()])],
    );
    assert_violates(&watching(history(), &[w]), WatchMissingEvent);
}

#[test]
fn a_duplicate_event() {
    let w = watcher(
        1,
        from(2),
        vec![events(vec![a2(), b3()]), events(vec![b3(), del4()])],
    );
    assert_violates(&watching(history(), &[w]), WatchDuplicateEvent);
}

#[test]
fn reordered_revisions() {
    let w = watcher(
        1,
        from(2),
        vec![
            events(vec![a2()]),
            events(vec![del4()]),
            events(vec![b3()]),
            events(vec![c5()]),
        ],
    );
    assert_violates(&watching(history(), &[w]), WatchOutOfOrder);
}

#[test]
fn a_revision_split_over_two_responses() {
    // One revision that wrote two keys (a transaction), split.
    let w = watcher(
        1,
        WatchRequest::prefix("").starting_at(1),
        vec![
            events(vec![Event::put("x", "1", 2, 2, 1)]),
            events(vec![Event::put("y", "1", 2, 2, 1)]),
        ],
    );
    // The history has no such transaction: that is reported too.
    assert_only(
        &watching(vec![], &[w]),
        &[
            WatchSplitRevision,
            WatchEventConflict,
            WatchEventNotInHistory,
        ],
    );
}

#[test]
fn a_wrong_value() {
    let wrong = Event::put("k", "z", 2, 3, 2).with_prev_kv(kv("a", 2, 2, 1));
    let w = watcher(
        1,
        from(2),
        vec![
            events(vec![a2(), wrong]),
            events(vec![del4()]),
            events(vec![c5()]),
        ],
    );
    assert_violates(&watching(history(), &[w]), WatchEventConflict);
}

#[test]
fn an_event_that_contradicts_the_kv_history() {
    // Revision 3 was the put of k = b, not of another key.
    let other = Event::put("l", "b", 3, 3, 1);
    let w = watcher(
        1,
        WatchRequest::prefix("").starting_at(2),
        vec![events(vec![a2(), other])],
    );
    // And the watcher of every key missed k = b @3.
    assert_only(
        &watching(history(), &[w]),
        &[WatchEventConflict, WatchMissingEvent],
    );
}

#[test]
fn an_event_no_operation_wrote() {
    let ghost = Event::put("k", "ghost", 5, 6, 2);
    let w = watcher(
        1,
        from(2),
        vec![
            events(vec![a2(), b3()]),
            events(vec![del4()]),
            events(vec![c5()]),
            events(vec![ghost]),
        ],
    );
    assert_violates(&watching(history(), &[w]), WatchEventNotInHistory);
}

#[test]
fn an_indeterminate_write_delivered_at_two_revisions() {
    let ops = vec![put(1, 0, 10, "k", "a", 2), put_lost(2, 20, "k", "b")];
    let twice = Event::put("k", "b", 2, 4, 3).with_prev_kv(kv("b", 2, 3, 2));
    let w = watcher(
        1,
        from(2),
        vec![events(vec![a2()]), events(vec![b3()]), events(vec![twice])],
    );
    assert_violates(&watching(ops, &[w]), WatchEventNotInHistory);
}

#[test]
fn an_event_received_before_its_write_was_called() {
    let mut early = events(vec![a2()]);
    early.received_at = Some(5);
    let ops = vec![put(1, 10, 20, "k", "a", 2)];
    // Seen the other way round: the write, called after revision 2 was
    // delivered, got revision 2.
    assert_only(
        &watching(ops, &[watcher(1, from(2), vec![early])]),
        &[WatchEventNotInHistory, StaleAfterWatch],
    );
}

#[test]
fn watchers_that_disagree() {
    let one = watcher(
        1,
        WatchRequest::key("k").starting_at(2),
        vec![events(vec![Event::put("k", "a", 2, 2, 1)])],
    );
    let two = watcher(
        2,
        WatchRequest::key("k").starting_at(2),
        vec![events(vec![Event::put("k", "b", 2, 2, 1)])],
    );
    let ops = vec![put_lost(1, 0, "k", "a"), put_lost(2, 0, "k", "b")];
    assert_violates(&watching(ops, &[one, two]), WatchEventConflict);
}

#[test]
fn a_resume_that_skips_revisions_misses_events() {
    let first = watcher(1, from(2), vec![events(vec![a2()])]);
    let mut resumed = watcher(2, from(4), vec![events(vec![del4()]), events(vec![c5()])]);
    resumed.resumes = Some(1);
    assert_violates(&watching(history(), &[first, resumed]), WatchMissingEvent);
}

#[test]
fn a_resume_from_the_last_revision_again_duplicates() {
    let first = watcher(1, from(2), vec![events(vec![a2(), b3()])]);
    let mut resumed = watcher(
        2,
        from(3),
        vec![events(vec![b3()]), events(vec![del4()]), events(vec![c5()])],
    );
    resumed.resumes = Some(1);
    assert_violates(&watching(history(), &[first, resumed]), WatchDuplicateEvent);
}

#[test]
fn an_event_at_a_revision_a_progress_notification_declared_complete() {
    let w = watcher(
        1,
        from(2),
        vec![events(vec![a2()]), progress(3), events(vec![b3()])],
    );
    assert_violates(&watching(history(), &[w]), WatchBookmarkBroken);
}

#[test]
fn an_event_below_the_start_revision() {
    let w = watcher(1, from(3), vec![events(vec![a2(), b3()])]);
    assert_violates(&watching(history(), &[w]), WatchEventBeforeStart);
}

#[test]
fn events_after_a_cancel() {
    let canceled = WatchResponse {
        header_revision: 3,
        canceled: true,
        ..WatchResponse::default()
    };
    let w = watcher(
        1,
        from(2),
        vec![events(vec![a2(), b3()]), canceled, events(vec![del4()])],
    );
    assert_violates(&watching(history(), &[w]), WatchEventAfterCancel);
}

#[test]
fn versions_that_do_not_chain() {
    let b_wrong = Event::put("k", "b", 2, 3, 5).with_prev_kv(kv("a", 2, 2, 1));
    let w = watcher(1, from(2), vec![events(vec![a2(), b_wrong])]);
    assert_violates(&watching(history(), &[w]), WatchMalformedEvent);
}

#[test]
fn a_prev_kv_that_is_not_the_previous_write() {
    // The stream starts at 3 so it cannot compare with its own events:
    // the history says revision 3 wrote k between a @2 and c @5.
    let stale = Event::put("k", "c", 2, 5, 3).with_prev_kv(kv("a", 2, 2, 1));
    let ops = vec![
        put(1, 0, 10, "k", "a", 2),
        put(1, 20, 30, "k", "b", 3),
        put(1, 60, 70, "k", "c", 5),
    ];
    let w = watcher(1, from(5), vec![events(vec![stale])]);
    assert_violates(&watching(ops, &[w]), WatchPrevKvWrong);
}

#[test]
fn a_prev_kv_with_a_value_not_written_at_its_revision() {
    let wrong_prev = Event::delete("k", 4).with_prev_kv(kv("z", 2, 3, 2));
    let w = watcher(
        1,
        from(4),
        vec![events(vec![wrong_prev]), events(vec![c5()])],
    );
    assert_violates(&watching(history(), &[w]), WatchPrevKvWrong);
}

#[test]
fn a_compaction_cancel_of_a_revision_not_compacted() {
    let canceled = WatchResponse {
        header_revision: 5,
        canceled: true,
        compact_revision: 2,
        ..WatchResponse::default()
    };
    assert_violates(
        &watching(history(), &[watcher(1, from(3), vec![canceled])]),
        WatchMalformedEvent,
    );
}

#[test]
fn a_read_behind_what_a_watch_already_delivered() {
    let mut seen = events(vec![a2(), b3()]);
    seen.received_at = Some(35);
    let ops = vec![
        put(1, 0, 10, "k", "a", 2),
        put(1, 20, 30, "k", "b", 3),
        get(2, 40, 50, "k", Some("a"), 2, 2),
    ];
    assert_violates(
        &watching(ops, &[watcher(1, from(2), vec![seen])]),
        StaleAfterWatch,
    );
}

#[test]
fn recording_errors_are_refused() {
    let mut orphan = watcher(2, from(2), vec![]);
    orphan.resumes = Some(9);
    assert!(check_watches(&History::new(), &[orphan]).is_err());
    let twice: Vec<Watcher> = vec![watcher(1, from(2), vec![]), watcher(1, from(2), vec![])];
    assert!(check_watches(&History::new(), &twice).is_err());
}
