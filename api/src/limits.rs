//! Per-identity rate limits over the whole server (`[limits]`): a token bucket per signed-in
//! identity and kind of request, refilled at the configured rate per minute with a burst
//! of the same size. Over the limit: 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::auth::Identity;
use crate::config::LimitsConfig;
use crate::error::ApiError;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limited {
    /// Starting fixed-form attempts and adaptive sessions.
    Start,
    /// One-shot submissions and attempt submits.
    Submission,
    /// Saved answers.
    Answer,
}

impl Limited {
    fn per_minute(self, config: &LimitsConfig) -> u32 {
        match self {
            Limited::Start => config.starts_per_minute,
            Limited::Submission => config.submissions_per_minute,
            Limited::Answer => config.answers_per_minute,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Limited::Start => "starts",
            Limited::Submission => "submissions",
            Limited::Answer => "saved answers",
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets are forgotten once full again (so memory follows active identities only).
#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<(Limited, String), Bucket>>,
}

/// Buckets kept before full ones are swept.
const SWEEP_ABOVE: usize = 50_000;

impl RateLimits {
    /// Takes one token of `kind` for `identity`, or answers 429 with the seconds to wait.
    pub fn take(
        &self,
        config: &LimitsConfig,
        identity: &Identity,
        kind: Limited,
    ) -> Result<(), ApiError> {
        self.take_at(config, identity, kind, Instant::now())
    }

    fn take_at(
        &self,
        config: &LimitsConfig,
        identity: &Identity,
        kind: Limited,
        now: Instant,
    ) -> Result<(), ApiError> {
        let per_minute = kind.per_minute(config);
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let rate = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < capacity);
        }
        let bucket = buckets
            .entry((kind, identity.email.clone()))
            .or_insert(Bucket {
                tokens: capacity,
                at: now,
            });
        let refilled = (bucket.tokens
            + now.saturating_duration_since(bucket.at).as_secs_f64() * rate)
            .min(capacity);
        bucket.at = now;
        if refilled >= 1.0 {
            bucket.tokens = refilled - 1.0;
            return Ok(());
        }
        bucket.tokens = refilled;
        let wait = ((1.0 - refilled) / rate).ceil().max(1.0) as u64;
        Err(ApiError::TooManyRequests {
            message: format!(
                "too many {} from {} (at most {per_minute} a minute); try again in {wait} s",
                kind.what(),
                identity.email
            ),
            retry_after_secs: wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn a_burst_then_429_with_retry_after_then_refill() {
        let limits = RateLimits::default();
        let config = LimitsConfig {
            starts_per_minute: 3,
            ..Default::default()
        };
        let ann = Identity {
            email: "ann@x.org".into(),
            role: Role::Student,
        };
        let bob = Identity {
            email: "bob@x.org".into(),
            role: Role::Student,
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            limits.take_at(&config, &ann, Limited::Start, t0).unwrap();
        }
        match limits.take_at(&config, &ann, Limited::Start, t0) {
            Err(ApiError::TooManyRequests {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 20),
            other => panic!("{other:?}"),
        }
        // Another identity, and another kind, have their own buckets.
        limits.take_at(&config, &bob, Limited::Start, t0).unwrap();
        limits.take_at(&config, &ann, Limited::Answer, t0).unwrap();
        // One token back after 20 s.
        let later = t0 + std::time::Duration::from_secs(20);
        limits
            .take_at(&config, &ann, Limited::Start, later)
            .unwrap();
        assert!(
            limits
                .take_at(&config, &ann, Limited::Start, later)
                .is_err()
        );
        // 0 turns a limit off.
        let off = LimitsConfig {
            starts_per_minute: 0,
            ..Default::default()
        };
        for _ in 0..100 {
            limits.take_at(&off, &ann, Limited::Start, later).unwrap();
        }
    }
}
