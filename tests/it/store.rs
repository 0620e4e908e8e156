//! `FileTokenStore` on a real file system: round trips, what loads as nothing, refusals, the file's
//! mode, atomic replacement and failed saves; `TokenStore` through `Arc`, `Box` and a user's own
//! in-memory store.

use access_manager::store::{FileTokenStore, TokenStore, MAX_FILE_LEN};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJBQzEifQ.c2lnbmF0dXJlLW9mLXRoZS1maXJzdA";
const OTHER_JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJBQzIifQ.c2lnbmF0dXJlLW9mLXRoZS1zZWNvbmQ";

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A fresh directory under the system's temp dir, removed (writable again first) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "access-manager-store-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        #[cfg(unix)]
        set_mode(&self.0, 0o755);
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
}

/// A user's own store, kept in memory: what the trait's docs show, as a test would use it.
#[derive(Default)]
struct MemoryStore {
    token: Mutex<Option<String>>,
    saves: AtomicU32,
}

impl TokenStore for MemoryStore {
    fn load(&self) -> io::Result<Option<String>> {
        Ok(self.token.lock().unwrap().clone())
    }
    fn save(&self, jwt: &str) -> io::Result<()> {
        self.saves.fetch_add(1, Ordering::Relaxed);
        *self.token.lock().unwrap() = Some(jwt.to_owned());
        Ok(())
    }
    fn clear(&self) -> io::Result<()> {
        *self.token.lock().unwrap() = None;
        Ok(())
    }
}

/// Saves, loads back and clears through any store.
fn round_trip(store: &impl TokenStore) {
    store.save(JWT).unwrap();
    assert_eq!(store.load().unwrap().as_deref(), Some(JWT));
    store.save(OTHER_JWT).unwrap();
    assert_eq!(store.load().unwrap().as_deref(), Some(OTHER_JWT));
    store.clear().unwrap();
    assert_eq!(store.load().unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Loading and saving.

#[test]
fn a_saved_token_loads_back_and_a_cleared_one_is_gone() {
    let dir = TempDir::new("round-trip");
    let store = FileTokenStore::new(dir.join("token.jwt"));
    round_trip(&store);
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

#[test]
fn the_file_holds_the_token_text_alone() {
    let dir = TempDir::new("file-text");
    let store = FileTokenStore::new(dir.join("token.jwt"));
    store.save(JWT).unwrap();
    assert_eq!(fs::read_to_string(dir.join("token.jwt")).unwrap(), JWT);
}

#[test]
fn a_missing_file_loads_as_none() {
    let dir = TempDir::new("missing");
    let store = FileTokenStore::new(dir.join("never-written.jwt"));
    assert_eq!(store.load().unwrap(), None);
}

#[test]
fn an_empty_or_blank_file_loads_as_none() {
    let dir = TempDir::new("blank");
    let path = dir.join("token.jwt");
    let store = FileTokenStore::new(&path);
    for blank in ["", "\n", "  \r\n\t "] {
        fs::write(&path, blank).unwrap();
        assert_eq!(store.load().unwrap(), None, "{blank:?}");
    }
}

#[test]
fn surrounding_whitespace_is_trimmed_on_load() {
    let dir = TempDir::new("trim");
    let path = dir.join("token.jwt");
    fs::write(&path, format!("\n  {JWT} \r\n")).unwrap();
    let store = FileTokenStore::new(&path);
    assert_eq!(store.load().unwrap().as_deref(), Some(JWT));
}

#[test]
fn a_corrupt_file_loads_as_its_text_for_the_manager_to_judge() {
    // The store does not parse tokens: the manager validates what it loads and clears bad ones.
    let dir = TempDir::new("corrupt");
    let path = dir.join("token.jwt");
    fs::write(&path, "not a token at all").unwrap();
    let store = FileTokenStore::new(&path);
    assert_eq!(store.load().unwrap().as_deref(), Some("not a token at all"));
}

#[test]
fn a_file_that_is_not_utf8_is_invalid_data_and_the_error_shows_none_of_it() {
    let dir = TempDir::new("not-utf8");
    let path = dir.join("token.jwt");
    let mut bytes = JWT.as_bytes().to_vec();
    bytes.push(0xff);
    fs::write(&path, bytes).unwrap();
    let err = FileTokenStore::new(&path).load().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(!format!("{err} {err:?}").contains("eyJ"), "{err:?}");
}

#[test]
fn a_file_over_64_kib_is_refused_and_one_of_exactly_64_kib_is_read() {
    let dir = TempDir::new("too-large");
    let path = dir.join("token.jwt");
    let store = FileTokenStore::new(&path);
    assert_eq!(MAX_FILE_LEN, 64 * 1024);

    fs::write(&path, "a".repeat(MAX_FILE_LEN)).unwrap();
    assert_eq!(store.load().unwrap().map(|t| t.len()), Some(MAX_FILE_LEN));

    let mut big = JWT.to_owned();
    big.push_str(&"a".repeat(MAX_FILE_LEN + 1 - JWT.len()));
    fs::write(&path, &big).unwrap();
    let err = store.load().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(!format!("{err} {err:?}").contains("eyJ"), "{err:?}");
}

#[test]
fn saving_a_token_over_64_kib_is_refused_and_keeps_the_old_one() {
    let dir = TempDir::new("save-too-large");
    let store = FileTokenStore::new(dir.join("token.jwt"));
    store.save(JWT).unwrap();
    let err = store.save(&"a".repeat(MAX_FILE_LEN + 1)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(store.load().unwrap().as_deref(), Some(JWT));
    assert_eq!(dir.names(), ["token.jwt"]);
}

#[test]
fn clearing_twice_and_clearing_nothing_are_ok() {
    let dir = TempDir::new("clear");
    let store = FileTokenStore::new(dir.join("token.jwt"));
    store.clear().unwrap();
    store.save(JWT).unwrap();
    store.clear().unwrap();
    store.clear().unwrap();
    assert_eq!(store.load().unwrap(), None);
    assert!(dir.names().is_empty());
}

#[test]
fn a_path_that_names_no_file_is_refused_on_save() {
    let dir = TempDir::new("no-name");
    let store = FileTokenStore::new(dir.0.join(".."));
    assert_eq!(
        store.save(JWT).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets.

#[test]
fn debug_shows_the_path_and_never_the_token() {
    let dir = TempDir::new("debug");
    let store = FileTokenStore::new(dir.join("token.jwt"));
    store.save(JWT).unwrap();
    let debug = format!("{store:?}");
    assert!(debug.starts_with("FileTokenStore { path: "), "{debug}");
    assert!(debug.contains("token.jwt"), "{debug}");
    assert!(!debug.contains("eyJ"), "{debug}");
    assert_eq!(store.path(), dir.join("token.jwt"));
}

// ---------------------------------------------------------------------------------------------
// File mode.

#[cfg(unix)]
#[test]
fn a_new_file_is_readable_by_its_owner_only() {
    let dir = TempDir::new("mode-new");
    let path = dir.join("token.jwt");
    FileTokenStore::new(&path).save(JWT).unwrap();
    assert_eq!(mode(&path), 0o600, "{:o}", mode(&path));
}

#[cfg(unix)]
#[test]
fn a_file_that_was_readable_by_others_is_replaced_by_an_owner_only_one() {
    let dir = TempDir::new("mode-existing");
    let path = dir.join("token.jwt");
    fs::write(&path, OTHER_JWT).unwrap();
    set_mode(&path, 0o644);
    assert_eq!(mode(&path), 0o644);
    FileTokenStore::new(&path).save(JWT).unwrap();
    assert_eq!(mode(&path), 0o600, "{:o}", mode(&path));
    assert_eq!(fs::read_to_string(&path).unwrap(), JWT);
}

// ---------------------------------------------------------------------------------------------
// Atomic replacement.

#[test]
fn save_leaves_no_temporary_file_behind() {
    let dir = TempDir::new("no-temp");
    let store = FileTokenStore::new(dir.join("token.jwt"));
    for jwt in [JWT, OTHER_JWT, JWT] {
        store.save(jwt).unwrap();
        assert_eq!(dir.names(), ["token.jwt"]);
    }
}

#[test]
fn a_longer_existing_file_is_replaced_whole_not_overwritten_in_place() {
    let dir = TempDir::new("replace-whole");
    let path = dir.join("token.jwt");
    let longer = format!("{OTHER_JWT}{OTHER_JWT}\nsecond line\n");
    fs::write(&path, &longer).unwrap();
    #[cfg(unix)]
    let inode_before = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&path).unwrap().ino()
    };
    FileTokenStore::new(&path).save(JWT).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), JWT);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // A new file renamed over the old one, so a reader holding the old one never saw a mix.
        assert_ne!(fs::metadata(&path).unwrap().ino(), inode_before);
    }
}

#[cfg(unix)]
#[test]
fn a_reader_holding_the_old_file_keeps_reading_the_old_token() {
    let dir = TempDir::new("old-reader");
    let path = dir.join("token.jwt");
    let store = FileTokenStore::new(&path);
    store.save(OTHER_JWT).unwrap();
    let mut old = fs::File::open(&path).unwrap();
    store.save(JWT).unwrap();
    let mut text = String::new();
    io::Read::read_to_string(&mut old, &mut text).unwrap();
    assert_eq!(text, OTHER_JWT);
    assert_eq!(store.load().unwrap().as_deref(), Some(JWT));
}

#[test]
fn concurrent_saves_leave_one_whole_token_and_no_temporary_files() {
    let dir = TempDir::new("concurrent");
    let path = dir.join("token.jwt");
    let tokens: Vec<String> = (0..8).map(|i| format!("{JWT}{i}").repeat(50)).collect();
    std::thread::scope(|s| {
        for token in &tokens {
            // A store per thread, all on one path: temporary names must still differ.
            let store = FileTokenStore::new(&path);
            s.spawn(move || {
                for _ in 0..10 {
                    store.save(token).unwrap();
                }
            });
        }
    });
    let loaded = FileTokenStore::new(&path).load().unwrap().unwrap();
    assert!(tokens.contains(&loaded), "a mix of tokens was stored");
    assert_eq!(dir.names(), ["token.jwt"]);
}

// ---------------------------------------------------------------------------------------------
// Failed saves.

#[test]
fn save_under_a_parent_that_is_a_file_fails_and_changes_nothing() {
    // ENOTDIR, for root too.
    let dir = TempDir::new("parent-is-file");
    let parent = dir.join("not-a-dir");
    fs::write(&parent, "plain file").unwrap();
    let store = FileTokenStore::new(parent.join("token.jwt"));
    let err = store.save(JWT).unwrap_err();
    assert!(!err.to_string().contains("eyJ"), "{err}");
    assert_eq!(fs::read_to_string(&parent).unwrap(), "plain file");
    assert_eq!(dir.names(), ["not-a-dir"]);
    // Loading and clearing there are errors too, not "nothing stored".
    assert!(store.load().is_err());
    assert!(store.clear().is_err());
}

#[test]
fn save_over_a_directory_fails_and_removes_its_temporary_file() {
    // The temporary file is written, then the rename fails (for root too): the cleanup path.
    let dir = TempDir::new("target-is-dir");
    let target = dir.join("token.jwt");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), "x").unwrap();
    let err = FileTokenStore::new(&target).save(JWT).unwrap_err();
    assert!(!err.to_string().contains("eyJ"), "{err}");
    assert_eq!(dir.names(), ["token.jwt"]);
    assert!(target.is_dir());
}

#[cfg(unix)]
#[test]
fn save_in_a_read_only_directory_fails_and_keeps_the_old_token() {
    let dir = TempDir::new("read-only");
    let path = dir.join("token.jwt");
    let store = FileTokenStore::new(&path);
    store.save(OTHER_JWT).unwrap();
    set_mode(&dir.0, 0o555);
    // Root writes to read-only directories anyway; then only what can be checked is.
    let probe = dir.join("probe");
    if fs::write(&probe, "").is_ok() {
        let _ = fs::remove_file(&probe);
        eprintln!("note: running as root; the read-only directory is writable, check skipped");
        return;
    }
    let err = store.save(JWT).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert_eq!(store.load().unwrap().as_deref(), Some(OTHER_JWT));
    assert_eq!(dir.names(), ["token.jwt"]);
    assert!(store.clear().is_err());
    assert_eq!(store.load().unwrap().as_deref(), Some(OTHER_JWT));
}

// ---------------------------------------------------------------------------------------------
// The trait.

#[test]
fn stores_work_through_arc_box_and_dyn() {
    fn assert_store<S: TokenStore>(_: &S) {}

    let memory = Arc::new(MemoryStore::default());
    assert_store(&memory);
    round_trip(&memory);
    assert_eq!(memory.saves.load(Ordering::Relaxed), 2);

    let shared: Arc<dyn TokenStore> = memory.clone();
    round_trip(&shared);
    assert_eq!(memory.saves.load(Ordering::Relaxed), 4);

    let dir = TempDir::new("dyn");
    let boxed: Box<dyn TokenStore> = Box::new(FileTokenStore::new(dir.join("token.jwt")));
    round_trip(&boxed);
    round_trip(&Box::new(MemoryStore::default()));
}

#[test]
fn file_token_store_is_send_sync_clone_and_static() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert_traits::<FileTokenStore>();
}

// ---------------------------------------------------------------------------------------------
// What is not a token file, and what a crash left behind.

/// Makes a FIFO at `path` with the system's `mkfifo`; `false` where there is none.
#[cfg(unix)]
fn mkfifo(path: &Path) -> bool {
    std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|status| status.success())
}

#[cfg(unix)]
#[test]
fn a_fifo_at_the_path_is_refused_at_once_as_invalid_data_and_cleared() {
    let dir = TempDir::new("fifo");
    let path = dir.join("token.jwt");
    if !mkfifo(&path) {
        eprintln!("skipped: no mkfifo here");
        return;
    }
    let store = FileTokenStore::new(&path);
    // Opening a FIFO to read waits for a writer that never comes: it is opened without blocking.
    let err = store.load().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    store.clear().unwrap();
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

#[test]
fn a_directory_at_the_path_is_refused_as_invalid_data() {
    let dir = TempDir::new("dir-at-path");
    let path = dir.join("token.jwt");
    fs::create_dir(&path).unwrap();
    let err = FileTokenStore::new(&path).load().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[test]
fn temporary_files_a_crash_left_behind_are_removed_by_save_and_by_clear() {
    let dir = TempDir::new("leftovers");
    let store = FileTokenStore::new(dir.join("token.jwt"));
    // Named as the store names them (`.<name>.<pid>.<random>.tmp`), by processes long gone.
    let leftovers = [".token.jwt.1.0.tmp", ".token.jwt.4242.9f3a.tmp"];
    // Neither ours nor a leftover: kept.
    let others = ["other.jwt", ".other.jwt.1.0.tmp", ".token.jwt.1.0.bak"];
    for name in leftovers.iter().chain(&others) {
        fs::write(dir.join(name), JWT).unwrap();
    }
    store.save(OTHER_JWT).unwrap();
    let mut expected: Vec<&str> = others.iter().copied().chain(["token.jwt"]).collect();
    expected.sort();
    assert_eq!(dir.names(), expected, "save left a leftover");

    for name in leftovers {
        fs::write(dir.join(name), JWT).unwrap();
    }
    store.clear().unwrap();
    let mut expected: Vec<&str> = others.to_vec();
    expected.sort();
    assert_eq!(dir.names(), expected, "clear left a leftover");
}
