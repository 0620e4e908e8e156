//! Everything the crate logs, captured at TRACE for one history, and the search for secrets in it
//! (and in events and errors): no token signature and no API secret may ever show.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// Every panic a plugin raises on purpose carries this, so that the panic hook keeps quiet.
pub const SIM_PANIC: &str = "[simulated panic]";

/// The API secret every simulated token is signed with.
pub const SIM_SECRET: &str = "sim-api-secret-that-must-never-leak";

/// A `tracing` subscriber's output, kept in memory.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// A TRACE-level subscriber writing here (no timestamps: nothing reads the system clock).
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static + use<> {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .without_time()
            .with_writer(self.clone())
            .finish()
    }

    /// What was logged since the last call.
    pub fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

pub struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> CaptureWriter {
        CaptureWriter(self.0.clone())
    }
}

/// The signatures of every token minted in a history.
#[derive(Clone, Default)]
pub struct Secrets(Arc<Mutex<Signatures>>);

/// The signatures, and their first eight bytes in a set that is cheap to probe: the log is searched
/// at every offset, and a full-signature lookup at each would cost a hash of 43 bytes per byte of log.
#[derive(Default)]
struct Signatures {
    whole: HashSet<String>,
    prefixes: HashSet<u64, BuildHasherDefault<Mix>>,
}

/// A multiplicative hash for the prefixes (already random text).
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn prefix(text: &[u8]) -> u64 {
    u64::from_le_bytes(text[..8].try_into().expect("eight bytes"))
}

/// An HS256 signature in base64url without padding.
const SIGNATURE_CHARS: usize = 43;

impl Secrets {
    pub fn add_jwt(&self, jwt: &str) {
        if let Some(signature) = jwt.rsplit('.').next() {
            if signature.len() == SIGNATURE_CHARS {
                let mut signatures = self.0.lock().unwrap();
                signatures.prefixes.insert(prefix(signature.as_bytes()));
                signatures.whole.insert(signature.to_string());
            }
        }
    }

    /// What secret `text` shows, if any.
    pub fn leak_in(&self, text: &str) -> Option<String> {
        if text.contains(SIM_SECRET) {
            return Some("the API secret".into());
        }
        let signatures = self.0.lock().unwrap();
        let is_b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        let bytes = text.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            if !is_b64(bytes[start]) {
                start += 1;
                continue;
            }
            let mut end = start;
            while end < bytes.len() && is_b64(bytes[end]) {
                end += 1;
            }
            if end - start >= SIGNATURE_CHARS {
                for from in start..=end - SIGNATURE_CHARS {
                    if !signatures.prefixes.contains(&prefix(&bytes[from..])) {
                        continue;
                    }
                    let window = &text[from..from + SIGNATURE_CHARS];
                    if signatures.whole.contains(window) {
                        return Some(format!("the token signature {window}"));
                    }
                }
            }
            start = end;
        }
        None
    }
}
