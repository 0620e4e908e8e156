//! The steps a history is made of: the app's operations and the clock's moves, drawn from the
//! seed, each applied to the manager with what the model expects of it.

use super::consumer::{ConsumerLog, Home, Mode, SimConsumer};
use super::fetcher::MAX_LEFT_OLDER;
use super::model::{Answer, Entry, Pending, Predicted, INVALID, STALE};
use super::tokens::{unix, Spec};
use super::world::World;
use crate::common::{secs, ACCOUNT, OTHER_ACCOUNT};
use access_manager::clock::Clock;
use access_manager::{AccessToken, GrantKind, ServiceAction};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A step's operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    PushValid,
    PushShort,
    PushInvalid,
    PushExpired,
    PushNotYetValid,
    PushOtherIdentity,
    PushOtherAccount,
    PushSame,
    PushOlder,
    PushPrevious,
    Refresh,
    Register,
    DropConsumer,
    Unregister,
    AdvanceSmall,
    Pass,
    Jump,
    SetForward,
    SetBack,
    Report,
    SignOut,
    Resume,
    ReadLagger,
}

pub const ALL_OPS: &[(u64, Op)] = &[
    (8, Op::PushValid),
    (3, Op::PushShort),
    (2, Op::PushInvalid),
    (2, Op::PushExpired),
    (1, Op::PushNotYetValid),
    (2, Op::PushOtherIdentity),
    (1, Op::PushOtherAccount),
    (2, Op::PushSame),
    (2, Op::PushOlder),
    (2, Op::PushPrevious),
    (6, Op::Refresh),
    (5, Op::Register),
    (2, Op::DropConsumer),
    (2, Op::Unregister),
    (12, Op::AdvanceSmall),
    (8, Op::Pass),
    (2, Op::Jump),
    (2, Op::SetForward),
    (2, Op::SetBack),
    (5, Op::Report),
    (1, Op::SignOut),
    (3, Op::Resume),
    (2, Op::ReadLagger),
];

/// A healthy backend's histories: the clock only passes (or jumps back, or forward short of the
/// refresh window), nothing stops fetching, and pushed tokens live long.
pub const HEALTHY_OPS: &[(u64, Op)] = &[
    (8, Op::PushValid),
    (2, Op::PushInvalid),
    (2, Op::PushExpired),
    (1, Op::PushNotYetValid),
    (2, Op::PushOtherIdentity),
    (1, Op::PushOtherAccount),
    (2, Op::PushSame),
    (2, Op::PushOlder),
    (2, Op::PushPrevious),
    (6, Op::Refresh),
    (5, Op::Register),
    (2, Op::DropConsumer),
    (2, Op::Unregister),
    (12, Op::AdvanceSmall),
    (10, Op::Pass),
    (2, Op::SetForward),
    (2, Op::SetBack),
    (5, Op::Report),
    (3, Op::Resume),
    (2, Op::ReadLagger),
];

const UNKNOWN: [u32; 4] = [0, 20003, 53000, 99_999];
const MAX_CONSUMERS: usize = 8;

impl World {
    /// A token for the app's user, `back` seconds old with `left` seconds left.
    pub fn session_spec(&self, now: SystemTime, back: u64, left: u64) -> Spec {
        let mut spec = Spec::living(&self.session, now, back, left);
        spec.account = self.account;
        spec
    }

    fn mint_for_session(&self, now: SystemTime, back: u64, left: u64) -> String {
        self.minter.mint(&self.session_spec(now, back, left))
    }

    fn ahead(&self) -> u64 {
        self.profile.refresh_ahead.as_secs()
    }

    pub async fn apply(&mut self, op: Op) -> Result<(), String> {
        let now = self.clock.now();
        let healthy = self.profile.healthy;
        match op {
            Op::PushValid => {
                let left = if self.rng.chance(80) {
                    self.rng.range(2 * self.ahead() + 10, 7200)
                } else {
                    self.rng.range(7200, 80_000)
                };
                let back = self.rng.range(0, 60);
                let jwt = self.mint_for_session(now, back, left);
                self.push(jwt, format!("update_token(valid, {left} s left)"))
                    .await
            }
            Op::PushShort => {
                let left = self.rng.range(1, self.ahead());
                let jwt = self.mint_for_session(now, 0, left);
                self.push(jwt, format!("update_token(short-lived, {left} s left)"))
                    .await
            }
            Op::PushInvalid => {
                let jwt = self.minter.garbage(&mut self.rng, now);
                self.push(jwt, "update_token(garbage)".into()).await
            }
            Op::PushExpired => {
                let mut spec = self.session_spec(now, 7200, 1);
                spec.ttl = self.rng.range(1, 7200);
                let jwt = self.minter.mint(&spec);
                self.push(jwt, "update_token(expired)".into()).await
            }
            Op::PushNotYetValid => {
                let mut spec = self.session_spec(now, 0, 3600);
                spec.nbf = Some(unix(now) + self.rng.range(1, 3600));
                let jwt = self.minter.mint(&spec);
                self.push(jwt, "update_token(not yet valid)".into()).await
            }
            Op::PushOtherIdentity => {
                let identity = if self.current.is_none() {
                    self.rng.pick(&["bob", "alice"])
                } else {
                    "mallory"
                };
                let left = self.rng.range(2 * self.ahead() + 10, 7200);
                let jwt = self.minter.mint(&Spec::living(identity, now, 0, left));
                self.push(jwt, format!("update_token(identity {identity})"))
                    .await
            }
            Op::PushOtherAccount => {
                let mut spec = self.session_spec(now, 0, 3600);
                spec.account = if self.account == ACCOUNT {
                    OTHER_ACCOUNT
                } else {
                    ACCOUNT
                };
                let jwt = self.minter.mint(&spec);
                self.push(jwt, "update_token(other account)".into()).await
            }
            Op::PushSame => match self.current_install() {
                Some(c) => {
                    let jwt = c.token.as_str().to_string();
                    self.push(jwt, "update_token(the current token again)".into())
                        .await
                }
                None => Box::pin(self.apply(Op::PushValid)).await,
            },
            Op::PushOlder => {
                let left = self
                    .current_install()
                    .map(|c| c.token.remaining_at(now).as_secs())
                    .unwrap_or(0);
                let floor = if healthy { 2 * self.ahead() + 10 } else { 1 };
                if left <= floor + 1 {
                    return Box::pin(self.apply(Op::PushValid)).await;
                }
                let left = self.rng.range(floor, (left - 1).min(MAX_LEFT_OLDER));
                let jwt = self.mint_for_session(now, 3000, left);
                self.push(jwt, format!("update_token(older: {left} s left)"))
                    .await
            }
            Op::PushPrevious => {
                if self.installs.is_empty() {
                    return Box::pin(self.apply(Op::PushValid)).await;
                }
                let i = self.rng.below(self.installs.len() as u64) as usize;
                let token = &self.installs[i].token;
                let left = token.remaining_at(now).as_secs();
                if healthy && left < 2 * self.ahead() + 10 {
                    return Box::pin(self.apply(Op::PushValid)).await;
                }
                let jwt = token.as_str().to_string();
                self.push(jwt, format!("update_token(install #{} again)", i + 1))
                    .await
            }
            Op::Refresh => {
                let n = self.rng.range(1, 3);
                let mut what = Vec::new();
                for _ in 0..n {
                    if self.rng.chance(50) {
                        what.push("refresh()".to_string());
                        self.refresh(None);
                    } else {
                        let min = secs(self.rng.pick(&[
                            0,
                            30,
                            self.ahead(),
                            2 * self.ahead(),
                            3600,
                            90_000,
                        ]));
                        what.push(format!("fresh_token({} s)", min.as_secs()));
                        self.refresh(Some(min));
                    }
                }
                self.note(what.join(" + "));
                self.quiet_and_check().await
            }
            Op::Register => {
                if self.consumers.iter().filter(|e| e.registered).count() >= MAX_CONSUMERS {
                    return Box::pin(self.apply(Op::Unregister)).await;
                }
                self.register();
                self.quiet_and_check().await
            }
            Op::DropConsumer => {
                let held: Vec<usize> = (0..self.consumers.len())
                    .filter(|&i| self.consumers[i].app_holds())
                    .collect();
                if held.is_empty() {
                    return Box::pin(self.apply(Op::Register)).await;
                }
                let i = held[self.rng.below(held.len() as u64) as usize];
                let name = self.consumers[i].name.clone();
                let app_hold = self.consumers[i].home.lock().unwrap().take();
                drop(app_hold);
                self.note(format!("the app drops consumer {name}"));
                self.quiet_and_check().await
            }
            Op::Unregister => {
                if self.consumers.is_empty() {
                    return Box::pin(self.apply(Op::Register)).await;
                }
                let i = self.rng.below(self.consumers.len() as u64) as usize;
                let entry = &self.consumers[i];
                let (id, name, registered, held) = (
                    entry.id,
                    entry.name.clone(),
                    entry.registered,
                    entry.app_holds(),
                );
                self.note(format!("unregister({name})"));
                let answer = self.manager().unregister(id);
                self.consumers[i].registered = false;
                if !registered && answer {
                    return Err(format!("unregister({name}) answered true a second time"));
                }
                if registered && held && !answer {
                    return Err(format!(
                        "unregister({name}) answered false for a registered consumer the app holds"
                    ));
                }
                self.quiet_and_check().await
            }
            Op::AdvanceSmall => {
                let by = if self.rng.chance(50) {
                    self.rng.duration(Duration::from_millis(1), secs(2))
                } else {
                    self.rng.duration(secs(2), secs(40))
                };
                if healthy {
                    // The healthy guarantee holds while the manager runs at every due instant.
                    self.note(format!(
                        "time passes: {} ms, deadline by deadline",
                        by.as_millis()
                    ));
                    return self.pass(by).await;
                }
                self.note(format!("advance({} ms)", by.as_millis()));
                self.clock.advance(by);
                self.quiet_and_check().await
            }
            Op::Pass => {
                // Days at most, hours for a healthy backend: its refreshes are visited one by one.
                let longest = if healthy { 12 } else { 48 };
                let by = if self.rng.chance(80) {
                    self.rng.duration(secs(60), secs(4 * 3600))
                } else {
                    self.rng.duration(secs(4 * 3600), secs(longest * 3600))
                };
                self.note(format!(
                    "time passes: {} s, deadline by deadline",
                    by.as_secs()
                ));
                self.pass(by).await
            }
            Op::Jump => {
                let by = self.rng.duration(secs(3600), secs(72 * 3600));
                self.note(format!("advance({} s) in one go", by.as_secs()));
                self.clock.advance(by);
                self.quiet_and_check().await
            }
            Op::SetForward => {
                let mut by = self.rng.duration(secs(1), secs(48 * 3600));
                if healthy {
                    // Not into the refresh window: a healthy backend keeps up only with time passing.
                    let room = self
                        .current_install()
                        .and_then(|c| c.will_at.duration_since(now).ok())
                        .unwrap_or_default();
                    if room < secs(2) {
                        return Box::pin(self.apply(Op::AdvanceSmall)).await;
                    }
                    by = by.min(room - secs(1));
                }
                self.note(format!("set the wall clock {} s forward", by.as_secs()));
                self.clock.set(now + by);
                self.quiet_and_check().await
            }
            Op::SetBack => {
                let by = self.rng.duration(secs(1), secs(3 * 3600));
                self.note(format!("set the wall clock {} s back", by.as_secs()));
                self.clock.set(now - by);
                self.quiet_and_check().await
            }
            Op::Report => {
                let code = match self.rng.below(if healthy { 2 } else { 3 }) {
                    0 => self.rng.pick(&STALE),
                    1 => self.rng.pick(&UNKNOWN),
                    _ => self.rng.pick(&INVALID),
                };
                let predicted = self.predict_service_action(code);
                self.note(format!("report_service_error({code})"));
                let action = self.manager().report_service_error(code).await;
                if action != predicted {
                    return Err(format!(
                        "report_service_error({code}) answered {action:?}, the service rules say {predicted:?}"
                    ));
                }
                if action == ServiceAction::Refresh {
                    self.asks.report_codes.push(code);
                }
                self.quiet_and_check().await
            }
            Op::SignOut => {
                self.note("sign_out()".into());
                let done = self.manager().sign_out();
                let store = self.store.clone();
                let installs_before = self.installs.len();
                if let Some(store) = &store {
                    // The clear begins after the call running now, if any: the next one.
                    self.clears_due.push(store.entered() + 1);
                }
                self.spawn(Pending::SignOut, async move {
                    let result = done.await;
                    Answer::Cleared {
                        result,
                        writes: store.map_or(0, |s| s.writes_len()),
                        installs_before,
                    }
                });
                self.current = None;
                self.halted = true;
                self.strike = 0;
                self.signed_out_step = Some(self.step);
                self.sign_outs_waiting += 1;
                self.quiet_and_check().await
            }
            Op::Resume => {
                self.note("resume()".into());
                self.manager().resume();
                self.quiet_and_check().await
            }
            Op::ReadLagger => {
                self.note("the lagging subscriber reads".into());
                self.read_lagger()?;
                self.quiet_and_check().await
            }
        }
    }

    async fn push(&mut self, jwt: String, what: String) -> Result<(), String> {
        {
            let predicted = self.predict_update(&jwt);
            self.note(format!("{what} → expect {predicted:?}"));
            self.offered.insert(jwt.clone());
            if predicted == Predicted::Changed {
                self.halted = false;
                self.strike = 0;
                self.expect_install.push(jwt.clone());
            }
            let update = self.manager().update_token(&jwt);
            self.spawn(
                Pending::Update {
                    text: jwt,
                    predicted,
                },
                async move { Answer::Update(update.await) },
            );
            self.quiet_and_check().await
        }
    }

    fn refresh(&mut self, min: Option<Duration>) {
        let now = self.clock.now();
        let qualifies = min.is_some_and(|min| {
            self.current_install()
                .is_some_and(|c| !c.refused && now < c.exp && c.token.remaining_at(now) >= min)
        });
        if !qualifies && self.fetch.is_some() {
            self.halted = false;
            self.strike = 0;
            self.asks.manual = true;
        }
        let manager = self.manager().clone();
        match min {
            None => self.spawn(Pending::Refresh, async move {
                Answer::Token(manager.refresh().await)
            }),
            Some(min) => self.spawn(Pending::Fresh(min), async move {
                Answer::Token(manager.fresh_token(min).await)
            }),
        }
    }

    pub fn register(&mut self) {
        let n = self.consumers.len();
        let name = format!("c{n}");
        let healthy = self.profile.healthy;
        let codes: &'static [u32] = if healthy {
            &STALE
        } else {
            &[20104, 51215, 20101, 20107, 53000]
        };
        let slow = Mode::Slow(self.profile.consumer_timeout * 2);
        let refuse = Mode::Refuse(self.rng.pick(codes));
        let mode = self.rng.weighted(&[
            (40, Mode::Accept),
            (5, Mode::Fail),
            (4, Mode::Hang),
            (4, Mode::Panic),
            (10, slow),
            (3, refuse),
            (4, Mode::DropSelf),
            (15, Mode::Flaky(codes)),
        ]);
        let required = self.rng.chance(20).then_some(GrantKind::Video);
        let log = Arc::new(ConsumerLog::default());
        let home: Home = Arc::default();
        let consumer = Arc::new(SimConsumer {
            name: name.clone(),
            required,
            mode,
            log: log.clone(),
            home: Arc::downgrade(&home),
            clock: self.clock.clone(),
            rng: self.plugin_rng.clone(),
            consumer_timeout: self.profile.consumer_timeout,
        });
        self.note(format!("register({name}: {mode:?}, requires {required:?})"));
        let id = self.manager().register(&consumer);
        *home.lock().unwrap() = Some(consumer);
        let floor = match self.current_install() {
            Some(c) => c.idx,
            None => self.installs.len() as u64 + 1,
        };
        self.consumers.push(Entry {
            name,
            id,
            log,
            home,
            required,
            mode,
            registered: true,
            registered_step: self.step,
            floor,
            last: None,
            cursor: 0,
        });
    }

    /// What `update_token(jwt)` must answer, judged now against the model's current token.
    fn predict_update(&self, jwt: &str) -> Predicted {
        let token = match AccessToken::parse(jwt) {
            Ok(token) => token,
            Err(e) => return Predicted::Invalid(e.code()),
        };
        if let Err(e) = token.validate_at(self.clock.now()) {
            return Predicted::Invalid(e.code());
        }
        match self.current_install() {
            Some(c) if c.token.as_str() == jwt => Predicted::Unchanged,
            Some(c) if c.token.account_sid() != token.account_sid() => Predicted::Account,
            Some(c) if c.token.identity() != token.identity() => Predicted::Identity,
            _ => Predicted::Changed,
        }
    }

    /// The service rules (DESIGN.md, "Service feedback") applied to the model.
    fn predict_service_action(&self, code: u32) -> ServiceAction {
        let Some(current) = self.current_install() else {
            return ServiceAction::Ignore;
        };
        let class = STALE.contains(&code) || INVALID.contains(&code);
        if self.fetch.is_none() || !class {
            ServiceAction::Ignore
        } else if self.halted {
            ServiceAction::Permanent
        } else if STALE.contains(&code) {
            ServiceAction::Refresh
        } else if self.strike != 0 && self.strike + 1 == current.idx {
            ServiceAction::Permanent
        } else {
            ServiceAction::Refresh
        }
    }
}
