//! Bodies on the shared volume (`SCAN_MOUNT`): the disk data provider.
//!
//! The producer writes a body to a file of its own under the mount and puts
//! only the file's name in the task; the handler opens that name under its
//! own mount, hands it to clamd (the descriptor itself on a unix socket,
//! streamed on TCP) and removes it. A name is one path
//! component of a fixed alphabet, opened relative to the mount directory
//! without following symlinks, so a task can reach nothing outside the
//! mount: no `..`, no absolute path, no symlink out of it, nothing but a
//! regular file. A file whose producer died before it queued the task is
//! never scanned; the handlers sweep such files away once they are old
//! (`ORPHAN_AGE`).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// How a producer's body files end: `<task id>.body`.
pub const BODY_SUFFIX: &str = ".body";

/// A body file [`ScanMount::sweep`] found too old.
#[derive(Debug)]
pub struct Swept {
    /// The file's name.
    pub name: String,
    /// How long ago it was last written.
    pub age: Duration,
    /// Why it could not be removed, if it could not.
    pub failed: Option<DiskError>,
}

/// The shared volume.
#[derive(Debug, Clone)]
pub struct ScanMount {
    path: PathBuf,
}

/// Why a body file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The name is not a plain file name of the allowed alphabet.
    #[error("body file name {0:?} is not allowed (one component of [A-Za-z0-9_.-], not starting with a dot)")]
    BadName(String),
    /// The file is a symlink, a directory or anything but a regular file.
    #[error("body file {0:?} is not a regular file inside the mount")]
    NotRegular(String),
    /// The operating system refused.
    #[error("body file {name:?}: {source}")]
    Io {
        /// The file's name.
        name: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl ScanMount {
    /// The mount at `path`.
    pub fn new(path: impl Into<PathBuf>) -> ScanMount {
        ScanMount { path: path.into() }
    }

    /// The mount's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that the mount is a directory this process can write to.
    pub fn check(&self) -> Result<(), String> {
        let probe = format!(".probe-{}", std::process::id());
        let dir = self
            .dir()
            .map_err(|e| format!("SCAN_MOUNT {:?}: {e}", self.path))?;
        let made = rustix::fs::openat(
            &dir,
            probe.as_str(),
            OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        );
        match made {
            Ok(_) => {
                let _ = rustix::fs::unlinkat(&dir, probe.as_str(), AtFlags::empty());
                Ok(())
            }
            Err(e) => Err(format!("SCAN_MOUNT {:?} is not writable: {e}", self.path)),
        }
    }

    fn dir(&self) -> std::io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            &self.path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Opens `name` directly inside the mount, never through a symlink,
    /// after checking the name; `O_NOFOLLOW` and `O_CLOEXEC` are added.
    fn open_in(&self, name: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd, DiskError> {
        check_name(name)?;
        let dir = self.dir().map_err(io_error(name))?;
        rustix::fs::openat(&dir, name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode).map_err(
            |e| match e {
                // O_NOFOLLOW on a symlink.
                rustix::io::Errno::LOOP => DiskError::NotRegular(name.to_owned()),
                e => io_error(name)(e.into()),
            },
        )
    }

    /// Creates a new body file named `name` (which must not exist).
    pub fn create(&self, name: &str) -> Result<File, DiskError> {
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY;
        Ok(File::from(self.open_in(
            name,
            flags,
            Mode::from_raw_mode(0o640),
        )?))
    }

    /// Opens the body file `name` for reading: only a regular file directly
    /// inside the mount.
    pub fn open(&self, name: &str) -> Result<File, DiskError> {
        let fd = self.open_in(name, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let io = io_error(name);
        let stat = rustix::fs::fstat(&fd).map_err(|e| io(e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(DiskError::NotRegular(name.to_owned()));
        }
        Ok(File::from(fd))
    }

    /// Removes the body file `name`; a file already gone is fine.
    pub fn remove(&self, name: &str) -> Result<(), DiskError> {
        check_name(name)?;
        let io = io_error(name);
        let dir = self.dir().map_err(&io)?;
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io(e.into())),
        }
    }

    /// Removes the body files last written more than `older_than` ago:
    /// files nobody will scan any more, such as the one a producer that died
    /// mid-upload leaves behind. Only regular files named like a body file
    /// are touched; symlinks, directories and other files stay.
    pub fn sweep(&self, older_than: Duration) -> Result<Vec<Swept>, DiskError> {
        let now = SystemTime::now();
        let listed = std::fs::read_dir(&self.path).map_err(|source| DiskError::Io {
            name: self.path.display().to_string(),
            source,
        })?;
        let mut swept = Vec::new();
        for entry in listed.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.ends_with(BODY_SUFFIX) || check_name(&name).is_err() {
                continue;
            }
            // DirEntry::metadata does not follow a symlink.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok());
            match age {
                Some(age) if meta.is_file() && age > older_than => {
                    let failed = self.remove(&name).err();
                    swept.push(Swept { name, age, failed });
                }
                _ => {}
            }
        }
        Ok(swept)
    }

    /// [`ScanMount::open`] and the file's length, on a blocking thread: on
    /// a slow volume (NFS, say) the wait then holds up this body only, not
    /// every task the runtime's thread serves.
    pub async fn open_off_thread(&self, name: &str) -> Result<(File, u64), DiskError> {
        self.off_thread(name, |mount, name| {
            let file = mount.open(name)?;
            let len = file.metadata().map_err(io_error(name))?.len();
            Ok((file, len))
        })
        .await
    }

    /// [`ScanMount::create`] on a blocking thread, for the same reason.
    pub async fn create_off_thread(&self, name: &str) -> Result<File, DiskError> {
        self.off_thread(name, ScanMount::create).await
    }

    /// [`ScanMount::remove`] on a blocking thread, for the same reason.
    pub async fn remove_off_thread(&self, name: &str) -> Result<(), DiskError> {
        self.off_thread(name, ScanMount::remove).await
    }

    async fn off_thread<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&ScanMount, &str) -> Result<T, DiskError> + Send + 'static,
    ) -> Result<T, DiskError> {
        let (mount, owned) = (self.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || f(&mount, &owned))
            .await
            .unwrap_or_else(|e| Err(io_error(name)(std::io::Error::other(e))))
    }
}

/// One path component of `[A-Za-z0-9_.-]`, not starting with a dot (so
/// neither `.`, `..` nor hidden files), at most 200 bytes.
fn check_name(name: &str) -> Result<(), DiskError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DiskError::BadName(name.to_owned()))
    }
}

/// Turns an I/O error about `name` into a [`DiskError`].
fn io_error(name: &str) -> impl Fn(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        name: name.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn temp_mount(tag: &str) -> (ScanMount, PathBuf) {
        let base = std::env::temp_dir().join(format!("vs-mount-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("mount")).unwrap();
        (ScanMount::new(base.join("mount")), base)
    }

    #[test]
    fn write_read_remove() {
        let (mount, base) = temp_mount("rw");
        mount.check().unwrap();
        mount
            .create("abc-1.body")
            .unwrap()
            .write_all(b"hello")
            .unwrap();
        assert!(
            mount.create("abc-1.body").is_err(),
            "an existing file is never reused"
        );
        let mut s = String::new();
        mount
            .open("abc-1.body")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello");
        mount.remove("abc-1.body").unwrap();
        mount.remove("abc-1.body").unwrap();
        assert!(mount.open("abc-1.body").is_err());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_sweep_removes_old_body_files_only() {
        let (mount, base) = temp_mount("sweep");
        let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
        let aged = |path: &Path| {
            let f = File::options().write(true).open(path).unwrap();
            f.set_modified(two_hours_ago).unwrap();
        };
        for name in ["old-1.body", "new-1.body", "old-notes.txt"] {
            std::fs::write(mount.path().join(name), b"x").unwrap();
        }
        aged(&mount.path().join("old-1.body"));
        aged(&mount.path().join("old-notes.txt"));
        // An old file outside, reached by a symlink named like a body file.
        std::fs::write(base.join("outside"), b"keep").unwrap();
        aged(&base.join("outside"));
        std::os::unix::fs::symlink(base.join("outside"), mount.path().join("link-1.body")).unwrap();
        std::fs::create_dir(mount.path().join("dir-1.body")).unwrap();

        let swept = mount.sweep(Duration::from_secs(3600)).unwrap();
        let names: Vec<_> = swept.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["old-1.body"]);
        assert!(swept[0].age >= Duration::from_secs(2 * 3600 - 60));
        assert!(swept[0].failed.is_none());
        let mut left: Vec<_> = std::fs::read_dir(mount.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["dir-1.body", "link-1.body", "new-1.body", "old-notes.txt"]
        );
        assert!(base.join("outside").exists());
        assert!(mount.sweep(Duration::from_secs(3600)).unwrap().is_empty());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn nothing_outside_the_mount_is_reachable() {
        let (mount, base) = temp_mount("confine");
        std::fs::write(base.join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(base.join("secret"), mount.path().join("link")).unwrap();
        std::fs::create_dir(mount.path().join("sub")).unwrap();
        for name in [
            "../secret",
            "/etc/passwd",
            "..",
            ".",
            "",
            "sub/x",
            ".hidden",
            "a b",
        ] {
            assert!(
                matches!(mount.open(name), Err(DiskError::BadName(_))),
                "{name:?} was not refused as a name"
            );
            assert!(mount.create(name).is_err() && mount.remove(name).is_err());
        }
        assert!(matches!(mount.open("link"), Err(DiskError::NotRegular(_))));
        assert!(matches!(mount.open("sub"), Err(DiskError::NotRegular(_))));
        // Creating through a symlink fails too, and the target is untouched.
        assert!(mount.create("link").is_err());
        assert_eq!(std::fs::read(base.join("secret")).unwrap(), b"outside");
        std::fs::remove_dir_all(base).unwrap();
    }
}
