//! The consumers' calls against the model (invariant 4): installs in order, each at most once,
//! never without the required grant or after a service refused it; once quiet, each live consumer
//! holds the current token or was told of the sign-out; every failure is reported once.

use super::consumer::Received;
use super::model::{Entry, Last};
use super::world::World;
use std::sync::atomic::Ordering::SeqCst;

impl World {
    pub fn check_consumers(&mut self) -> Result<(), String> {
        for i in 0..self.consumers.len() {
            let received: Vec<Received> = {
                let entry = &self.consumers[i];
                entry.log.calls.lock().unwrap()[entry.cursor..].to_vec()
            };
            self.consumers[i].cursor += received.len();
            for call in received {
                if self.asks.closed_before {
                    return Err(format!(
                        "consumer {} was called after the manager stopped",
                        self.consumers[i].name
                    ));
                }
                match call {
                    Received::Token(text) => {
                        self.tally.deliveries += 1;
                        self.on_delivery(i, &text)?
                    }
                    Received::SignedOut => self.consumers[i].last = Some(Last::SignedOut),
                }
            }
            let entry = &self.consumers[i];
            let seen = self.failures_by_name.get(&entry.name).copied().unwrap_or(0);
            let own = entry.log.failed.load(SeqCst) + entry.log.cut.load(SeqCst);
            if !self.shutdown_issued {
                let unexplained = if entry.required.is_none() {
                    seen != own
                } else {
                    seen < own
                };
                if unexplained {
                    return Err(format!(
                        "consumer {}: {own} calls failed or were cut, but {seen} ConsumerFailed \
                         events",
                        entry.name
                    ));
                }
            }
            self.check_holds(i)?;
        }
        Ok(())
    }

    fn on_delivery(&mut self, i: usize, text: &str) -> Result<(), String> {
        let floor = self.consumers[i].floor;
        // The latest install of that text: a token pushed again is a new install, and a call is
        // for the install current when it started (none newer is known yet, but in the same quiet).
        let Some(install) = self
            .installs
            .iter()
            .rev()
            .find(|x| x.idx >= floor && x.token.as_str() == text)
        else {
            let known = self
                .installs
                .iter()
                .rev()
                .find(|x| x.token.as_str() == text);
            return Err(format!(
                "consumer {} got {} although it may only get install #{floor} or newer \
                 (older after newer, or twice)",
                self.consumers[i].name,
                match known {
                    Some(x) => format!("install #{}", x.idx),
                    None => "a token that never became current".into(),
                },
            ));
        };
        let entry = &mut self.consumers[i];
        if install.refused_in.is_some_and(|quiet| quiet < self.quiets) {
            return Err(format!(
                "consumer {} got install #{} after a service refused it",
                entry.name, install.idx
            ));
        }
        if let Some(kind) = entry.required {
            if !install.token.has_grant(kind) {
                return Err(format!(
                    "consumer {} requires {kind:?} but got install #{} without it",
                    entry.name, install.idx
                ));
            }
        }
        entry.floor = install.idx + 1;
        entry.last = Some(Last::Token(install.idx));
        Ok(())
    }

    /// Once quiet, a live consumer not in a call holds the current token (delivered to it, whatever
    /// it answered), or was told of the sign-out.
    fn check_holds(&mut self, i: usize) -> Result<(), String> {
        let entry: &Entry = &self.consumers[i];
        if self.closed
            || !entry.registered
            || !entry.app_holds()
            || entry.log.in_call.load(SeqCst) > 0
        {
            return Ok(());
        }
        match self.current_install() {
            Some(c) => {
                let lacks = entry.required.is_some_and(|k| !c.token.has_grant(k));
                if c.refused || lacks {
                    return Ok(());
                }
                if entry.last != Some(Last::Token(c.idx)) {
                    return Err(format!(
                        "consumer {} ({:?}) is live and idle but was not given the current \
                         token, install #{} (its last call: {:?})",
                        entry.name, entry.mode, c.idx, entry.last
                    ));
                }
                self.tally.holds_checked += 1;
            }
            None => {
                let told = self
                    .signed_out_step
                    .is_some_and(|s| s > entry.registered_step);
                if told && entry.last != Some(Last::SignedOut) {
                    return Err(format!(
                        "consumer {} is live and idle after the sign-out but was not told (its \
                         last call: {:?})",
                        entry.name, entry.last
                    ));
                }
            }
        }
        Ok(())
    }
}
