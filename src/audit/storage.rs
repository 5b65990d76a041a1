//! Which filesystem holds the decision log, so that the broker can warn at start when the log
//! would not survive a reboot (tmpfs, ramfs). Read from `/proc/self/mountinfo`; elsewhere the
//! broker cannot tell and says nothing.

use std::path::{Path, PathBuf};

/// Filesystems whose contents are gone after a reboot.
const VOLATILE_FILESYSTEMS: &[&str] = &["tmpfs", "ramfs"];

/// The type of a volatile filesystem (`tmpfs`, `ramfs`) that holds the log file at `log_path`,
/// or `None` when it is on another filesystem or the mount table cannot be read. The log's
/// directory must exist (it does once the log is open).
pub fn volatile_filesystem(log_path: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(directory_of(log_path)).ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    filesystem_of(&mountinfo, &dir).filter(|fs| VOLATILE_FILESYSTEMS.contains(&fs.as_str()))
}

/// The directory that holds the file at `path`: `.` for a bare file name.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The filesystem type of the mount that holds `path` (absolute, with symbolic links resolved)
/// in a `mountinfo` text: the longest mount point that contains it, the later line winning
/// when one directory is mounted over another.
pub(crate) fn filesystem_of(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        // `ID PARENT MAJOR:MINOR ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE ...`
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(mount_point), Some(fs_type)) = (
            before.split(' ').nth(4),
            after.split(' ').next().filter(|t| !t.is_empty()),
        ) else {
            continue;
        };
        let mount_point = unescape(mount_point);
        if !path.starts_with(&mount_point) {
            continue;
        }
        let depth = mount_point.components().count();
        if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, fs_type.to_owned()));
        }
    }
    best.map(|(_, fs_type)| fs_type)
}

/// Undoes the kernel's octal escapes in a mount point (`\040` for a space, `\134` for a
/// backslash...).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            d.iter()
                .all(|b| (b'0'..=b'7').contains(b))
                .then(|| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')))
        });
        match (bytes[i], octal.and_then(|n| u8::try_from(n).ok())) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /dev/shm rw,nosuid,nodev shared:2 - tmpfs tmpfs rw
24 22 0:22 / /var/lib/tool\\040gate rw shared:3 - xfs /dev/vdb rw
25 24 0:23 / /var/lib/tool\\040gate/ram rw - ramfs ramfs rw
26 22 0:24 / /mnt rw - ext4 /dev/vdc rw
27 26 0:25 / /mnt rw - tmpfs tmpfs rw
28 22 0:26 / /srv rw master:4 - ext4 /dev/vdd rw
";

    fn fs(path: &str) -> Option<String> {
        filesystem_of(MOUNTINFO, Path::new(path))
    }

    #[test]
    fn the_longest_mount_point_that_contains_the_path_wins() {
        assert_eq!(fs("/home/agent/decisions.db").as_deref(), Some("ext4"));
        assert_eq!(fs("/dev/shm/toolgate").as_deref(), Some("tmpfs"));
        // By path components: /dev/shmem is not under /dev/shm.
        assert_eq!(fs("/dev/shmem/toolgate").as_deref(), Some("ext4"));
        // Escaped spaces, and a mount below another.
        assert_eq!(fs("/var/lib/tool gate/state").as_deref(), Some("xfs"));
        assert_eq!(fs("/var/lib/tool gate/ram/state").as_deref(), Some("ramfs"));
        // A directory mounted over another: the later mount is the one in use.
        assert_eq!(fs("/mnt/log").as_deref(), Some("tmpfs"));
        // Optional fields (`master:4`) before the separator.
        assert_eq!(fs("/srv/log").as_deref(), Some("ext4"));
        assert_eq!(filesystem_of("garbage\n", Path::new("/srv")), None);
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(directory_of(Path::new("decisions.db")), Path::new("."));
        assert_eq!(
            directory_of(Path::new("state/decisions.db")),
            Path::new("state")
        );
        assert_eq!(
            directory_of(Path::new("/var/log/d.db")),
            Path::new("/var/log")
        );
    }

    #[test]
    fn escapes_are_undone_and_other_backslashes_kept() {
        assert_eq!(unescape("/a\\040b\\134c"), PathBuf::from("/a b\\c"));
        assert_eq!(unescape("/a\\9b\\"), PathBuf::from("/a\\9b\\"));
    }

    /// On Linux, a real log under `/dev/shm` (a tmpfs wherever it is mounted) is reported.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_log_in_dev_shm_is_reported_as_volatile() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let shm = Path::new("/dev/shm");
        if filesystem_of(&mountinfo, shm).as_deref() != Some("tmpfs") {
            eprintln!("skipped: /dev/shm is not a tmpfs mount here");
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let log = dir.path().join("decisions.db");
        assert_eq!(volatile_filesystem(&log).as_deref(), Some("tmpfs"));
    }
}
