//! Persistence: the [`TokenStore`] plugin that keeps the current token across restarts, and
//! [`FileTokenStore`], a store in one file.
//!
//! A store holds at most one token, as its text (a JWT). The manager is its only writer: it loads
//! the stored token once at build, saves each token that becomes current, and clears the store on
//! sign-out. At build, without an initial token, a stored token that passes the same rules as
//! `update_token` becomes current without a fetch; a corrupt, expired or otherwise invalid one is
//! cleared and the manager fetches as usual. Store errors never stop the manager: each is a warning,
//! and the token in memory stays current.
//!
//! A store sees a bearer credential: whoever reads it can act as the user until the token expires.
//! So a store must not put the token's text in an error message, a `Debug` output or a log line, and
//! should keep it where only the user can read it. [`FileTokenStore`] writes its file with mode
//! `0600` on unix and replaces it atomically, so a reader (or a crash) sees the old token or the new
//! one, never a mix.
//!
//! The calls are synchronous and meant to be quick (one small file). The manager runs them on
//! tokio's blocking pool, one after another, each with a deadline of [`STORE_TIMEOUT`] on its
//! clock: past it the manager goes on without the store and ignores the late answer, so a store
//! that blocks never stops fetching. `sign_out()` returns once the store's clear has run, after
//! any save in flight; `shutdown()` returns once the call in flight has returned (or passed its
//! deadline), and a clear still queued runs even then, so no save lands after either. A store on
//! something slow (a keychain behind a prompt, the network) should answer from memory and write
//! behind.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long the manager waits for one store call, on elapsed time (its
/// [`Clock::sleep`](crate::clock::Clock::sleep)): 5 s. Past it the manager goes on without the
/// store (a warning, a count in [`Stats::store_timeouts`](crate::Stats::store_timeouts)) and
/// ignores the late answer; the next call still waits for the late one to return, so calls never
/// overlap and a clear always lands after the save before it.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest token file [`FileTokenStore`] loads or saves: 64 KiB. A token is at most
/// [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN) (16 KiB); a larger file holds none.
pub const MAX_FILE_LEN: usize = 64 * 1024;

/// Keeps the current token across restarts.
///
/// The manager calls [`load`](Self::load) once at build, [`save`](Self::save) for each token that
/// becomes current and [`clear`](Self::clear) on sign-out, one call at a time and in order: a
/// clear runs after the save before it has returned. An error is reported as a warning and never
/// stops the manager, so an implementation should fail rather than guess; a load answering
/// [`io::ErrorKind::InvalidData`] says no usable token is stored, and the manager clears it.
///
/// Implementations must not put the token text in errors, `Debug` output or logs.
///
/// ```
/// use access_manager::store::TokenStore;
/// use std::io;
/// use std::sync::Mutex;
///
/// /// Keeps the token in memory: it survives a manager, not the process (e.g. for tests).
/// #[derive(Default)]
/// struct MemoryStore(Mutex<Option<String>>);
///
/// impl TokenStore for MemoryStore {
///     fn load(&self) -> io::Result<Option<String>> {
///         Ok(self.0.lock().unwrap().clone())
///     }
///     fn save(&self, jwt: &str) -> io::Result<()> {
///         *self.0.lock().unwrap() = Some(jwt.to_owned());
///         Ok(())
///     }
///     fn clear(&self) -> io::Result<()> {
///         *self.0.lock().unwrap() = None;
///         Ok(())
///     }
/// }
///
/// let store = MemoryStore::default();
/// store.save("eyJhbGciOi...")?;
/// assert_eq!(store.load()?.as_deref(), Some("eyJhbGciOi..."));
/// store.clear()?;
/// assert_eq!(store.load()?, None);
/// # Ok::<(), io::Error>(())
/// ```
pub trait TokenStore: Send + Sync + 'static {
    /// The stored token's text, or `None` when nothing is stored.
    ///
    /// The text is not checked here: the manager parses and validates it, and clears the store
    /// when it is not a usable token.
    ///
    /// # Errors
    /// The store could not be read (what `Ok(None)` means instead is up to the store).
    ///
    /// ```
    /// # use access_manager::store::{FileTokenStore, TokenStore};
    /// # let dir = std::env::temp_dir().join(format!("access-manager-doc-load-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let store = FileTokenStore::new(dir.join("token.jwt"));
    /// assert_eq!(store.load()?, None); // no file yet
    /// std::fs::write(dir.join("token.jwt"), "eyJhbGciOi...\n")?;
    /// assert_eq!(store.load()?.as_deref(), Some("eyJhbGciOi...")); // trimmed
    /// std::fs::write(dir.join("token.jwt"), [0xff, 0xfe])?;
    /// assert_eq!(store.load().unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn load(&self) -> io::Result<Option<String>>;

    /// Stores `jwt`, replacing any stored token.
    ///
    /// # Errors
    /// The token could not be stored; the store should then still hold the previous one.
    ///
    /// ```
    /// # use access_manager::store::{FileTokenStore, TokenStore};
    /// # let dir = std::env::temp_dir().join(format!("access-manager-doc-save-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let store = FileTokenStore::new(dir.join("token.jwt"));
    /// store.save("eyJhbGciOi...")?;
    /// assert_eq!(store.load()?.as_deref(), Some("eyJhbGciOi..."));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn save(&self, jwt: &str) -> io::Result<()>;

    /// Forgets the stored token. Clearing an empty store succeeds.
    ///
    /// # Errors
    /// The token could not be removed.
    ///
    /// ```
    /// # use access_manager::store::{FileTokenStore, TokenStore};
    /// # let dir = std::env::temp_dir().join(format!("access-manager-doc-clear-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let store = FileTokenStore::new(dir.join("token.jwt"));
    /// store.save("eyJhbGciOi...")?;
    /// store.clear()?;
    /// store.clear()?; // nothing left to clear: still Ok
    /// assert_eq!(store.load()?, None);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn clear(&self) -> io::Result<()>;
}

impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn load(&self) -> io::Result<Option<String>> {
        (**self).load()
    }
    fn save(&self, jwt: &str) -> io::Result<()> {
        (**self).save(jwt)
    }
    fn clear(&self) -> io::Result<()> {
        (**self).clear()
    }
}

impl<T: TokenStore + ?Sized> TokenStore for Box<T> {
    fn load(&self) -> io::Result<Option<String>> {
        (**self).load()
    }
    fn save(&self, jwt: &str) -> io::Result<()> {
        (**self).save(jwt)
    }
    fn clear(&self) -> io::Result<()> {
        (**self).clear()
    }
}

/// A [`TokenStore`] in one file that holds the token's text.
///
/// - [`load`](TokenStore::load): a missing file, or one holding only whitespace, is `None`; the text
///   is trimmed. The file is opened without blocking (`O_NONBLOCK` on unix), so a FIFO at the
///   path never holds the call up. Anything but a regular file, a file over [`MAX_FILE_LEN`] or
///   one not UTF-8 is refused with [`io::ErrorKind::InvalidData`] (the manager then clears it).
/// - [`save`](TokenStore::save): writes a temporary file beside the target (same directory, named
///   `.<name>.<pid>.<random>.tmp`, the random part drawn anew for each save so that nobody can
///   take the name first), created with mode `0600` on unix, syncs it to disk and renames it over
///   the target, then syncs the directory (best effort). Readers and crashes see the old token or
///   the new one, whole; a failed save removes its temporary file and leaves the old token in
///   place. The new file has mode `0600` even when the old one was readable by others.
/// - [`clear`](TokenStore::clear): removes the file; a missing file is fine.
/// - Both `save` and `clear` remove the temporary files that crashed saves of other processes left
///   beside the target (they hold whole tokens); this process's own, saves still running, stay.
///
/// The directory must exist and should be the user's own (e.g. an app data directory): its
/// permissions decide who may replace or delete the file. `Debug` shows the path only.
///
/// ```
/// use access_manager::store::{FileTokenStore, TokenStore};
///
/// let dir = std::env::temp_dir().join(format!("access-manager-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let store = FileTokenStore::new(dir.join("token.jwt"));
/// assert_eq!(store.load()?, None);
/// store.save("eyJhbGciOi...")?;
/// assert_eq!(store.load()?.as_deref(), Some("eyJhbGciOi..."));
/// assert!(!format!("{store:?}").contains("eyJ"));
/// store.clear()?;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct FileTokenStore {
    path: PathBuf,
}

impl FileTokenStore {
    /// A store in the file at `path`. Nothing is touched until the first call.
    ///
    /// ```
    /// use access_manager::store::{FileTokenStore, TokenStore};
    ///
    /// let dir = std::env::temp_dir().join(format!("access-manager-doc-new-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let store = FileTokenStore::new(dir.join("token.jwt"));
    /// assert!(!dir.join("token.jwt").exists()); // nothing written yet
    /// store.save("eyJhbGciOi...")?;
    /// assert_eq!(std::fs::read_to_string(dir.join("token.jwt"))?, "eyJhbGciOi...");
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileTokenStore { path: path.into() }
    }

    /// The file's path.
    ///
    /// ```
    /// use access_manager::store::FileTokenStore;
    /// use std::path::Path;
    ///
    /// assert_eq!(FileTokenStore::new("token.jwt").path(), Path::new("token.jwt"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory that holds the file (`.` for a bare file name) and the file's name.
    fn dir_and_name(&self) -> io::Result<(&Path, &std::ffi::OsStr)> {
        let name = self.path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the token store path does not name a file",
            )
        })?;
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        Ok((dir, name))
    }

    /// Creates a new temporary file beside the target, readable by the owner only, under a name
    /// nobody can guess ahead (so nobody can take it first).
    fn create_temp(&self) -> io::Result<(PathBuf, File)> {
        let (dir, name) = self.dir_and_name()?;
        let mut attempts = 0;
        loop {
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(
                ".{}.{:016x}.tmp",
                std::process::id(),
                unpredictable()
            ));
            let temp = dir.join(temp_name);
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                // At creation, so the token is never readable by others, not even for a moment.
                options.mode(0o600);
            }
            match options.open(&temp) {
                Ok(file) => return Ok((temp, file)),
                // Taken (by chance, or by someone who guessed): draw another name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes the temporary files that saves of earlier processes left behind when they crashed
    /// (they hold whole tokens). Those of this process are saves still running, and are kept.
    /// Best effort: what cannot be listed or removed stays.
    fn remove_leftovers(&self) {
        let Ok((dir, name)) = self.dir_and_name() else {
            return;
        };
        let (Some(name), Ok(entries)) = (name.to_str(), fs::read_dir(dir)) else {
            return;
        };
        let prefix = format!(".{name}.");
        let ours = std::process::id().to_string();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(middle) = file_name
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|f| f.strip_suffix(".tmp"))
            else {
                continue;
            };
            // `<pid>.<random>`, as `create_temp` names them.
            let leftover = match middle.split_once('.') {
                Some((pid, random)) => {
                    !pid.is_empty()
                        && pid.bytes().all(|b| b.is_ascii_digit())
                        && pid != ours
                        && !random.is_empty()
                        && !random.contains('.')
                }
                None => false,
            };
            if leftover {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Syncs the directory so that a rename or removal survives a crash. Best effort: not every
    /// file system or platform can sync a directory.
    fn sync_dir(&self) {
        #[cfg(unix)]
        if let Ok((dir, _)) = self.dir_and_name() {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
    }
}

impl TokenStore for FileTokenStore {
    fn load(&self) -> io::Result<Option<String>> {
        let mut options = OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Opening a FIFO to read waits for a writer: without blocking, it opens at once and is
            // refused below.
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = match options.open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the token path is not a regular file",
            ));
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LEN as u64 + 1).read_to_end(&mut bytes)?;
        if bytes.len() > MAX_FILE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the token file is over {MAX_FILE_LEN} bytes"),
            ));
        }
        // The error names no bytes: they may be most of a token.
        let text = String::from_utf8(bytes).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "the token file is not UTF-8")
        })?;
        let token = text.trim();
        Ok((!token.is_empty()).then(|| token.to_owned()))
    }

    fn save(&self, jwt: &str) -> io::Result<()> {
        if jwt.len() > MAX_FILE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the token is over {MAX_FILE_LEN} bytes"),
            ));
        }
        let (temp, file) = self.create_temp()?;
        if let Err(e) = write_and_rename(file, jwt, &temp, &self.path) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        self.remove_leftovers();
        self.sync_dir();
        Ok(())
    }

    fn clear(&self) -> io::Result<()> {
        self.remove_leftovers();
        match fs::remove_file(&self.path) {
            Ok(()) => {
                self.sync_dir();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// 64 bits nobody outside the process can predict: std's `RandomState` is keyed from the OS's
/// random source, and each instance hashes differently.
fn unpredictable() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// Writes `jwt` to the temporary file, syncs it and renames it over `target`.
fn write_and_rename(mut file: File, jwt: &str, temp: &Path, target: &Path) -> io::Result<()> {
    file.write_all(jwt.as_bytes())?;
    file.sync_all()?;
    // Closed first: Windows cannot rename an open file.
    drop(file);
    fs::rename(temp, target)
}

impl fmt::Debug for FileTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTokenStore")
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        let store = FileTokenStore::new("token.jwt");
        let (dir, name) = store.dir_and_name().unwrap();
        assert_eq!(
            (dir, name),
            (Path::new("."), std::ffi::OsStr::new("token.jwt"))
        );
    }

    #[test]
    fn the_file_name_and_its_directory_are_split_from_the_path() {
        let store = FileTokenStore::new("/var/lib/app/token.jwt");
        let (dir, name) = store.dir_and_name().unwrap();
        assert_eq!(
            (dir, name),
            (Path::new("/var/lib/app"), std::ffi::OsStr::new("token.jwt"))
        );
    }

    #[test]
    fn temporary_names_carry_a_random_part_drawn_anew_each_time() {
        let dir =
            std::env::temp_dir().join(format!("access-manager-unit-temp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let store = FileTokenStore::new(dir.join("token.jwt"));
        let prefix = format!(".token.jwt.{}.", std::process::id());
        let random = |_| {
            let (temp, _) = store.create_temp().unwrap();
            let name = temp.file_name().unwrap().to_str().unwrap().to_owned();
            let random = name
                .strip_prefix(&prefix)
                .unwrap()
                .strip_suffix(".tmp")
                .unwrap();
            assert_eq!(random.len(), 16, "{name}");
            u64::from_str_radix(random, 16).unwrap()
        };
        let drawn: Vec<u64> = (0..4).map(random).collect();
        fs::remove_dir_all(&dir).unwrap();
        // A counter would make neighbours; drawn parts are far apart.
        for pair in drawn.windows(2) {
            assert!(pair[0].abs_diff(pair[1]) > 1 << 20, "{drawn:x?}");
        }
    }

    #[test]
    fn a_path_without_a_file_name_is_invalid_input() {
        for path in ["", "/", "dir/.."] {
            let err = FileTokenStore::new(path).dir_and_name().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{path:?}");
        }
    }
}
