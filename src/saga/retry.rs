//! Retry decisions: given a policy and a failed attempt, retry after how long, or give up.
//!
//! Pure and deterministic (no jitter: RabbitMQ delay levels already quantise waits),
//! so every branch is a unit test.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::messages::ErrorInfo;
use crate::saga::definition::RetryPolicy;

/// What to do after an attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// Run attempt `attempt` after `delay`.
    Retry { attempt: u32, delay: Duration },
    /// The step fails for good.
    GiveUp(GiveUpReason),
}

/// Why no further attempt is made; recorded in the saga history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The worker said the error is not retryable.
    NotRetryable,
    /// The error code is listed in the policy's `non_retryable`.
    NonRetryableCode,
    /// `max_attempts` attempts have been made.
    AttemptsExhausted,
    /// The next attempt would start after the step's schedule-to-close deadline.
    ScheduleToCloseExceeded,
}

impl GiveUpReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::NotRetryable => "not_retryable",
            GiveUpReason::NonRetryableCode => "non_retryable_code",
            GiveUpReason::AttemptsExhausted => "attempts_exhausted",
            GiveUpReason::ScheduleToCloseExceeded => "schedule_to_close_exceeded",
        }
    }
}

/// The wait before the attempt after `failed_attempt` (1-based):
/// `initial_interval * backoff_coefficient^(failed_attempt - 1)`, capped at `max_interval`.
pub fn backoff(policy: &RetryPolicy, failed_attempt: u32) -> Duration {
    let exponent = failed_attempt.saturating_sub(1).min(1_000) as i32;
    let factor = policy.backoff_coefficient.powi(exponent);
    let secs = policy.initial_interval.as_secs_f64() * factor;
    let cap = policy.max_interval.as_secs_f64();
    if !secs.is_finite() || secs >= cap {
        policy.max_interval
    } else {
        Duration::from_secs_f64(secs)
    }
}

/// Every distinct wait `policy` can put between two attempts, shortest first. The
/// coordinator declares the broker delay levels these need when it starts, so none
/// is created under load (see `coordinator::relay::DelayLevels`).
pub fn waits(policy: &RetryPolicy) -> Vec<Duration> {
    let mut out: Vec<Duration> = Vec::new();
    for failed in 1..policy.max_attempts {
        let wait = backoff(policy, failed);
        if out.last() != Some(&wait) {
            out.push(wait);
        }
        if wait >= policy.max_interval {
            break; // capped: every later wait is the same
        }
    }
    out
}

/// Decides whether `failed_attempt` is followed by another attempt.
/// `deadline` is the step's schedule-to-close instant, if it has one.
pub fn decide(
    policy: &RetryPolicy,
    failed_attempt: u32,
    error: &ErrorInfo,
    now: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
) -> RetryDecision {
    if !error.retryable {
        return RetryDecision::GiveUp(GiveUpReason::NotRetryable);
    }
    if policy.non_retryable.iter().any(|c| c == &error.code) {
        return RetryDecision::GiveUp(GiveUpReason::NonRetryableCode);
    }
    if failed_attempt >= policy.max_attempts {
        return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted);
    }
    let delay = backoff(policy, failed_attempt);
    if let Some(deadline) = deadline {
        let next_start = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        if next_start >= deadline {
            return RetryDecision::GiveUp(GiveUpReason::ScheduleToCloseExceeded);
        }
    }
    RetryDecision::Retry {
        attempt: failed_attempt + 1,
        delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(10),
            max_attempts: 5,
            non_retryable: vec!["card_declined".into()],
        }
    }

    fn err(code: &str, retryable: bool) -> ErrorInfo {
        ErrorInfo {
            code: code.into(),
            message: String::new(),
            retryable,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn backoff_grows_geometrically_then_caps() {
        let p = policy();
        let secs: Vec<u64> = (1..=6).map(|a| backoff(&p, a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn backoff_with_coefficient_one_is_constant() {
        let p = RetryPolicy {
            backoff_coefficient: 1.0,
            ..policy()
        };
        assert_eq!(backoff(&p, 1), backoff(&p, 30));
    }

    #[test]
    fn waits_list_each_distinct_backoff_until_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            ..policy()
        };
        let secs: Vec<u64> = waits(&p).iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 10]);
    }

    #[test]
    fn waits_follow_max_attempts() {
        let one = RetryPolicy {
            max_attempts: 1,
            ..policy()
        };
        assert!(waits(&one).is_empty());
        let three = RetryPolicy {
            max_attempts: 3,
            ..policy()
        };
        assert_eq!(
            waits(&three),
            vec![Duration::from_secs(1), Duration::from_secs(2)]
        );
        let constant = RetryPolicy {
            backoff_coefficient: 1.0,
            max_attempts: u32::MAX,
            ..policy()
        };
        assert_eq!(waits(&constant), vec![Duration::from_secs(1)]);
    }

    #[test]
    fn backoff_never_overflows() {
        assert_eq!(backoff(&policy(), u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn backoff_keeps_sub_second_precision() {
        let p = RetryPolicy {
            initial_interval: Duration::from_millis(250),
            backoff_coefficient: 1.5,
            ..policy()
        };
        assert_eq!(backoff(&p, 2), Duration::from_millis(375));
    }

    #[test]
    fn retryable_error_with_attempts_left_retries() {
        let d = decide(&policy(), 2, &err("boom", true), now(), None);
        assert_eq!(
            d,
            RetryDecision::Retry {
                attempt: 3,
                delay: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn each_give_up_reason() {
        let p = policy();
        let cases = [
            (1, err("x", false), None, GiveUpReason::NotRetryable),
            (
                1,
                err("card_declined", true),
                None,
                GiveUpReason::NonRetryableCode,
            ),
            (5, err("x", true), None, GiveUpReason::AttemptsExhausted),
            (
                1,
                err("x", true),
                Some(now() + chrono::Duration::milliseconds(500)),
                GiveUpReason::ScheduleToCloseExceeded,
            ),
        ];
        for (attempt, e, deadline, reason) in cases {
            assert_eq!(
                decide(&p, attempt, &e, now(), deadline),
                RetryDecision::GiveUp(reason),
                "{e:?}"
            );
        }
    }

    #[test]
    fn deadline_far_enough_allows_retry() {
        let deadline = Some(now() + chrono::Duration::seconds(5));
        assert!(matches!(
            decide(&policy(), 1, &err("x", true), now(), deadline),
            RetryDecision::Retry { attempt: 2, .. }
        ));
    }

    #[test]
    fn single_attempt_policy_never_retries() {
        let p = RetryPolicy {
            max_attempts: 1,
            ..policy()
        };
        assert_eq!(
            decide(&p, 1, &err("x", true), now(), None),
            RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted)
        );
    }
}
