//! The limits on open `GET /events` streams: each stream holds a place ([`StreamPermit`]) for
//! as long as it is open, at most `sse_max_streams_per_user` places per user (token subject) and
//! `sse_max_streams` in all on one api. A stream whose client goes away gives its place back
//! when the server notices (at the latest at its next heartbeat). What this module must never
//! do: keep a place after its stream is gone (the permit's `Drop` gives it back, whatever ended
//! the stream).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A refused stream: which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The user has `limit` streams open.
    PerUser { limit: usize },
    /// The api has `limit` streams open.
    Total { limit: usize },
}

/// Open streams, per user and in all.
#[derive(Debug)]
pub struct StreamLimits {
    per_user: usize,
    total: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_user: HashMap<String, usize>,
}

impl StreamLimits {
    pub fn new(per_user: usize, total: usize) -> StreamLimits {
        StreamLimits {
            per_user,
            total,
            open: Mutex::new(Open::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more stream of `user`, if both limits allow it.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<StreamPermit, StreamRefusal> {
        let mut open = self.lock();
        let mine = open.per_user.get(user).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(StreamRefusal::PerUser {
                limit: self.per_user,
            });
        }
        if open.total >= self.total {
            return Err(StreamRefusal::Total { limit: self.total });
        }
        open.total += 1;
        *open.per_user.entry(user.to_string()).or_default() += 1;
        metrics::gauge!("appreg_sse_streams").set(open.total as f64);
        Ok(StreamPermit {
            limits: self.clone(),
            user: user.to_string(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn release(&self, user: &str) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_user.remove(user);
            }
        }
        metrics::gauge!("appreg_sse_streams").set(open.total as f64);
    }
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    user: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.limits.release(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_and_given_back() {
        let limits = Arc::new(StreamLimits::new(2, 3));
        let a1 = limits.acquire("a").unwrap();
        let _a2 = limits.acquire("a").unwrap();
        assert_eq!(
            limits.acquire("a").unwrap_err(),
            StreamRefusal::PerUser { limit: 2 }
        );
        let _b1 = limits.acquire("b").unwrap();
        assert_eq!(
            limits.acquire("c").unwrap_err(),
            StreamRefusal::Total { limit: 3 }
        );
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _c1 = limits.acquire("c").unwrap();
        assert!(limits.acquire("a").is_err(), "total reached again");
    }
}
