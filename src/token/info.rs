//! [`TokenInfo`]: what the manager's events say about a token, without the token.

use super::AccessToken;
use crate::GrantKind;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// What an event says about a token, without the token: its identity, account, kinds of grant,
/// times and generation. It holds no token text (no signature, no grant details), so an event
/// buffer nobody reads keeps no token alive, and it is safe to log. Cheap to clone (shared
/// inside).
///
/// The manager's events carry one; the app reads the token itself with
/// [`AccessManager::token`](crate::AccessManager::token). [`AccessToken::info`] makes one for any
/// token (with generation 0: no manager installed it).
///
/// ```
/// use access_manager::{AccessToken, GrantKind};
/// use access_manager::grants::VideoGrant;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
///                                "SKfedcba9876543210fedcba9876543210", "secret")
///     .identity("alice")
///     .issued_at(issued)
///     .grant(VideoGrant { room: Some("standup".into()) })
///     .to_jwt()
///     .unwrap();
/// let info = AccessToken::parse(&jwt).unwrap().info();
/// assert_eq!(info.identity(), Some("alice"));
/// assert_eq!(info.grants(), [GrantKind::Video]);
/// assert_eq!(info.expires_at(), issued + Duration::from_secs(3600));
/// assert_eq!(info.generation(), 0);
/// // Nothing of the token text: safe to log.
/// assert!(!format!("{info:?}").contains(&jwt));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TokenInfo {
    inner: Arc<Info>,
}

#[derive(PartialEq, Eq)]
struct Info {
    identity: Option<Box<str>>,
    account_sid: Box<str>,
    grants: Box<[GrantKind]>,
    issued_at: Option<SystemTime>,
    expires_at: SystemTime,
    generation: u64,
}

impl TokenInfo {
    /// What `token` says, as the manager's `generation`th token (0: not a manager's).
    pub(crate) fn of(token: &AccessToken, generation: u64) -> TokenInfo {
        TokenInfo {
            inner: Arc::new(Info {
                identity: token.identity().map(Into::into),
                account_sid: token.account_sid().into(),
                grants: token.grant_kinds().collect(),
                issued_at: token.issued_at(),
                expires_at: token.expires_at(),
                generation,
            }),
        }
    }

    /// The token's identity (`grants.identity`), if it has one.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .identity("alice")
    ///     .to_jwt()
    ///     .unwrap();
    /// assert_eq!(AccessToken::parse(&jwt).unwrap().info().identity(), Some("alice"));
    /// ```
    pub fn identity(&self) -> Option<&str> {
        self.inner.identity.as_deref()
    }

    /// The account SID (`sub`, `AC…`).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .to_jwt()
    ///     .unwrap();
    /// let info = AccessToken::parse(&jwt).unwrap().info();
    /// assert_eq!(info.account_sid(), "AC0123456789abcdef0123456789abcdef");
    /// ```
    pub fn account_sid(&self) -> &str {
        &self.inner.account_sid
    }

    /// The kinds of grant the token carries, in wire order.
    ///
    /// ```
    /// use access_manager::{AccessToken, GrantKind};
    /// use access_manager::grants::{ChatGrant, VoiceGrant};
    ///
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .grant(VoiceGrant::default())
    ///     .grant(ChatGrant::default())
    ///     .to_jwt()
    ///     .unwrap();
    /// let info = AccessToken::parse(&jwt).unwrap().info();
    /// assert_eq!(info.grants(), [GrantKind::Chat, GrantKind::Voice]);
    /// ```
    pub fn grants(&self) -> &[GrantKind] {
        &self.inner.grants
    }

    /// When the token was issued (`iat`), if it says.
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .issued_at(issued)
    ///     .to_jwt()
    ///     .unwrap();
    /// assert_eq!(AccessToken::parse(&jwt).unwrap().info().issued_at(), Some(issued));
    /// ```
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.inner.issued_at
    }

    /// When the token expires (`exp`).
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let jwt = AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .issued_at(issued)
    ///     .ttl(Duration::from_secs(600))
    ///     .to_jwt()
    ///     .unwrap();
    /// let info = AccessToken::parse(&jwt).unwrap().info();
    /// assert_eq!(info.expires_at(), issued + Duration::from_secs(600));
    /// ```
    pub fn expires_at(&self) -> SystemTime {
        self.inner.expires_at
    }

    /// Which of its manager's tokens this is: 1 for the first token installed, one more for each
    /// after it; 0 for a token no manager installed ([`AccessToken::info`]).
    ///
    /// ```
    /// use access_manager::{AccessManager, AccessToken, Event};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mint = |ttl| AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                       "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .identity("alice")
    ///     .ttl(std::time::Duration::from_secs(ttl))
    ///     .to_jwt()
    ///     .unwrap();
    /// let (manager, mut events) = AccessManager::builder().build_with_events().unwrap();
    /// manager.update_token(mint(3600)).await.unwrap();
    /// manager.update_token(mint(3000)).await.unwrap();
    /// for expected in [1, 2] {
    ///     let Some(Event::TokenUpdated { token }) = events.recv().await else { panic!() };
    ///     assert_eq!(token.generation(), expected);
    /// }
    /// # }
    /// ```
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// Whether this describes `token`: the same identity, account, kinds of grant, issue and
    /// expiry times. (Two tokens minted alike in the same second look alike.)
    ///
    /// ```
    /// # use access_manager::AccessToken;
    /// let mint = |who: &str| AccessToken::builder("AC0123456789abcdef0123456789abcdef",
    ///                                             "SKfedcba9876543210fedcba9876543210", "secret")
    ///     .identity(who)
    ///     .to_jwt()
    ///     .unwrap();
    /// let alice = AccessToken::parse(&mint("alice")).unwrap();
    /// let bob = AccessToken::parse(&mint("bob")).unwrap();
    /// assert!(alice.info().describes(&alice));
    /// assert!(!alice.info().describes(&bob));
    /// ```
    pub fn describes(&self, token: &AccessToken) -> bool {
        let i = &*self.inner;
        i.identity.as_deref() == token.identity()
            && *i.account_sid == *token.account_sid()
            && i.grants.iter().copied().eq(token.grant_kinds())
            && i.issued_at == token.issued_at()
            && i.expires_at == token.expires_at()
    }
}

impl fmt::Debug for TokenInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        f.debug_struct("TokenInfo")
            .field("identity", &i.identity)
            .field("account_sid", &i.account_sid)
            .field("grants", &i.grants)
            .field("issued_at", &i.issued_at)
            .field("expires_at", &i.expires_at)
            .field("generation", &i.generation)
            .finish()
    }
}
