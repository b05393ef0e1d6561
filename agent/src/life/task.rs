//! The task that runs one primary workload: it owns the workload's [`Machine`] and the
//! handles of its I/O (the running tree, the delta base, a switchover's final dump), takes
//! messages from its mailbox — orders, exits, lease renewals, the outcomes of the work it
//! started — feeds them to the machine, and carries out the commands that come back. Slow
//! work (an epoch, a restart, a resume, a stop) runs beside it and reports back as a
//! message, so an order or an exit is never stuck behind a dump or a transfer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use understudy_common::epoch::Manifest;
use understudy_common::inventory::CopyState;
use understudy_common::workload::{EpochReport, OrderReply, Report, WorkloadSpec};

use super::cadence::{Cost, Pacer};
use super::epoch::{self, Job, Outcome};
use super::machine::{Command, Event, Machine, Tree};
use super::restore::{restore_tree, Restored};
use crate::clock::now_ms;
use crate::datadir::capture;
use crate::node::Node;
use crate::replication::send::Base;
use crate::workload::process::{self, ExitHook, Running};
use crate::workload::Paths;

/// How long a released old primary waits for a post-copy transfer to end before it kills
/// what CRIU left of the tree.
const POST_COPY_END_LIMIT: Duration = Duration::from_secs(60);

type ReplyTo = oneshot::Sender<Result<OrderReply, String>>;

/// A message to a workload's task.
enum Msg {
    /// An order, answered on the channel.
    Order(Event, ReplyTo),
    /// An event nobody waits on.
    Event(Event),
    /// The tree numbered `tree` exited on its own.
    Exited { tree: u64, status: String },
    /// The epoch in flight ended.
    EpochDone(Box<Outcome>),
    /// The tree numbered `tree` was started afresh, or not.
    Started {
        tree: u64,
        result: Result<Running, String>,
    },
    /// The tree numbered `tree` was restored from the final dump (of that epoch), or not.
    Resumed {
        tree: u64,
        result: Result<(Running, u64), String>,
    },
}

/// A workload's mailbox, made before its first tree starts so that the tree's exit hook
/// can post to it.
#[derive(Debug)]
pub struct Mailbox {
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
}

impl Default for Mailbox {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Mailbox { tx, rx }
    }
}

impl Mailbox {
    /// The hook that tells the task when the tree numbered `tree` exits on its own.
    pub fn exit_hook(&self, workload: &str, tree: u64) -> ExitHook {
        exit_hook(self.tx.clone(), workload, tree)
    }
}

fn exit_hook(tx: mpsc::UnboundedSender<Msg>, workload: &str, tree: u64) -> ExitHook {
    let workload = workload.to_owned();
    Box::new(move |status| {
        tracing::warn!(workload = %workload, "process tree {status}");
        let _ = tx.send(Msg::Exited { tree, status });
    })
}

/// What others may read of a workload without asking its task.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The generation it runs under.
    pub generation: u64,
    /// Its shadow hosts.
    pub shadows: Vec<String>,
    /// Root pid of its running tree (0: none).
    pub pid: i32,
    /// What the tree is doing.
    pub state: CopyState,
    /// A restart or a stop is under way: its state is about to change.
    pub busy: bool,
    /// Restarts by its restart policy since it started here.
    pub restarts: u32,
}

/// The way to a running workload's task.
#[derive(Debug)]
pub struct Handle {
    /// What it runs.
    pub spec: WorkloadSpec,
    tx: mpsc::UnboundedSender<Msg>,
    snapshot: watch::Receiver<Snapshot>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl Handle {
    /// Carries out an order and returns the answer.
    pub async fn order(&self, event: Event) -> Result<OrderReply, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Order(event, reply))
            .map_err(|_| format!("{} is not supervised here any more", self.spec.name))?;
        answer.await.map_err(|_| {
            format!(
                "{} stopped being supervised before answering",
                self.spec.name
            )
        })?
    }

    /// Tells the task of an event nobody waits on.
    pub fn tell(&self, event: Event) {
        let _ = self.tx.send(Msg::Event(event));
    }

    /// Its state as of the task's last step.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }
}

/// Starts the task of `spec`'s workload, whose tree `running` (numbered `tree` in
/// `mailbox`'s hooks) runs under the state `machine` describes.
pub fn spawn(
    node: &Arc<Node>,
    spec: WorkloadSpec,
    machine: Machine,
    running: Running,
    mailbox: Mailbox,
    tree: u64,
) -> Arc<Handle> {
    let (snap_tx, snap_rx) = watch::channel(snapshot(&machine));
    let handle = Arc::new(Handle {
        spec: spec.clone(),
        tx: mailbox.tx.clone(),
        snapshot: snap_rx,
    });
    let task = Task {
        node: node.clone(),
        pacer: Pacer::new(spec.interval_ms, node.budgets),
        flight_started: None,
        spec,
        machine,
        running: Some(running),
        tree,
        early_exit: None,
        base: None,
        final_dump: None,
        post_copy: None,
        reply: None,
        flight: None,
        tx: mailbox.tx,
        snapshot: snap_tx,
    };
    tokio::spawn(task.run(mailbox.rx));
    handle
}

fn snapshot(m: &Machine) -> Snapshot {
    let state = match m.tree() {
        Tree::Running(_) => CopyState::Running {
            epochs: !m.paused(),
        },
        Tree::Stopped(final_dump) => CopyState::Stopped {
            final_dump: *final_dump,
        },
        Tree::Exited | Tree::RestartPending(_) | Tree::Starting(_) | Tree::Stopping(_) => {
            CopyState::Exited
        }
    };
    Snapshot {
        generation: m.generation(),
        shadows: m.shadows().into_iter().map(|s| s.name).collect(),
        pid: m.pid(),
        state,
        busy: m.busy(),
        restarts: m.restarts(),
    }
}

struct Task {
    node: Arc<Node>,
    spec: WorkloadSpec,
    /// Paces periodic epochs.
    pacer: Pacer,
    /// When the epoch in flight started, and whether it sends every file whole.
    flight_started: Option<(Instant, bool)>,
    machine: Machine,
    running: Option<Running>,
    tree: u64,
    early_exit: Option<(u64, String)>,
    base: Option<Base>,
    final_dump: Option<(PathBuf, Manifest)>,
    /// A post-copy final epoch's transfer, and the epoch's number.
    post_copy: Option<(crate::postcopy::source::Session, u64)>,
    reply: Option<ReplyTo>,
    flight: Option<tokio::task::JoinHandle<()>>,
    tx: mpsc::UnboundedSender<Msg>,
    snapshot: watch::Sender<Snapshot>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut next_tick = Instant::now() + self.interval();
        loop {
            let msg = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                () = tokio::time::sleep_until(next_tick) => {
                    next_tick = Instant::now() + self.interval();
                    self.step(Event::Tick);
                    continue;
                }
            };
            let event = match msg {
                Msg::Order(event, reply) => {
                    if let Some(earlier) = self.reply.replace(reply) {
                        let _ = earlier.send(Err("superseded by a newer order".into()));
                    }
                    event
                }
                Msg::Event(event) => event,
                Msg::Exited { tree, status } => {
                    if tree > self.tree {
                        // A tree that exited before the news of its start came in.
                        self.early_exit = Some((tree, status));
                        continue;
                    }
                    if tree != self.tree {
                        continue;
                    }
                    Event::Exited {
                        pid: self.machine.pid(),
                        status,
                        now_ms: now_ms(),
                    }
                }
                Msg::EpochDone(outcome) => {
                    let event = self.epoch_done(*outcome);
                    // The next periodic epoch is an interval after this one ended.
                    next_tick = Instant::now() + self.interval();
                    event
                }
                Msg::Started { tree, result } => {
                    let result = result.map(|running| {
                        let pid = running.pid;
                        self.tree = tree;
                        self.running = Some(running);
                        pid
                    });
                    Event::Restarted {
                        result,
                        now_ms: now_ms(),
                    }
                }
                Msg::Resumed { tree, result } => {
                    let result = result.map(|(running, epoch)| {
                        let pid = running.pid;
                        self.tree = tree;
                        self.running = Some(running);
                        self.final_dump = None;
                        (pid, epoch)
                    });
                    Event::Resumed { result }
                }
            };
            if self.step(event) {
                return;
            }
            if let Some((tree, status)) = self.early_exit.take_if(|(t, _)| *t == self.tree) {
                self.post(Msg::Exited { tree, status });
            }
        }
    }

    /// Time from an epoch's end to the next one's start.
    fn interval(&self) -> Duration {
        Duration::from_millis(self.pacer.current().interval_ms)
    }

    fn epoch_done(&mut self, mut outcome: Outcome) -> Event {
        self.flight = None;
        let started = self.flight_started.take();
        let mut reports: Vec<&mut EpochReport> = outcome
            .results
            .iter_mut()
            .filter_map(|d| d.result.as_mut().ok())
            .collect();
        if let (Some(first), Some((at, whole)), None) =
            (reports.first(), started, &outcome.final_dump)
        {
            let before = self.pacer.current();
            let pace = self.pacer.observe(Cost {
                frozen_ms: first.frozen_ms,
                // The epoch's cost is every transfer's.
                cpu_ms: reports.iter().map(|r| r.cpu_ms).sum(),
                busy_ms: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
                whole,
            });
            if pace.limit != before.limit {
                tracing::info!(
                    workload = %self.spec.name,
                    interval_ms = pace.interval_ms,
                    frozen_ms = first.frozen_ms,
                    cpu_ms = first.cpu_ms,
                    "epochs now paced by {}",
                    pace.limit.describe()
                );
            }
            for r in &mut reports {
                r.cadence = Some(pace);
            }
        }
        let dumped = outcome.final_dump.is_some() || outcome.post_copy.is_some();
        if let Some(session) = outcome.post_copy {
            // CRIU holds the tree frozen until the target has its memory, then ends it.
            self.post_copy = Some((session, outcome.epoch));
            self.running = None;
        }
        if let Some(dump) = outcome.final_dump {
            // CRIU stopped the tree after dumping it.
            self.final_dump = Some(dump);
            self.running = None;
        }
        if let Some(base) = outcome.base {
            self.base = Some(base);
        }
        Event::EpochDone {
            epoch: outcome.epoch,
            dumped,
            results: outcome.results,
        }
    }

    /// Feeds `event` to the machine and carries out what it says; `true` when the task
    /// ends.
    fn step(&mut self, event: Event) -> bool {
        let mut end = false;
        for command in self.machine.handle(event) {
            end |= self.execute(command);
        }
        let _ = self.snapshot.send(snapshot(&self.machine));
        end
    }

    fn post(&self, msg: Msg) {
        let _ = self.tx.send(msg);
    }

    fn execute(&mut self, command: Command) -> bool {
        let name = self.spec.name.clone();
        match command {
            Command::TakeEpoch {
                epoch,
                generation,
                to,
                final_epoch,
                post_copy,
                base,
                ordered,
            } => {
                let Some(running) = self.running.clone() else {
                    self.post(Msg::EpochDone(Box::new(Outcome::failed(
                        epoch,
                        &to,
                        &super::machine::Failure::Failed("the workload is not running here".into()),
                    ))));
                    return false;
                };
                let node = self.node.clone();
                let progress_name = name.clone();
                let job = Job {
                    criu: self.node.criu.clone(),
                    workload: name.clone(),
                    generation,
                    epoch,
                    final_epoch,
                    post_copy,
                    ordered,
                    running,
                    dir: self
                        .node
                        .dump_dir(&self.spec)
                        .join(format!("epoch-{epoch}")),
                    track_mem: self.node.memory_tracking,
                    data: self
                        .spec
                        .data_dirs
                        .iter()
                        .map(|d| capture::Dir {
                            logical: d.clone(),
                            host: self.node.data_roots.host_path(d),
                        })
                        .collect(),
                    base: self.base.clone().filter(|b| Some(b.epoch) == base),
                    to,
                    peers: self.node.peers.clone(),
                    key: self.node.key(&name),
                    progress: Arc::new(move |sent, total| {
                        node.report(Report::Progress {
                            workload: progress_name.clone(),
                            generation,
                            sent,
                            total,
                        });
                    }),
                };
                self.flight_started = Some((Instant::now(), job.base.is_none()));
                let tx = self.tx.clone();
                self.flight = Some(tokio::spawn(async move {
                    let outcome = epoch::run(job).await;
                    let _ = tx.send(Msg::EpochDone(Box::new(outcome)));
                }));
            }
            Command::Reply(answer) => {
                if let Some(reply) = self.reply.take() {
                    let _ = reply.send(answer);
                }
            }
            Command::Report(report) => self.node.report(report),
            Command::Record => {
                let pid = self.machine.pid();
                if pid > 0 {
                    if let Err(e) = self.node.record_copy(
                        &self.spec,
                        self.machine.generation(),
                        &self.machine.shadows(),
                        pid,
                        self.machine.next_epoch(),
                    ) {
                        tracing::warn!(workload = %name, "cannot record the copy's progress: {e}");
                    }
                }
            }
            Command::RestartAfter(ms) => {
                // No epochs of a dead tree while the restart waits.
                self.running = None;
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = tx.send(Msg::Event(Event::RestartDue));
                });
            }
            Command::StartAfresh => {
                let tree = self.tree + 1;
                let (node, spec, tx) = (self.node.clone(), self.spec.clone(), self.tx.clone());
                let hook = exit_hook(tx.clone(), &name, tree);
                tokio::task::spawn_blocking(move || {
                    let log = Paths::new(&node.data_dir, &spec.name).output_log();
                    let result = crate::workload::binds(&node.data_roots, &spec).and_then(|b| {
                        process::start(&spec, &b, &log, hook).map_err(|e| e.to_string())
                    });
                    match &result {
                        Ok(r) => {
                            tracing::info!(workload = %spec.name, pid = r.pid, "workload restarted")
                        }
                        Err(e) => tracing::warn!(workload = %spec.name, "restart failed: {e}"),
                    }
                    let _ = tx.send(Msg::Started { tree, result });
                });
            }
            Command::ResumeFromFinalDump => {
                if let Some((session, epoch)) = self.post_copy.take() {
                    // The same tree runs on: its exit hook keeps its number.
                    let (tree, tx) = (self.tree, self.tx.clone());
                    tokio::spawn(async move {
                        let result = session.resume().await.map(|running| (running, epoch));
                        let _ = tx.send(Msg::Resumed { tree, result });
                    });
                    return false;
                }
                let Some((dir, manifest)) = self.final_dump.clone() else {
                    self.post(Msg::Resumed {
                        tree: self.tree,
                        result: Err("no final dump to resume from".into()),
                    });
                    return false;
                };
                let tree = self.tree + 1;
                let (node, spec, tx) = (self.node.clone(), self.spec.clone(), self.tx.clone());
                let hook = exit_hook(tx.clone(), &name, tree);
                tokio::spawn(async move {
                    let result = restore_tree(
                        node.criu.clone(),
                        &node.data_dir,
                        &spec,
                        (dir, &manifest, None),
                        node.data_host_paths(&spec),
                        hook,
                        false,
                    )
                    .await
                    .map(|Restored { running, restore_ms, .. }| {
                        tracing::info!(workload = %spec.name, pid = running.pid, restore_ms, "resumed from the final dump");
                        (running, manifest.epoch)
                    });
                    let _ = tx.send(Msg::Resumed { tree, result });
                });
            }
            Command::Unfence(pid) => {
                if crate::postcopy::fenced(pid) {
                    tracing::warn!(workload = %name, pid, "the tree was held stopped by the fence of a post-copy move that broke; it runs again");
                    crate::postcopy::unfence(pid);
                }
            }
            Command::PassLease { valid_ms, at_ms } => {
                // A lease held for an order that came later passes on only what is left.
                let left = crate::lease::left_of(valid_ms, at_ms, crate::clock::mono_ms());
                if left != Some(0) {
                    tokio::spawn(async move { crate::lease::pass_on(&name, left).await });
                }
            }
            Command::Stop { graceful } => {
                let (running, spec, tx) =
                    (self.running.clone(), self.spec.clone(), self.tx.clone());
                let post_copy = self.post_copy.take();
                tokio::spawn(async move {
                    if let Some((session, _)) = post_copy {
                        session.finish(POST_COPY_END_LIMIT).await;
                    }
                    let result = match running {
                        Some(r) => super::stop::stop(&r, &spec, graceful).await,
                        None => Ok(()),
                    };
                    let _ = tx.send(Msg::Event(Event::Stopped { result }));
                });
            }
            Command::End => {
                if let Some(flight) = self.flight.take() {
                    flight.abort();
                }
                return true;
            }
        }
        false
    }
}
