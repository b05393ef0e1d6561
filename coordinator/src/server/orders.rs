//! Sending an order to an agent: one bidirectional stream per order, opened by the
//! coordinator on the agent's control connection, answered by one reply.

use std::time::Duration;

use understudy_common::frame::{read_frame, write_frame};
use understudy_common::protocol::{MAX_CONTROL_FRAME, PROTOCOL_VERSION};
use understudy_common::workload::{Order, OrderReply};

use super::Shared;

/// Sends `order` to `host` and waits up to `timeout` for its reply. Every failure —
/// host not connected, stream error, timeout — comes back as [`OrderReply::Failed`].
pub async fn send(shared: &Shared, host: &str, order: &Order, timeout: Duration) -> OrderReply {
    let Some(conn) = shared.connection(host) else {
        return OrderReply::Failed(format!("host {host} is not connected"));
    };
    tracing::info!(
        host,
        order = order.kind(),
        workload = order.target().0,
        generation = order.target().1,
        "sending order"
    );
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, PROTOCOL_VERSION, order)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        read_frame::<_, OrderReply>(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| e.to_string())
    };
    let reply = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => OrderReply::Failed(format!("{} order to {host}: {e}", order.kind())),
        Err(_) => OrderReply::Failed(format!(
            "{} order to {host}: no reply within {timeout:?}",
            order.kind()
        )),
    };
    if let OrderReply::Failed(e) = &reply {
        tracing::warn!(host, order = order.kind(), "order failed: {e}");
    }
    reply
}
