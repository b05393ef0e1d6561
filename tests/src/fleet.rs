//! A simulated fleet for the `ha` benchmark: N agents in one process, each with its own
//! certificate from the cluster CA, each on its own QUIC connection with mutual TLS to the
//! group's leader, registering and then heartbeating every second with full telemetry
//! (host figures, a health assessment with its top metrics, forecasts and risk, and a
//! probe report) as a real agent sends it. Measures each heartbeat's round trip.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use understudy_common::frame::{read_frame, write_frame};
use understudy_common::inventory::Inventory;
use understudy_common::protocol::{
    close, AgentMessage, CoordinatorMessage, Heartbeat, Register, CONTROL_ALPN, MAX_CONTROL_FRAME,
    PROTOCOL_VERSION,
};
use understudy_common::telemetry::{
    Forecast, HealthLevel, HealthReport, ProbeReport, Risk, TelemetrySummary,
};
use understudy_common::tls::ca::{issue, PemPair, Validity};
use understudy_common::tls::endpoint::client_config;
use understudy_common::tls::{Role, COORDINATOR_SAN};

/// Heartbeat round trips (ms), from every simulated agent.
pub type Samples = Arc<Mutex<Vec<f64>>>;

fn telemetry(i: usize, seq: u64) -> TelemetrySummary {
    let f = (seq % 100) as f32 / 100.0;
    TelemetrySummary {
        sampled_at_unix_ms: seq,
        cpu_percent: 20.0 + f * 10.0,
        memory_used_bytes: 8 << 30,
        memory_total_bytes: 32 << 30,
        load: [0.5 + f, 0.4, 0.3],
        uptime_secs: 86_400 + seq,
        health: Some(HealthReport {
            score: 95,
            level: HealthLevel::Healthy,
            anomaly: 0.1 + f / 10.0,
            anomaly_threshold: 1.0,
            top: vec![
                ("cpu_user".into(), 0.4),
                ("mem_used".into(), 0.3),
                ("disk_io".into(), 0.1),
            ],
            note: None,
            forecasts: vec![Forecast {
                metric: "mem_u".into(),
                horizon_secs: 600,
                central: 0.3,
                upper: 0.35,
            }],
            risk: Some(Risk {
                probability: 0.01,
                horizon_secs: 900,
                cause: "none".into(),
            }),
            kernel_errors: Vec::new(),
            percentile: None,
        }),
        probes: vec![ProbeReport {
            workload: format!("w{i}"),
            probe: "tcp".into(),
            runs: seq,
            failures: 0,
            consecutive_failures: 0,
            latency_ms: Some(1.5),
            latency_anomaly: 0.0,
            latency_alarms: 0,
            last_error: None,
        }],
    }
}

/// Issues `n` agent certificates (`sim-0000` …).
pub fn certificates(ca: &PemPair, n: usize) -> Vec<PemPair> {
    (0..n)
        .map(|i| {
            issue(
                ca,
                &format!("sim-{i:04}"),
                Role::Agent,
                Validity::days_from_now(2),
            )
            .unwrap()
        })
        .collect()
}

/// Runs one simulated agent against the coordinators at `addrs` until `until`, following
/// redirects to the leader; heartbeat round trips go to `samples`.
pub async fn agent(
    i: usize,
    endpoint: quinn::Endpoint,
    cert: PemPair,
    ca_pem: String,
    addrs: Vec<SocketAddr>,
    until: Instant,
    samples: Samples,
) {
    let cfg = client_config(
        &crate::rawclient::loaded_tls(&cert, &ca_pem),
        Role::Coordinator,
        CONTROL_ALPN,
        Duration::from_secs(10),
        None,
    )
    .unwrap();
    let mut next = addrs[i % addrs.len()];
    while Instant::now() < until {
        let Ok(Ok(conn)) = tokio::time::timeout(
            Duration::from_secs(5),
            endpoint
                .connect_with(cfg.clone(), next, COORDINATOR_SAN)
                .unwrap(),
        )
        .await
        else {
            next = addrs[(addrs.iter().position(|a| *a == next).unwrap_or(0) + 1) % addrs.len()];
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let r = session(i, &conn, until, &samples).await;
        if let (Err(_), Some(quinn::ConnectionError::ApplicationClosed(c))) =
            (&r, conn.close_reason())
        {
            if c.error_code == quinn::VarInt::from_u32(close::NOT_LEADER) {
                if let Some(a) = std::str::from_utf8(&c.reason)
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    next = a;
                    continue;
                }
            }
        }
        conn.close(close::SHUTDOWN.into(), b"done");
        if r.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn session(
    i: usize,
    conn: &quinn::Connection,
    until: Instant,
    samples: &Samples,
) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let reg = AgentMessage::Register(Register {
        agent_version: "sim".into(),
        telemetry: telemetry(i, 0),
        data_port: Some(7442),
        inventory: Inventory::default(),
        zone: Some(format!("zone-{}", i % 3)),
    });
    write_frame(&mut send, PROTOCOL_VERSION, &reg)
        .await
        .map_err(|e| e.to_string())?;
    match read_frame(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME)
        .await
        .map_err(|e| e.to_string())?
    {
        CoordinatorMessage::Registered { .. } => {}
        other => return Err(format!("{other:?}")),
    }
    // Spread the beats over the second.
    tokio::time::sleep(Duration::from_millis((i as u64 * 7919) % 1000)).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seq = 0;
    while Instant::now() < until {
        tick.tick().await;
        seq += 1;
        let hb = AgentMessage::Heartbeat(Heartbeat {
            seq,
            telemetry: telemetry(i, seq),
            inventory: (seq % 5 == 0).then(Inventory::default),
        });
        let t = Instant::now();
        write_frame(&mut send, PROTOCOL_VERSION, &hb)
            .await
            .map_err(|e| e.to_string())?;
        match read_frame(&mut recv, PROTOCOL_VERSION, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| e.to_string())?
        {
            CoordinatorMessage::HeartbeatAck { .. } => {}
            other => return Err(format!("{other:?}")),
        }
        samples
            .lock()
            .unwrap()
            .push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(())
}
