//! Taking back, when the agent starts, the workloads an earlier run of it started: each
//! tree in `copies.bin` that still runs (same pid, same start time) is its own supervisor's
//! and has kept running — and writing its log — while no agent was there. It gets a task
//! again under the generation, shadow and epoch numbering it had, and its periodic epochs
//! resume (the first one whole: the shadow's base is not known any more).

use std::sync::Arc;

use crate::life::{Machine, Mailbox};
use crate::node::Node;
use crate::workload::{process, Paths};

/// The number of an adopted tree in its task's mailbox.
const ADOPTED_TREE: u64 = 1;

/// Takes back every tree an earlier run left running. Call before registering, so that
/// the first inventory shows them.
pub async fn readopt(node: &Arc<Node>) {
    for rec in node.orphans() {
        let name = rec.spec.name.clone();
        if node.primary(&name).is_some() {
            continue;
        }
        let Some(rec) = node.take_orphan(&name) else {
            continue;
        };
        // A tree an older agent left in its own cgroup gets a scope now (no-op otherwise).
        let (n, pid) = (name.clone(), rec.pid);
        let _ = tokio::task::spawn_blocking(move || crate::workload::place_in_scope(&n, pid)).await;
        let log = Paths::new(&node.data_dir, &name).output_log();
        let mailbox = Mailbox::default();
        let running = process::adopt_running(
            rec.pid,
            rec.start_ticks,
            &log,
            mailbox.exit_hook(&name, ADOPTED_TREE),
        );
        let machine = Machine::new(
            &name,
            rec.spec.restart,
            rec.generation,
            rec.shadows.clone(),
            rec.pid,
            rec.next_epoch,
        );
        let handle = crate::life::spawn(
            node,
            rec.spec.clone(),
            machine,
            running,
            mailbox,
            ADOPTED_TREE,
        );
        node.set_primary(&name, handle);
        tracing::warn!(
            workload = %name,
            pid = rec.pid,
            generation = rec.generation,
            "took back the workload an earlier run of this agent started; its epochs resume"
        );
    }
}
