//! The builder: each configuration error, the initial token's checks, its Debug output, and the
//! jitter seed of managers built together.

use crate::common::*;
use access_manager::{AccessManager, Backoff, BuildError, Event, TokenError};
use std::collections::HashSet;
use std::time::Duration;

fn config_error(builder: access_manager::AccessManagerBuilder) -> &'static str {
    match builder.clock(clock()).build() {
        Err(BuildError::InvalidConfig(why)) => why,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn outside_a_tokio_runtime_build_says_so() {
    assert!(matches!(
        AccessManager::builder().clock(clock()).build(),
        Err(BuildError::NoRuntime)
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn zero_timeouts_and_a_zero_event_capacity_are_refused_by_name() {
    let b = AccessManager::builder;
    assert!(config_error(b().fetch_timeout(Duration::ZERO)).contains("fetch_timeout"));
    assert!(config_error(b().consumer_timeout(Duration::ZERO)).contains("consumer_timeout"));
    assert!(config_error(b().event_capacity(0)).contains("event_capacity"));
}

#[tokio::test(flavor = "current_thread")]
async fn refresh_jitter_must_be_shorter_than_refresh_ahead() {
    let b = || AccessManager::builder().refresh_ahead(secs(180));
    assert!(config_error(b().refresh_jitter(secs(180))).contains("refresh_jitter"));
    assert!(config_error(b().refresh_jitter(secs(600))).contains("refresh_jitter"));
    assert!(b().refresh_jitter(secs(179)).clock(clock()).build().is_ok());
    // No jitter needs no lead: refreshing at the expiry instant itself is the app's choice.
    let no_lead = AccessManager::builder().refresh_ahead(Duration::ZERO);
    assert!(no_lead.clock(clock()).build().is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn an_initial_token_that_is_malformed_or_expired_is_refused_with_its_reason() {
    let build = |jwt: String| {
        AccessManager::builder()
            .clock(clock())
            .initial_token(jwt)
            .build()
    };
    assert!(matches!(
        build("not a token".into()),
        Err(BuildError::InvalidInitialToken(
            TokenError::Malformed { .. }
        ))
    ));
    // Expired at the clock's now (T0): issued two hours earlier for one hour.
    assert!(matches!(
        build(mint("alice", T0 - 7200, 3600)),
        Err(BuildError::InvalidInitialToken(TokenError::Expired { .. }))
    ));
    assert!(build(mint("alice", T0, 3600)).is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn the_builders_debug_names_its_settings_and_hides_the_initial_token() {
    let jwt = mint("alice", T0, 3600);
    let builder = AccessManager::builder()
        .initial_token(jwt.clone())
        .refresh_ahead(secs(240));
    let shown = format!("{builder:?}");
    assert!(shown.starts_with("AccessManagerBuilder {"), "{shown}");
    assert!(
        shown.contains("initial_token: Some(\"<redacted>\")"),
        "{shown}"
    );
    assert!(shown.contains("refresh_ahead: 240s"), "{shown}");
    assert!(!shown.contains(&jwt[..20]), "{shown}");
}

#[tokio::test(flavor = "current_thread")]
async fn managers_built_at_the_same_instant_draw_different_jitter() {
    // Eight managers on one clock, built at one instant, each failing its first fetch: with
    // jitter their retries spread instead of hitting the backend together.
    let clock = clock();
    let mut retries = HashSet::new();
    let mut managers = Vec::new();
    for _ in 0..8 {
        let (fetcher, mut calls) = scripted();
        let manager = AccessManager::builder()
            .clock(clock.clone())
            .fetcher(fetcher)
            .backoff(Backoff::new(secs(8), secs(60)))
            .build()
            .unwrap();
        let mut events = manager.subscribe();
        calls.next().await.fail("down");
        match next(&mut events).await {
            Event::RefreshFailed { retry_at, .. } => retries.insert(retry_at.unwrap()),
            other => panic!("expected RefreshFailed, got {other:?}"),
        };
        managers.push((manager, calls));
    }
    assert!(retries.len() > 4, "retries in lockstep: {retries:?}");
}
