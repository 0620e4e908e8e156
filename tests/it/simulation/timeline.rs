//! The events against the model (invariants 1 and 2): each token that becomes current was offered,
//! valid and for the same user, and each install's timeline (updated, will-expire, expired) comes in
//! order, once, at the right clock reading, never for a replaced token, nothing after `Closed`.

use super::fetcher::FetchCall;
use super::model::{install_of, rel, INVALID};
use super::world::World;
use crate::common::{ACCOUNT, OTHER_ACCOUNT};
use access_manager::{AccessToken, Event, ServiceAction, TokenInfo};
use std::time::{Duration, SystemTime};

/// Whether `info` describes the token `jwt`.
fn describes(info: &TokenInfo, jwt: &str) -> bool {
    AccessToken::parse(jwt).is_ok_and(|t| info.describes(&t))
}

/// The manager never retries sooner than this after a failure.
const MIN_RETRY_WAIT: Duration = Duration::from_millis(100);

impl World {
    pub fn on_event(&mut self, event: Event, now: SystemTime) -> Result<(), String> {
        if let Some(leak) = self.secrets.leak_in(&format!("{event:?}")) {
            return Err(format!("an event shows {leak}: {event:?}"));
        }
        if self.closed {
            return Err(format!("an event after Closed: {event:?}"));
        }
        self.event_log.push(event.clone());
        if self.verbose {
            let line = match &event {
                Event::TokenUpdated { token }
                | Event::TokenWillExpire { token }
                | Event::TokenExpired { token } => format!(
                    "    event: {} (exp {})",
                    event_name(&event),
                    rel(token.expires_at())
                ),
                other => format!("    event: {other:?}"),
            };
            self.history.push(line);
        }
        let healthy = self.profile.healthy && !self.healthy_void;
        let t = &mut self.tally;
        match &event {
            Event::TokenWillExpire { .. } => t.will_expire += 1,
            Event::TokenExpired { .. } => t.expired += 1,
            Event::ConsumerFailed { .. } => t.consumer_failures += 1,
            Event::ServiceRejected { .. } => t.service_refusals += 1,
            Event::SignedOut => t.sign_outs += 1,
            _ => {}
        }
        match &event {
            Event::TokenUpdated { token } => self.on_updated(token, now)?,
            Event::TokenWillExpire { token } => {
                let Some(c) = self.current.map(|i| &mut self.installs[i]) else {
                    return Err("TokenWillExpire while no token is current".into());
                };
                if !token.describes(&c.token) {
                    return Err(format!(
                        "TokenWillExpire for a token that is not current (current: install #{})",
                        c.idx
                    ));
                }
                if c.will_fired {
                    return Err(format!("a second TokenWillExpire for install #{}", c.idx));
                }
                if now < c.will_at {
                    return Err(format!(
                        "TokenWillExpire for install #{} at {}, before exp - refresh_ahead = {}",
                        c.idx,
                        rel(now),
                        rel(c.will_at)
                    ));
                }
                c.will_fired = true;
            }
            Event::TokenExpired { token } => {
                let Some(c) = self.current.map(|i| &mut self.installs[i]) else {
                    return Err("TokenExpired while no token is current".into());
                };
                if !token.describes(&c.token) {
                    return Err(format!(
                        "TokenExpired for a token that is not current (current: install #{})",
                        c.idx
                    ));
                }
                if !c.will_fired || c.expired_fired {
                    return Err(format!(
                        "TokenExpired for install #{} out of order (will-expire seen: {}, \
                         expired seen: {})",
                        c.idx, c.will_fired, c.expired_fired
                    ));
                }
                if now < c.exp {
                    return Err(format!(
                        "TokenExpired for install #{} at {}, before exp {}",
                        c.idx,
                        rel(now),
                        rel(c.exp)
                    ));
                }
                c.expired_fired = true;
                // A token a service refused is replaced under the refusal rules (with a backoff
                // once refusals repeat): a refusing service is not a healthy system.
                if healthy && !c.refused {
                    return Err(format!(
                        "install #{} expired although the backend is healthy and time only passed",
                        c.idx
                    ));
                }
            }
            Event::RefreshFailed {
                attempt, retry_at, ..
            } => {
                if *attempt == 0 {
                    return Err("RefreshFailed with attempt 0".into());
                }
                match retry_at {
                    None => self.halted = true,
                    Some(at) if *at < now + MIN_RETRY_WAIT => {
                        return Err(format!(
                            "a retry planned at {}, sooner than 100 ms after the failure at {}",
                            rel(*at),
                            rel(now)
                        ))
                    }
                    Some(_) => {}
                }
            }
            Event::ServiceRejected { code, action } if *action != ServiceAction::Ignore => {
                let Some(i) = self.current else {
                    return Err(format!(
                        "a service refusal ({code}) acted on ({action:?}) with no token"
                    ));
                };
                let c = &mut self.installs[i];
                c.refused = true;
                c.refused_in.get_or_insert(self.quiets);
                match action {
                    ServiceAction::Permanent => self.halted = true,
                    ServiceAction::Refresh if INVALID.contains(code) => self.strike = c.idx,
                    _ => {}
                }
            }
            Event::ConsumerFailed { consumer, .. } => {
                *self.failures_by_name.entry(consumer.clone()).or_default() += 1;
            }
            Event::SignedOut => {
                if self.sign_outs_waiting == 0 {
                    return Err("SignedOut without a sign_out()".into());
                }
                self.sign_outs_waiting = 0;
            }
            Event::Lagged { missed } => {
                return Err(format!(
                    "the checking subscriber lagged ({missed} events lost): the simulation's \
                     event capacity is too small"
                ));
            }
            Event::Closed => self.closed = true,
            _ => {}
        }
        Ok(())
    }

    fn on_updated(&mut self, info: &TokenInfo, now: SystemTime) -> Result<(), String> {
        // Events carry no token text: the token is the one offered that the event describes.
        let from_app = match self.expect_install.iter().position(|t| describes(info, t)) {
            Some(pos) => Some(self.expect_install.remove(pos)),
            None => None,
        };
        let fetched: Option<FetchCall> = if from_app.is_some() {
            None
        } else {
            self.fetch.clone().and_then(|f| {
                let calls = f.calls.lock().unwrap();
                // Fetches end in the order they start (one at a time): the first not yet
                // installed that the event describes (tokens minted alike in the same second look
                // alike), else the latest (a fetch that outlived a newer token may bring back an
                // older one). A fetched token not installed by the time a later fetch's token is
                // never will be: the search starts after the last fetch matched this way.
                let of = |c: &FetchCall| c.returned.as_deref().is_some_and(|t| describes(info, t));
                let fresh = |c: &FetchCall| {
                    c.returned
                        .as_deref()
                        .is_some_and(|t| !self.installed_texts.contains(t))
                };
                // Two fetches that end in the same second can bring tokens the event cannot tell
                // apart although one is not yet valid: the one the manager could take is it.
                let from = self.fetch_matched.min(calls.len());
                let valid = |c: &FetchCall| {
                    c.returned
                        .as_deref()
                        .and_then(|t| AccessToken::parse(t).ok())
                        .is_some_and(|t| t.validate_at(now).is_ok())
                };
                let candidates: Vec<usize> = (from..calls.len())
                    .filter(|&i| fresh(&calls[i]) && of(&calls[i]))
                    .collect();
                let chosen = candidates
                    .iter()
                    .find(|&&i| valid(&calls[i]))
                    .or(candidates.first());
                match chosen {
                    Some(&at) => {
                        self.fetch_matched = at + 1;
                        Some(calls[at].clone())
                    }
                    None => calls.iter().rev().find(|c| of(c)).cloned(),
                }
            })
        };
        let text = from_app.or_else(|| fetched.as_ref().and_then(|c| c.returned.clone()));
        let Some(token) = text.and_then(|t| AccessToken::parse(&t).ok()) else {
            return Err(if self.offered.iter().any(|t| describes(info, t)) {
                "TokenUpdated for a token the app offered but that was not (or no longer) to be \
                 installed"
                    .into()
            } else {
                "TokenUpdated for a token nobody offered".into()
            });
        };
        let token = &token;
        if let Err(e) = token.validate_at(now) {
            return Err(format!("a token became current while invalid: {e}"));
        }
        if let Some(prev) = self.current_install() {
            if prev.token.account_sid() != token.account_sid()
                || prev.token.identity() != token.identity()
            {
                return Err(format!(
                    "install #{} ({:?}) was replaced by a token for {:?}",
                    prev.idx,
                    prev.token.identity(),
                    token.identity()
                ));
            }
            if let Some(start) = fetched.as_ref().and_then(|c| c.installs_at_start) {
                if prev.idx > start && token.expires_at() < prev.exp {
                    return Err(format!(
                        "install #{} was replaced by the result of a fetch started before it was \
                         installed (at install #{start}), which expires earlier",
                        prev.idx
                    ));
                }
            }
        }
        // A token that became current after time jumped is under the healthy guarantee again.
        self.healthy_void = false;
        let idx = self.installs.len() as u64 + 1;
        self.installed_texts.insert(token.as_str().to_string());
        self.installs
            .push(install_of(idx, token.clone(), self.profile.refresh_ahead));
        self.current = Some(self.installs.len() - 1);
        let identity = token.identity().unwrap_or_default().to_string();
        let account = if token.account_sid() == ACCOUNT {
            ACCOUNT
        } else {
            OTHER_ACCOUNT
        };
        if identity != self.session || account != self.account {
            // The app switched users (with no token held): its backend now serves the new one.
            self.session = identity.clone();
            self.account = account;
            if let Some(f) = &self.fetch {
                *f.identity.lock().unwrap() = identity;
                *f.account.lock().unwrap() = account;
            }
        }
        Ok(())
    }
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::TokenUpdated { .. } => "TokenUpdated",
        Event::TokenWillExpire { .. } => "TokenWillExpire",
        Event::TokenExpired { .. } => "TokenExpired",
        _ => "other",
    }
}
