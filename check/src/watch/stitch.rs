//! Joins watchers that resumed one another into one stream.

use std::collections::HashMap;

use super::{Watcher, WatcherId};
use crate::error::Error;

/// One logical watch: a watcher and, in order, those that resumed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// Indices into the watchers given to [`stitch`]; the first resumed
    /// none.
    pub watchers: Vec<usize>,
}

/// Joins each chain of watchers linked by [`Watcher::resumes`] into one
/// [`Stream`], in the order of the first watcher of each chain. A watcher
/// resumed twice, a chain that loops, a resume of an unknown watcher, or
/// of one watching other keys, is a recording error.
pub fn stitch(watchers: &[Watcher]) -> Result<Vec<Stream>, Error> {
    let mut index: HashMap<WatcherId, usize> = HashMap::new();
    for (i, watcher) in watchers.iter().enumerate() {
        if index.insert(watcher.id, i).is_some() {
            return Err(invalid(watcher.id, "its id is used by another watcher too"));
        }
    }
    let mut resumed_by: Vec<Option<usize>> = vec![None; watchers.len()];
    for (i, watcher) in watchers.iter().enumerate() {
        let Some(resumed) = watcher.resumes else {
            continue;
        };
        let &previous = index.get(&resumed).ok_or_else(|| {
            invalid(
                watcher.id,
                &format!("it resumes watcher {resumed}, which was not recorded"),
            )
        })?;
        if let Some(other) = resumed_by[previous] {
            let other = watchers[other].id;
            return Err(invalid(
                watcher.id,
                &format!("watcher {other} already resumed watcher {resumed}"),
            ));
        }
        let (mine, theirs) = (&watcher.request, &watchers[previous].request);
        if mine.key != theirs.key || mine.range_end != theirs.range_end {
            return Err(invalid(
                watcher.id,
                &format!("it watches other keys than watcher {resumed}, which it resumes"),
            ));
        }
        resumed_by[previous] = Some(i);
    }
    let mut streams = Vec::new();
    let mut joined = 0;
    for (first, watcher) in watchers.iter().enumerate() {
        if watcher.resumes.is_some() {
            continue;
        }
        let mut chain = vec![first];
        while let Some(next) = resumed_by[*chain.last().expect("not empty")] {
            chain.push(next);
        }
        joined += chain.len();
        streams.push(Stream { watchers: chain });
    }
    if joined < watchers.len() {
        let looped = watchers
            .iter()
            .find(|w| w.resumes.is_some())
            .expect("some watcher is not in a stream");
        return Err(invalid(looped.id, "its chain of resumes loops"));
    }
    Ok(streams)
}

fn invalid(watcher: WatcherId, reason: &str) -> Error {
    Error::InvalidWatcher {
        watcher,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::WatchRequest;

    fn watcher(id: WatcherId, resumes: Option<WatcherId>) -> Watcher {
        Watcher {
            id,
            client: 0,
            request: WatchRequest::key("k"),
            resumes,
            responses: vec![],
        }
    }

    #[test]
    fn chains_join_in_resume_order() {
        let watchers = [
            watcher(1, None),
            watcher(3, Some(2)),
            watcher(2, Some(1)),
            watcher(4, None),
        ];
        let streams = stitch(&watchers).unwrap();
        assert_eq!(
            streams,
            vec![
                Stream {
                    watchers: vec![0, 2, 1]
                },
                Stream { watchers: vec![3] }
            ]
        );
    }

    #[test]
    fn broken_chains_are_recording_errors() {
        assert!(stitch(&[watcher(1, None), watcher(2, Some(1)), watcher(3, Some(1))]).is_err());
        assert!(stitch(&[watcher(1, Some(2)), watcher(2, Some(1))]).is_err());
        assert!(stitch(&[watcher(1, Some(9))]).is_err());
        let mut other_keys = watcher(2, Some(1));
        other_keys.request = WatchRequest::key("other");
        assert!(stitch(&[watcher(1, None), other_keys]).is_err());
    }
}
