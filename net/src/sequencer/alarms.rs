//! The member's active alarms, kept across restarts as etcd keeps them (in
//! its backend): a NOSPACE raised before a restart still refuses writes
//! after it, until someone disarms it.
//!
//! Alarms change rarely, so the whole set is rewritten on every change: a
//! temporary file, fsync, rename over `member/alarms`, fsync of the
//! directory. A crash leaves either the old set or the new one.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// (member id, `AlarmType` as its protobuf number).
pub type AlarmSet = BTreeSet<(u64, i32)>;

const FILE: &str = "alarms";
/// First line of the file, so a stray file is never read as alarms.
const HEADER: &str = "basalt-alarms v1";

pub struct AlarmFile {
    dir: PathBuf,
}

impl AlarmFile {
    /// The alarm file in `member_dir` (created on the first change).
    pub fn new(member_dir: &Path) -> AlarmFile {
        AlarmFile {
            dir: member_dir.to_path_buf(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved set; empty when nothing was ever saved.
    pub fn load(&self) -> Result<AlarmSet, Error> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AlarmSet::new()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let corrupt = |what: &str| {
            Error::io(
                format!("reading {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
            )
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(corrupt("not a basalt alarm file"));
        }
        let mut set = AlarmSet::new();
        for line in lines {
            let (member, alarm) = line
                .split_once(' ')
                .ok_or_else(|| corrupt("malformed alarm line"))?;
            let member = member
                .parse::<u64>()
                .map_err(|_| corrupt("malformed member id"))?;
            let alarm = alarm
                .parse::<i32>()
                .map_err(|_| corrupt("malformed alarm type"))?;
            set.insert((member, alarm));
        }
        Ok(set)
    }

    /// Replaces the saved set with `set`, durably.
    pub fn save(&self, set: &AlarmSet) -> Result<(), Error> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let context = |what: &str| format!("{what} {}", tmp.display());
        let mut text = format!("{HEADER}\n");
        for (member, alarm) in set {
            text.push_str(&format!("{member} {alarm}\n"));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| Error::io(context("creating"), e))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(context("writing"), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_alarms_load_back_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = AlarmFile::new(dir.path());
        assert!(file.load().unwrap().is_empty());
        let set: AlarmSet = [(7, 1), (u64::MAX, 2)].into_iter().collect();
        file.save(&set).unwrap();
        assert_eq!(file.load().unwrap(), set);
        file.save(&AlarmSet::new()).unwrap();
        assert!(file.load().unwrap().is_empty());
        std::fs::write(dir.path().join(FILE), "hello\n1 2\n").unwrap();
        assert!(file.load().is_err());
        std::fs::write(dir.path().join(FILE), format!("{HEADER}\n1 x\n")).unwrap();
        assert!(file.load().is_err());
    }
}
