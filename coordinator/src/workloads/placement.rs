//! Choosing a shadow host for a workload.
//!
//! Among the candidates (connected hosts, none cordoned, draining, near maintenance or in
//! trouble) other than the primary, in order: a host in another zone than the primary's
//! (when hosts carry zones: the shadow is there for when the primary's failure domain
//! fails); a healthy one (health score at least [`HEALTHY`], or not yet assessed); the
//! least loaded, where load is the larger of CPU and memory — memory as its p90 forecast
//! when that is higher than now — compared in coarse bands (so that small fluctuations do
//! not move shadows around); within a band, rendezvous hashing of (workload, host) decides,
//! which gives the same answer every time for the same candidates and moves few workloads
//! when hosts come and go.

/// A candidate host.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Host name.
    pub name: String,
    /// CPU busy share, 0–100.
    pub cpu_percent: f32,
    /// Memory in use as a share of total, 0–1.
    pub memory_share: f32,
    /// Its memory forecast's p90 bound within the horizon, as a share, if it has one.
    pub memory_forecast: Option<f32>,
    /// Its health score, if assessed.
    pub health: Option<u8>,
    /// Its failure domain, if it says.
    pub zone: Option<String>,
}

/// A shadow's health score should be at least this (the agents' default healthy level).
pub const HEALTHY: u8 = 80;

/// Width of a load band: hosts within one band count as equally loaded.
const BAND: f32 = 0.25;

fn band(c: &Candidate) -> u32 {
    let cpu = (c.cpu_percent / 100.0).clamp(0.0, 1.0);
    let mem = c
        .memory_share
        .max(c.memory_forecast.unwrap_or(0.0))
        .clamp(0.0, 1.0);
    // Truncation to a small band index is the point.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let b = (cpu.max(mem) / BAND) as u32;
    b
}

fn rendezvous(workload: &str, host: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(workload.as_bytes());
    h.update(&[0]);
    h.update(host.as_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Picks the shadow for `workload` running on `primary` (in `primary_zone`, if known), or
/// `None` if no other host is available.
pub fn pick_shadow(
    workload: &str,
    primary: &str,
    primary_zone: Option<&str>,
    candidates: &[Candidate],
) -> Option<String> {
    let same_zone = |c: &Candidate| primary_zone.is_some() && c.zone.as_deref() == primary_zone;
    let unhealthy = |c: &Candidate| c.health.is_some_and(|h| h < HEALTHY);
    candidates
        .iter()
        .filter(|c| c.name != primary)
        .min_by_key(|c| {
            (
                same_zone(c),
                unhealthy(c),
                band(c),
                std::cmp::Reverse(rendezvous(workload, &c.name)),
            )
        })
        .map(|c| c.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, cpu: f32, mem: f32) -> Candidate {
        Candidate {
            name: name.into(),
            cpu_percent: cpu,
            memory_share: mem,
            memory_forecast: None,
            health: None,
            zone: None,
        }
    }

    fn pick_shadow(w: &str, primary: &str, hosts: &[Candidate]) -> Option<String> {
        super::pick_shadow(w, primary, None, hosts)
    }

    #[test]
    fn another_zone_first_then_health_then_forecast_load() {
        let zoned = |name: &str, zone: &str, health: u8, forecast: f32| Candidate {
            zone: Some(zone.into()),
            health: Some(health),
            memory_forecast: Some(forecast),
            ..c(name, 5.0, 0.1)
        };
        // b shares the primary's zone: c, in another, though busier, wins.
        let hosts = [zoned("b", "z1", 95, 0.1), zoned("c", "z2", 95, 0.6)];
        assert_eq!(
            super::pick_shadow("w", "a", Some("z1"), &hosts),
            Some("c".into())
        );
        // Within other zones, a healthy host before an unhealthy one.
        let hosts = [zoned("c", "z2", 60, 0.1), zoned("d", "z3", 90, 0.6)];
        assert_eq!(
            super::pick_shadow("w", "a", Some("z1"), &hosts),
            Some("d".into())
        );
        // Memory forecast to fill counts as load although it is empty now.
        let hosts = [zoned("c", "z2", 90, 0.9), zoned("d", "z2", 90, 0.3)];
        for i in 0..20 {
            assert_eq!(
                super::pick_shadow(&format!("w{i}"), "a", Some("z1"), &hosts),
                Some("d".into())
            );
        }
        // Only the primary's zone left: still a shadow.
        let hosts = [zoned("b", "z1", 95, 0.1)];
        assert_eq!(
            super::pick_shadow("w", "a", Some("z1"), &hosts),
            Some("b".into())
        );
    }

    #[test]
    fn never_the_primary_and_none_when_alone() {
        assert_eq!(pick_shadow("w", "a", &[c("a", 0.0, 0.0)]), None);
        assert_eq!(
            pick_shadow("w", "a", &[c("a", 0.0, 0.0), c("b", 90.0, 0.9)]),
            Some("b".into())
        );
    }

    #[test]
    fn least_loaded_band_wins() {
        let hosts = [c("a", 0.0, 0.1), c("b", 95.0, 0.2), c("c", 10.0, 0.3)];
        assert_eq!(pick_shadow("w", "a", &hosts), Some("c".into()));
    }

    #[test]
    fn small_load_changes_and_order_do_not_reshuffle() {
        let mut hosts = vec![c("b", 5.0, 0.1), c("c", 6.0, 0.1), c("d", 7.0, 0.1)];
        let first = pick_shadow("w", "a", &hosts);
        hosts.reverse();
        hosts[0].cpu_percent = 12.0;
        assert_eq!(pick_shadow("w", "a", &hosts), first);
    }

    #[test]
    fn workloads_spread_over_equal_hosts() {
        let hosts = [c("b", 5.0, 0.1), c("c", 5.0, 0.1), c("d", 5.0, 0.1)];
        let picks: std::collections::HashSet<_> = (0..30)
            .filter_map(|i| pick_shadow(&format!("w{i}"), "a", &hosts))
            .collect();
        assert!(picks.len() >= 2, "{picks:?}");
    }
}
