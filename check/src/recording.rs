//! A run's record on disk, so a failing run can be checked again by hand:
//! JSON lines, one [`Record`] per line (the format is described in the
//! crate docs).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::history::{ClientId, History, Operation};
use crate::watch::{WatchRequest, WatchResponse, Watcher, WatcherId};

/// One line of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// The next operation; operations are numbered in the order of these
    /// lines, from 0.
    Op(Operation),
    /// A watcher was opened.
    Watch(WatchOpened),
    /// A watcher received a response; a watcher's responses are in the
    /// order of these lines.
    WatchResponse(ReceivedResponse),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchOpened {
    pub id: WatcherId,
    #[serde(default)]
    pub client: ClientId,
    #[serde(flatten)]
    pub request: WatchRequest,
    #[serde(default)]
    pub resumes: Option<WatcherId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedResponse {
    pub watcher: WatcherId,
    #[serde(flatten)]
    pub response: WatchResponse,
}

impl Record {
    /// The record as one line of JSON, without the newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("records serialize")
    }
}

/// A run: its operations and its watchers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recording {
    pub history: History,
    pub watchers: Vec<Watcher>,
}

impl Recording {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::read_jsonl(BufReader::new(file), path)
    }

    /// Reads JSON lines; `path` only names the input in errors. Blank
    /// lines are skipped.
    pub fn read_jsonl(reader: impl BufRead, path: &Path) -> Result<Self, Error> {
        let mut recording = Recording::default();
        let mut watchers: HashMap<WatcherId, usize> = HashMap::new();
        for (index, line) in reader.lines().enumerate() {
            let parse_error = |message: String| Error::Parse {
                path: path.to_path_buf(),
                line: index + 1,
                message,
            };
            let line = line.map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Record =
                serde_json::from_str(&line).map_err(|e| parse_error(e.to_string()))?;
            match record {
                Record::Op(op) => {
                    recording.history.push(op);
                }
                Record::Watch(opened) => {
                    if watchers
                        .insert(opened.id, recording.watchers.len())
                        .is_some()
                    {
                        return Err(parse_error(format!(
                            "watcher {} is opened twice",
                            opened.id
                        )));
                    }
                    recording.watchers.push(Watcher {
                        id: opened.id,
                        client: opened.client,
                        request: opened.request,
                        resumes: opened.resumes,
                        responses: Vec::new(),
                    });
                }
                Record::WatchResponse(received) => {
                    let &at = watchers.get(&received.watcher).ok_or_else(|| {
                        parse_error(format!(
                            "watcher {} was not opened before",
                            received.watcher
                        ))
                    })?;
                    recording.watchers[at].responses.push(received.response);
                }
            }
        }
        Ok(recording)
    }

    /// The recording as records: operations, then each watcher and its
    /// responses.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let ops = self.history.ops.iter().cloned().map(Record::Op);
        let watches = self.watchers.iter().flat_map(|watcher| {
            let opened = Record::Watch(WatchOpened {
                id: watcher.id,
                client: watcher.client,
                request: watcher.request.clone(),
                resumes: watcher.resumes,
            });
            let responses = watcher.responses.iter().map(|response| {
                Record::WatchResponse(ReceivedResponse {
                    watcher: watcher.id,
                    response: response.clone(),
                })
            });
            std::iter::once(opened).chain(responses)
        });
        ops.chain(watches)
    }

    pub fn write_jsonl(&self, mut writer: impl Write) -> std::io::Result<()> {
        for record in self.records() {
            writeln!(writer, "{}", record.to_json_line())?;
        }
        writer.flush()
    }

    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(io)?;
        self.write_jsonl(BufWriter::new(file)).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outcome, Request, Response};
    use crate::watch::Event;

    #[test]
    fn a_recording_round_trips_through_json_lines() {
        let mut recording = Recording::default();
        recording.history.push(Operation::new(
            1,
            10,
            20,
            Request::put("k", "v"),
            Outcome::Ok(Response::put(2)),
        ));
        recording.history.push(Operation::new(
            2,
            15,
            99,
            Request::delete("k"),
            Outcome::Indeterminate,
        ));
        recording.watchers.push(Watcher {
            id: 7,
            client: 3,
            request: WatchRequest::prefix("k").starting_at(1).with_prev_kv(),
            resumes: None,
            responses: vec![WatchResponse {
                header_revision: 2,
                received_at: Some(25),
                events: vec![Event::put("k", "v", 2, 2, 1)],
                ..WatchResponse::default()
            }],
        });
        let mut bytes = Vec::new();
        recording.write_jsonl(&mut bytes).unwrap();
        let read = Recording::read_jsonl(&bytes[..], Path::new("test")).unwrap();
        assert_eq!(read, recording);
    }

    /// The lines the crate docs show, read as documented.
    #[test]
    fn the_documented_example_reads() {
        let text = r#"
{"op":{"client":1,"call":1000,"return":2500,"request":{"put":{"key":"k","value":"v1"}},"outcome":{"ok":{"put":{"header_revision":7}}}}}
{"op":{"client":2,"call":1200,"return":9000,"request":{"delete":{"key":"k"}},"outcome":"indeterminate"}}
{"op":{"client":3,"call":1300,"return":1400,"request":{"get":{"key":"k"}},"outcome":"failed"}}
{"watch":{"id":1,"client":4,"key":"k","range_end":null,"start_revision":0,"prev_kv":true,"resumes":null}}
{"watch_response":{"watcher":1,"header_revision":6,"created":true,"received_at":1100}}
{"watch_response":{"watcher":1,"header_revision":7,"received_at":2600,"events":[{"type":"put","kv":{"key":"k","value":"v1","create_revision":7,"mod_revision":7,"version":1},"prev_kv":null}]}}
{"watch_response":{"watcher":1,"header_revision":9,"canceled":true,"compact_revision":8,"cancel_reason":"compacted"}}
"#;
        let recording = Recording::read_jsonl(text.as_bytes(), Path::new("doc")).unwrap();
        assert_eq!(recording.history.ops.len(), 3);
        assert_eq!(recording.history.ops[1].outcome, Outcome::Indeterminate);
        let watcher = &recording.watchers[0];
        assert!(watcher.request.prev_kv && watcher.request.start_revision == 0);
        assert_eq!(watcher.responses.len(), 3);
        assert_eq!(
            watcher.responses[1].events[0],
            Event::put("k", "v1", 7, 7, 1)
        );
        assert_eq!(watcher.responses[2].compact_revision, 8);
    }

    #[test]
    fn errors_name_the_line() {
        let text = "\n{\"watch_response\":{\"watcher\":4,\"header_revision\":1}}\n";
        let error = Recording::read_jsonl(text.as_bytes(), Path::new("run.jsonl")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("run.jsonl:2: watcher 4 was not opened"),
            "{error}"
        );
    }
}
