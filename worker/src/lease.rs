//! How long the master has vouched for this worker, for drivers that must never run twice.
//!
//! The worker numbers its heartbeats and remembers when (on `CLOCK_BOOTTIME`) it sent each. The
//! master acknowledges a heartbeat it recorded; it declares the worker lost only once it has
//! heard nothing for its worker timeout `T`, counted from when it *received* the last one, and
//! relaunches an `at_most_one` driver a margin later still. A heartbeat is received after it is
//! sent, so a lease ending `T` after the *sending* of the last acknowledged heartbeat ends
//! before the master can act, whatever the delays on the way, as long as both clocks run at
//! about the same rate (their offsets do not matter). The keeper of each such driver stops it
//! when the lease ends, also when this worker is frozen and cannot say so.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::keeper::boottime_ns;

/// Heartbeats remembered while their acknowledgements are on the way.
const MAX_IN_FLIGHT: usize = 256;

/// The lease as the `CLOCK_BOOTTIME` nanosecond it ends at (0: none yet). Cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaseClock {
    until: Arc<watch::Sender<u64>>,
    /// Asks the connection for a heartbeat now, whose acknowledgement renews the lease.
    renewal: Arc<tokio::sync::Notify>,
}

impl Default for LeaseClock {
    fn default() -> Self {
        Self {
            until: Arc::new(watch::Sender::new(0)),
            renewal: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

impl LeaseClock {
    /// The master vouched for this worker as of `sent_ns`, for `lease`.
    pub fn extend(&self, sent_ns: u64, lease: Duration) {
        let until = sent_ns.saturating_add(lease.as_nanos().min(u64::MAX as u128) as u64);
        self.until.send_if_modified(|current| {
            let later = until > *current;
            if later {
                *current = until;
            }
            later
        });
    }

    pub fn until(&self) -> u64 {
        *self.until.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.until.subscribe()
    }

    /// Whether the lease holds now.
    pub fn holds(&self) -> bool {
        boottime_ns() < self.until()
    }

    /// Renews the lease before an `at_most_one` process starts: asks for a heartbeat now and
    /// waits up to `limit` for its acknowledgement to extend the lease. A large cluster's
    /// workers heartbeat as seldom as their lease lasts, so without it a process could start
    /// on a lease about to end. Returns whether the lease was renewed.
    pub async fn renew(&self, limit: Duration) -> bool {
        let mut changes = self.until.subscribe();
        let before = *changes.borrow_and_update();
        self.renewal.notify_one();
        tokio::time::timeout(limit, async {
            while changes.changed().await.is_ok() {
                if *changes.borrow_and_update() > before {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    }

    /// Resolves when a process waits for the lease to be renewed.
    pub async fn renewal_wanted(&self) {
        self.renewal.notified().await;
    }
}

/// A heartbeat on its way: its number, when it was sent, and the last report sent before it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    at_ns: u64,
    reports_before: u64,
}

/// The heartbeats of one session awaiting their acknowledgement.
#[derive(Debug, Default)]
pub struct InFlight {
    sent: VecDeque<Sent>,
}

impl InFlight {
    pub fn sent(&mut self, seq: u64, at_ns: u64, reports_before: u64) {
        if self.sent.len() >= MAX_IN_FLIGHT {
            self.sent.pop_front();
        }
        self.sent.push_back(Sent {
            seq,
            at_ns,
            reports_before,
        });
    }

    /// The acknowledgement of `seq`: when it was sent and the last report the master now holds,
    /// or `None` for a number this session did not send.
    pub fn acknowledged(&mut self, seq: u64) -> Option<(u64, u64)> {
        let found = self.sent.iter().position(|s| s.seq == seq)?;
        let sent = self.sent[found];
        self.sent.drain(..=found);
        Some((sent.at_ns, sent.reports_before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_only_grows() {
        let clock = LeaseClock::default();
        clock.extend(1_000, Duration::from_nanos(500));
        clock.extend(900, Duration::from_nanos(500));
        assert_eq!(clock.until(), 1_500);
        assert!(!clock.holds(), "boot time is far past 1500 ns");
        clock.extend(boottime_ns(), Duration::from_secs(60));
        assert!(clock.holds());
    }

    /// A process about to start asks for a heartbeat; the acknowledgement renews the lease and
    /// the start goes on. Unanswered, the wait ends at its limit.
    #[tokio::test]
    async fn a_renewal_asks_for_a_heartbeat_and_waits_for_its_answer() {
        let clock = LeaseClock::default();
        let connection = clock.clone();
        let answer = tokio::spawn(async move {
            connection.renewal_wanted().await;
            connection.extend(boottime_ns(), Duration::from_secs(10));
        });
        assert!(clock.renew(Duration::from_secs(5)).await);
        assert!(clock.holds());
        answer.await.unwrap();
        assert!(
            !clock.renew(Duration::from_millis(50)).await,
            "nobody answers"
        );
    }

    #[test]
    fn an_acknowledgement_forgets_the_heartbeats_before_it() {
        let mut in_flight = InFlight::default();
        in_flight.sent(1, 10, 0);
        in_flight.sent(2, 20, 3);
        in_flight.sent(3, 30, 5);
        assert_eq!(in_flight.acknowledged(2), Some((20, 3)));
        assert_eq!(in_flight.acknowledged(1), None, "already passed");
        assert_eq!(in_flight.acknowledged(9), None, "never sent");
        assert_eq!(in_flight.acknowledged(3), Some((30, 5)));
    }
}
