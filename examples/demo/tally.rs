//! What the demo records as the run goes: the timeline's lines for events, fetches and the
//! clients' acceptances, and the counts the summary and the success checks read.

use super::rotation::Rotation;
use super::{secs_left, Timeline, CLIENTS};
use access_manager::clock::{Clock, SystemClock};
use access_manager::{AccessToken, Event, FetchReason, TokenInfo};
use std::collections::BTreeMap;

/// The run as recorded so far.
#[derive(Default)]
pub(super) struct Tally {
    /// Tokens in the order they became current, as their events describe them; index + 1 is the
    /// token number.
    pub(super) tokens: Vec<TokenInfo>,
    /// Per token number, the clients that accepted it.
    pub(super) accepted: BTreeMap<usize, Vec<&'static str>>,
    /// Per client, accepted tokens.
    pub(super) deliveries: BTreeMap<&'static str, u32>,
    /// Per client, accepted refreshed tokens (number 2 and later).
    pub(super) refreshed: BTreeMap<&'static str, u32>,
    pub(super) refresh_failures: u32,
    pub(super) consumer_failures: u32,
    /// `ServiceRejected` events, by code and action.
    pub(super) service_rejections: BTreeMap<(u32, String), u32>,
    /// Fetches started because a service refused the token.
    pub(super) fetches_on_refusal: u32,
    pub(super) expired: u32,
    /// A token arrived after a failed refresh.
    pub(super) recovered: bool,
    /// The key rotation scene, once it has started.
    pub(super) rotation: Option<Rotation>,
}

/// The number of the token a client accepted (0: not seen current).
fn number_of(tally: &Tally, token: &AccessToken) -> usize {
    tally
        .tokens
        .iter()
        .rposition(|t| t.describes(token))
        .map_or(0, |i| i + 1)
}

/// The number of the token an event describes (0: not seen current).
fn number_of_info(tally: &Tally, token: &TokenInfo) -> usize {
    tally
        .tokens
        .iter()
        .rposition(|t| same_token(t, token))
        .map_or(0, |i| i + 1)
}

/// Whether two descriptions are of one token, whichever gave them (the manager's events number
/// tokens; a description of the token read from the manager at start does not).
fn same_token(a: &TokenInfo, b: &TokenInfo) -> bool {
    (a.identity(), a.issued_at(), a.expires_at()) == (b.identity(), b.issued_at(), b.expires_at())
}

pub(super) fn on_event(timeline: &Timeline, tally: &mut Tally, event: Event) {
    match event {
        Event::TokenUpdated { token } => {
            if tally.tokens.last().is_some_and(|t| same_token(t, &token)) {
                return;
            }
            if tally.refresh_failures > 0 {
                tally.recovered = true;
            }
            tally.tokens.push(token.clone());
            if let Some(rotation) = &mut tally.rotation {
                rotation.on_token();
            }
            timeline.line(
                "manager",
                format!(
                    "TokenUpdated     #{}  {}  {:.1} s left",
                    tally.tokens.len(),
                    token.identity().unwrap_or("?"),
                    secs_left(token.expires_at())
                ),
            );
        }
        Event::TokenWillExpire { token } => timeline.line(
            "manager",
            format!(
                "TokenWillExpire  #{}  {:.1} s left → fetching",
                number_of_info(tally, &token),
                secs_left(token.expires_at())
            ),
        ),
        Event::TokenExpired { token } => {
            tally.expired += 1;
            timeline.line(
                "manager",
                format!("TokenExpired     #{}", number_of_info(tally, &token)),
            );
        }
        Event::RefreshFailed {
            attempt,
            error,
            retry_at,
        } => {
            tally.refresh_failures += 1;
            let retry = retry_at.map_or("no automatic retry".to_owned(), |at| {
                let wait = at.duration_since(SystemClock.now()).unwrap_or_default();
                format!("retry in {:.1} s", wait.as_secs_f64())
            });
            let held = tally.tokens.last().map_or("no token held".to_owned(), |t| {
                format!(
                    "keeping #{} ({:.1} s left)",
                    tally.tokens.len(),
                    secs_left(t.expires_at())
                )
            });
            timeline.line(
                "manager",
                format!("RefreshFailed    attempt {attempt}, {retry}, {held}"),
            );
            timeline.line("", format!("  {error}"));
        }
        Event::TokenRejected { error } => {
            timeline.line("manager", format!("TokenRejected    {error}"));
        }
        Event::ConsumerFailed { consumer, error } => {
            tally.consumer_failures += 1;
            timeline.line("manager", format!("ConsumerFailed   {consumer}: {error}"));
        }
        Event::ServiceRejected { code, action } => {
            *tally
                .service_rejections
                .entry((code, format!("{action:?}")))
                .or_default() += 1;
            timeline.line("manager", format!("ServiceRejected  {code} → {action:?}"));
        }
        Event::Closed => {}
        other => timeline.line("manager", format!("{other:?}")),
    }
}

/// Prints the start of a fetch the timeline does not show otherwise: retries follow a
/// `RefreshFailed` line, and scheduled refreshes a `TokenWillExpire` line.
pub(super) fn on_fetch(timeline: &Timeline, tally: &mut Tally, reason: FetchReason, attempt: u32) {
    if attempt == 1 && matches!(reason, FetchReason::Rejected { .. }) {
        tally.fetches_on_refusal += 1;
    }
    if attempt == 1 && reason != FetchReason::WillExpire {
        timeline.line(
            "manager",
            format!("FetchRequest     {reason:?}, attempt {attempt}"),
        );
    }
}

/// Records a client's acceptance; the token's number once every client has accepted it.
pub(super) fn on_accepted(
    timeline: &Timeline,
    tally: &mut Tally,
    name: &'static str,
    token: AccessToken,
) -> Option<usize> {
    let number = number_of(tally, &token);
    if let Some(rotation) = &mut tally.rotation {
        rotation.on_accepted(name, &token);
    }
    *tally.deliveries.entry(name).or_default() += 1;
    if number >= 2 {
        *tally.refreshed.entry(name).or_default() += 1;
    }
    let names = tally.accepted.entry(number).or_default();
    names.push(name);
    if names.len() < CLIENTS.len() {
        return None;
    }
    timeline.line(
        "sdk",
        format!(
            "#{number} accepted by {}  (signature and grant checked)",
            names.join(", ")
        ),
    );
    Some(number)
}
