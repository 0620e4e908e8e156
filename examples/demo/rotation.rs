//! The key rotation scene: the server rotates its API key while a token has most of its life left;
//! the services drop the sessions opened with the old key, the clients reconnect and refuse the
//! old token, and the manager replaces it at once.

use super::clients::SdkClient;
use super::server::KeyRing;
use super::{secs_left, Timeline};
use access_manager::clock::{Clock, SystemClock};
use access_manager::{AccessManager, AccessToken, ConsumerId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// What happened at and after the rotation.
pub(super) struct Rotation {
    /// When the key rotated.
    at: SystemTime,
    /// The current token at the rotation, signed with the old key.
    old: AccessToken,
    /// The new key's SID.
    new_key: &'static str,
    /// When the next token became current.
    replaced_at: Option<SystemTime>,
    /// Per client, when it accepted its first token signed with the new key.
    on_new_key: BTreeMap<&'static str, SystemTime>,
}

impl Rotation {
    /// Rotates the key; then, as the services drop the sessions opened with the old key, each
    /// client reconnects: registered again, it is handed the current token (`number`), which it
    /// now refuses. `None` without a current token.
    pub(super) fn start(
        timeline: &Timeline,
        keys: &KeyRing,
        manager: &AccessManager,
        clients: &[Arc<SdkClient>],
        ids: &mut [ConsumerId],
        number: usize,
    ) -> Option<Rotation> {
        let old = manager.token()?;
        let (from, to) = keys.rotate();
        let at = SystemClock.now();
        timeline.line(
            "server",
            format!(
                "API key rotated: {} → {}; the services now verify with {}",
                from.short(),
                to.short(),
                to.short()
            ),
        );
        let names: Vec<&str> = clients.iter().map(|c| c.name).collect();
        timeline.line(
            "sdk",
            format!(
                "sessions on {} dropped: {} reconnect with #{number} ({:.1} s left)",
                from.short(),
                names.join(", "),
                secs_left(old.expires_at())
            ),
        );
        // Registering hands each client the current token, as a reconnecting SDK presents the
        // token it holds; the four reach the manager together (one thread, no await between).
        for (client, id) in clients.iter().zip(ids) {
            manager.unregister(*id);
            *id = manager.register(client);
        }
        Some(Rotation {
            at,
            old,
            new_key: to.sid,
            replaced_at: None,
            on_new_key: BTreeMap::new(),
        })
    }

    /// A new token became current.
    pub(super) fn on_token(&mut self) {
        self.replaced_at.get_or_insert_with(|| SystemClock.now());
    }

    /// A client accepted `token`.
    pub(super) fn on_accepted(&mut self, client: &'static str, token: &AccessToken) {
        if token.api_key_sid() == self.new_key {
            self.on_new_key
                .entry(client)
                .or_insert_with(|| SystemClock.now());
        }
    }

    /// How many clients took a token signed with the new key before the old token expired.
    fn in_time(&self) -> usize {
        let expiry = self.old.expires_at();
        self.on_new_key.values().filter(|at| **at < expiry).count()
    }

    /// Every one of `clients` was on the new key before the old token expired.
    pub(super) fn absorbed(&self, clients: usize) -> bool {
        self.in_time() == clients
    }

    /// The summary line: when, how fast, how many clients, with how much to spare.
    pub(super) fn summary(&self, start: SystemTime, clients: usize) -> String {
        let secs = |from: SystemTime, to: SystemTime| {
            to.duration_since(from).unwrap_or_default().as_secs_f64()
        };
        let replaced = self.replaced_at.map_or("never replaced".to_owned(), |at| {
            format!("replaced in {:.3} s", secs(self.at, at))
        });
        format!(
            "at {:.1} s: refused token {replaced}, {}/{clients} clients on the new key, old token had {:.1} s left",
            secs(start, self.at),
            self.in_time(),
            secs(self.at, self.old.expires_at())
        )
    }
}
