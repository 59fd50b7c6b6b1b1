//! Queues as the scheduler sees them: a tree by dotted names (`ml.training` under `ml`), each
//! with a weight, a guaranteed share and a cap, and what each uses now. Which queue is served
//! next is decided here, hierarchically: at each level a child below its guarantee comes before
//! any at or above its own, then the child with the lowest weighted dominant share (its
//! subtree's largest fraction of the cluster's cores or memory, divided by its weight). A
//! queue's own work competes with its children as one more child of weight 1.

use std::collections::HashMap;

/// Cores and memory together: a guarantee, a cap, a use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    pub cores: u64,
    pub memory_mb: u64,
}

impl Amount {
    pub fn new(cores: u64, memory_mb: u64) -> Self {
        Self { cores, memory_mb }
    }

    pub fn add(&mut self, other: Amount) {
        self.cores += other.cores;
        self.memory_mb += other.memory_mb;
    }

    /// Takes `other` away, stopping at zero.
    pub fn sub(&mut self, other: Amount) {
        self.cores = self.cores.saturating_sub(other.cores);
        self.memory_mb = self.memory_mb.saturating_sub(other.memory_mb);
    }

    /// Whether `self` plus `more` stays within `cap` in both.
    pub fn fits_with(self, more: Amount, cap: Amount) -> bool {
        self.cores + more.cores <= cap.cores && self.memory_mb + more.memory_mb <= cap.memory_mb
    }

    /// The larger of its fractions of `total`: the dominant share.
    pub fn dominant_share(self, total: Amount) -> f64 {
        let part = |used: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                used as f64 / of as f64
            }
        };
        part(self.cores, total.cores).max(part(self.memory_mb, total.memory_mb))
    }
}

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

/// One queue of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDef {
    pub name: String,
    pub weight: u32,
    /// Served before queues at or above their own while below it; zero: none.
    pub guaranteed: Amount,
    /// Never exceeded by the queue and its children together.
    pub max: Option<Amount>,
    /// Caps on named resources (`gpu` → 4; 0 forbids it) for the queue and its children
    /// together, by name.
    pub max_named: Vec<(String, u32)>,
    /// When it takes room back, and how its own work may be preempted.
    pub preempt: Preempt,
}

impl QueueDef {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            weight: 1,
            guaranteed: Amount::default(),
            max: None,
            max_named: Default::default(),
            preempt: Default::default(),
        }
    }

    /// Whether `used` is below the guarantee: short of it in every resource it guarantees.
    fn below_guarantee(&self, used: Amount) -> bool {
        let g = self.guaranteed;
        (g.cores > 0 || g.memory_mb > 0)
            && (g.cores == 0 || used.cores < g.cores)
            && (g.memory_mb == 0 || used.memory_mb < g.memory_mb)
    }
}

/// The queue every submission without one goes to.
pub const DEFAULT_QUEUE: &str = "default";

/// Why a set of queue definitions is not a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("queue {0} is defined twice")]
    Duplicate(String),
    #[error("queue {child}: its parent {parent} is not defined; define {parent} too")]
    NoParent { child: String, parent: String },
    #[error("queue {name}: weight must be at least 1")]
    ZeroWeight { name: String },
    #[error("queue {name}: guaranteed {what} is more than its max")]
    GuaranteeOverMax { name: String, what: &'static str },
}

/// The queues, by index; parents before their children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTree {
    defs: Vec<QueueDef>,
    parent: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
    index: HashMap<String, usize>,
}

impl Default for QueueTree {
    /// One queue, `default`: first come, first served.
    fn default() -> Self {
        Self::new(vec![QueueDef::named(DEFAULT_QUEUE)]).unwrap_or_else(|_| unreachable!())
    }
}

impl QueueTree {
    /// Builds the tree; `default` is added when not defined, so work submitted without a queue
    /// always has one.
    pub fn new(mut defs: Vec<QueueDef>) -> Result<Self, TreeError> {
        if !defs.iter().any(|d| d.name == DEFAULT_QUEUE) {
            defs.push(QueueDef::named(DEFAULT_QUEUE));
        }
        // A parent's name is a prefix of its children's, so sorting puts it first.
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut index = HashMap::new();
        for (i, d) in defs.iter().enumerate() {
            if d.weight == 0 {
                return Err(TreeError::ZeroWeight {
                    name: d.name.clone(),
                });
            }
            if let Some(max) = d.max {
                let over = if d.guaranteed.cores > max.cores {
                    Some("cores")
                } else if d.guaranteed.memory_mb > max.memory_mb {
                    Some("memory")
                } else {
                    None
                };
                if let Some(what) = over {
                    return Err(TreeError::GuaranteeOverMax {
                        name: d.name.clone(),
                        what,
                    });
                }
            }
            if index.insert(d.name.clone(), i).is_some() {
                return Err(TreeError::Duplicate(d.name.clone()));
            }
        }
        let mut parent = vec![None; defs.len()];
        let mut children = vec![Vec::new(); defs.len()];
        let mut roots = Vec::new();
        for (i, d) in defs.iter().enumerate() {
            match d.name.rsplit_once('.') {
                Some((up, _)) => {
                    let p = *index.get(up).ok_or_else(|| TreeError::NoParent {
                        child: d.name.clone(),
                        parent: up.to_string(),
                    })?;
                    parent[i] = Some(p);
                    children[p].push(i);
                }
                None => roots.push(i),
            }
        }
        Ok(Self {
            defs,
            parent,
            children,
            roots,
            index,
        })
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn def(&self, i: usize) -> &QueueDef {
        &self.defs[i]
    }

    pub fn defs(&self) -> &[QueueDef] {
        &self.defs
    }

    pub fn parent(&self, i: usize) -> Option<usize> {
        self.parent[i]
    }

    /// The queue and its ancestors, innermost first.
    pub fn lineage(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(i), |&q| self.parent[q])
    }

    /// The names of all queues, for an error that lists them.
    /// Whether any queue has a cap (on cores and memory, or on a named resource): only then
    /// can what a queue holds keep an item waiting while room is free.
    pub fn has_caps(&self) -> bool {
        self.defs()
            .iter()
            .any(|d| d.max.is_some() || !d.max_named.is_empty())
    }

    pub fn names(&self) -> String {
        self.defs
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What each queue uses: its own work, and its subtree's (its own and its descendants').
#[derive(Debug, Clone)]
pub struct Usage {
    own: Vec<Amount>,
    subtree: Vec<Amount>,
    /// Named resources each queue's subtree holds, for their caps.
    named: Vec<super::named::Named>,
    /// The cluster's alive capacity, that shares are fractions of.
    total: Amount,
    /// Each queue's recent dominant share (its subtree's, decayed by a half-life), when
    /// recent use counts; fair shares are then the mean of the current and the recent.
    recent: Option<Vec<f64>>,
}

/// Why a queue's cap keeps an item waiting: the queue whose cap it is, and that cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapHit {
    pub queue: String,
    pub max: Amount,
    pub used: Amount,
}

impl Usage {
    pub fn new(tree: &QueueTree, total: Amount) -> Self {
        Self {
            own: vec![Amount::default(); tree.len()],
            subtree: vec![Amount::default(); tree.len()],
            named: vec![Default::default(); tree.len()],
            total,
            recent: None,
        }
    }

    /// Counts recent use too: `recent[q]` is queue `q`'s decayed dominant share.
    pub fn with_recent(mut self, recent: Vec<f64>) -> Self {
        self.recent = Some(recent);
        self
    }

    /// The share fairness goes by: the current dominant share, or its mean with the recent.
    pub fn fair_share(&self, q: usize) -> f64 {
        let now = self.subtree[q].dominant_share(self.total);
        match &self.recent {
            Some(recent) => (now + recent.get(q).copied().unwrap_or(now)) / 2.0,
            None => now,
        }
    }

    /// Whether some queue's subtree holds less than in `before`: work it ran has ended, so its
    /// cap may let one of its waiting items start though no worker has more room than then.
    pub fn freed_since(&self, before: &Usage) -> bool {
        self.subtree.len() != before.subtree.len()
            || self
                .subtree
                .iter()
                .zip(&before.subtree)
                .any(|(now, was)| now.cores < was.cores || now.memory_mb < was.memory_mb)
            || self
                .named
                .iter()
                .zip(&before.named)
                .any(|(now, was)| was.iter().any(|(name, n)| now.get(name) < n))
    }

    /// Charges `amount` to queue `q` (and so to its ancestors' subtrees).
    pub fn charge(&mut self, tree: &QueueTree, q: usize, amount: Amount) {
        self.own[q].add(amount);
        for a in tree.lineage(q) {
            self.subtree[a].add(amount);
        }
    }

    /// Charges named resources to queue `q` and its ancestors.
    pub fn charge_named(&mut self, tree: &QueueTree, q: usize, more: &super::named::Named) {
        if more.is_empty() {
            return;
        }
        for a in tree.lineage(q) {
            self.named[a].add(more);
        }
    }

    /// The cap on a named resource (of `q` or an ancestor) that `more` would break, innermost
    /// first, in words: "queue ml is at its max of 4 gpu (3 in use)".
    pub fn named_cap_hit(
        &self,
        tree: &QueueTree,
        q: usize,
        more: &super::named::Named,
    ) -> Option<String> {
        if more.is_empty() {
            return None;
        }
        tree.lineage(q).find_map(|a| {
            let def = tree.def(a);
            more.iter().find_map(|(name, n)| {
                let cap = def.max_named.iter().find(|(c, _)| c.as_str() == name)?.1;
                let used = self.named[a].get(name);
                (used.saturating_add(n) > cap).then(|| {
                    format!(
                        "queue {} is at its max of {cap} {name} ({used} in use)",
                        def.name
                    )
                })
            })
        })
    }

    /// Takes `amount` back from queue `q` (and its ancestors' subtrees): work that ends.
    pub fn charge_back(&mut self, tree: &QueueTree, q: usize, amount: Amount) {
        self.own[q].sub(amount);
        for a in tree.lineage(q) {
            self.subtree[a].sub(amount);
        }
    }

    pub fn subtree(&self, q: usize) -> Amount {
        self.subtree[q]
    }

    pub fn total(&self) -> Amount {
        self.total
    }

    /// The cap (of `q` or an ancestor) that `more` would break, innermost first.
    pub fn cap_hit(&self, tree: &QueueTree, q: usize, more: Amount) -> Option<CapHit> {
        tree.lineage(q).find_map(|a| {
            let max = tree.def(a).max?;
            (!self.subtree[a].fits_with(more, max)).then(|| CapHit {
                queue: tree.def(a).name.clone(),
                max,
                used: self.subtree[a],
            })
        })
    }

    /// Which queue with work pending is served next, or `None` when nothing is pending.
    /// `pending[q]` counts the queue's own items still to try, `subtree[q]` its subtree's.
    pub fn next(&self, tree: &QueueTree, pending: &[usize], subtree: &[usize]) -> Option<usize> {
        let live = |q: usize| subtree[q] > 0;
        let mut level: &[usize] = &tree.roots;
        let mut own: Option<usize> = None;
        loop {
            // The key orders candidates: below guarantee first, then the lowest weighted share,
            // then the name (stable, so equal shares alternate predictably).
            let key = |c: Option<usize>| -> (bool, f64) {
                match c {
                    Some(c) => {
                        let def = tree.def(c);
                        let used = self.subtree[c];
                        (
                            !def.below_guarantee(used),
                            self.fair_share(c) / f64::from(def.weight),
                        )
                    }
                    None => (true, 0.0),
                }
            };
            let own_candidate = own.filter(|&o| pending[o] > 0).map(|o| {
                (
                    (true, self.own[o].dominant_share(self.total)),
                    None::<usize>,
                    o,
                )
            });
            let best = level
                .iter()
                .copied()
                .filter(|&c| live(c))
                .map(|c| (key(Some(c)), Some(c), c))
                .chain(own_candidate)
                .min_by(|a, b| {
                    a.0.0
                        .cmp(&b.0.0)
                        .then(a.0.1.total_cmp(&b.0.1))
                        .then(a.2.cmp(&b.2))
                })?;
            match best.1 {
                // The parent's own work won.
                None => return Some(best.2),
                Some(c) => {
                    if tree.children[c].iter().all(|&k| !live(k)) {
                        return Some(c);
                    }
                    own = Some(c);
                    level = &tree.children[c];
                }
            }
        }
    }
}
