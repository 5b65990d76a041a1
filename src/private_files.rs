//! Owner-only files and directories for the broker's state: the decision log and the state
//! database hold subjects, `jti`s, groups and arguments, so nobody but the broker's user reads
//! them (directories 0700, files 0600), whatever the umask.

use std::path::Path;

/// Mode of a directory that holds state.
const DIR_MODE: u32 = 0o700;

/// Mode of a state file.
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700 (existing ones are left as they are).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// Creates the directory `dir` 0700, or restricts an existing one that others may enter, with
/// a warning: an earlier version created it 0755.
pub fn secure_dir(dir: &Path) -> std::io::Result<()> {
    create_dir(dir)?;
    restrict(dir, DIR_MODE)
}

/// Creates the file at `path` empty with mode 0600 if it does not exist, so that SQLite, which
/// gives its `-wal` and `-shm` files the database's mode, never creates them readable by
/// others; restricts an existing one (and those companions) with a warning.
pub fn secure_sqlite_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options.open(path)?;
    secure_file(path)?;
    for suffix in ["-wal", "-shm"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        secure_file(Path::new(&companion))?;
    }
    Ok(())
}

/// Restricts the file at `path` to 0600 if it exists and others may read it, with a warning.
pub fn secure_file(path: &Path) -> std::io::Result<()> {
    match restrict(path, FILE_MODE) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Clears the group and other bits of `path` (keeping at most `wanted`) when any is set.
#[cfg(unix)]
fn restrict(path: &Path, wanted: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    // A file the broker may not change (a read-only mount of a key, say) is used as it is:
    // refusing to start would not make it any less readable.
    let restricted = std::fs::Permissions::from_mode(mode & wanted);
    if let Err(e) = std::fs::set_permissions(path, restricted) {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:o}"),
            error = %e,
            "the broker's state is open to other users and could not be restricted"
        );
        return Ok(());
    }
    tracing::warn!(
        path = %path.display(),
        was = %format!("{mode:o}"),
        now = %format!("{:o}", mode & wanted),
        "the broker's state was open to other users; restricted to its owner"
    );
    Ok(())
}

#[cfg(not(unix))]
fn restrict(path: &Path, _wanted: u32) -> std::io::Result<()> {
    std::fs::metadata(path).map(|_| ())
}
