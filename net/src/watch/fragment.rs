//! Splitting an oversize watch response for watchers that asked for
//! `fragment`: every piece but the last carries `fragment = true`, and the
//! client joins them back into one response.

use prost::Message;

use crate::proto::etcdserverpb as pb;

/// `resp` as one or more responses of at most about `max_bytes` each (a
/// single event larger than that still goes alone). A response that fits,
/// or that has fewer than two events, is returned as it is.
pub fn fragments(resp: pb::WatchResponse, max_bytes: usize) -> Vec<pb::WatchResponse> {
    if resp.events.len() < 2 || resp.encoded_len() < max_bytes {
        return vec![resp];
    }
    let mut shell = resp;
    let events = std::mem::take(&mut shell.events);
    shell.fragment = true;
    let shell_len = shell.encoded_len();
    let mut out = Vec::new();
    let mut piece = shell.clone();
    let mut piece_len = shell_len;
    for e in events {
        // Each event costs its length plus the field tag and length prefix.
        let len = e.encoded_len();
        let cost = 1 + prost::length_delimiter_len(len) + len;
        if !piece.events.is_empty() && piece_len + cost >= max_bytes {
            out.push(std::mem::replace(&mut piece, shell.clone()));
            piece_len = shell_len;
        }
        piece.events.push(e);
        piece_len += cost;
    }
    piece.fragment = false;
    out.push(piece);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb;

    fn resp(n: usize, value_len: usize) -> pb::WatchResponse {
        pb::WatchResponse {
            watch_id: 7,
            events: (0..n)
                .map(|i| mvccpb::Event {
                    kv: Some(mvccpb::KeyValue {
                        key: format!("k{i}").into_bytes(),
                        value: vec![b'x'; value_len],
                        mod_revision: 5,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn small_or_single_event_responses_are_untouched() {
        assert_eq!(fragments(resp(3, 10), 1000), vec![resp(3, 10)]);
        assert_eq!(fragments(resp(1, 5000), 1000), vec![resp(1, 5000)]);
    }

    #[test]
    fn large_response_splits_in_order_and_marks_all_but_last() {
        let whole = resp(10, 300);
        let parts = fragments(whole.clone(), 1000);
        assert!(parts.len() >= 4, "{} parts", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert_eq!(p.watch_id, 7);
            assert!(
                p.encoded_len() < 1000,
                "part {i} is {} bytes",
                p.encoded_len()
            );
        }
        let joined: Vec<_> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, whole.events);
    }
}
