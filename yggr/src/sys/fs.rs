//! Files, as `DiskStorage` uses them: the standard library's, or turmoil's simulated ones
//! inside a simulation (see the [parent module](super) for why the choice is made at run time).
//!
//! Only what the storage needs is here, with the standard library's names and meanings.
//! Paths in a simulation are absolute paths in the current host's own file system.
//!
//! What the simulated file system does not have: file locks. [`File::try_lock`] always
//! succeeds there; a simulation never opens one directory from two nodes of the same host.

use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[cfg(feature = "simulation")]
use turmoil::fs::shim::std::fs as simulated;

/// An open file.
#[derive(Debug)]
pub(crate) struct File(Inner);

#[derive(Debug)]
enum Inner {
    Real(std::fs::File),
    /// A simulated file, with its path: a failed fsync is remembered by path.
    #[cfg(feature = "simulation")]
    Simulated(simulated::File, PathBuf),
}

/// Runs `$body` with `$file` bound to whichever file `$self` holds.
macro_rules! with_file {
    ($self:expr, $file:ident => $body:expr) => {
        match &$self.0 {
            Inner::Real($file) => $body,
            #[cfg(feature = "simulation")]
            Inner::Simulated($file, _) => $body,
        }
    };
}

impl File {
    /// Opens `path` for reading.
    pub(crate) fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Writes all of `bytes` at `offset`.
    pub(crate) fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(feature = "simulation")]
        if let Inner::Simulated(_, path) = &self.0 {
            // Overwriting bytes the file already holds needs no new space.
            if offset + bytes.len() as u64 > file_len(path)? {
                super::host::check_space()?;
            } else {
                super::host::disk_operation()?;
            }
            super::host::charge_written(bytes.len());
        }
        with_file!(self, file => file.write_all_at(bytes, offset))
    }

    /// Fills `buffer` from `offset`.
    pub(crate) fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        with_file!(self, file => file.read_exact_at(buffer, offset))
    }

    /// Sets the file's length, cutting or extending it with zeros.
    pub(crate) fn set_len(&self, length: u64) -> io::Result<()> {
        #[cfg(feature = "simulation")]
        if let Inner::Simulated(_, path) = &self.0
            && file_len(path)? < length
        {
            super::host::check_space()?;
        }
        with_file!(self, file => file.set_len(length))
    }

    /// Makes the file's data durable (`fdatasync`).
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        match &self.0 {
            Inner::Real(file) => file.sync_data(),
            #[cfg(feature = "simulation")]
            Inner::Simulated(file, path) => simulated_fsync(path, || file.sync_data()),
        }
    }

    /// Makes the file's data and metadata durable (`fsync`).
    pub(crate) fn sync_all(&self) -> io::Result<()> {
        match &self.0 {
            Inner::Real(file) => file.sync_all(),
            #[cfg(feature = "simulation")]
            Inner::Simulated(file, path) => simulated_fsync(path, || file.sync_all()),
        }
    }

    /// Takes an exclusive advisory lock (`flock`) without waiting. Always granted in a
    /// simulation, whose file system has no locks.
    pub(crate) fn try_lock(&self) -> Result<(), std::fs::TryLockError> {
        match &self.0 {
            Inner::Real(file) => file.try_lock(),
            #[cfg(feature = "simulation")]
            Inner::Simulated(..) => Ok(()),
        }
    }
}

impl Write for File {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Real(file) => file.write(bytes),
            #[cfg(feature = "simulation")]
            Inner::Simulated(file, _) => {
                super::host::check_space()?;
                let written = file.write(bytes)?;
                super::host::charge_written(written);
                Ok(written)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Inner::Real(file) => file.flush(),
            #[cfg(feature = "simulation")]
            Inner::Simulated(file, _) => file.flush(),
        }
    }
}

/// An fsync on a simulated host, with the faults the simulator set on it: an injected
/// failure drops the file's dirty data, and from then on fsyncs of that file report success
/// without syncing (what Linux does after a writeback error: the error is reported once, and
/// the pages it could not write are gone). Storage that retries a failed fsync therefore
/// believes data durable that a crash loses.
#[cfg(feature = "simulation")]
fn simulated_fsync(path: &Path, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    match super::host::fsync(path) {
        super::host::Fsync::Sync => sync(),
        super::host::Fsync::Fail => Err(io::Error::other("fsync failed (simulated)")),
        super::host::Fsync::Pretend => Ok(()),
        super::host::Fsync::PowerLost => Err(io::Error::other("power lost (simulated)")),
    }
}

/// How to open a file: [`std::fs::OpenOptions`]' flags, the ones the storage uses.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OpenOptions {
    read: bool,
    write: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
}

/// One setter per flag, with `std::fs::OpenOptions`' name and meaning.
macro_rules! setters {
    ($($flag:ident),*) => {$(
        pub(crate) fn $flag(&mut self, $flag: bool) -> &mut OpenOptions {
            self.$flag = $flag;
            self
        }
    )*};
}

impl OpenOptions {
    pub(crate) fn new() -> OpenOptions {
        OpenOptions::default()
    }

    setters!(read, write, create, create_new, truncate);

    pub(crate) fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let path = path.as_ref();
        #[cfg(feature = "simulation")]
        if super::simulating() && (self.write || self.create || self.create_new || self.truncate) {
            super::host::disk_operation()?;
        }
        either!(
            simulated::OpenOptions::new()
                .read(self.read)
                .write(self.write)
                .create(self.create)
                .create_new(self.create_new)
                .truncate(self.truncate)
                .open(path)
                .map(|file| File(Inner::Simulated(file, path.to_path_buf()))),
            std::fs::OpenOptions::new()
                .read(self.read)
                .write(self.write)
                .create(self.create)
                .create_new(self.create_new)
                .truncate(self.truncate)
                .open(path)
                .map(|file| File(Inner::Real(file)))
        )
    }
}

/// The whole contents of `path`.
pub(crate) fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let path = path.as_ref();
    either!(simulated::read(path), std::fs::read(path))
}

/// The paths of the entries of directory `path`, sorted.
pub(crate) fn read_dir(path: impl AsRef<Path>) -> io::Result<Vec<PathBuf>> {
    let path = path.as_ref();
    let listed: io::Result<Vec<PathBuf>> = either!(
        simulated::read_dir(path)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect(),
        std::fs::read_dir(path)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect()
    );
    // Sorted: neither a real directory nor turmoil's (a hash set) lists in a fixed order, and
    // whatever storage does per entry must happen in the same order every run.
    listed.map(|mut paths| {
        paths.sort();
        paths
    })
}

/// Renames `from` to `to`, replacing `to` if it exists.
pub(crate) fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    #[cfg(feature = "simulation")]
    if super::simulating() {
        super::host::disk_operation()?;
    }
    let (from, to) = (from.as_ref(), to.as_ref());
    either!(simulated::rename(from, to), std::fs::rename(from, to))
}

/// Removes the file `path`.
pub(crate) fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    #[cfg(feature = "simulation")]
    if super::simulating() {
        super::host::disk_operation()?;
    }
    let path = path.as_ref();
    either!(simulated::remove_file(path), std::fs::remove_file(path))
}

/// Creates directory `path` and any missing parents.
pub(crate) fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    either!(
        simulated::create_dir_all(path),
        std::fs::create_dir_all(path)
    )
}

/// The length of the file at `path`.
pub(crate) fn file_len(path: impl AsRef<Path>) -> io::Result<u64> {
    let path = path.as_ref();
    either!(
        simulated::metadata(path).map(|metadata| metadata.len()),
        std::fs::metadata(path).map(|metadata| metadata.len())
    )
}

/// Whether `path` is an existing directory.
pub(crate) fn is_dir(path: impl AsRef<Path>) -> bool {
    let path = path.as_ref();
    either!(
        simulated::metadata(path).is_ok_and(|metadata| metadata.is_dir()),
        path.is_dir()
    )
}

/// Whether `path` is an existing regular file.
pub(crate) fn is_file(path: impl AsRef<Path>) -> bool {
    let path = path.as_ref();
    either!(
        simulated::metadata(path).is_ok_and(|metadata| metadata.is_file()),
        path.is_file()
    )
}

/// Makes the entries of directory `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: impl AsRef<Path>) -> io::Result<()> {
    let dir = dir.as_ref();
    // A simulated directory sync can lose power but is never failed on purpose: turmoil
    // 0.7's file system keys file contents by path, so a rename left pending by a failed
    // directory sync would take the contents of the next file created under the renamed
    // file's old name (a temporary file of the next replacement), which no real file system
    // does.
    #[cfg(feature = "simulation")]
    if super::simulating() {
        super::host::disk_operation()?;
        return simulated::sync_dir(dir);
    }
    either!(
        simulated::sync_dir(dir),
        std::fs::File::open(dir)?.sync_all()
    )
}
