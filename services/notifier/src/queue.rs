//! One endpoint's deliveries in memory: per application (stream) in stream order, only the
//! head of each stream ever handed out, the heads waiting by due time. The database stays the
//! record (what a restart or another instance reloads); this is what the endpoint's worker
//! works from, so a fresh delivery costs it no query.

use appreg_notify::deliveries::Delivery;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// A waiting head: (due time, recorded, stream).
type Key = (i64, i64, String);

fn key(d: &Delivery) -> Key {
    (d.next_attempt_at, d.created_at, d.stream_id.clone())
}

#[derive(Default)]
pub(crate) struct Queue {
    streams: HashMap<String, VecDeque<Arc<Delivery>>>,
    /// The heads of the streams not in flight, by due time.
    waiting: BTreeSet<Key>,
    /// Streams whose head is being attempted.
    busy: HashSet<String>,
    /// The ids held.
    known: HashSet<String>,
    /// The endpoint has `PENDING` deliveries in the database that are not here (its queue was
    /// full, or the process just became active): fresh ones are not taken until a refill from
    /// the database caught up.
    pub spilled: bool,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn knows(&self, id: &str) -> bool {
        self.known.contains(id)
    }

    /// Adds `d` in its stream's order (never before a head in flight); false if it was held.
    pub fn push(&mut self, d: Delivery) -> bool {
        if !self.known.insert(d.id.clone()) {
            return false;
        }
        let stream = d.stream_id.clone();
        let busy = self.busy.contains(&stream);
        let queue = self.streams.entry(stream).or_default();
        let old_head = queue.front().map(|h| key(h));
        let mut at = queue
            .iter()
            .rposition(|x| x.version <= d.version)
            .map_or(0, |i| i + 1);
        if busy {
            at = at.max(1);
        }
        let new_key = key(&d);
        queue.insert(at, Arc::new(d));
        if !busy && at == 0 {
            if let Some(old) = old_head {
                self.waiting.remove(&old);
            }
            self.waiting.insert(new_key);
        }
        true
    }

    /// Takes up to `n` heads due at `now`, earliest first; their streams are busy until
    /// [`Queue::finish`].
    pub fn take(&mut self, now: i64, n: usize) -> Vec<Arc<Delivery>> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.waiting.first() {
                Some(first) if first.0 <= now => {}
                _ => break,
            }
            let Some((_, _, stream)) = self.waiting.pop_first() else {
                break;
            };
            if let Some(head) = self.streams.get(&stream).and_then(|q| q.front()) {
                out.push(head.clone());
                self.busy.insert(stream);
            }
        }
        out
    }

    /// Makes delivery `id` of `stream` due at `at` if it is its stream's head, waiting, and due
    /// later (an operator asked for a retry now).
    pub fn hasten(&mut self, stream: &str, id: &str, at: i64) {
        if self.busy.contains(stream) {
            return;
        }
        let Some(head) = self.streams.get_mut(stream).and_then(|q| q.front_mut()) else {
            return;
        };
        if head.id != id || head.next_attempt_at <= at {
            return;
        }
        self.waiting.remove(&key(head));
        Arc::make_mut(head).next_attempt_at = at;
        self.waiting.insert(key(head));
    }

    /// When the next waiting head is due.
    pub fn next_due(&self) -> Option<i64> {
        self.waiting.first().map(|k| k.0)
    }

    /// The attempt of `stream`'s head ended: `retry_at` to attempt it again then, else it is
    /// done (delivered or failed) and the next one of the stream waits.
    pub fn finish(&mut self, stream: &str, retry_at: Option<i64>) {
        self.busy.remove(stream);
        let Some(queue) = self.streams.get_mut(stream) else {
            return;
        };
        match retry_at {
            Some(at) => {
                if let Some(head) = queue.front_mut() {
                    let head = Arc::make_mut(head);
                    head.next_attempt_at = at;
                    head.attempt += 1;
                }
            }
            None => {
                if let Some(done) = queue.pop_front() {
                    self.known.remove(&done.id);
                }
            }
        }
        match queue.front() {
            Some(head) => {
                self.waiting.insert(key(head));
            }
            None => {
                self.streams.remove(stream);
            }
        }
    }

    /// Drops everything held (the endpoint is gone); attempts in flight still finish.
    pub fn clear(&mut self) {
        self.streams.clear();
        self.waiting.clear();
        self.known.clear();
        self.spilled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str, stream: &str, version: i64, at: i64) -> Delivery {
        Delivery {
            id: id.into(),
            webhook_id: "w".into(),
            environment: "E".into(),
            event_id: id.into(),
            event_type: "ApplicationUpdated".into(),
            stream_id: stream.into(),
            version,
            payload: "{}".into(),
            status: "PENDING".into(),
            attempt: 0,
            created_at: at,
            next_attempt_at: at,
            updated_at: at,
            response_status: None,
            response_body: None,
        }
    }

    fn ids(v: &[Arc<Delivery>]) -> Vec<&str> {
        v.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn only_heads_go_out_in_stream_order_and_retries_wait() {
        let mut q = Queue::default();
        assert!(q.push(d("a2", "A", 2, 2)));
        assert!(q.push(d("b1", "B", 1, 3)));
        assert!(q.push(d("a1", "A", 1, 4)));
        assert!(!q.push(d("a1", "A", 1, 4)));
        assert_eq!(q.len(), 3);
        // a1 went before a2 although it came later.
        assert_eq!(ids(&q.take(10, 10)), ["b1", "a1"]);
        assert!(q.take(10, 10).is_empty());
        // A late event of a busy stream never goes before its head in flight.
        assert!(q.push(d("a0", "A", 0, 5)));
        q.finish("A", Some(100));
        assert_eq!(q.next_due(), Some(100));
        assert!(q.take(99, 10).is_empty());
        assert_eq!(ids(&q.take(100, 10)), ["a1"]);
        q.finish("A", None);
        assert_eq!(ids(&q.take(100, 1)), ["a0"]);
        q.finish("A", None);
        assert_eq!(ids(&q.take(100, 1)), ["a2"]);
        q.finish("A", None);
        q.finish("B", None);
        assert_eq!(q.len(), 0);
        assert_eq!(q.next_due(), None);
        assert!(!q.knows("a1") && q.streams.is_empty());
    }

    #[test]
    fn a_waiting_head_can_be_hastened() {
        let mut q = Queue::default();
        q.push(d("a1", "A", 1, 1));
        q.push(d("a2", "A", 2, 1));
        assert_eq!(q.take(1, 1).len(), 1);
        q.finish("A", Some(1000));
        // Not the head, or not earlier: nothing changes.
        q.hasten("A", "a2", 5);
        q.hasten("A", "a1", 2000);
        assert_eq!(q.next_due(), Some(1000));
        q.hasten("A", "a1", 5);
        assert_eq!(q.next_due(), Some(5));
        assert_eq!(ids(&q.take(5, 4)), ["a1"]);
        // In flight: left alone.
        q.hasten("A", "a1", 1);
        q.finish("A", None);
        assert_eq!(ids(&q.take(5, 4)), ["a2"]);
    }

    #[test]
    fn a_cleared_queue_forgets_and_late_answers_are_harmless() {
        let mut q = Queue::default();
        q.push(d("a1", "A", 1, 1));
        q.push(d("a2", "A", 2, 1));
        assert_eq!(q.take(1, 4).len(), 1);
        q.clear();
        q.finish("A", None);
        assert_eq!(q.len(), 0);
        assert!(q.take(i64::MAX, 4).is_empty());
    }
}
