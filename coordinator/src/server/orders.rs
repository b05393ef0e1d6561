//! Sending an order to an agent: one bidirectional stream per order, opened by the
//! coordinator on the agent's control connection, answered by one reply.
//!
//! What the caller learns is a [`Delivery`]: the reply, or whether the order certainly never
//! left (the host was not connected), or may have been carried out without its answer
//! arriving. Treating the last as a failure is how a lost reply once left two copies.

use std::time::Duration;

use understudy_common::frame::{read_frame, write_frame};
use understudy_common::protocol::{MAX_CONTROL_FRAME, PROTOCOL_VERSION};
use understudy_common::workload::{Order, OrderEnvelope, OrderReply};

use super::Shared;
use crate::workloads::migration::Delivery;

/// Sends `order` to `host` and waits up to `timeout` for its reply.
pub async fn deliver(shared: &Shared, host: &str, order: &Order, timeout: Duration) -> Delivery {
    if shared.fenced() {
        return Delivery::NotSent(format!(
            "this coordinator is no longer the group's leader; {} order to {host} not sent",
            order.kind()
        ));
    }
    let Some(conn) = shared.connection(host) else {
        return Delivery::NotSent(format!("host {host} is not connected"));
    };
    tracing::info!(
        host,
        order = order.kind(),
        workload = order.target().0,
        generation = order.target().1,
        "sending order"
    );
    let kind = order.kind();
    let data_key = if order.needs_key() {
        match shared.data_key(order.target().0) {
            Ok(k) => Some(k),
            Err(e) => return Delivery::NotSent(format!("{kind} order to {host}: {e}")),
        }
    } else {
        None
    };
    let envelope = OrderEnvelope {
        order: order.clone(),
        data_key,
    };
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return Delivery::NotSent(format!("{kind} order to {host}: {e}")),
    };
    let exchange = async {
        write_frame(&mut send, PROTOCOL_VERSION, &envelope)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        crate::faults::after_send(kind).await;
        read_frame::<_, OrderReply>(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| e.to_string())
    };
    let delivery = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(reply)) => Delivery::Reply(reply),
        Ok(Err(e)) => Delivery::Unknown(format!("{kind} order to {host}: {e}")),
        Err(_) => Delivery::Unknown(format!(
            "{kind} order to {host}: no reply within {timeout:?}"
        )),
    };
    let delivery = crate::faults::lose_reply(kind, delivery);
    match &delivery {
        Delivery::Reply(OrderReply::Failed(e)) => {
            tracing::warn!(host, order = kind, "order failed: {e}")
        }
        Delivery::NotSent(e) | Delivery::Unknown(e) => {
            tracing::warn!(host, order = kind, "no answer: {e}")
        }
        _ => {}
    }
    delivery
}

/// Sends `order` and folds every failure to deliver it into [`OrderReply::Failed`], for
/// orders whose caller only needs to know whether it was done.
pub async fn send(shared: &Shared, host: &str, order: &Order, timeout: Duration) -> OrderReply {
    match deliver(shared, host, order, timeout).await {
        Delivery::Reply(r) => r,
        Delivery::NotSent(e) => OrderReply::Failed(e),
        Delivery::Unknown(e) => OrderReply::Failed(format!("{e} (it may have been carried out)")),
    }
}
