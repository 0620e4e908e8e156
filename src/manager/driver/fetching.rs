//! The driver's fetching: starting a fetch (single flight, limiter, timeout), taking its result
//! (validation, the issuer's clock, staleness) and retrying failures with backoff.

use super::*;

impl Driver {
    pub(super) fn on_refresh(
        &mut self,
        min_remaining: Option<Duration>,
        reply: FetchReply,
        now: SystemTime,
    ) {
        if self.fetcher.is_none() {
            let _ = reply.send(Err(RefreshError::NoFetcher));
            return;
        }
        if let (Some(min), Some(c)) = (min_remaining, &self.current) {
            let left = c.expires_at.duration_since(now).unwrap_or_default();
            if now < c.expires_at && left >= min {
                let _ = reply.send(Ok(c.token.clone()));
                return;
            }
        }
        if self.fetch.is_none() {
            self.failures = 0;
            self.start_fetch(FetchReason::Manual);
        }
        if let Some(fetch) = &mut self.fetch {
            fetch.waiters.push(reply);
        }
    }

    pub(super) fn start_fetch(&mut self, reason: FetchReason) {
        let Some(fetcher) = self.fetcher.clone() else {
            return;
        };
        self.next_fetch_at = None;
        let attempt = self.failures + 1;
        let request = FetchRequest::new(
            reason,
            attempt,
            self.current.as_ref().map(|c| c.token.clone()),
        );
        let timeout = self.fetch_timeout;
        let limiter = self.limiter.clone();
        let clock = self.shared.clock.clone();
        // A root span, whether the driver's task or an app's call started the fetch.
        let span = tracing::info_span!(parent: None, "fetch", %reason, attempt);
        let future = async move {
            // The timeout runs from when the shared limiter lets the fetch go.
            let _slot = match &limiter {
                Some(limiter) => Some(limiter.acquire().await),
                None => None,
            };
            let expired = clock.sleep_until(after(clock.now(), timeout));
            // The call itself is inside the caught future: a fetcher may panic before returning one.
            let call =
                AssertUnwindSafe(async move { fetcher.fetch_token(request).await }).catch_unwind();
            tokio::select! {
                biased;
                result = call => result.unwrap_or_else(|panic| Err(FetchError::transient(format!(
                    "fetcher panicked: {}", panic_message(&*panic)
                )))),
                _ = expired => Err(FetchError::transient(format!(
                    "fetch timed out after {} s", timeout.as_secs_f64()
                ))),
            }
        };
        self.fetch = Some(InFlight {
            future: tracing::Instrument::instrument(future, span).boxed(),
            waiters: Vec::new(),
            started_generation: self.generation,
        });
    }

    pub(super) fn on_fetched(&mut self, result: Result<String, FetchError>) {
        let Some(fetch) = self.fetch.take() else {
            return;
        };
        let now = self.shared.clock.now();
        let outcome = match result {
            Err(e) => Err(RefreshError::Fetch(Arc::new(e))),
            Ok(jwt) => self.offer_fetched(jwt, now, fetch.started_generation),
        };
        match outcome {
            Ok((token, changed)) => {
                self.failures = 0;
                if changed {
                    self.install_and_publish(token.clone(), Source::Fetcher, now, None);
                } else if self.next_fetch_at.is_none() {
                    // The backend handed back the token held: wait as for a new short one.
                    let half_life = self.current.as_ref().map_or(Duration::ZERO, |c| {
                        c.expires_at.duration_since(now).unwrap_or_default() / 2
                    });
                    let at = after(now, half_life.max(MIN_FETCH_SPACING));
                    self.next_fetch_at = Some(
                        self.current
                            .as_ref()
                            .map_or(at, |c| c.will_expire_at.max(at)),
                    );
                }
                for waiter in fetch.waiters {
                    let _ = waiter.send(Ok(token.clone()));
                }
            }
            Err(error) => {
                self.on_fetch_failed(&error, now);
                for waiter in fetch.waiters {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
        }
    }

    /// Estimates the issuer's clock offset from a fetched token's `iat` (else `nbf`); applies it
    /// when skew estimation is on; reports a large one once.
    fn observe_issuer_clock(&mut self, token: &AccessToken, now: SystemTime) {
        let Some(start) = token.start_secs() else {
            return;
        };
        let offset = (start as i64).saturating_sub(unix_secs(now) as i64);
        self.shared
            .estimated_offset
            .store(offset, Ordering::Release);
        let nearly_expired = token.remaining_at(now) < self.refresh_ahead;
        // A token issued in the past with plenty left is a backend's cached token, not a device
        // ahead of the issuer: only a token that also looks (nearly) expired here moves the clock
        // back, or a cached token would be scheduled past its real expiry.
        let applicable = offset >= 0 || nearly_expired;
        if self.estimate_clock_skew && applicable && offset.unsigned_abs() <= MAX_SKEW.as_secs() {
            // Within a couple of seconds the clocks agree: keep exact local scheduling.
            let applied = if offset.unsigned_abs() <= 2 {
                0
            } else {
                offset
            };
            self.shared.applied_offset.store(applied, Ordering::Release);
        }
        // Issued in the future: the device is behind. Issued long ago and (nearly) expired on the
        // device: it is ahead (or the backend hands out stale tokens; worth saying either way).
        // Issued long ago with plenty left is a backend's cached token, not a wrong clock.
        let threshold = SKEW_REPORT_THRESHOLD.as_secs() as i64;
        let suspicious = offset > threshold || (offset < -threshold && nearly_expired);
        if suspicious && !self.skew_reported {
            self.skew_reported = true;
            tracing::warn!(
                offset_secs = offset,
                applied = self.estimate_clock_skew,
                "the device clock looks wrong: fetched tokens were issued {offset} s from it"
            );
            self.shared.emit(|| Event::ClockSkewSuspected {
                offset_secs: offset,
            });
        }
    }

    /// A fetched token that expires before the one held is not taken when a newer token was
    /// installed while the fetch ran (the app pushed one), or when skew estimation is on (a stale
    /// token from the backend must not pass for a fresh one).
    fn is_stale(&self, token: &AccessToken, started_generation: u64) -> bool {
        (self.estimate_clock_skew || self.generation != started_generation)
            && self
                .current
                .as_ref()
                .is_some_and(|c| token.exp_secs() < c.token.exp_secs())
    }

    /// Parses and checks a fetched token: `Ok((token, changed))`, the held token when the fetched
    /// one is stale, or the rejection.
    fn offer_fetched(
        &mut self,
        jwt: String,
        now: SystemTime,
        started_generation: u64,
    ) -> Result<(AccessToken, bool), RefreshError> {
        let rejected = |driver: &Self, e: UpdateError| {
            driver.reject(&e);
            match e.token_error() {
                Some(e) => RefreshError::Rejected(e),
                None => RefreshError::Closed,
            }
        };
        let token = match AccessToken::parse(&jwt) {
            Ok(token) => token,
            Err(e) => return Err(rejected(self, UpdateError::Invalid(e))),
        };
        self.observe_issuer_clock(&token, now);
        if self.is_stale(&token, started_generation) {
            tracing::warn!("fetched token expires before the token held; keeping the held one");
            if let Some(c) = &self.current {
                return Ok((c.token.clone(), false));
            }
        }
        self.check(&token, now)
            .map(|changed| (token, changed))
            .map_err(|e| rejected(self, e))
    }

    fn on_fetch_failed(&mut self, error: &RefreshError, now: SystemTime) {
        self.failures = self.failures.saturating_add(1);
        let (permanent, retry_after) = match error {
            RefreshError::Fetch(e) => (e.is_permanent(), e.retry_after()),
            _ => (false, None),
        };
        let retry_at = if permanent {
            None
        } else {
            let wait = self
                .backoff
                .delay(self.failures, &mut self.rng)
                .max(retry_after.unwrap_or(Duration::ZERO))
                // A zero backoff must not spin the driver on a fetcher that fails at once.
                .max(MIN_RETRY_WAIT)
                // No token lives longer; and `now + Duration::MAX` would panic the driver.
                .min(MAX_LIFETIME);
            let mut at = after(now, wait);
            if let Some(c) = &self.current {
                if c.phase == Phase::Fresh {
                    // The token is still good: no need to retry before its refresh window.
                    at = at.max(c.will_expire_at);
                }
            }
            Some(at)
        };
        self.next_fetch_at = retry_at;
        tracing::warn!(
            attempt = self.failures,
            permanent,
            retry_in_s = retry_at.map(|at| unix_secs(at).saturating_sub(unix_secs(now))),
            error = %error,
            "token refresh failed"
        );
        let (attempt, error) = (self.failures, error.to_string());
        self.shared.emit(|| Event::RefreshFailed {
            attempt,
            error,
            retry_at,
        });
    }
}
