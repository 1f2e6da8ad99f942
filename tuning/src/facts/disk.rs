//! Disk facts for the data dir: the mount it lives on (filesystem and
//! options), the block device behind it (scheduler, write cache,
//! rotational) and its size.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host_root::{selected_choice, HostRoot};

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DiskFacts {
    /// The data dir, canonicalised.
    pub data_dir: String,
    pub mount: Option<MountFacts>,
    /// `None` for filesystems with no block device (tmpfs, overlay, NFS)
    /// or a device sysfs does not show.
    pub device: Option<BlockDeviceFacts>,
    /// Filesystem size and space left for unprivileged users (`statvfs`).
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MountFacts {
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    /// Per-mount options (`rw`, `noatime`, …).
    pub mount_options: Vec<String>,
    /// Filesystem-wide options (`barrier=0`, `data=journal`, …).
    pub super_options: Vec<String>,
    /// `major:minor` of the device.
    pub device_number: String,
}

impl MountFacts {
    pub fn has_option(&self, option: &str) -> bool {
        self.mount_options
            .iter()
            .chain(&self.super_options)
            .any(|o| o == option)
    }

    pub fn read_only(&self) -> bool {
        self.mount_options.first().map(String::as_str) == Some("ro")
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BlockDeviceFacts {
    /// Kernel name of the whole disk (`vda`, `nvme0n1`, `dm-0`).
    pub name: String,
    /// The partition the filesystem sits on, if it is one.
    pub partition: Option<String>,
    pub scheduler: Option<String>,
    pub rotational: Option<bool>,
    /// `write back` (volatile cache, flushed by fdatasync) or
    /// `write through`.
    pub write_cache: Option<String>,
    pub model: Option<String>,
}

impl DiskFacts {
    /// Gathers the facts for `data_dir`, which must exist (the caller
    /// checks and reports a missing one).
    pub fn gather(host: &HostRoot, data_dir: &Path) -> Self {
        let canonical = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let mount = host
            .read("/proc/self/mountinfo")
            .and_then(|text| mount_for(&parse_mountinfo(&text), &canonical));
        let device = mount
            .as_ref()
            .and_then(|mount| block_device(host, &mount.device_number));
        let (total_bytes, available_bytes) = filesystem_size(&canonical).unzip();
        Self {
            data_dir: canonical.display().to_string(),
            mount,
            device,
            total_bytes,
            available_bytes,
        }
    }
}

/// Parses `/proc/self/mountinfo` (proc(5)); malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountFacts> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split_whitespace().collect();
            let tail: Vec<&str> = after.split_whitespace().collect();
            if fields.len() < 6 || tail.len() < 2 {
                return None;
            }
            let split = |text: &str| text.split(',').map(str::to_owned).collect::<Vec<_>>();
            Some(MountFacts {
                mount_point: unescape(fields[4]),
                fs_type: tail[0].to_owned(),
                source: unescape(tail[1]),
                mount_options: split(fields[5]),
                super_options: tail.get(2).map(|opts| split(opts)).unwrap_or_default(),
                device_number: fields[2].to_owned(),
            })
        })
        .collect()
}

/// The mount a path lives on: the longest mount point that contains it;
/// among equals the last, because a later mount hides an earlier one.
pub fn mount_for(mounts: &[MountFacts], path: &Path) -> Option<MountFacts> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, mount)| path.starts_with(&mount.mount_point))
        .max_by_key(|(index, mount)| (Path::new(&mount.mount_point).components().count(), *index))
        .map(|(_, mount)| mount.clone())
}

/// mountinfo escapes space, tab, newline and backslash as three octal
/// digits after a backslash; anything else passes through unchanged.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds the disk behind `major:minor` through `/sys/dev/block`. A
/// partition has no queue of its own: its scheduler and cache settings
/// are its parent disk's.
fn block_device(host: &HostRoot, device_number: &str) -> Option<BlockDeviceFacts> {
    if device_number.starts_with("0:") {
        return None; // anonymous device: tmpfs, overlay, NFS, btrfs subvolume
    }
    let link = host.path(&format!("/sys/dev/block/{device_number}"));
    let resolved = fs::canonicalize(link).ok()?;
    let (disk_dir, partition): (PathBuf, Option<String>) = if resolved.join("partition").exists() {
        let name = resolved.file_name()?.to_string_lossy().into_owned();
        (resolved.parent()?.to_path_buf(), Some(name))
    } else {
        (resolved, None)
    };
    let read = |relative: &str| {
        fs::read_to_string(disk_dir.join(relative))
            .ok()
            .map(|text| text.trim().to_owned())
    };
    Some(BlockDeviceFacts {
        name: disk_dir.file_name()?.to_string_lossy().into_owned(),
        partition,
        scheduler: read("queue/scheduler").and_then(|text| selected_choice(&text)),
        rotational: read("queue/rotational").map(|text| text == "1"),
        write_cache: read("queue/write_cache"),
        model: read("device/model").filter(|model| !model.is_empty()),
    })
}

/// Size and available space of the filesystem holding `path`.
// statvfs field types are u64 on 64-bit targets but narrower on some
// 32-bit ones; the casts keep the code portable.
#[allow(clippy::unnecessary_cast)]
fn filesystem_size(path: &Path) -> Option<(u64, u64)> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points
    // to writable memory of the right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the whole struct.
    let stat = unsafe { stat.assume_init() };
    let fragment = stat.f_frsize as u64;
    Some((
        stat.f_blocks as u64 * fragment,
        stat.f_bavail as u64 * fragment,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
40 27 259:2 / /var/lib/etcd rw,noatime shared:1 - xfs /dev/nvme0n1p2 rw,attr2
41 27 0:50 / /var/lib/etcd rw,nosuid - tmpfs tmpfs rw,size=1g
42 27 0:51 / /mnt/my\\040disk ro - ext4 /dev/sdb1 ro
";

    #[test]
    fn finds_the_innermost_and_latest_mount() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 5);
        let root = mount_for(&mounts, Path::new("/home/x")).unwrap();
        assert_eq!(root.fs_type, "ext4");
        assert!(root.has_option("relatime"));
        let etcd = mount_for(&mounts, Path::new("/var/lib/etcd/member")).unwrap();
        assert_eq!(
            etcd.fs_type, "tmpfs",
            "the later mount hides the earlier one"
        );
        let spaced = mount_for(&mounts, Path::new("/mnt/my disk/data")).unwrap();
        assert!(spaced.read_only());
        assert_eq!(spaced.source, "/dev/sdb1");
    }

    #[test]
    fn optional_fields_do_not_shift_columns() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts[2].fs_type, "xfs");
        assert_eq!(mounts[2].mount_options, vec!["rw", "noatime"]);
        assert_eq!(mounts[2].super_options, vec!["rw", "attr2"]);
    }

    #[test]
    fn unescape_handles_octal_and_stray_backslashes() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\"), "a\\");
        assert_eq!(unescape("a\\9x"), "a\\9x");
    }
}
