//! Parsers of the kernel's text files the host metrics come from, as pure functions over
//! the file's text (fixtures in the tests). Each returns raw readings — gauges as read,
//! counters as the kernel's running totals — keyed by a stable name.

use std::collections::HashMap;

/// Raw readings of one sample, by key.
pub type Raw = HashMap<String, f64>;

fn put(raw: &mut Raw, key: &str, value: f64) {
    raw.insert(key.to_owned(), value);
}

/// `/proc/stat`: the aggregate `cpu` line, in USER_HZ ticks.
pub fn stat(text: &str, raw: &mut Raw) {
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return;
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    put(raw, "cpu.user", at(0) + at(1));
    put(raw, "cpu.system", at(2) + at(5) + at(6));
    put(raw, "cpu.idle", at(3));
    put(raw, "cpu.iowait", at(4));
    put(raw, "cpu.steal", at(7));
    put(raw, "cpu.total", f.iter().take(8).sum());
}

/// `/proc/loadavg`.
pub fn loadavg(text: &str, raw: &mut Raw) {
    let mut it = text.split_whitespace();
    for key in ["load_1", "load_5", "load_15"] {
        if let Some(v) = it.next().and_then(|v| v.parse().ok()) {
            put(raw, key, v);
        }
    }
}

/// `/proc/meminfo`, in bytes.
pub fn meminfo(text: &str, raw: &mut Raw) {
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(v), unit) = (
            parts.next().and_then(|v| v.parse::<f64>().ok()),
            parts.next(),
        ) else {
            continue;
        };
        let bytes = if unit == Some("kB") { v * 1024.0 } else { v };
        put(raw, &format!("mem.{key}"), bytes);
    }
}

/// `/proc/vmstat`.
pub fn vmstat(text: &str, raw: &mut Raw) {
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            if matches!(k, "pswpin" | "pswpout") {
                if let Ok(v) = v.trim().parse() {
                    put(raw, &format!("vm.{k}"), v);
                }
            }
        }
    }
}

/// Whether a block device is a whole disk worth counting (not a partition, loop, ram or
/// device-mapper child counted twice).
fn counted_disk(name: &str) -> bool {
    let skip = ["loop", "ram", "zram", "dm-", "md", "sr", "fd"];
    if skip.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    let partition = name.starts_with("nvme") && name.contains('p')
        || !name.starts_with("nvme") && name.ends_with(|c: char| c.is_ascii_digit());
    !partition
}

/// `/proc/diskstats`: totals over whole disks, and the busiest disk's I/O time.
pub fn diskstats(text: &str, raw: &mut Raw) {
    let mut sums = [0.0f64; 8];
    let mut busiest = 0.0f64;
    let mut disks = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 14 || !counted_disk(f[2]) {
            continue;
        }
        let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        disks += 1;
        // reads, sectors read, ms reading, writes, sectors written, ms writing, in flight, ms doing I/O
        for (slot, i) in [3, 5, 6, 7, 9, 10, 11, 12].into_iter().enumerate() {
            sums[slot] += n(i);
        }
        busiest = busiest.max(n(12));
    }
    if disks == 0 {
        return;
    }
    let keys = [
        "disk.reads",
        "disk.sectors_read",
        "disk.ms_reading",
        "disk.writes",
        "disk.sectors_written",
        "disk.ms_writing",
        "disk.in_flight",
        "disk.ms_io",
    ];
    for (k, v) in keys.iter().zip(sums) {
        put(raw, k, v);
    }
    put(raw, "disk.ms_io_busiest", busiest);
}

/// `/proc/net/dev`: totals over every interface but `lo`.
pub fn netdev(text: &str, raw: &mut Raw) {
    let mut sums = [0.0f64; 4];
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() < 16 {
            continue;
        }
        sums[0] += f[0];
        sums[1] += f[8];
        sums[2] += f[1];
        sums[3] += f[9];
    }
    for (k, v) in [
        "net.rx_bytes",
        "net.tx_bytes",
        "net.rx_packets",
        "net.tx_packets",
    ]
    .iter()
    .zip(sums)
    {
        put(raw, k, v);
    }
}

/// `/proc/net/snmp` and `/proc/net/netstat`: pairs of header and value lines per protocol.
pub fn snmp_table(text: &str, raw: &mut Raw) {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks_exact(2) {
        let (Some((proto, names)), Some((_, values))) =
            (pair[0].split_once(':'), pair[1].split_once(':'))
        else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse() {
                put(raw, &format!("{proto}.{n}"), v);
            }
        }
    }
}

/// `/proc/net/sockstat`.
pub fn sockstat(text: &str, raw: &mut Raw) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("TCP:") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        for pair in f.chunks_exact(2) {
            if let Ok(v) = pair[1].parse() {
                put(raw, &format!("sockstat.tcp.{}", pair[0]), v);
            }
        }
    }
}

/// `/proc/pressure/{cpu,memory,io}`: the `avg10` of `some` and `full`.
pub fn pressure(resource: &str, text: &str, raw: &mut Raw) {
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(kind) = f.next() else { continue };
        if let Some(v) = f
            .find_map(|kv| kv.strip_prefix("avg10="))
            .and_then(|v| v.parse().ok())
        {
            put(raw, &format!("psi.{resource}.{kind}"), v);
        }
    }
}

/// `/proc/sys/fs/file-nr`: allocated handles.
pub fn file_nr(text: &str, raw: &mut Raw) {
    if let Some(v) = text.split_whitespace().next().and_then(|v| v.parse().ok()) {
        put(raw, "fds", v);
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
