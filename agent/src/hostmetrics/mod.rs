//! Host metrics: the schema's metrics sampled from the kernel's files (procfs, sysfs).
//!
//! [`Sampler::sample`] reads every source once and returns one reading per schema metric,
//! in schema order: a value, or why there is none (a file this kernel does not have, a
//! counter that went back, the first sample of a rate). Nothing here panics on what the
//! kernel returns. The parsing ([`parse`]) and the arithmetic ([`compute`]) are pure.

pub mod cgroup_memory;
pub mod compute;
pub mod history;
pub mod kmsg;
pub mod parse;
pub mod schema;

use std::collections::HashMap;
use std::time::Instant;

use cgroup_memory::MemoryCgroup;
use compute::Reading;
use parse::Raw;
use schema::Schema;

/// One sample: a reading per schema metric, in schema order.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The readings.
    pub readings: Vec<Reading>,
}

/// Samples the host; keeps the previous raw readings for rates.
#[derive(Debug)]
pub struct Sampler {
    schema: Schema,
    prev: Option<(Instant, Raw)>,
    kmsg: kmsg::KernelLog,
    memory: Option<MemoryCgroup>,
}

type Reader = fn(&str, &mut Raw);

/// The files read each sample, with their parsers.
const FILES: &[(&str, Reader)] = &[
    ("/proc/stat", parse::stat),
    ("/proc/loadavg", parse::loadavg),
    ("/proc/meminfo", parse::meminfo),
    ("/proc/vmstat", parse::vmstat),
    ("/proc/diskstats", parse::diskstats),
    ("/proc/net/dev", parse::netdev),
    ("/proc/net/snmp", parse::snmp_table),
    ("/proc/net/netstat", parse::snmp_table),
    ("/proc/net/sockstat", parse::sockstat),
    ("/proc/sys/fs/file-nr", parse::file_nr),
    ("/proc/pressure/cpu", |t, r| parse::pressure("cpu", t, r)),
    ("/proc/pressure/memory", |t, r| {
        parse::pressure("memory", t, r)
    }),
    ("/proc/pressure/io", |t, r| parse::pressure("io", t, r)),
];

/// Sums `name` files under each `dir/<prefix>*` directory; `None` if there are none.
fn sum_sysfs(dir: &str, prefix: &str, name: &str, scale: f64, max: bool) -> Option<f64> {
    let mut out: Option<f64> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let Some(v) = std::fs::read_to_string(e.path().join(name))
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
        else {
            continue;
        };
        let v = v * scale;
        out = Some(match out {
            None => v,
            Some(o) if max => o.max(v),
            Some(o) => o + v,
        });
    }
    out
}

/// The share of space in use on the fullest writable block-device filesystem (as `df`
/// counts it: used / (used + available to unprivileged users)).
fn fullest_filesystem() -> Option<f64> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut fullest: Option<f64> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || !f[0].starts_with("/dev/") || f[3].split(',').any(|o| o == "ro") {
            continue;
        }
        let path = f[1].replace("\\040", " ");
        let Ok(st) = nix::sys::statvfs::statvfs(path.as_str()) else {
            continue;
        };
        let used = st.blocks().saturating_sub(st.blocks_free()) as f64;
        let total = used + st.blocks_available() as f64;
        if total > 0.0 {
            let u = used / total;
            fullest = Some(fullest.map_or(u, |o: f64| o.max(u)));
        }
    }
    fullest
}

impl Sampler {
    /// A sampler for `schema`; the host's memory is `memory`'s when given (see
    /// [`cgroup_memory`]), else the machine's.
    pub fn new(schema: Schema, memory: Option<MemoryCgroup>) -> Self {
        Sampler {
            schema,
            prev: None,
            kmsg: kmsg::KernelLog::open(),
            memory,
        }
    }

    /// Kernel errors of each kind ([`kmsg::KernelError::ALL`] order) in the last hour.
    pub fn recent_kernel_errors(&mut self) -> [u32; 3] {
        self.kmsg.recent(kmsg::now_usec())
    }

    /// The schema it samples.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Reads every source and returns this step's readings.
    pub fn sample(&mut self) -> Sample {
        let now = Instant::now();
        let mut raw = Raw::new();
        let mut unreadable: HashMap<&str, String> = HashMap::new();
        for (path, parser) in FILES {
            match std::fs::read_to_string(path) {
                Ok(text) => parser(&text, &mut raw),
                Err(e) => {
                    unreadable.insert(path, format!("cannot read {path}: {e}"));
                }
            }
        }
        if let Some(cg) = &self.memory {
            let machine = raw.get("mem.MemTotal").copied().unwrap_or(f64::MAX) as u64;
            match cg.read(machine) {
                Ok(m) => {
                    let free = (m.limit - m.used) as f64;
                    raw.insert("mem.MemTotal".into(), m.limit as f64);
                    raw.insert("mem.MemAvailable".into(), free);
                    raw.insert("mem.MemFree".into(), free);
                    raw.insert("mem.Buffers".into(), 0.0);
                    raw.insert("mem.Cached".into(), 0.0);
                }
                Err(why) => {
                    unreadable.insert("/proc/meminfo", why);
                }
            }
        }
        let procs = crate::procs::all().len();
        if procs > 0 {
            raw.insert("procs".into(), procs as f64);
        }
        let thermal = "/sys/class/thermal";
        match sum_sysfs(thermal, "thermal_zone", "temp", 0.001, true) {
            Some(t) => {
                raw.insert("temp_max".into(), t);
            }
            None => {
                unreadable.insert(thermal, "no thermal zones exposed".into());
            }
        }
        let edac = "/sys/devices/system/edac/mc";
        match (
            sum_sysfs(edac, "mc", "ce_count", 1.0, false),
            sum_sysfs(edac, "mc", "ue_count", 1.0, false),
        ) {
            (Some(ce), Some(ue)) => {
                raw.insert("edac.ce".into(), ce);
                raw.insert("edac.ue".into(), ue);
            }
            _ => {
                unreadable.insert(edac, "no EDAC memory controllers exposed".into());
            }
        }
        match self.kmsg.poll().and_then(|()| self.kmsg.totals()) {
            Ok(totals) => {
                for (kind, n) in kmsg::KernelError::ALL.iter().zip(totals) {
                    raw.insert(format!("kmsg.{}", kind.name()), n as f64);
                }
            }
            Err(why) => {
                unreadable.insert("/dev/kmsg", why);
            }
        }
        match fullest_filesystem() {
            Some(u) => {
                raw.insert("fs_used".into(), u);
            }
            None => {
                unreadable.insert(
                    "/proc/self/mounts",
                    "no writable block-device filesystem mounted".into(),
                );
            }
        }
        let (prev, dt) = match &self.prev {
            Some((t, r)) => (Some(r), now.duration_since(*t).as_secs_f64()),
            None => (None, 0.0),
        };
        let readings = self
            .schema
            .metric
            .iter()
            .map(|m| match unreadable.get(m.source.as_str()) {
                Some(why) => Err(why.clone()),
                None => compute::metric(&m.name, prev, &raw, dt),
            })
            .collect();
        self.prev = Some((now, raw));
        Sample { readings }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_metric_is_sampled_here_or_says_why_not() {
        let mut s = Sampler::new(schema::shipped().unwrap(), None);
        let first = s.sample();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let second = s.sample();
        let n = s.schema().metric.len();
        assert_eq!(second.readings.len(), n);
        for (m, r) in s.schema().metric.iter().zip(&second.readings) {
            if let Err(why) = r {
                assert!(!why.is_empty(), "{} unavailable without a reason", m.name);
            }
        }
        // What every Linux host has.
        for name in [
            "cpu_r",
            "load_1",
            "mem_u",
            "total_mem",
            "procs",
            "in_segs",
            "eth1_fi",
        ] {
            let i = s
                .schema()
                .metric
                .iter()
                .position(|m| m.name == name)
                .unwrap();
            let v = second.readings[i]
                .as_ref()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(v.is_finite() && *v >= 0.0, "{name} = {v}");
        }
        // Rates need two samples: the first says so.
        let i = s
            .schema()
            .metric
            .iter()
            .position(|m| m.name == "in_segs")
            .unwrap();
        assert!(first.readings[i]
            .as_ref()
            .unwrap_err()
            .contains("second sample"));
    }
}
