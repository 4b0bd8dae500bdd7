//! The retry layer: which failures are worth another try, how long to wait
//! (exponential backoff with random jitter, or the server's `Retry-After`), and
//! the one loop that runs an operation under that policy.

use std::future::Future;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

/// The longest `Retry-After` honoured: a registry asking for more is waited on
/// this long, then tried again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest computed backoff (before jitter).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// 408, 429 and 5xx: the server may answer otherwise next time.
pub fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// `Retry-After` in either form RFC 9110 allows (delay seconds or an HTTP-date),
/// capped at [`MAX_RETRY_AFTER`]. A date in the past means now.
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    retry_after_at(h, SystemTime::now())
}

fn retry_after_at(h: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// How many times to try and how long to wait in between.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Tries in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The first backoff; each next one doubles, up to 10 s.
    pub base: Duration,
}

/// What one try of an operation came to.
pub enum Attempt<T> {
    /// Final: success, or a failure another try would not change.
    Done(T),
    /// Worth another try, after `after` when the server said so; `value` is
    /// the outcome when no try is left.
    Again { after: Option<Duration>, value: T },
}

/// An operation's outcome and the tries it took.
pub struct Tried<T> {
    pub value: T,
    pub attempts: u32,
}

impl Policy {
    /// The wait before try `attempt + 1`: `base · 2^(attempt-1)` (capped) plus a
    /// random jitter below `base`, so clients failing together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1 << attempt.saturating_sub(1).min(6))
            .min(MAX_BACKOFF);
        let base_ms = self.base.as_millis().min(u64::MAX as u128) as u64;
        exp + Duration::from_millis(fastrand::u64(0..base_ms.max(1)))
    }

    /// The wait before the try after `attempts` tries, or `None` when they are used up.
    pub fn next_wait(&self, attempts: u32, after: Option<Duration>) -> Option<Duration> {
        (attempts < self.max_attempts.max(1))
            .then(|| after.map_or_else(|| self.backoff(attempts), |a| a.min(MAX_RETRY_AFTER)))
    }

    /// Runs `op` (given the try number, from 1) until it is done or the tries are
    /// used up. With `enabled` false it runs once.
    pub async fn run<T, F, Fut>(&self, enabled: bool, mut op: F) -> Tried<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match op(attempts).await {
                Attempt::Done(value) => return Tried { value, attempts },
                Attempt::Again { after, value } => {
                    let wait = enabled.then(|| self.next_wait(attempts, after)).flatten();
                    let Some(wait) = wait else {
                        return Tried { value, attempts };
                    };
                    drop(value);
                    tracing::debug!("try {attempts} failed; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_takes_seconds_and_http_dates_with_a_cap() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after_at(&h, now), Some(Duration::from_secs(3)));
        h.insert("retry-after", HeaderValue::from_static("3600"));
        assert_eq!(retry_after_at(&h, now), Some(MAX_RETRY_AFTER));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:42 GMT"),
        );
        assert_eq!(retry_after_at(&h, now), Some(Duration::from_secs(5)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:00:00 GMT"),
        );
        assert_eq!(retry_after_at(&h, now), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after_at(&h, now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_below_base() {
        let p = Policy {
            max_attempts: 5,
            base: Duration::from_millis(200),
        };
        for (attempt, exp) in [(1, 200), (2, 400), (3, 800), (9, 10_000)] {
            let waits: Vec<Duration> = (0..50).map(|_| p.backoff(attempt)).collect();
            assert!(
                waits
                    .iter()
                    .all(|w| *w >= Duration::from_millis(exp)
                        && *w < Duration::from_millis(exp + 200))
            );
            assert!(waits.iter().any(|w| *w != waits[0]), "jitter varies");
        }
        assert!(p.next_wait(5, None).is_none());
        assert_eq!(
            p.next_wait(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
    }

    #[tokio::test]
    async fn run_stops_when_done_or_out_of_tries() {
        let p = Policy {
            max_attempts: 3,
            base: Duration::from_millis(1),
        };
        let t = p
            .run(true, |n| async move {
                if n < 2 {
                    Attempt::Again {
                        after: None,
                        value: n,
                    }
                } else {
                    Attempt::Done(n)
                }
            })
            .await;
        assert_eq!((t.value, t.attempts), (2, 2));
        let t = p
            .run(true, |n| async move {
                Attempt::Again {
                    after: None,
                    value: n,
                }
            })
            .await;
        assert_eq!((t.value, t.attempts), (3, 3));
        let t = p
            .run(false, |n| async move {
                Attempt::Again {
                    after: None,
                    value: n,
                }
            })
            .await;
        assert_eq!(t.attempts, 1);
    }
}
