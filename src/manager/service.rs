//! Service feedback: the rule that turns a Twilio service's refusal of the token into an action
//! ([`ServiceAction`], where the rule is documented), and the codes it knows.

use std::fmt;

/// What the manager does about a service's refusal of its token: the answer of
/// [`AccessManager::report_service_error`], and the action taken when a consumer's `update_token`
/// answers [`ConsumerError::rejected`].
///
/// One rule for both, about the token current when the manager's task takes the report (in order
/// with the app's other calls):
///
/// | class | codes | action |
/// |---|---|---|
/// | stale: a new token fixes it | 20104 expired, 20105 not yet valid, 51215 unauthorized | [`Refresh`](ServiceAction::Refresh) |
/// | invalid: the backend mints tokens the service refuses | 20101 invalid, 20102 invalid header, 20103 invalid issuer/subject, 20106 invalid grants, 20107 invalid signature, 20151 unable to authenticate, 20157 lifetime too long, 20160 invalid access token, 51007 token authentication rejected | [`Refresh`](ServiceAction::Refresh) the first time; [`Permanent`](ServiceAction::Permanent) when the next token is refused in this class too |
/// | anything else, or a manager without a fetcher or without a token | | [`Ignore`](ServiceAction::Ignore) |
///
/// While automatic fetching is stopped (after a permanent fetch failure, a `Permanent` action or a
/// sign-out), stale and invalid codes answer `Permanent`: nothing is fetched until the app acts.
///
/// `Refresh` fetches at once (reason [`FetchReason::Rejected`]), joining a fetch in flight, and the
/// refused token is not delivered again; when the token that replaced a refused one is refused too,
/// the fetch waits a backoff instead (the manager's `backoff`, at least 1 s, growing with each token
/// refused in a row), so that a service refusing every token does not make the manager loop.
/// `Permanent` stops automatic fetching until
/// [`refresh()`](crate::AccessManager::refresh) or [`update_token()`](crate::AccessManager::update_token):
/// the backend must be fixed, not hammered. A consumer's refusal of a token the manager has
/// already replaced is `Ignore`d: the service has not seen the new one yet. Every report is an
/// [`Event::ServiceRejected`](crate::Event::ServiceRejected).
///
/// ```
/// use access_manager::{async_trait, fetcher_fn, AccessManager, AccessToken, ConsumerError, Event,
///                      FetchError, ServiceAction, TokenConsumer};
/// use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// /// A voice client whose service refuses the first token it is given.
/// #[derive(Default)]
/// struct Voice { refused_once: AtomicBool }
///
/// #[async_trait]
/// impl TokenConsumer for Voice {
///     fn name(&self) -> &str { "voice" }
///     async fn update_token(&self, _token: &AccessToken) -> Result<(), ConsumerError> {
///         if self.refused_once.swap(true, Ordering::SeqCst) {
///             Ok(())
///         } else {
///             Err(ConsumerError::rejected(51215, "voice: token unauthorized"))
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let minted = AtomicU64::new(0);
/// let fetcher = fetcher_fn(move |_| {
///     let n = minted.fetch_add(1, Ordering::SeqCst); // each token differs from the last
///     async move {
///         AccessToken::builder("AC0123456789abcdef0123456789abcdef",
///                              "SKfedcba9876543210fedcba9876543210", "api-secret")
///             .identity("alice")
///             .ttl(Duration::from_secs(3600 + n))
///             .to_jwt()
///             .map_err(FetchError::transient)
///     }
/// });
/// let (manager, mut events) = AccessManager::builder().fetcher(fetcher).build_with_events()?;
/// let voice = Arc::new(Voice::default());
/// manager.register(&voice);
/// let action = loop {
///     match events.recv().await {
///         Some(Event::ServiceRejected { code: 51215, action }) => break action,
///         Some(_) => {}
///         None => panic!("the manager stopped"),
///     }
/// };
/// assert_eq!(action, ServiceAction::Refresh); // 51215: a new token fixes it
/// assert_eq!(action.to_string(), "refresh");
/// assert!(matches!(events.recv().await, Some(Event::TokenUpdated { .. }))); // fetched at once
/// # Ok(()) }
/// ```
///
/// [`AccessManager::report_service_error`]: crate::AccessManager::report_service_error
/// [`ConsumerError::rejected`]: crate::ConsumerError::rejected
/// [`FetchReason::Rejected`]: crate::FetchReason::Rejected
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceAction {
    /// A new token is being fetched (at once, or after a backoff when the token that replaced a
    /// refused one is refused too); the refused one is not delivered again.
    Refresh,
    /// The backend's tokens keep being refused: no automatic fetch until `refresh()` or
    /// `update_token()`.
    Permanent,
    /// Nothing to do: the code says nothing about the token, the token was already replaced, or
    /// the manager has no fetcher (or has stopped).
    Ignore,
}

impl fmt::Display for ServiceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceAction::Refresh => "refresh",
            ServiceAction::Permanent => "permanent",
            ServiceAction::Ignore => "ignore",
        })
    }
}

/// The codes a new token fixes.
const STALE: [u32; 3] = [20104, 20105, 51215];
/// The codes that say the backend mints tokens the service refuses.
const INVALID: [u32; 9] = [
    20101, 20102, 20103, 20106, 20107, 20151, 20157, 20160, 51007,
];

/// What the manager knows when a refusal comes in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Situation {
    pub(super) has_fetcher: bool,
    /// The generation of the token held, if any.
    pub(super) current: Option<u64>,
    /// The generation of the last token refused with an invalid code (0 for none).
    pub(super) invalid_strike: u64,
    /// Automatic fetching is stopped until `refresh()` or `update_token()`.
    pub(super) halted: bool,
}

/// Whether `code` is in the invalid class.
pub(super) fn is_invalid(code: u32) -> bool {
    INVALID.contains(&code)
}

/// The action for a refusal with `code` of the token of `refused` generation.
pub(super) fn decide(code: u32, refused: u64, now: Situation) -> ServiceAction {
    if !now.has_fetcher || now.current != Some(refused) {
        return ServiceAction::Ignore;
    }
    let refused_class = STALE.contains(&code) || is_invalid(code);
    if refused_class && now.halted {
        // The backend must be fixed first: the app resumes with `refresh()` or `update_token()`.
        ServiceAction::Permanent
    } else if STALE.contains(&code) {
        ServiceAction::Refresh
    } else if is_invalid(code) {
        if now.invalid_strike != 0 && now.invalid_strike + 1 == refused {
            ServiceAction::Permanent
        } else {
            ServiceAction::Refresh
        }
    } else {
        ServiceAction::Ignore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(current: u64, strike: u64) -> Situation {
        Situation {
            has_fetcher: true,
            current: Some(current),
            invalid_strike: strike,
            halted: false,
        }
    }

    #[test]
    fn actions_display_as_lowercase_words() {
        let shown = [
            ServiceAction::Refresh,
            ServiceAction::Permanent,
            ServiceAction::Ignore,
        ]
        .map(|action| action.to_string());
        assert_eq!(shown, ["refresh", "permanent", "ignore"]);
    }

    #[test]
    fn stale_codes_refresh_every_time() {
        for code in STALE {
            assert_eq!(decide(code, 3, at(3, 2)), ServiceAction::Refresh);
        }
    }

    #[test]
    fn invalid_codes_refresh_once_then_turn_permanent_for_the_next_token() {
        for code in INVALID {
            assert_eq!(decide(code, 3, at(3, 0)), ServiceAction::Refresh, "{code}");
            assert_eq!(decide(code, 3, at(3, 3)), ServiceAction::Refresh, "{code}");
            assert_eq!(
                decide(code, 4, at(4, 3)),
                ServiceAction::Permanent,
                "{code}"
            );
            assert_eq!(decide(code, 6, at(6, 3)), ServiceAction::Refresh, "{code}");
        }
    }

    #[test]
    fn while_automatic_fetching_is_stopped_refusals_stay_permanent() {
        let halted = Situation {
            halted: true,
            ..at(3, 0)
        };
        assert_eq!(decide(51215, 3, halted), ServiceAction::Permanent);
        assert_eq!(decide(20107, 3, halted), ServiceAction::Permanent);
        assert_eq!(decide(20003, 3, halted), ServiceAction::Ignore);
    }

    #[test]
    fn other_codes_replaced_tokens_and_fetcherless_managers_are_ignored() {
        assert_eq!(decide(20003, 3, at(3, 0)), ServiceAction::Ignore);
        assert_eq!(decide(20104, 2, at(3, 0)), ServiceAction::Ignore);
        let no_token = Situation {
            current: None,
            ..at(3, 0)
        };
        assert_eq!(decide(20104, 3, no_token), ServiceAction::Ignore);
        let no_fetcher = Situation {
            has_fetcher: false,
            ..at(3, 0)
        };
        assert_eq!(decide(20104, 3, no_fetcher), ServiceAction::Ignore);
    }
}
