//! Choosing a shadow host for a workload.
//!
//! Among connected hosts other than the primary, the least loaded wins, where load is
//! compared in coarse bands (so that small fluctuations do not move shadows around);
//! within a band, rendezvous hashing of (workload, host) decides, which gives the same
//! answer every time for the same candidates and moves few workloads when hosts come
//! and go.

/// A candidate host.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Host name.
    pub name: String,
    /// CPU busy share, 0–100.
    pub cpu_percent: f32,
    /// Memory in use as a share of total, 0–1.
    pub memory_share: f32,
}

/// Width of a load band: hosts within one band count as equally loaded.
const BAND: f32 = 0.25;

fn band(c: &Candidate) -> u32 {
    let cpu = (c.cpu_percent / 100.0).clamp(0.0, 1.0);
    let mem = c.memory_share.clamp(0.0, 1.0);
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

/// Picks the shadow for `workload` running on `primary`, or `None` if no other host is
/// available.
pub fn pick_shadow(workload: &str, primary: &str, candidates: &[Candidate]) -> Option<String> {
    candidates
        .iter()
        .filter(|c| c.name != primary)
        .min_by_key(|c| (band(c), std::cmp::Reverse(rendezvous(workload, &c.name))))
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
        }
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
