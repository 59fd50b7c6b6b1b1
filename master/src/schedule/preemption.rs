//! Preemption: which running work ends so that waiting work a queue is owed can start.
//!
//! Two rules, each opted into per queue in the queues file:
//! - **reclaim**: a queue that would still be within its guarantee with the waiting item takes
//!   room back from queues above their own guarantees, never pushing one of them (or an
//!   ancestor) below its guarantee;
//! - **priority**: within one queue, higher-priority work displaces strictly lower.
//!
//! Victims free just enough: for each piece the item still lacks, every worker says which of
//! its candidates (executors before drivers, lowest priority first, most recently started
//! first) would make the piece fit there, and the worker that frees the least beyond it wins. A
//! gang, ended whole, is taken only when no single worker will do. Nothing younger than its
//! queue's `min_runtime` is chosen. Room already being freed (victims in their grace period)
//! counts as free, and room held for others (claims, reservations) is theirs, so a decision is
//! not made twice.
//!
//! Neither rule can undo the other's work, and neither undoes itself: a reclaiming queue ends at
//! or below its guarantee, so it is never a reclaim victim of the queue it took from (which stays
//! at or above its own and so cannot reclaim); priority preemption only ever goes from strictly
//! higher to lower. `state::preemption_tests` drives random events to show no two items preempt
//! each other back and forth.

pub use super::queues::Preempt;
use super::queues::{Amount, QueueTree, Usage};

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
    pub fn amount(&self) -> Amount {
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
/// A need's view of the room: what is free for it, and on each offer the room held for others
/// that is not free yet (its debt): room freed there pays the debt first.
struct Room {
    free: Vec<(u64, u64)>,
    debt: Vec<(u64, u64)>,
    cores: u64,
    memory_mb: u64,
    fitting: u64,
}

/// Adds `x` to `free`, paying `debt` first; or, with `add` false, the exact inverse (takes
/// from `free` first, the rest becomes debt). Free room and debt are never both above zero.
fn settle(free: &mut u64, debt: &mut u64, x: u64, add: bool) {
    if add {
        let paid = x.min(*debt);
        *debt -= paid;
        *free += x - paid;
    } else {
        let taken = x.min(*free);
        *free -= taken;
        *debt += x - taken;
    }
}

impl Room {
    /// `free` less what is `held` for others.
    fn new(free: &[(u64, u64)], held: &[(u64, u64)], cores: u32, memory_mb: u64) -> Self {
        let at = |w: usize| held.get(w).copied().unwrap_or((0, 0));
        let mut room = Self {
            free: (0..free.len())
                .map(|w| {
                    (
                        free[w].0.saturating_sub(at(w).0),
                        free[w].1.saturating_sub(at(w).1),
                    )
                })
                .collect(),
            debt: (0..free.len())
                .map(|w| {
                    (
                        at(w).0.saturating_sub(free[w].0),
                        at(w).1.saturating_sub(free[w].1),
                    )
                })
                .collect(),
            cores: u64::from(cores.max(1)),
            memory_mb: memory_mb.max(1),
            fitting: 0,
        };
        room.fitting = (0..room.free.len()).map(|w| room.term(w)).sum();
        room
    }

    /// The whole free room again, held room included: what the next need starts from.
    fn actual(&self, held: &[(u64, u64)]) -> Vec<(u64, u64)> {
        (0..self.free.len())
            .map(|w| {
                let h = held.get(w).copied().unwrap_or((0, 0));
                (
                    self.free[w].0 + h.0 - self.debt[w].0,
                    self.free[w].1 + h.1 - self.debt[w].1,
                )
            })
            .collect()
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
            let (dc, dm) = &mut self.debt[w];
            settle(fc, dc, u64::from(c), add);
            settle(fm, dm, m, add);
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

/// What reclaim may still take from each queue for one need: how far each queue's subtree is
/// above its guarantee, for the queues outside the reclaiming queue's lineage and subtree.
#[derive(Clone)]
struct Floors {
    /// Per queue: (cores, memory) above its guarantee; `None`: off limits.
    above: Vec<Option<(u64, u64)>>,
}

impl Floors {
    fn new(tree: &QueueTree, usage: &Usage, q: usize) -> Self {
        let shared: Vec<usize> = tree.lineage(q).collect();
        let above = (0..tree.len())
            .map(|a| {
                let related = shared.contains(&a) || tree.lineage(a).any(|x| x == q);
                (!related).then(|| {
                    let g = tree.def(a).guaranteed;
                    let used = usage.subtree(a);
                    (
                        used.cores.saturating_sub(g.cores),
                        used.memory_mb.saturating_sub(g.memory_mb),
                    )
                })
            })
            .collect();
        Self { above }
    }

    /// Whether `amount` may be taken from queue `v`: every queue from `v` up to (not including)
    /// the shared ancestors stays at or above its guarantee.
    fn allows(&self, tree: &QueueTree, v: usize, amount: Amount) -> bool {
        if self.above[v].is_none() {
            return false;
        }
        tree.lineage(v)
            .map_while(|a| self.above[a])
            .all(|(c, m)| c >= amount.cores && m >= amount.memory_mb)
    }

    fn take(&mut self, tree: &QueueTree, v: usize, amount: Amount) {
        for a in tree.lineage(v) {
            match &mut self.above[a] {
                Some((c, m)) => {
                    *c = c.saturating_sub(amount.cores);
                    *m = m.saturating_sub(amount.memory_mb);
                }
                None => break,
            }
        }
    }
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

/// Room held on one offer for someone: a claimant among the needs (its index), or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub owner: Option<usize>,
    pub cores: u64,
    pub memory_mb: u64,
}

/// What is held on each offer for anyone but need `n`.
fn held_from(held: &[Vec<Held>], n: usize) -> Vec<(u64, u64)> {
    held.iter()
        .map(|hs| {
            hs.iter()
                .filter(|h| h.owner != Some(n))
                .fold((0u64, 0u64), |(c, m), h| {
                    (c.saturating_add(h.cores), m.saturating_add(h.memory_mb))
                })
        })
        .collect()
}

/// The cluster as preemption sees it.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// Each offer's free room (cores, memory).
    pub free: &'a [(u32, u64)],
    pub running: &'a [Running],
    /// Room held on each offer (claims and reservations): free or being freed, it is its
    /// holder's alone. Missing offers hold nothing.
    pub held: &'a [Vec<Held>],
}

/// One way to make room for one more piece: these victims (in the order taken), and how
/// good a way it is (lower is better): cores freed beyond what was missing, then the latest
/// place in the victim order any of them has.
struct Way {
    victims: Vec<usize>,
    cost: (u64, usize),
}

/// Decides the preemptions for `needs` (in the order they should be served), given the
/// cluster, each queue's settings (`policy[q]`) and what each queue uses. `usage` is updated
/// as victims are chosen.
///
/// For each piece a need still lacks, every worker is asked what it would take there: its
/// candidates in victim order until the piece fits. The worker that frees the least beyond the
/// piece wins (then the one whose victims come earliest in the order). Gangs, which free room
/// on several workers at once, are tried only when no single victim set on one worker does.
pub fn choose(
    tree: &QueueTree,
    usage: &mut Usage,
    policy: &[Preempt],
    cluster: &Cluster<'_>,
    needs: &[Need],
    now_ms: i64,
) -> Vec<Decision> {
    let Cluster {
        free,
        running,
        held,
    } = *cluster;
    let mut free: Vec<(u64, u64)> = free.iter().map(|&(c, m)| (u64::from(c), m)).collect();
    for r in running.iter().filter(|r| r.ending) {
        for &(w, c, m) in &r.pieces {
            free[w].0 += u64::from(c);
            free[w].1 += m;
        }
    }
    let mut taken: Vec<bool> = running.iter().map(|r| r.ending).collect();
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
    // Each worker's single-piece candidates, in victim order (rank = place in `order`).
    let mut by_worker: Vec<Vec<(usize, usize)>> = vec![Vec::new(); free.len()];
    let mut multi: Vec<(usize, usize)> = Vec::new();
    for (rank, &i) in order.iter().enumerate() {
        if !old_enough(&running[i]) {
            continue;
        }
        match running[i].pieces.as_slice() {
            [(w, _, _)] => by_worker[*w].push((rank, i)),
            _ => multi.push((rank, i)),
        }
    }
    let mut decisions = Vec::new();
    for (n, need) in needs.iter().enumerate() {
        let need = &reclaimable_part(tree, usage, policy, need);
        let others = held_from(held, n);
        let mut room = Room::new(&free, &others, need.cores, need.memory_mb);
        if room.fitting >= u64::from(need.count) {
            // Room is there, or being freed: it goes to this need, not to a new decision.
            room.consume(u64::from(need.count));
            free = room.actual(&others);
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
        let mut chosen: Vec<usize> = Vec::new();
        let mut floors = Floors::new(tree, usage, q);
        let mut scratch = floors.clone();
        let eligible = |r: &Running, floors: &Floors| match rule {
            Rule::Reclaim => floors.allows(tree, r.queue, r.amount()),
            Rule::Priority => r.queue == q && r.priority < need.priority,
        };
        while room.fitting < u64::from(need.count) {
            let mut best: Option<(usize, Way)> = None;
            for (w, candidates) in by_worker.iter().enumerate() {
                // One more piece than the worker holds now; room freed here pays what is held
                // for others first.
                let pieces = room.term(w) + 1;
                let want_c = u64::from(need.cores) * pieces;
                let want_m = need.memory_mb * pieces;
                let (start_c, start_m) = room.free[w];
                let (mut c, mut m) = (start_c, start_m);
                let (mut debt_c, mut debt_m) = room.debt[w];
                let owed_c = debt_c;
                let mut freed_c = 0;
                scratch.above.clone_from(&floors.above);
                let mut victims = Vec::new();
                let mut worst = 0;
                for &(rank, i) in candidates {
                    if c >= want_c && m >= want_m {
                        break;
                    }
                    if taken[i] || !eligible(&running[i], &scratch) {
                        continue;
                    }
                    let (_, vc, vm) = running[i].pieces[0];
                    settle(&mut c, &mut debt_c, u64::from(vc), true);
                    freed_c += u64::from(vc);
                    settle(&mut m, &mut debt_m, vm, true);
                    scratch.take(tree, running[i].queue, running[i].amount());
                    victims.push(i);
                    worst = worst.max(rank);
                }
                if c < want_c || m < want_m || victims.is_empty() {
                    continue;
                }
                // Freed beyond what the piece lacked there (what is held for others included).
                let lacked = want_c.saturating_sub(start_c) + owed_c;
                let cost = (freed_c.saturating_sub(lacked), worst);
                if best.as_ref().is_none_or(|(_, b)| cost < b.cost) {
                    best = Some((w, Way { victims, cost }));
                }
            }
            let picked = match best {
                Some((_, option)) => option.victims,
                // No worker alone: a gang that frees room the need can use.
                None => {
                    let gang = multi.iter().find(|&&(_, i)| {
                        if taken[i] || !eligible(&running[i], &floors) {
                            return false;
                        }
                        let before = room.fitting;
                        room.change(&running[i].pieces, true);
                        let helps = room.fitting > before;
                        room.change(&running[i].pieces, false);
                        helps
                    });
                    match gang {
                        Some(&(_, i)) => vec![i],
                        None => break,
                    }
                }
            };
            for i in picked {
                taken[i] = true;
                room.change(&running[i].pieces, true);
                floors.take(tree, running[i].queue, running[i].amount());
                chosen.push(i);
            }
        }
        if room.fitting < u64::from(need.count) {
            // Preempting cannot make room enough: nothing ends for nothing.
            for &i in &chosen {
                taken[i] = false;
            }
            continue;
        }
        for &i in &chosen {
            usage.charge_back(tree, running[i].queue, running[i].amount());
        }
        usage.charge(tree, q, need.amount());
        let places = room.consume(u64::from(need.count));
        free = room.actual(&others);
        decisions.push(Decision {
            need: n,
            rule,
            victims: chosen,
            places,
        });
    }
    decisions
}
