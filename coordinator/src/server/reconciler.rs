//! Carrying out reconciliation: each inventory a host sends is compared with the records
//! ([`crate::workloads::reconcile`]); corrections to the records are applied at once, and
//! orders that bring a host in line are sent here, each holding its workload's claim until
//! the host has answered.

use std::sync::Arc;
use std::time::Duration;

use understudy_common::inventory::Inventory;
use understudy_common::workload::Order;

use super::{orders, Shared};
use crate::workloads::reconcile::Fix;

const ORDER_TIMEOUT: Duration = Duration::from_secs(60);

/// Reconciles the records with `host`'s `inventory`.
pub fn on_inventory(shared: &Arc<Shared>, host: &str, inventory: &Inventory) {
    for (fix, claim) in shared.reconcile_host(host, inventory) {
        let shared = shared.clone();
        tokio::spawn(async move {
            let (host, order, why) = match fix {
                Fix::Order { host, order, why } => (host, order, why),
                Fix::SetShadow {
                    host,
                    workload,
                    generation,
                    shadows,
                } => match shadows
                    .iter()
                    .map(|s| shared.peer(s))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(peers) => (
                        host,
                        Order::SetShadows {
                            workload,
                            generation,
                            shadows: peers,
                        },
                        format!("its recorded shadows are {}", shadows.join(", ")),
                    ),
                    // Not while one is unknown: the next inventory tries again.
                    Err(_) => return,
                },
                Fix::Correct(_) | Fix::Adopt(_) => return,
            };
            tracing::warn!(
                host = %host,
                workload = order.target().0,
                order = order.kind(),
                "reconciling: {why}"
            );
            let reply = orders::send(&shared, &host, &order, ORDER_TIMEOUT).await;
            tracing::info!(host = %host, order = order.kind(), "reconciliation order answered: {reply}");
            drop(claim);
        });
    }
}
