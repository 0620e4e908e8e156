//! The lagging subscriber, and the stopped manager (invariant 6): calls answer `Closed`, nothing
//! happens as days pass, every plugin is let go, no call waits, no task is left.

use super::world::World;
use access_manager::clock::Clock;
use access_manager::{Event, RefreshError, ServiceAction, UpdateError};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

impl World {
    /// The lagging subscriber's events are the checker's, with gaps it was told of.
    pub fn read_lagger(&mut self) -> Result<(), String> {
        while let Some(event) = self.lagger.try_recv() {
            match event {
                Event::Lagged { missed } => {
                    self.tally.lagged += 1;
                    self.lag_cursor += missed as usize
                }
                event => {
                    match self.event_log.get(self.lag_cursor) {
                        Some(expected) if *expected == event => {}
                        expected => {
                            return Err(format!(
                                "the lagging subscriber got {event:?} where the checker got \
                                 {expected:?}"
                            ))
                        }
                    }
                    self.lag_cursor += 1;
                }
            }
        }
        Ok(())
    }

    /// Calls on a handle of a stopped manager.
    pub async fn after_shutdown_calls(&mut self) -> Result<(), String> {
        let manager = self.manager().clone();
        if manager.token().is_some() || !manager.is_closed() {
            return Err("after shutdown() the manager still holds a token or is open".into());
        }
        let jwt = self
            .minter
            .mint(&self.session_spec(self.clock.now(), 0, 3600));
        match manager.update_token(&jwt).await {
            Err(UpdateError::Closed) => {}
            other => return Err(format!("update_token after shutdown answered {other:?}")),
        }
        match manager.refresh().await {
            Err(RefreshError::Closed) => {}
            other => return Err(format!("refresh() after shutdown answered {other:?}")),
        }
        match manager.fresh_token(Duration::ZERO).await {
            Err(RefreshError::Closed) => {}
            other => return Err(format!("fresh_token after shutdown answered {other:?}")),
        }
        if manager.report_service_error(51215).await != ServiceAction::Ignore {
            return Err("report_service_error after shutdown did not answer Ignore".into());
        }
        if manager.sign_out().await.is_ok() {
            return Err("sign_out() after shutdown answered Ok: no store was cleared".into());
        }
        manager.resume();
        let mut late = manager.subscribe();
        if late.recv().await != Some(Event::Closed) || late.recv().await.is_some() {
            return Err("a subscription after shutdown does not yield Closed then end".into());
        }
        // A consumer registered now is never called (checked with the others).
        self.register();
        Ok(())
    }

    /// After the stop: time passes and nothing happens; every plugin is let go; no task is left.
    pub async fn check_stopped(&mut self) -> Result<(), String> {
        self.note("time passes after the stop".into());
        self.clock.advance(Duration::from_secs(3 * 86_400));
        self.quiet_and_check().await?;
        self.pass(Duration::from_secs(3600)).await?;
        if self.event_log.last() != Some(&Event::Closed) {
            return Err("the events did not end with Closed".into());
        }
        if self.events.try_recv().is_some() {
            return Err("the subscription goes on after Closed".into());
        }
        self.read_lagger()?;
        if self.lag_cursor != self.event_log.len() {
            return Err(format!(
                "the lagging subscriber ended after {} of {} events",
                self.lag_cursor,
                self.event_log.len()
            ));
        }
        if let Some(log) = &self.fetch {
            if !log.dropped.load(SeqCst) || log.in_flight() > 0 {
                return Err("the stopped manager still holds its fetcher or a fetch".into());
            }
        }
        for entry in &self.consumers {
            let app_hold = entry.home.lock().unwrap().take();
            drop(app_hold);
        }
        for entry in &self.consumers {
            if !entry.log.dropped.load(SeqCst) {
                return Err(format!(
                    "consumer {} is still held after the manager stopped and the app let go",
                    entry.name
                ));
            }
        }
        if !self.pending.is_empty() {
            return Err(format!(
                "calls still unanswered after the stop: {:?}",
                self.pending.values().collect::<Vec<_>>()
            ));
        }
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if alive != 0 {
            return Err(format!("{alive} tasks still alive after the stop"));
        }
        Ok(())
    }
}
