//! File operations with the durability rules spelt out: a replaced file is written under a
//! temporary name, synced, renamed over the old one, and its directory synced, so a crash
//! leaves either the old file or the new one, never a mix; a created or removed file is
//! durable only once its directory is synced.

use crate::sys::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Files being replaced carry this suffix until they are renamed into place.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// Replaces `dir/name` with `bytes`, durably and atomically.
pub(crate) fn replace_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    write_synced(&temp, bytes)?;
    fs::rename(&temp, dir.join(name))?;
    sync_dir(dir)
}

/// Creates or replaces `path` with `bytes` and syncs it (not its directory entry).
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the directory's entries (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::sync_dir(dir)
}

/// The contents of `path`, or `None` when it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Removes temporary files a crash left behind in `dir`; returns the paths removed.
pub(crate) fn sweep_temp_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    sweep(dir, TEMP_SUFFIX)
}

/// Removes the files in `dir` whose names end in `suffix`; returns the paths removed. A file
/// that disappears meanwhile (another task removing it) counts as removed.
pub(crate) fn sweep(dir: &Path, suffix: &str) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for path in fs::read_dir(dir)? {
        let matches = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with(suffix));
        if matches && fs::is_file(&path) {
            remove_if_exists(&path)?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Removes `path`; a file already gone is not an error.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
