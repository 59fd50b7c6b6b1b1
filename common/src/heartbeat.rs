//! When a worker's heartbeat asks the master for an answer.
//!
//! A heartbeat says the worker is alive; its answer (a `HeartbeatAck`) confirms reports, renews
//! an `at_most_one` lease and tells the worker the master still hears it. A heartbeat that needs
//! none of that is sent with `seq` 0 and is not answered: a large cluster's heartbeats are most
//! of what its master does, and each answer is a write and a wakeup on both ends.

use std::time::Duration;

/// How many heartbeat intervals old the last answer may grow before a heartbeat asks for the
/// next one. A worker gives a silent master up after four intervals at the least (or its lease,
/// when longer), so it hears from a live one at least twice in that time.
pub const ANSWER_EVERY: u32 = 2;

/// Whether a heartbeat with nothing riding on it asks for an answer, the last having come
/// `since_answer` ago. Judged half an interval early, as heartbeats never fall exactly on the
/// interval: every other heartbeat asks.
pub fn answer_due(since_answer: Duration, interval: Duration) -> bool {
    since_answer + interval / 2 >= interval * ANSWER_EVERY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_heartbeat_asks_for_an_answer() {
        let interval = Duration::from_secs(10);
        let round_trip = Duration::from_millis(3);
        // Answered just after the heartbeat at 0: the one at 10 s asks for nothing, the one
        // at 20 s asks, and so on.
        assert!(!answer_due(interval - round_trip, interval));
        assert!(answer_due(interval * 2 - round_trip, interval));
        // A heartbeat a little late or early is judged the same.
        assert!(answer_due(interval * 2 - interval / 3, interval));
        assert!(!answer_due(interval + interval / 3, interval));
        // Nothing heard for long: every heartbeat asks.
        assert!(answer_due(interval * 5, interval));
    }
}
