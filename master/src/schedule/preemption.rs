//! Preemption: which running work ends so that waiting work a queue is owed can start.
//!
//! Two rules, each opted into per queue in the queues file:
//! - **reclaim**: a queue that would still be within its guarantee with the waiting item takes
//!   room back from queues above their own guarantees, never pushing one of them (or an
//!   ancestor) below its guarantee;
//! - **priority**: within one queue, higher-priority work displaces strictly lower.
//!
//! Victims free just enough: candidates are taken executors before drivers, lowest priority
//! first, most recently started first, until the item fits; then every victim the item does not
//! need after all is let go, latest taken first. Nothing younger than its queue's
//! `min_runtime` is chosen. Room already being freed (victims in their grace period) counts as
//! free, so a decision is not made twice.
//!
//! Neither rule can undo the other's work, and neither undoes itself: a reclaiming queue ends at
//! or below its guarantee, so it is never a reclaim victim of the queue it took from (which stays
//! at or above its own and so cannot reclaim); priority preemption only ever goes from strictly
//! higher to lower. `preemption_tests` drives random events to show no two items preempt each
//! other back and forth.

use super::queues::{Amount, QueueTree, Usage};

/// A queue's preemption settings (`preempt:` in the queues file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preempt {
    /// Take back room up to the guarantee from queues above theirs.
    pub reclaim: bool,
    /// Higher priorities displace lower ones within the queue.
    pub priority: bool,
    /// Work of this queue younger than this is never a victim.
    pub min_runtime_ms: u64,
    /// A victim of this queue gets SIGTERM, then SIGKILL this much later.
    pub grace_ms: u64,
}

/// Work younger than this is never preempted, unless its queue says otherwise.
pub const DEFAULT_MIN_RUNTIME_MS: u64 = 60_000;
/// Between a victim's SIGTERM and its SIGKILL, unless its queue says otherwise.
pub const DEFAULT_GRACE_MS: u64 = 30_000;

impl Default for Preempt {
    fn default() -> Self {
        Self {
            reclaim: false,
            priority: false,
            min_runtime_ms: DEFAULT_MIN_RUNTIME_MS,
            grace_ms: DEFAULT_GRACE_MS,
        }
    }
}

/// Which rule a preemption followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    Reclaim,
    Priority,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Reclaim => "reclaim",
            Rule::Priority => "priority",
        }
    }
}

/// Running work that could be preempted: a driver, an executor, or a whole gang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub queue: usize,
    pub priority: i32,
    pub started_ms: i64,
    /// Executors go before drivers (a driver's end ends its application).
    pub is_driver: bool,
    /// Already being ended (a victim in its grace period, or a kill under way): its room counts
    /// as free, and it is no candidate.
    pub ending: bool,
    /// (offer index, cores, memory) it holds: one piece, or one per member of a gang.
    pub pieces: Vec<(usize, u32, u64)>,
}

impl Running {
    fn amount(&self) -> Amount {
        let mut a = Amount::default();
        for &(_, c, m) in &self.pieces {
            a.add(Amount::new(u64::from(c), m));
        }
        a
    }
}

/// Waiting work that cannot start for want of room: `count` pieces of `cores` and `memory_mb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub queue: usize,
    pub priority: i32,
    pub cores: u32,
    pub memory_mb: u64,
    pub count: u32,
    /// A gang: all `count` or nothing. Otherwise reclaim takes room for as many as the
    /// queue's guarantee still covers.
    pub whole: bool,
}

impl Need {
    fn amount(&self) -> Amount {
        Amount::new(
            u64::from(self.cores) * u64::from(self.count),
            self.memory_mb * u64::from(self.count),
        )
    }
}

/// One decision: `victims` (indexes into the running work) end for `need` (an index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub need: usize,
    pub rule: Rule,
    pub victims: Vec<usize>,
    /// The offers whose room (once the victims end) the need's pieces take, one per piece.
    pub places: Vec<usize>,
}

/// Free room per offer (cores, memory), and how many pieces of one shape it holds in all.
struct Room {
    free: Vec<(u64, u64)>,
    cores: u64,
    memory_mb: u64,
    fitting: u64,
}

impl Room {
    fn new(free: Vec<(u64, u64)>, cores: u32, memory_mb: u64) -> Self {
        let mut room = Self {
            free,
            cores: u64::from(cores.max(1)),
            memory_mb: memory_mb.max(1),
            fitting: 0,
        };
        room.fitting = (0..room.free.len()).map(|w| room.term(w)).sum();
        room
    }

    fn term(&self, w: usize) -> u64 {
        let (c, m) = self.free[w];
        (c / self.cores).min(m / self.memory_mb)
    }

    /// Adds (or with `add` false, takes away) pieces of room.
    fn change(&mut self, pieces: &[(usize, u32, u64)], add: bool) {
        for &(w, c, m) in pieces {
            let old = self.term(w);
            let (fc, fm) = &mut self.free[w];
            if add {
                *fc += u64::from(c);
                *fm += m;
            } else {
                *fc -= u64::from(c);
                *fm -= m;
            }
            self.fitting = self.fitting - old + self.term(w);
        }
    }

    /// Takes `count` pieces of the shape out of the room, fullest offers first; returns the
    /// offers they were taken from (one entry per piece).
    fn consume(&mut self, mut count: u64) -> Vec<usize> {
        let mut places = Vec::new();
        let mut order: Vec<usize> = (0..self.free.len()).collect();
        order.sort_by_key(|&w| std::cmp::Reverse(self.term(w)));
        for w in order {
            while count > 0 && self.term(w) > 0 {
                let (c, m) = (self.cores, self.memory_mb);
                let old = self.term(w);
                self.free[w].0 -= c;
                self.free[w].1 -= m;
                self.fitting = self.fitting - old + self.term(w);
                count -= 1;
                places.push(w);
            }
        }
        places
    }
}

/// Whether queue `q` with `more` stays within its guarantee: it guarantees something, and
/// its subtree's use with `more` is at most that in everything it guarantees.
fn within_guarantee(tree: &QueueTree, usage: &Usage, q: usize, more: Amount) -> bool {
    let g = tree.def(q).guaranteed;
    let used = usage.subtree(q);
    (g.cores > 0 || g.memory_mb > 0)
        && (g.cores == 0 || used.cores + more.cores <= g.cores)
        && (g.memory_mb == 0 || used.memory_mb + more.memory_mb <= g.memory_mb)
}

/// Whether taking `amount` from queue `v` leaves it and every ancestor not shared with `q` at
/// or above their guarantees: only what is above a guarantee may be reclaimed.
fn reclaimable(tree: &QueueTree, usage: &Usage, v: usize, q: usize, amount: Amount) -> bool {
    let shared: Vec<usize> = tree.lineage(q).collect();
    if shared.contains(&v) || tree.lineage(v).any(|a| a == q) {
        return false;
    }
    tree.lineage(v)
        .take_while(|a| !shared.contains(a))
        .all(|a| {
            let g = tree.def(a).guaranteed;
            let used = usage.subtree(a);
            used.cores >= g.cores + amount.cores && used.memory_mb >= g.memory_mb + amount.memory_mb
        })
}

/// The part of `need` that reclaim may make room for: all of it, or as many pieces as the
/// queue's guarantee still covers when it is not a gang.
fn reclaimable_part(tree: &QueueTree, usage: &Usage, policy: &[Preempt], need: &Need) -> Need {
    let reclaims = policy.get(need.queue).is_some_and(|p| p.reclaim);
    if !reclaims || need.whole || within_guarantee(tree, usage, need.queue, need.amount()) {
        return need.clone();
    }
    let covered = (1..need.count)
        .rev()
        .find(|&k| {
            let part = Need {
                count: k,
                ..need.clone()
            };
            within_guarantee(tree, usage, need.queue, part.amount())
        })
        .unwrap_or(need.count);
    Need {
        count: covered,
        ..need.clone()
    }
}

/// Decides the preemptions for `needs` (in the order they should be served), given each
/// offer's free room `free` (cores, memory), the running work, each queue's settings
/// (`policy[q]`) and what each queue uses. `usage` is updated as victims are chosen.
pub fn choose(
    tree: &QueueTree,
    usage: &mut Usage,
    policy: &[Preempt],
    free: &[(u32, u64)],
    running: &[Running],
    needs: &[Need],
    now_ms: i64,
) -> Vec<Decision> {
    let mut free: Vec<(u64, u64)> = free.iter().map(|&(c, m)| (u64::from(c), m)).collect();
    for r in running.iter().filter(|r| r.ending) {
        for &(w, c, m) in &r.pieces {
            free[w].0 += u64::from(c);
            free[w].1 += m;
        }
    }
    let mut taken = vec![false; running.len()];
    for (i, r) in running.iter().enumerate() {
        taken[i] = r.ending;
    }
    // Candidates in the order victims are taken: executors before drivers, lowest priority,
    // most recently started.
    let mut order: Vec<usize> = (0..running.len()).filter(|&i| !taken[i]).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&running[a], &running[b]);
        a.is_driver
            .cmp(&b.is_driver)
            .then(a.priority.cmp(&b.priority))
            .then(b.started_ms.cmp(&a.started_ms))
    });
    let old_enough = |r: &Running| {
        let min = policy.get(r.queue).map_or(0, |p| p.min_runtime_ms);
        now_ms.saturating_sub(r.started_ms) >= min as i64
    };
    let mut decisions = Vec::new();
    for (n, need) in needs.iter().enumerate() {
        let need = &reclaimable_part(tree, usage, policy, need);
        let mut room = Room::new(free.clone(), need.cores, need.memory_mb);
        if room.fitting >= u64::from(need.count) {
            // Room is there, or being freed: it goes to this need, not to a new decision.
            room.consume(u64::from(need.count));
            free = room.free;
            continue;
        }
        let q = need.queue;
        let Some(p) = policy.get(q) else { continue };
        let rule = if p.reclaim && within_guarantee(tree, usage, q, need.amount()) {
            Rule::Reclaim
        } else if p.priority {
            Rule::Priority
        } else {
            continue;
        };
        let eligible = |r: &Running, usage: &Usage| {
            old_enough(r)
                && match rule {
                    Rule::Reclaim => reclaimable(tree, usage, r.queue, q, r.amount()),
                    Rule::Priority => r.queue == q && r.priority < need.priority,
                }
        };
        let mut chosen: Vec<usize> = Vec::new();
        let mut trial = usage.clone();
        for &i in &order {
            if taken[i] || !eligible(&running[i], &trial) {
                continue;
            }
            room.change(&running[i].pieces, true);
            chosen.push(i);
            trial.charge_back(tree, running[i].queue, running[i].amount());
            if room.fitting >= u64::from(need.count) {
                break;
            }
        }
        if room.fitting < u64::from(need.count) {
            // Preempting cannot make room enough: nothing ends for nothing.
            continue;
        }
        // Let go of any victim not needed after all, latest taken first.
        for k in (0..chosen.len()).rev() {
            let i = chosen[k];
            room.change(&running[i].pieces, false);
            if room.fitting >= u64::from(need.count) {
                chosen.remove(k);
            } else {
                room.change(&running[i].pieces, true);
            }
        }
        for &i in &chosen {
            taken[i] = true;
            usage.charge_back(tree, running[i].queue, running[i].amount());
        }
        usage.charge(tree, q, need.amount());
        let places = room.consume(u64::from(need.count));
        free = room.free;
        decisions.push(Decision {
            need: n,
            rule,
            victims: chosen,
            places,
        });
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::QueueDef;

    fn tree() -> QueueTree {
        let q = |name: &str, g: u64| QueueDef {
            guaranteed: Amount::new(g, 0),
            ..QueueDef::named(name)
        };
        QueueTree::new(vec![q("owed", 4), q("lender", 0)]).unwrap_or_default()
    }

    fn policy(tree: &QueueTree, reclaim: &str, min_runtime_ms: u64) -> Vec<Preempt> {
        (0..tree.len())
            .map(|i| Preempt {
                reclaim: tree.def(i).name == reclaim,
                priority: true,
                min_runtime_ms,
                grace_ms: 1000,
            })
            .collect()
    }

    fn running(queue: usize, worker: usize, cores: u32, started_ms: i64) -> Running {
        Running {
            queue,
            priority: 0,
            started_ms,
            is_driver: false,
            ending: false,
            pieces: vec![(worker, cores, 100)],
        }
    }

    fn usage_of(tree: &QueueTree, running: &[Running]) -> Usage {
        let mut usage = Usage::new(tree, Amount::new(8, 8000));
        for r in running {
            usage.charge(tree, r.queue, r.amount());
        }
        usage
    }

    #[test]
    fn a_queue_below_its_guarantee_takes_just_enough_from_a_lender_newest_first() {
        let tree = tree();
        let (owed, lender) = (tree.index("owed").unwrap(), tree.index("lender").unwrap());
        // The lender fills both workers with 1-core executors, started at 0..8 s.
        let work: Vec<Running> = (0..8)
            .map(|i| running(lender, (i % 2) as usize, 1, i * 1000))
            .collect();
        let mut usage = usage_of(&tree, &work);
        let need = Need {
            queue: owed,
            priority: 0,
            cores: 2,
            memory_mb: 100,
            count: 1,
            whole: false,
        };
        let decisions = choose(
            &tree,
            &mut usage,
            &policy(&tree, "owed", 0),
            &[(0, 7000), (0, 7000)],
            &work,
            &[need],
            100_000,
        );
        assert_eq!(decisions.len(), 1);
        let d = &decisions[0];
        assert_eq!(d.rule, Rule::Reclaim);
        // Two newest executors on one worker: 7 s is on worker 1, and 5 s is the next there.
        assert_eq!(d.victims, [7, 5]);
        assert_eq!(usage.subtree(owed).cores, 2);
        assert_eq!(usage.subtree(lender).cores, 6);
    }

    #[test]
    fn work_younger_than_min_runtime_is_never_chosen_and_nothing_ends_for_nothing() {
        let tree = tree();
        let (owed, lender) = (tree.index("owed").unwrap(), tree.index("lender").unwrap());
        let work = vec![running(lender, 0, 4, 95_000), running(lender, 1, 4, 10_000)];
        let need = Need {
            queue: owed,
            priority: 0,
            cores: 4,
            memory_mb: 100,
            count: 2,
            whole: true,
        };
        let mut usage = usage_of(&tree, &work);
        // Only the old one may go, and one is not enough for a gang of two: nothing is
        // preempted.
        let decisions = choose(
            &tree,
            &mut usage,
            &policy(&tree, "owed", 60_000),
            &[(0, 7000), (0, 7000)],
            &work,
            std::slice::from_ref(&need),
            100_000,
        );
        assert!(decisions.is_empty(), "{decisions:?}");
        let one = Need {
            count: 1,
            whole: false,
            ..need
        };
        let decisions = choose(
            &tree,
            &mut usage,
            &policy(&tree, "owed", 60_000),
            &[(0, 7000), (0, 7000)],
            &work,
            &[one],
            100_000,
        );
        assert_eq!(decisions[0].victims, [1]);
    }

    #[test]
    fn a_queue_at_its_guarantee_does_not_reclaim_and_a_lender_at_its_own_is_no_victim() {
        let q = |name: &str, g: u64| QueueDef {
            guaranteed: Amount::new(g, 0),
            ..QueueDef::named(name)
        };
        let tree = QueueTree::new(vec![q("owed", 2), q("lender", 4)]).unwrap_or_default();
        let (owed, lender) = (tree.index("owed").unwrap(), tree.index("lender").unwrap());
        let work: Vec<Running> = (0..6).map(|_| running(lender, 0, 1, 0)).collect();
        let need = |cores| Need {
            queue: owed,
            priority: 0,
            cores,
            memory_mb: 100,
            count: 1,
            whole: false,
        };
        let policy = policy(&tree, "owed", 0);
        // 3 cores would take owed past its guarantee of 2.
        let mut usage = usage_of(&tree, &work);
        assert!(choose(&tree, &mut usage, &policy, &[(0, 0)], &work, &[need(3)], 1).is_empty());
        // 2 cores: the lender has 6 of a guarantee of 4, so exactly 2 may go.
        let decisions = choose(&tree, &mut usage, &policy, &[(0, 0)], &work, &[need(2)], 1);
        assert_eq!(decisions[0].victims.len(), 2);
        // Another 2 would take the lender below its guarantee.
        let again = choose(&tree, &mut usage, &policy, &[(0, 0)], &work, &[need(2)], 1);
        assert!(again.iter().all(|d| d.victims.is_empty()), "{again:?}");
    }

    #[test]
    fn room_already_being_freed_is_not_taken_twice() {
        let tree = tree();
        let (owed, lender) = (tree.index("owed").unwrap(), tree.index("lender").unwrap());
        let mut work: Vec<Running> = (0..4).map(|i| running(lender, 0, 2, i)).collect();
        work[3].ending = true;
        let mut usage = usage_of(&tree, &work);
        let need = Need {
            queue: owed,
            priority: 0,
            cores: 2,
            memory_mb: 100,
            count: 1,
            whole: false,
        };
        let decisions = choose(
            &tree,
            &mut usage,
            &policy(&tree, "owed", 0),
            &[(0, 8000)],
            &work,
            &[need],
            10,
        );
        assert!(decisions.is_empty(), "{decisions:?}");
    }

    #[test]
    fn priority_preempts_lower_priority_in_the_same_queue_executors_first() {
        let tree = tree();
        let lender = tree.index("lender").unwrap();
        let mut work = vec![running(lender, 0, 2, 0), running(lender, 0, 2, 0)];
        work[0].is_driver = true;
        work[1].priority = 5;
        let mut usage = usage_of(&tree, &work);
        let need = Need {
            queue: lender,
            priority: 3,
            cores: 2,
            memory_mb: 100,
            count: 1,
            whole: false,
        };
        let decisions = choose(
            &tree,
            &mut usage,
            &policy(&tree, "none", 0),
            &[(0, 8000)],
            &work,
            &[need],
            10,
        );
        // The executor has priority 5, above the need's 3: only the driver (0) may go.
        assert_eq!(decisions[0].rule, Rule::Priority);
        assert_eq!(decisions[0].victims, [0]);
    }
}
