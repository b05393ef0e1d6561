//! The life of one workload this host runs as primary, as a state machine without I/O:
//! events come in (an epoch timer tick, an order, an epoch's outcome, the tree's exit, a
//! lease renewal, the result of a restart or resume), and commands go out (take an epoch,
//! reply, report, record the copy, start the tree again, pass the lease on, stop). The
//! task in [`super::task`] feeds it and carries the commands out; the unit tests in
//! `machine_tests.rs` drive it through every path deterministically.
//!
//! Rules it keeps:
//! - At most one epoch is in flight. A switchover's epoch (a `Checkpoint` order) waits for
//!   a periodic one in flight, then pauses the periodic ones until `Resume`.
//! - Each epoch is dumped once and sent to every shadow the epoch targets. An
//!   acknowledgement is a delta base only for the shadow it came from: a new shadow, or a
//!   shadow that lost its base, gets the next epoch whole — and, since an epoch's data
//!   directories are captured against one base, so do the others that epoch goes to. An
//!   epoch is a delta only when every shadow it goes to holds the same base.
//! - A shadow that failed [`REST_AFTER`] epochs in a row is *resting*: periodic epochs go
//!   to the others, and only every [`PROBE_EVERY`]th epoch tries it again (whole), so a
//!   lost shadow neither holds the others' epochs up nor makes each of them whole. With no
//!   shadow left that is not resting, every epoch tries them all.
//! - A switchover's epochs go to its target only (`Checkpoint::to`).
//! - A lease is passed on only for exactly the generation this copy runs under. One for
//!   the next generation that comes before the order moving the copy to it (the
//!   coordinator's record moves first) is held, and passed on with what is left of it when
//!   that order comes: a switchover started just after a leader change must not freeze the
//!   copy for want of the renewal it raced.
//! - An exit restarts the tree only while no switchover is under way, and only as often as
//!   its restart policy allows within its window.

use understudy_common::workload::{EpochReport, OrderReply, Peer, Report, RestartPolicy};

/// What the workload's tree is doing here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    /// Running, with this root pid.
    Running(i32),
    /// Exited on its own and will not be restarted.
    Exited,
    /// Exited with `status`; its restart policy's delay is running.
    RestartPending(String),
    /// Exited with `status`; being started afresh.
    Starting(String),
    /// Stopped by a switchover's final dump (`true`: the dump is kept to resume from).
    Stopped(bool),
    /// Being stopped for good (a release or a delete); the pid it had (0: none ran).
    Stopping(i32),
}

/// Why an epoch did not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The supervisor holds the tree frozen for lack of a lease; nothing was dumped.
    Frozen,
    /// The shadow no longer holds the base the delta was made against.
    BaseLost(String),
    /// Anything else (CRIU, the network, the shadow's refusal).
    Failed(String),
}

impl Failure {
    fn reason(&self) -> String {
        match self {
            Failure::Frozen => FROZEN.to_owned(),
            Failure::BaseLost(r) | Failure::Failed(r) => r.clone(),
        }
    }
}

/// Said once while a copy is frozen for lack of a lease.
pub const FROZEN: &str = "frozen for lack of a lease: epochs wait until it is renewed";

/// Failed epochs in a row after which a shadow rests.
pub const REST_AFTER: u32 = 3;

/// A resting shadow is tried again by every epoch whose number is a multiple of this.
pub const PROBE_EVERY: u64 = 10;

/// One shadow: where epochs go, what it acknowledged last, how often it failed since.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    peer: Peer,
    acked: Option<u64>,
    failures: u32,
}

impl Link {
    fn new(peer: Peer) -> Self {
        Link {
            peer,
            acked: None,
            failures: 0,
        }
    }

    fn resting(&self) -> bool {
        self.failures >= REST_AFTER
    }
}

/// What one shadow made of an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The shadow.
    pub shadow: String,
    /// What it committed, or why not.
    pub result: Result<EpochReport, Failure>,
}

/// An event for the machine.
#[derive(Debug, Clone)]
pub enum Event {
    /// The epoch interval passed.
    Tick,
    /// Order: take an epoch now (a switchover's), final or not, under `generation`; a
    /// final one by post-copy (memory left out, served to the shadow) with `post_copy`;
    /// only to the shadow `to` when named (the switchover's target).
    Checkpoint {
        generation: u64,
        final_epoch: bool,
        post_copy: bool,
        to: Option<String>,
    },
    /// Order: go on running here under `generation` (a switchover rolled back).
    Resume { generation: u64 },
    /// Order: epochs go to `shadows` from now on, under `generation`.
    SetShadows { generation: u64, shadows: Vec<Peer> },
    /// Order: stop the tree for good (`graceful`: as a service manager would).
    Release { graceful: bool },
    /// The coordinator renewed the lease of `generation` for `valid_ms`, at `at_ms` on the
    /// agent's monotonic clock.
    Lease {
        generation: u64,
        valid_ms: Option<u64>,
        at_ms: u64,
    },
    /// The epoch numbered `epoch` ended, with what each shadow it went to made of it (a
    /// failure before any transfer is every one's). For a final epoch, `dumped` says
    /// whether CRIU dumped (and so stopped) the tree.
    EpochDone {
        epoch: u64,
        dumped: bool,
        results: Vec<Delivery>,
    },
    /// The tree rooted at `pid` exited on its own at `now_ms`.
    Exited {
        pid: i32,
        status: String,
        now_ms: u64,
    },
    /// The restart policy's delay has passed.
    RestartDue,
    /// The tree was started again (its pid), or could not be.
    Restarted {
        result: Result<i32, String>,
        now_ms: u64,
    },
    /// The tree was restored from the final dump of epoch `epoch` (its pid), or not.
    Resumed { result: Result<(i32, u64), String> },
    /// The tree is gone (or would not die: why).
    Stopped { result: Result<(), String> },
    /// The agent is shutting down: no more epochs; the tree runs on.
    Shutdown,
}

/// A command the driver carries out.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Dump the tree as epoch `epoch` under `generation` and send it to each of `to`, as a
    /// delta against the epoch `base` they all acknowledged, if there is one.
    TakeEpoch {
        epoch: u64,
        generation: u64,
        to: Vec<Peer>,
        final_epoch: bool,
        /// A final epoch by post-copy.
        post_copy: bool,
        base: Option<u64>,
        /// Ordered by the coordinator, not by the timer.
        ordered: bool,
    },
    /// Answer the order being carried out.
    Reply(Result<OrderReply, String>),
    /// Tell the coordinator.
    Report(Report),
    /// Persist the copy's record (generation, shadows, pid, next epoch) for a restarted
    /// agent.
    Record,
    /// Send [`Event::RestartDue`] after `ms`.
    RestartAfter(u64),
    /// Start the command afresh; answer with [`Event::Restarted`].
    StartAfresh,
    /// Restore the tree from the kept final dump; answer with [`Event::Resumed`].
    ResumeFromFinalDump,
    /// Hand the supervisor the lease of `valid_ms` granted at `at_ms` on the agent's
    /// monotonic clock (what is left of it; `None`: no bound).
    PassLease { valid_ms: Option<u64>, at_ms: u64 },
    /// Let the tree rooted at this pid run again if a post-copy fence left it stopped: a
    /// move this agent was the old primary of broke while an earlier run of the agent held
    /// it, and that run is gone with what it knew.
    Unfence(i32),
    /// Stop the tree (`graceful` or at once); answer with [`Event::Stopped`].
    Stop { graceful: bool },
    /// The copy is gone: the task ends.
    End,
}

/// Who asked for the epoch in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    Timer,
    Order { final_epoch: bool },
}

#[derive(Debug, Clone)]
struct InFlight {
    epoch: u64,
    asker: Asker,
    /// The shadows it went to.
    to: Vec<String>,
}

/// One primary workload's state.
#[derive(Debug, Clone)]
pub struct Machine {
    name: String,
    policy: RestartPolicy,
    generation: u64,
    shadows: Vec<Link>,
    tree: Tree,
    next_epoch: u64,
    paused: bool,
    in_flight: Option<InFlight>,
    /// A `Checkpoint` order waiting for the periodic epoch in flight.
    waiting: Option<bool>,
    /// A release (graceful or not) waiting for the tree being started afresh.
    release_after_start: Option<bool>,
    last_unprotected: Option<String>,
    restarts_ms: Vec<u64>,
    restarts: u32,
    /// The switchover's final epoch goes by post-copy.
    post_copy: bool,
    /// The switchover's epochs go to this shadow only.
    order_to: Option<String>,
    /// A lease for a newer generation than this copy's, held until an order moves the copy
    /// to it: (generation, valid_ms, at_ms).
    early_lease: Option<(u64, Option<u64>, u64)>,
}

impl Machine {
    /// A workload running here as `pid` under `generation`, whose next epoch is
    /// `next_epoch` and goes whole to `shadows`.
    pub fn new(
        name: &str,
        policy: RestartPolicy,
        generation: u64,
        shadows: Vec<Peer>,
        pid: i32,
        next_epoch: u64,
    ) -> Self {
        Machine {
            name: name.to_owned(),
            policy,
            generation,
            shadows: shadows.into_iter().map(Link::new).collect(),
            tree: Tree::Running(pid),
            next_epoch,
            paused: false,
            in_flight: None,
            waiting: None,
            release_after_start: None,
            last_unprotected: None,
            restarts_ms: Vec::new(),
            restarts: 0,
            post_copy: false,
            order_to: None,
            early_lease: None,
        }
    }

    /// The generation this copy runs under.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where epochs go.
    pub fn shadows(&self) -> Vec<Peer> {
        self.shadows.iter().map(|l| l.peer.clone()).collect()
    }

    /// What the tree is doing.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The root pid of the running tree, 0 if none runs.
    pub fn pid(&self) -> i32 {
        match self.tree {
            Tree::Running(pid) => pid,
            _ => 0,
        }
    }

    /// The next epoch's number.
    pub fn next_epoch(&self) -> u64 {
        self.next_epoch
    }

    /// Whether periodic epochs are paused (a switchover, or the agent stopping).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Restarts by the restart policy since the copy started here.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Whether an inventory should call it busy: its restart is about to happen, or it is
    /// being stopped.
    pub fn busy(&self) -> bool {
        matches!(
            self.tree,
            Tree::RestartPending(_) | Tree::Starting(_) | Tree::Stopping(_)
        )
    }

    /// Handles one event and says what to do.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Tick => self.tick(),
            Event::Checkpoint {
                generation,
                final_epoch,
                post_copy,
                to,
            } => {
                self.post_copy = final_epoch && post_copy;
                self.order_to = to;
                self.checkpoint(generation, final_epoch)
            }
            Event::Resume { generation } => self.resume(generation),
            Event::SetShadows {
                generation,
                shadows,
            } => self.set_shadows(generation, shadows),
            Event::Release { graceful } => {
                self.paused = true;
                self.waiting = None;
                if matches!(self.tree, Tree::Starting(_)) {
                    // The tree being started is stopped as soon as it runs.
                    self.release_after_start = Some(graceful);
                    return Vec::new();
                }
                self.tree = Tree::Stopping(self.pid());
                vec![Command::Stop { graceful }]
            }
            Event::Lease {
                generation,
                valid_ms,
                at_ms,
            } => {
                if !matches!(self.tree, Tree::Running(_)) {
                    return Vec::new();
                }
                if generation == self.generation {
                    self.early_lease = None;
                    vec![Command::PassLease { valid_ms, at_ms }]
                } else {
                    if generation > self.generation {
                        self.early_lease = Some((generation, valid_ms, at_ms));
                    }
                    Vec::new()
                }
            }
            Event::EpochDone {
                epoch,
                dumped,
                results,
            } => self.epoch_done(epoch, dumped, results),
            Event::Exited {
                pid,
                status,
                now_ms,
            } => self.exited(pid, status, now_ms),
            Event::RestartDue => match &self.tree {
                Tree::RestartPending(status) => {
                    self.tree = Tree::Starting(status.clone());
                    vec![Command::StartAfresh]
                }
                _ => Vec::new(),
            },
            Event::Restarted { result, now_ms } => self.restarted(result, now_ms),
            Event::Resumed { result } => self.resumed(result),
            Event::Stopped { result } => match result {
                Ok(()) => vec![Command::Reply(Ok(OrderReply::Done)), Command::End],
                Err(e) => {
                    // It still runs: it stays this host's copy, epochs stay paused until
                    // the coordinator decides.
                    if let Tree::Stopping(pid) = self.tree {
                        self.tree = Tree::Running(pid);
                    }
                    vec![Command::Reply(Err(e))]
                }
            },
            Event::Shutdown => {
                self.paused = true;
                Vec::new()
            }
        }
    }

    /// The shadows epoch `epoch` goes to, by the rules in the module's doc.
    fn targets(&self, epoch: u64, asker: Asker) -> Result<Vec<&Link>, String> {
        if asker != Asker::Timer {
            if let Some(to) = &self.order_to {
                return match self.shadows.iter().find(|l| &l.peer.name == to) {
                    Some(l) => Ok(vec![l]),
                    None => Err(format!("{to} is not a shadow of {}", self.name)),
                };
            }
        }
        if self.shadows.is_empty() {
            return Err("no shadow host".into());
        }
        let probe = epoch.is_multiple_of(PROBE_EVERY) || self.shadows.iter().all(Link::resting);
        Ok(self
            .shadows
            .iter()
            .filter(|l| probe || asker != Asker::Timer || !l.resting())
            .collect())
    }

    fn start_epoch(&mut self, asker: Asker) -> Vec<Command> {
        let epoch = self.next_epoch;
        let to = match self.targets(epoch, asker) {
            Ok(to) => to,
            Err(e) => return self.failed(asker, e),
        };
        // A delta only against a base every target holds.
        let base = to
            .first()
            .and_then(|l| l.acked)
            .filter(|b| to.iter().all(|l| l.acked == Some(*b)));
        let to: Vec<Peer> = to.into_iter().map(|l| l.peer.clone()).collect();
        self.next_epoch += 1;
        self.in_flight = Some(InFlight {
            epoch,
            asker,
            to: to.iter().map(|p| p.name.clone()).collect(),
        });
        let final_epoch = asker == Asker::Order { final_epoch: true };
        vec![Command::TakeEpoch {
            epoch,
            generation: self.generation,
            to,
            final_epoch,
            post_copy: final_epoch && self.post_copy,
            base,
            ordered: asker != Asker::Timer,
        }]
    }

    fn tick(&mut self) -> Vec<Command> {
        if self.paused || self.in_flight.is_some() || !matches!(self.tree, Tree::Running(_)) {
            return Vec::new();
        }
        self.start_epoch(Asker::Timer)
    }

    /// Moves the copy to `generation` (an order from the coordinator), passing on a lease
    /// for it that came before the order.
    fn adopt(&mut self, generation: u64) -> Vec<Command> {
        self.generation = generation;
        match self.early_lease.take() {
            Some((g, valid_ms, at_ms))
                if g == generation && matches!(self.tree, Tree::Running(_)) =>
            {
                vec![Command::PassLease { valid_ms, at_ms }]
            }
            Some(early) if early.0 > generation => {
                self.early_lease = Some(early);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn checkpoint(&mut self, generation: u64, final_epoch: bool) -> Vec<Command> {
        let mut out = self.adopt(generation);
        // A switchover has begun: periodic epochs pause, so none holds the workload up
        // between the switchover's last epoch and its final one.
        self.paused = true;
        if !matches!(self.tree, Tree::Running(_)) {
            out.push(Command::Reply(Err(format!(
                "unprotected: {} is not running here",
                self.name
            ))));
            return out;
        }
        if self.in_flight.is_some() {
            self.waiting = Some(final_epoch);
            return out;
        }
        out.extend(self.start_epoch(Asker::Order { final_epoch }));
        out
    }

    fn failed(&mut self, asker: Asker, reason: String) -> Vec<Command> {
        match asker {
            Asker::Order { .. } => vec![Command::Reply(Err(reason))],
            Asker::Timer => self.unprotected(reason),
        }
    }

    /// Reports a reason for not being protected, once while it stays the same.
    fn unprotected(&mut self, reason: String) -> Vec<Command> {
        if self.last_unprotected.as_deref() == Some(reason.as_str()) {
            return Vec::new();
        }
        self.last_unprotected = Some(reason.clone());
        if reason == FROZEN {
            tracing::info!(workload = %self.name, "{FROZEN}");
            // A frozen copy's coordinator knows: it is the one that stopped renewing.
            return Vec::new();
        }
        tracing::warn!(workload = %self.name, "epoch failed: {reason}");
        vec![Command::Report(Report::Unprotected {
            workload: self.name.clone(),
            generation: self.generation,
            reason,
        })]
    }

    /// Notes what shadow `name` made of epoch `epoch` (nothing if it is no longer one).
    fn note(&mut self, name: &str, epoch: u64, result: &Result<EpochReport, Failure>) {
        let Some(link) = self.shadows.iter_mut().find(|l| l.peer.name == name) else {
            return;
        };
        match result {
            Ok(_) => {
                link.acked = Some(epoch);
                if link.failures >= REST_AFTER {
                    tracing::info!(workload = %self.name, shadow = name, "the shadow takes epochs again");
                }
                link.failures = 0;
            }
            // Nothing was taken: not the shadow's failure.
            Err(Failure::Frozen) => {}
            Err(f) => {
                if let Failure::BaseLost(_) = f {
                    link.acked = None;
                }
                link.failures = link.failures.saturating_add(1);
                if link.failures == REST_AFTER && self.shadows.len() > 1 {
                    tracing::warn!(workload = %self.name, shadow = name, "the shadow failed {REST_AFTER} epochs in a row: it rests, tried again every {PROBE_EVERY}th epoch");
                }
            }
        }
    }

    fn epoch_done(&mut self, epoch: u64, dumped: bool, results: Vec<Delivery>) -> Vec<Command> {
        let Some(flight) = self.in_flight.take_if(|f| f.epoch == epoch) else {
            return Vec::new();
        };
        if matches!(self.tree, Tree::Stopping(_)) {
            return Vec::new();
        }
        let final_epoch = flight.asker == Asker::Order { final_epoch: true };
        if final_epoch && dumped {
            self.tree = Tree::Stopped(true);
        }
        for sent in &results {
            if flight.to.contains(&sent.shadow) {
                self.note(&sent.shadow, epoch, &sent.result);
            }
        }
        let (committed, failed): (Vec<Delivery>, Vec<Delivery>) =
            results.into_iter().partition(|s| s.result.is_ok());
        let reports: Vec<EpochReport> = committed
            .into_iter()
            .filter_map(|s| s.result.ok())
            .collect();
        let failures: Vec<Failure> = failed.into_iter().filter_map(|s| s.result.err()).collect();
        let mut out = if let Some(first) = reports.first().cloned() {
            let mut out = Vec::new();
            if !final_epoch {
                out.push(Command::Record);
            }
            match flight.asker {
                Asker::Order { .. } => out.push(Command::Reply(Ok(OrderReply::Epoch(first)))),
                Asker::Timer => {
                    self.last_unprotected = None;
                    for f in &failures {
                        tracing::warn!(workload = %self.name, epoch, "a shadow did not commit the epoch: {}", f.reason());
                    }
                    out.extend(
                        reports
                            .into_iter()
                            .map(|r| Command::Report(Report::EpochCommitted(r))),
                    );
                }
            }
            out
        } else {
            let failure = failures
                .into_iter()
                .next()
                .unwrap_or_else(|| Failure::Failed("the epoch went to no shadow".into()));
            // Nothing was taken: the number is not used up.
            if failure == Failure::Frozen && self.next_epoch == epoch + 1 {
                self.next_epoch = epoch;
            }
            self.failed(flight.asker, failure.reason())
        };
        if let Some(final_epoch) = self.waiting.take() {
            if matches!(self.tree, Tree::Running(_)) {
                out.extend(self.start_epoch(Asker::Order { final_epoch }));
            } else {
                out.push(Command::Reply(Err(format!(
                    "unprotected: {} stopped running here",
                    self.name
                ))));
            }
        }
        out
    }

    fn resume(&mut self, generation: u64) -> Vec<Command> {
        let lease = self.adopt(generation);
        match self.tree {
            Tree::Running(pid) => {
                self.paused = false;
                let mut out = lease;
                out.extend([
                    Command::Unfence(pid),
                    Command::Record,
                    Command::Reply(Ok(OrderReply::Done)),
                ]);
                out
            }
            Tree::RestartPending(_) | Tree::Starting(_) => {
                self.paused = false;
                vec![Command::Record, Command::Reply(Ok(OrderReply::Done))]
            }
            Tree::Stopped(true) => vec![Command::ResumeFromFinalDump],
            Tree::Stopped(false) | Tree::Exited | Tree::Stopping(_) => vec![Command::Reply(Err(
                "the workload is stopped and there is no final dump to resume from".into(),
            ))],
        }
    }

    fn resumed(&mut self, result: Result<(i32, u64), String>) -> Vec<Command> {
        match result {
            Ok((pid, dump_epoch)) => {
                self.tree = Tree::Running(pid);
                self.next_epoch = self.next_epoch.max(dump_epoch + 1);
                self.paused = false;
                vec![Command::Record, Command::Reply(Ok(OrderReply::Done))]
            }
            Err(e) => vec![Command::Reply(Err(e))],
        }
    }

    fn set_shadows(&mut self, generation: u64, shadows: Vec<Peer>) -> Vec<Command> {
        let lease = self.adopt(generation);
        if self.shadows() != shadows {
            let old = std::mem::take(&mut self.shadows);
            self.shadows = shadows
                .into_iter()
                .map(|peer| {
                    // A shadow kept (same host, same address) keeps its base; a new one
                    // holds nothing to apply deltas to.
                    old.iter().find(|l| l.peer == peer).cloned().unwrap_or_else(|| {
                        tracing::info!(workload = %self.name, shadow = %peer.name, "new shadow; the next epoch goes whole");
                        Link::new(peer)
                    })
                })
                .collect();
            self.last_unprotected = None;
        }
        let mut out = lease;
        if matches!(self.tree, Tree::Running(_)) {
            out.push(Command::Record);
        }
        out.push(Command::Reply(Ok(OrderReply::Done)));
        out
    }

    fn exited(&mut self, pid: i32, status: String, now_ms: u64) -> Vec<Command> {
        if self.tree != Tree::Running(pid) {
            // An older tree's exit, or one being stopped.
            return Vec::new();
        }
        let report = |generation, status| {
            Command::Report(Report::Exited {
                workload: self.name.clone(),
                generation,
                status,
            })
        };
        if self.paused {
            // A switchover is under way: it decides what runs where.
            self.tree = Tree::Exited;
            return vec![report(self.generation, status)];
        }
        match self.policy.decide(&self.restarts_ms, now_ms) {
            Some(delay) => {
                self.tree = Tree::RestartPending(status);
                vec![Command::RestartAfter(delay)]
            }
            None => {
                self.tree = Tree::Exited;
                let status = if self.policy.attempts == 0 {
                    status
                } else {
                    format!(
                        "{status}; not restarted: {} restarts within {} already (restart.attempts = {})",
                        self.policy.attempts,
                        humantime::format_duration(std::time::Duration::from_millis(
                            self.policy.window_ms
                        )),
                        self.policy.attempts
                    )
                };
                vec![report(self.generation, status)]
            }
        }
    }

    fn restarted(&mut self, result: Result<i32, String>, now_ms: u64) -> Vec<Command> {
        let Tree::Starting(status) = self.tree.clone() else {
            return Vec::new();
        };
        if let Some(graceful) = self.release_after_start.take() {
            return match result {
                Ok(pid) => {
                    self.tree = Tree::Stopping(pid);
                    vec![Command::Stop { graceful }]
                }
                Err(_) => {
                    self.tree = Tree::Stopping(0);
                    vec![Command::Reply(Ok(OrderReply::Done)), Command::End]
                }
            };
        }
        match result {
            Ok(pid) => {
                self.tree = Tree::Running(pid);
                self.restarts_ms.push(now_ms);
                let keep = self.policy.attempts as usize;
                let excess = self.restarts_ms.len().saturating_sub(keep);
                self.restarts_ms.drain(..excess);
                self.restarts += 1;
                vec![
                    Command::Record,
                    Command::Report(Report::Restarted {
                        workload: self.name.clone(),
                        generation: self.generation,
                        status,
                        restarts: self.restarts,
                    }),
                ]
            }
            Err(e) => {
                self.tree = Tree::Exited;
                vec![Command::Report(Report::Exited {
                    workload: self.name.clone(),
                    generation: self.generation,
                    status: format!("{status}; restart failed: {e}"),
                })]
            }
        }
    }
}
