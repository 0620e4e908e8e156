//! The `grants` object of a Twilio access token and each grant type.
//!
//! Field names follow the helper libraries (snake case on the wire). Fields appear in JSON only when
//! set; an empty grant serialises as `{}`. Keys this crate does not know (legacy `ip_messaging`, `rtc`,
//! or future grants) are kept in [`Grants::other`] and written back untouched. Inside a known grant,
//! fields this crate does not know are not kept: re-serialising such a grant leaves them out (the
//! token text itself, [`AccessToken::as_str`](crate::AccessToken::as_str), is never changed).

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;

/// The kinds of grant a token can carry, one per SDK family.
///
/// `Display` gives the lowercase product name logs use (`sync`), [`wire_key`](Self::wire_key) the
/// key in the token (`data_sync`).
///
/// ```
/// use access_manager::GrantKind;
/// assert_eq!(GrantKind::Sync.to_string(), "sync");
/// assert_eq!(GrantKind::TaskRouter.to_string(), "task_router");
/// assert!(GrantKind::Chat < GrantKind::Playback, "ordered as on the wire");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum GrantKind {
    /// Conversations and Programmable Chat (wire key `chat`).
    Chat,
    /// Sync (wire key `data_sync`).
    Sync,
    /// Programmable Voice (wire key `voice`).
    Voice,
    /// Programmable Video (wire key `video`).
    Video,
    /// TaskRouter (wire key `task_router`).
    TaskRouter,
    /// Live playback (wire key `player`).
    Playback,
}

impl GrantKind {
    /// Every kind, in wire order.
    pub const ALL: [GrantKind; 6] = [
        GrantKind::Chat,
        GrantKind::Sync,
        GrantKind::Voice,
        GrantKind::Video,
        GrantKind::TaskRouter,
        GrantKind::Playback,
    ];

    /// The key this grant has inside the token's `grants` object.
    ///
    /// ```
    /// use access_manager::GrantKind;
    /// assert_eq!(GrantKind::Sync.wire_key(), "data_sync");
    /// assert_eq!(GrantKind::Playback.wire_key(), "player");
    /// let keys: Vec<_> = GrantKind::ALL.iter().map(|k| k.wire_key()).collect();
    /// assert_eq!(keys, ["chat", "data_sync", "voice", "video", "task_router", "player"]);
    /// ```
    pub fn wire_key(self) -> &'static str {
        match self {
            GrantKind::Chat => "chat",
            GrantKind::Sync => "data_sync",
            GrantKind::Voice => "voice",
            GrantKind::Video => "video",
            GrantKind::TaskRouter => "task_router",
            GrantKind::Playback => "player",
        }
    }
}

impl fmt::Display for GrantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GrantKind::Chat => "chat",
            GrantKind::Sync => "sync",
            GrantKind::Voice => "voice",
            GrantKind::Video => "video",
            GrantKind::TaskRouter => "task_router",
            GrantKind::Playback => "playback",
        })
    }
}

/// Chat and Conversations grant (wire key `chat`).
///
/// ```
/// use access_manager::grants::ChatGrant;
/// let chat = ChatGrant {
///     service_sid: Some("IS00000000000000000000000000000001".into()),
///     ..Default::default()
/// };
/// // Only the fields that are set are written.
/// assert_eq!(
///     serde_json::to_string(&chat).unwrap(),
///     r#"{"service_sid":"IS00000000000000000000000000000001"}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatGrant {
    /// The Conversations / Chat service SID (`IS…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_sid: Option<String>,
    /// A device-unique endpoint id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    /// The deployment role SID (`RL…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_role_sid: Option<String>,
    /// The push credential SID (`CR…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_credential_sid: Option<String>,
}

/// Sync grant (wire key `data_sync`).
///
/// ```
/// use access_manager::grants::SyncGrant;
/// let sync: SyncGrant = serde_json::from_str(r#"{"service_sid":"IS1","endpoint_id":"e1"}"#).unwrap();
/// assert_eq!(sync.service_sid.as_deref(), Some("IS1"));
/// assert_eq!(sync.endpoint_id.as_deref(), Some("e1"));
/// assert_eq!(serde_json::to_string(&SyncGrant::default()).unwrap(), "{}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncGrant {
    /// The Sync service SID (`IS…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_sid: Option<String>,
    /// A device-unique endpoint id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
}

/// Voice grant (wire key `voice`).
///
/// On the wire: `incoming: {allow: true}` only when [`incoming_allow`](Self::incoming_allow) is true
/// (so a parsed `{allow: false}` is written back as no `incoming` at all), and
/// `outgoing: {application_sid, params}` when an application SID (or params) is set; `null` params
/// are left out, as twilio-node does.
///
/// ```
/// use access_manager::grants::VoiceGrant;
/// let voice = VoiceGrant {
///     incoming_allow: true,
///     outgoing_application_sid: Some("AP00000000000000000000000000000005".into()),
///     ..Default::default()
/// };
/// assert_eq!(
///     serde_json::to_value(&voice).unwrap(),
///     serde_json::json!({
///         "incoming": {"allow": true},
///         "outgoing": {"application_sid": "AP00000000000000000000000000000005"}
///     })
/// );
/// // `{allow: false}` reads as not allowed, and is written as no `incoming` at all.
/// let read: VoiceGrant = serde_json::from_str(r#"{"incoming":{"allow":false}}"#).unwrap();
/// assert!(!read.incoming_allow);
/// assert_eq!(serde_json::to_string(&read).unwrap(), "{}");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VoiceGrant {
    /// Whether the client may receive incoming calls.
    pub incoming_allow: bool,
    /// The TwiML application SID (`AP…`) used for outgoing calls.
    pub outgoing_application_sid: Option<String>,
    /// Parameters passed to the outgoing application.
    pub outgoing_application_params: Option<Value>,
    /// The push credential SID (`CR…`).
    pub push_credential_sid: Option<String>,
    /// A device-unique endpoint id.
    pub endpoint_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct VoiceIncoming {
    #[serde(default)]
    allow: bool,
}

#[derive(Deserialize)]
struct VoiceOutgoing {
    #[serde(default)]
    application_sid: Option<String>,
    #[serde(default)]
    params: Option<Value>,
}

#[derive(Deserialize)]
struct VoiceWire {
    #[serde(default)]
    incoming: Option<VoiceIncoming>,
    #[serde(default)]
    outgoing: Option<VoiceOutgoing>,
    #[serde(default)]
    push_credential_sid: Option<String>,
    #[serde(default)]
    endpoint_id: Option<String>,
}

/// The wire form, borrowed from a [`VoiceGrant`] so that serialising (minting) copies nothing.
#[derive(Serialize)]
struct VoiceWireRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    incoming: Option<VoiceIncoming>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outgoing: Option<VoiceOutgoingRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push_credential_sid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_id: Option<&'a str>,
}

#[derive(Serialize)]
struct VoiceOutgoingRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    application_sid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a Value>,
}

impl Serialize for VoiceGrant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // `null` params are left out, as twilio-node does (and as parsing reads them back).
        let params = self
            .outgoing_application_params
            .as_ref()
            .filter(|p| !p.is_null());
        let application_sid = self.outgoing_application_sid.as_deref();
        VoiceWireRef {
            incoming: self.incoming_allow.then_some(VoiceIncoming { allow: true }),
            // twilio-node writes `outgoing` only with an application SID; params without one only
            // come from a parsed token, and are kept so that re-serialising loses nothing.
            outgoing: (application_sid.is_some() || params.is_some()).then_some(VoiceOutgoingRef {
                application_sid,
                params,
            }),
            push_credential_sid: self.push_credential_sid.as_deref(),
            endpoint_id: self.endpoint_id.as_deref(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for VoiceGrant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = VoiceWire::deserialize(deserializer)?;
        let (outgoing_application_sid, outgoing_application_params) = match wire.outgoing {
            Some(o) => (o.application_sid, o.params),
            None => (None, None),
        };
        Ok(VoiceGrant {
            incoming_allow: wire.incoming.is_some_and(|i| i.allow),
            outgoing_application_sid,
            outgoing_application_params,
            push_credential_sid: wire.push_credential_sid,
            endpoint_id: wire.endpoint_id,
        })
    }
}

/// Video grant (wire key `video`).
///
/// ```
/// use access_manager::grants::VideoGrant;
/// let any_room = VideoGrant::default();
/// assert_eq!(serde_json::to_string(&any_room).unwrap(), "{}");
/// let one_room = VideoGrant { room: Some("standup".into()) };
/// assert_eq!(serde_json::to_string(&one_room).unwrap(), r#"{"room":"standup"}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoGrant {
    /// The room name or SID the client may join; `None` allows any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// TaskRouter grant (wire key `task_router`).
///
/// ```
/// use access_manager::grants::TaskRouterGrant;
/// let grant = TaskRouterGrant {
///     workspace_sid: Some("WS1".into()),
///     worker_sid: Some("WK1".into()),
///     role: Some("worker".into()),
/// };
/// assert_eq!(
///     serde_json::to_string(&grant).unwrap(),
///     r#"{"workspace_sid":"WS1","worker_sid":"WK1","role":"worker"}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRouterGrant {
    /// The workspace SID (`WS…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_sid: Option<String>,
    /// The worker SID (`WK…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_sid: Option<String>,
    /// The worker's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Playback grant (wire key `player`): an opaque object passed through as the server gave it.
///
/// ```
/// use access_manager::grants::PlaybackGrant;
/// let text = r#"{"playbackGrant":{"requestCredentials":null,"playerStreamerSid":"VJ1"}}"#;
/// let grant: PlaybackGrant = serde_json::from_str(text).unwrap();
/// assert_eq!(grant.0["playbackGrant"]["playerStreamerSid"], "VJ1");
/// assert_eq!(serde_json::to_string(&grant).unwrap(), text);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlaybackGrant(pub Value);

/// One grant, as given to [`AccessTokenBuilder::grant`](crate::AccessTokenBuilder::grant).
///
/// Each grant type converts into it, so the builder takes the grant itself:
///
/// ```
/// use access_manager::grants::{ChatGrant, Grant};
/// let grant: Grant = ChatGrant::default().into();
/// assert_eq!(grant, Grant::Chat(ChatGrant::default()));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Grant {
    /// A [`ChatGrant`].
    Chat(ChatGrant),
    /// A [`SyncGrant`].
    Sync(SyncGrant),
    /// A [`VoiceGrant`].
    Voice(VoiceGrant),
    /// A [`VideoGrant`].
    Video(VideoGrant),
    /// A [`TaskRouterGrant`].
    TaskRouter(TaskRouterGrant),
    /// A [`PlaybackGrant`].
    Playback(PlaybackGrant),
}

impl Grant {
    /// Which kind of grant this is.
    ///
    /// ```
    /// use access_manager::grants::{Grant, VideoGrant};
    /// use access_manager::GrantKind;
    /// let grant = Grant::from(VideoGrant::default());
    /// assert_eq!(grant.kind(), GrantKind::Video);
    /// ```
    pub fn kind(&self) -> GrantKind {
        match self {
            Grant::Chat(_) => GrantKind::Chat,
            Grant::Sync(_) => GrantKind::Sync,
            Grant::Voice(_) => GrantKind::Voice,
            Grant::Video(_) => GrantKind::Video,
            Grant::TaskRouter(_) => GrantKind::TaskRouter,
            Grant::Playback(_) => GrantKind::Playback,
        }
    }
}

macro_rules! grant_from {
    ($($ty:ident => $variant:ident),* $(,)?) => {$(
        impl From<$ty> for Grant {
            fn from(g: $ty) -> Self {
                Grant::$variant(g)
            }
        }
    )*};
}
grant_from!(ChatGrant => Chat, SyncGrant => Sync, VoiceGrant => Voice, VideoGrant => Video,
    TaskRouterGrant => TaskRouter, PlaybackGrant => Playback);

/// The `grants` object of a token: the identity and one optional entry per grant kind.
///
/// Keys this crate does not know are kept in [`other`](Self::other), in their original order, and
/// serialised back after the known ones.
///
/// ```
/// use access_manager::Grants;
/// let text = r#"{"identity":"alice","rtc":{"configuration_profile_sid":"CP1"},"video":{}}"#;
/// let grants: Grants = serde_json::from_str(text).unwrap();
/// assert_eq!(grants.identity.as_deref(), Some("alice"));
/// assert!(grants.video.is_some());
/// assert_eq!(grants.other["rtc"]["configuration_profile_sid"], "CP1");
/// // Known keys first, then the others in their order.
/// assert_eq!(
///     serde_json::to_string(&grants).unwrap(),
///     r#"{"identity":"alice","video":{},"rtc":{"configuration_profile_sid":"CP1"}}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Grants {
    /// The user's identity (`grants.identity`).
    pub identity: Option<String>,
    /// `chat`.
    pub chat: Option<ChatGrant>,
    /// `data_sync`.
    pub data_sync: Option<SyncGrant>,
    /// `voice`.
    pub voice: Option<VoiceGrant>,
    /// `video`.
    pub video: Option<VideoGrant>,
    /// `task_router`.
    pub task_router: Option<TaskRouterGrant>,
    /// `player`.
    pub player: Option<PlaybackGrant>,
    /// Every other key (legacy `ip_messaging`, `rtc`, grants newer than this crate), untouched.
    pub other: Map<String, Value>,
}

impl Grants {
    /// Whether a grant of this kind is present.
    ///
    /// ```
    /// use access_manager::{GrantKind, Grants};
    /// let grants: Grants = serde_json::from_str(r#"{"identity":"alice","chat":{}}"#).unwrap();
    /// assert!(grants.has(GrantKind::Chat));
    /// assert!(!grants.has(GrantKind::Voice));
    /// ```
    pub fn has(&self, kind: GrantKind) -> bool {
        match kind {
            GrantKind::Chat => self.chat.is_some(),
            GrantKind::Sync => self.data_sync.is_some(),
            GrantKind::Voice => self.voice.is_some(),
            GrantKind::Video => self.video.is_some(),
            GrantKind::TaskRouter => self.task_router.is_some(),
            GrantKind::Playback => self.player.is_some(),
        }
    }

    /// The kinds present, in wire order.
    ///
    /// ```
    /// use access_manager::{GrantKind, Grants};
    /// let grants: Grants = serde_json::from_str(r#"{"video":{},"rtc":{},"chat":{}}"#).unwrap();
    /// assert_eq!(grants.kinds().collect::<Vec<_>>(), [GrantKind::Chat, GrantKind::Video]);
    /// ```
    pub fn kinds(&self) -> impl Iterator<Item = GrantKind> + '_ {
        GrantKind::ALL.into_iter().filter(|k| self.has(*k))
    }

    /// Sets (or replaces) one grant.
    ///
    /// ```
    /// use access_manager::grants::{Grant, VideoGrant};
    /// use access_manager::Grants;
    /// let mut grants = Grants::default();
    /// grants.set(Grant::Video(VideoGrant { room: Some("a".into()) }));
    /// grants.set(VideoGrant { room: Some("b".into()) }.into());
    /// assert_eq!(grants.video, Some(VideoGrant { room: Some("b".into()) }));
    /// ```
    pub fn set(&mut self, grant: Grant) {
        match grant {
            Grant::Chat(g) => self.chat = Some(g),
            Grant::Sync(g) => self.data_sync = Some(g),
            Grant::Voice(g) => self.voice = Some(g),
            Grant::Video(g) => self.video = Some(g),
            Grant::TaskRouter(g) => self.task_router = Some(g),
            Grant::Playback(g) => self.player = Some(g),
        }
    }
}

impl Serialize for Grants {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(identity) = &self.identity {
            map.serialize_entry("identity", identity)?;
        }
        if let Some(g) = &self.chat {
            map.serialize_entry("chat", g)?;
        }
        if let Some(g) = &self.data_sync {
            map.serialize_entry("data_sync", g)?;
        }
        if let Some(g) = &self.voice {
            map.serialize_entry("voice", g)?;
        }
        if let Some(g) = &self.video {
            map.serialize_entry("video", g)?;
        }
        if let Some(g) = &self.task_router {
            map.serialize_entry("task_router", g)?;
        }
        if let Some(g) = &self.player {
            map.serialize_entry("player", g)?;
        }
        for (k, v) in &self.other {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Grants {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GrantsVisitor;
        impl<'de> Visitor<'de> for GrantsVisitor {
            type Value = Grants;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a grants object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Grants, A::Error> {
                let mut grants = Grants::default();
                while let Some(key) = access.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "identity" => {
                            grants.identity = Some(access.next_value::<String>().map_err(|_| {
                                de::Error::custom("grants.identity is not a string")
                            })?)
                        }
                        "chat" => grants.chat = Some(access.next_value()?),
                        "data_sync" => grants.data_sync = Some(access.next_value()?),
                        "voice" => grants.voice = Some(access.next_value()?),
                        "video" => grants.video = Some(access.next_value()?),
                        "task_router" => grants.task_router = Some(access.next_value()?),
                        "player" => grants.player = Some(access.next_value()?),
                        _ => {
                            let value = access.next_value::<Value>()?;
                            grants.other.insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(grants)
            }
        }
        deserializer.deserialize_map(GrantsVisitor)
    }
}
