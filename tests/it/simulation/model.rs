//! The model: what the simulation expects of the manager (its current token and what happened
//! to each install, the consumers, the calls waiting for answers) and what a history reports.

use super::consumer::{ConsumerLog, Home, Mode};
use crate::common::{secs, T0};
use access_manager::{AccessToken, ConsumerId, GrantKind, RefreshError, UpdateError, UpdateReport};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const STALE: [u32; 3] = [20104, 20105, 51215];
pub const INVALID: [u32; 9] = [
    20101, 20102, 20103, 20106, 20107, 20151, 20157, 20160, 51007,
];
/// A wall-clock time as seconds from the start of the clock, for descriptions.
pub fn rel(t: SystemTime) -> String {
    let start = UNIX_EPOCH + secs(T0);
    match t.duration_since(start) {
        Ok(d) => format!("t+{:.3}", d.as_secs_f64()),
        Err(e) => format!("t-{:.3}", e.duration().as_secs_f64()),
    }
}

/// What a history found wrong.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub step: usize,
    pub description: String,
    pub message: String,
    pub history: Vec<String>,
}

pub struct Outcome {
    pub steps: usize,
    pub violation: Option<Violation>,
    pub tally: Tally,
    pub history: Vec<String>,
}

/// How much of each thing a history exercised, so that a run shows what its checks saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub healthy: u64,
    pub fetches: u64,
    pub installs: u64,
    pub deliveries: u64,
    pub will_expire: u64,
    pub expired: u64,
    pub consumer_failures: u64,
    pub service_refusals: u64,
    pub sign_outs: u64,
    pub lagged: u64,
    pub holds_checked: u64,
    pub clock_moves: u64,
    /// Times a healthy history's time passed with more deadlines than the simulation follows one
    /// by one (the healthy guarantee is off until the next token).
    pub passes_cut_short: u64,
    /// Histories with a token store.
    pub stores: u64,
    /// Sign-outs that cleared a store (answered `Ok`).
    pub store_clears: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.healthy += o.healthy;
        self.fetches += o.fetches;
        self.installs += o.installs;
        self.deliveries += o.deliveries;
        self.will_expire += o.will_expire;
        self.expired += o.expired;
        self.consumer_failures += o.consumer_failures;
        self.service_refusals += o.service_refusals;
        self.sign_outs += o.sign_outs;
        self.lagged += o.lagged;
        self.holds_checked += o.holds_checked;
        self.clock_moves += o.clock_moves;
        self.passes_cut_short += o.passes_cut_short;
        self.stores += o.stores;
        self.store_clears += o.store_clears;
    }
}

/// What the model expects of an `update_token`.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicted {
    Changed,
    Unchanged,
    Invalid(u32),
    Identity,
    Account,
}

/// A call still waiting for its answer.
#[derive(Debug)]
pub enum Pending {
    Update { text: String, predicted: Predicted },
    Refresh,
    Fresh(Duration),
    SignOut,
    Shutdown,
}

impl Pending {
    /// Whether the call's task holds a handle of the manager.
    pub fn holds_handle(&self) -> bool {
        matches!(
            self,
            Pending::Refresh | Pending::Fresh(_) | Pending::Shutdown
        )
    }
}

pub enum Answer {
    Update(Result<UpdateReport, UpdateError>),
    Token(Result<AccessToken, RefreshError>),
    /// `sign_out()`'s: whether the store was cleared; how many changes the store had seen when
    /// it answered, and how many tokens had been installed when it was called.
    Cleared {
        result: std::io::Result<()>,
        writes: usize,
        installs_before: usize,
    },
    Unit,
}

/// A finished call: its id, the clock when it ended, its answer.
pub struct Done {
    pub id: u64,
    pub at: SystemTime,
    pub answer: Answer,
}

/// A token as it became current, and what happened to it since.
pub struct Install {
    pub idx: u64,
    pub token: AccessToken,
    pub will_at: SystemTime,
    pub exp: SystemTime,
    pub will_fired: bool,
    pub expired_fired: bool,
    pub refused: bool,
    /// The quiet in which a service's refusal of it was seen.
    pub refused_in: Option<u64>,
}

/// What a consumer was asked last.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Last {
    Token(u64),
    SignedOut,
}

pub struct Entry {
    pub name: String,
    pub id: ConsumerId,
    pub log: Arc<ConsumerLog>,
    pub home: Home,
    pub required: Option<GrantKind>,
    pub mode: Mode,
    pub registered: bool,
    pub registered_step: usize,
    /// The lowest install it may still receive (deliveries only go forward).
    pub floor: u64,
    pub last: Option<Last>,
    pub cursor: usize,
}

impl Entry {
    pub fn app_holds(&self) -> bool {
        self.home.lock().unwrap().is_some()
    }
}

/// What the step asked for, to tell a fetch that was asked for from one that was not.
#[derive(Default)]
pub struct StepAsks {
    pub manual: bool,
    pub report_codes: Vec<u32>,
    pub consumer_codes: Vec<u32>,
    pub halted_at_start: bool,
    pub closed_before: bool,
}

/// An install as the model records it.
pub fn install_of(idx: u64, token: AccessToken, refresh_ahead: Duration) -> Install {
    let exp = token.expires_at();
    Install {
        idx,
        will_at: exp.checked_sub(refresh_ahead).unwrap_or(UNIX_EPOCH),
        exp,
        token,
        will_fired: false,
        expired_fired: false,
        refused: false,
        refused_in: None,
    }
}
