//! The asks of the drivers a turn left waiting when it stopped at its bound, kept for the turns
//! right after it.
//!
//! A burst larger than one turn launches is placed over turns in a row, and each turn asks the
//! scheduler about every driver still waiting. Making those asks again (a lookup of each record
//! by its id) was half of such a turn with 10,000 waiting, and grows with the queue. A driver's
//! ask never changes (its spec is fixed at submission; its queue's index only with the queues
//! in force), so the next turn takes the kept asks for the drivers still at the same places of
//! the waiting list, and makes only the others.

use std::sync::{Arc, Mutex};

use imbl::Vector;

use crate::schedule::{Ask, QueueTree, Queued};

/// The asks for the waiting list's drivers from place `at` on, as the turn left the list.
#[derive(Debug)]
struct Left {
    queues: Arc<QueueTree>,
    at: usize,
    asks: Vec<Ask>,
    queued: Vec<Queued>,
}

/// Shared by a state and its copies (the snapshots do not schedule): whichever turn comes
/// next takes the asks, and each is checked against the list it is given before it is used.
#[derive(Debug, Clone, Default)]
pub(super) struct AsksLeft(Arc<Mutex<Option<Left>>>);

impl AsksLeft {
    /// Keeps `asks` (with `queued`) for the drivers at places `at..` of the waiting list.
    pub fn keep(&self, queues: &Arc<QueueTree>, at: usize, asks: Vec<Ask>, queued: Vec<Queued>) {
        *self.lock() = Some(Left {
            queues: queues.clone(),
            at,
            asks,
            queued,
        });
    }

    pub fn forget(&self) {
        *self.lock() = None;
    }

    /// The asks for `waiting` but its first `skip`: the kept one for each driver still at its
    /// place (up to the first that is not), `make` for the rest. What was kept is used up.
    pub fn take(
        &self,
        waiting: &Vector<String>,
        skip: usize,
        queues: &Arc<QueueTree>,
        mut make: impl FnMut(&str) -> Option<(Ask, Queued)>,
    ) -> (Vec<Ask>, Vec<Queued>) {
        let left = self
            .lock()
            .take()
            .filter(|l| Arc::ptr_eq(&l.queues, queues));
        let (mut next_at, mut kept) = match left {
            Some(l) => (l.at, Some(l.asks.into_iter().zip(l.queued))),
            None => (usize::MAX, None),
        };
        if let Some(kept) = kept.as_mut()
            && skip > next_at
        {
            kept.nth(skip - next_at - 1);
            next_at = skip;
        }
        let n = waiting.len().saturating_sub(skip);
        let (mut asks, mut queued) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (place, id) in (skip..).zip(waiting.skip(skip.min(waiting.len())).iter()) {
            let reused = if place == next_at {
                match kept.as_mut().and_then(Iterator::next) {
                    Some(item) if item.0.driver_id == *id => {
                        next_at += 1;
                        Some(item)
                    }
                    // The list changed here (a driver taken out or put in): the rest is made.
                    _ => {
                        kept = None;
                        next_at = usize::MAX;
                        None
                    }
                }
            } else {
                None
            };
            if let Some((ask, q)) = reused.or_else(|| make(id)) {
                asks.push(ask);
                queued.push(q);
            }
        }
        (asks, queued)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Left>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(id: &str) -> (Ask, Queued) {
        (
            Ask {
                driver_id: id.to_string(),
                cores: 1,
                memory_mb: 1,
                resources: Default::default(),
            },
            Queued::default(),
        )
    }

    fn list(ids: &[&str]) -> Vector<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// Takes the asks, counting which had to be made.
    fn take(
        left: &AsksLeft,
        waiting: &Vector<String>,
        skip: usize,
        queues: &Arc<QueueTree>,
    ) -> (Vec<String>, Vec<String>) {
        let mut made = Vec::new();
        let (asks, queued) = left.take(waiting, skip, queues, |id| {
            made.push(id.to_string());
            Some(ask(id))
        });
        assert_eq!(asks.len(), queued.len());
        (asks.into_iter().map(|a| a.driver_id).collect(), made)
    }

    fn kept(left: &AsksLeft, queues: &Arc<QueueTree>, at: usize, ids: &[&str]) {
        let (asks, queued) = ids.iter().map(|id| ask(id)).unzip();
        left.keep(queues, at, asks, queued);
    }

    #[test]
    fn the_drivers_still_in_their_places_reuse_their_asks_and_the_rest_are_made() {
        let queues = Arc::new(QueueTree::default());
        let left = AsksLeft::default();
        // The turn left "a" untried in front and "b", "c" waiting; "d" joined since.
        kept(&left, &queues, 1, &["b", "c"]);
        let (asks, made) = take(&left, &list(&["a", "b", "c", "d"]), 0, &queues);
        assert_eq!(asks, ["a", "b", "c", "d"]);
        assert_eq!(made, ["a", "d"]);
        // Used up: the next turn makes them all.
        let (_, made) = take(&left, &list(&["a", "b"]), 0, &queues);
        assert_eq!(made, ["a", "b"]);
    }

    #[test]
    fn a_list_changed_in_the_middle_makes_the_asks_from_there_on() {
        let queues = Arc::new(QueueTree::default());
        let left = AsksLeft::default();
        kept(&left, &queues, 0, &["a", "b", "c", "d"]);
        // "b" was killed: everything from its place on is made again.
        let (asks, made) = take(&left, &list(&["a", "c", "d"]), 0, &queues);
        assert_eq!(asks, ["a", "c", "d"]);
        assert_eq!(made, ["c", "d"]);
    }

    #[test]
    fn a_skipped_front_and_other_queues_are_respected() {
        let queues = Arc::new(QueueTree::default());
        let left = AsksLeft::default();
        kept(&left, &queues, 0, &["a", "b", "c"]);
        let (asks, made) = take(&left, &list(&["a", "b", "c"]), 2, &queues);
        assert_eq!(asks, ["c"]);
        assert!(made.is_empty(), "{made:?}");
        // Kept under other queues: nothing is reused.
        kept(&left, &queues, 0, &["a", "b"]);
        let other = Arc::new(QueueTree::default());
        let (_, made) = take(&left, &list(&["a", "b"]), 0, &other);
        assert_eq!(made, ["a", "b"]);
    }
}
