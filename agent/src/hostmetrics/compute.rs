//! Turning two consecutive raw samples into the schema's metrics: gauges as read, counters
//! as per-second rates (a counter that went back — a wrap or a reset — gives no value for
//! that step), and the derived shares and latencies. Pure: no I/O.

use super::parse::Raw;

/// A metric's value for one step, or why there is none.
pub type Reading = Result<f64, String>;

struct Step<'a> {
    prev: Option<&'a Raw>,
    cur: &'a Raw,
    dt: f64,
}

impl Step<'_> {
    fn gauge(&self, key: &str) -> Reading {
        self.cur
            .get(key)
            .copied()
            .ok_or_else(|| format!("{key} not exposed by this kernel"))
    }

    fn delta(&self, key: &str) -> Reading {
        let prev = self.prev.ok_or("needs a second sample")?;
        let (a, b) = (prev.get(key), self.cur.get(key));
        match (a, b) {
            (Some(a), Some(b)) if b >= a => Ok(b - a),
            (Some(_), Some(_)) => Err(format!("{key} went back (counter wrapped or reset)")),
            _ => Err(format!("{key} not exposed by this kernel")),
        }
    }

    fn rate(&self, key: &str) -> Reading {
        let d = self.delta(key)?;
        if self.dt <= 0.0 {
            return Err("no time passed between samples".into());
        }
        Ok(d / self.dt)
    }

    fn ratio_of_deltas(&self, num: &str, den: &str) -> Reading {
        let d = self.delta(den)?;
        Ok(if d > 0.0 { self.delta(num)? / d } else { 0.0 })
    }
}

/// The value of metric `name` from `prev` and `cur`, `dt` seconds apart.
pub fn metric(name: &str, prev: Option<&Raw>, cur: &Raw, dt: f64) -> Reading {
    let s = Step { prev, cur, dt };
    let mem = |k: &str| s.gauge(&format!("mem.{k}"));
    let v = match name {
        "cpu_r" => {
            1.0 - s.ratio_of_deltas("cpu.idle", "cpu.total")?
                - s.ratio_of_deltas("cpu.iowait", "cpu.total")?
        }
        "cpu_user" => s.ratio_of_deltas("cpu.user", "cpu.total")?,
        "cpu_system" => s.ratio_of_deltas("cpu.system", "cpu.total")?,
        "cpu_iowait" => s.ratio_of_deltas("cpu.iowait", "cpu.total")?,
        "cpu_steal" => s.ratio_of_deltas("cpu.steal", "cpu.total")?,
        "load_1" | "load_5" | "load_15" => s.gauge(name)?,
        "mem_shmem" => mem("Shmem")?,
        "total_mem" => mem("MemTotal")?,
        "mem_available" => mem("MemAvailable")?,
        "mem_u" => 1.0 - mem("MemAvailable")? / mem("MemTotal")?.max(1.0),
        "mem_u_e" => {
            let total = mem("MemTotal")?.max(1.0);
            (total - mem("MemFree")? - mem("Buffers")? - mem("Cached")?) / total
        }
        "disk_q" => s.gauge("disk.in_flight")?,
        "disk_r" => s.rate("disk.reads")?,
        "disk_w" => s.rate("disk.writes")?,
        "disk_rb" => s.rate("disk.sectors_read")? * 512.0,
        "disk_wb" => s.rate("disk.sectors_written")? * 512.0,
        "disk_svc" => {
            let ios = s.delta("disk.reads")? + s.delta("disk.writes")?;
            if ios > 0.0 {
                s.delta("disk.ms_io")? / ios
            } else {
                0.0
            }
        }
        "disk_wa" => s.ratio_of_deltas("disk.ms_writing", "disk.writes")?,
        "disk_u" => (s.rate("disk.ms_io_busiest")? / 1000.0).min(1.0),
        "si" => s.rate("vm.pswpin")?,
        "so" => s.rate("vm.pswpout")?,
        "eth1_fi" => s.rate("net.rx_bytes")?,
        "eth1_fo" => s.rate("net.tx_bytes")?,
        "eth1_pi" => s.rate("net.rx_packets")?,
        "eth1_po" => s.rate("net.tx_packets")?,
        "tcp_tw" => s.gauge("sockstat.tcp.tw")?,
        "tcp_use" => s.gauge("sockstat.tcp.inuse")?,
        "active_opens" => s.rate("Tcp.ActiveOpens")?,
        "passive_opens" => s.rate("Tcp.PassiveOpens")?,
        "curr_estab" => s.gauge("Tcp.CurrEstab")?,
        "in_errs" => s.rate("Tcp.InErrs")?,
        "in_segs" => s.rate("Tcp.InSegs")?,
        "out_segs" => s.rate("Tcp.OutSegs")?,
        "out_rsts" => s.rate("Tcp.OutRsts")?,
        "retransegs" => s.rate("Tcp.RetransSegs")?,
        "listen_overflows" => s.rate("TcpExt.ListenOverflows")?,
        "tcp_timeouts" => s.rate("TcpExt.TCPTimeouts")?,
        "udp_in_dg" => s.rate("Udp.InDatagrams")?,
        "udp_out_dg" => s.rate("Udp.OutDatagrams")?,
        "udp_rcv_buf_errs" => s.rate("Udp.RcvbufErrors")?,
        "udp_snd_buf_errs" => s.rate("Udp.SndbufErrors")?,
        "psi_cpu_some" => s.gauge("psi.cpu.some")?,
        "psi_mem_some" => s.gauge("psi.memory.some")?,
        "psi_mem_full" => s.gauge("psi.memory.full")?,
        "psi_io_some" => s.gauge("psi.io.some")?,
        "psi_io_full" => s.gauge("psi.io.full")?,
        "fds" | "procs" | "temp_max" => s.gauge(name)?,
        "edac_ce" => s.rate("edac.ce")?,
        "edac_ue" => s.rate("edac.ue")?,
        "kernel_mce" => s.rate("kmsg.mce")?,
        "kernel_edac" => s.rate("kmsg.edac")?,
        "kernel_io_errors" => s.rate("kmsg.io")?,
        "fs_used" => s.gauge("fs_used")?,
        other => return Err(format!("this agent has no collector for {other:?}")),
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{name} computed as {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, f64)]) -> Raw {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn counters_become_rates_and_a_reset_gives_no_value() {
        let a = raw(&[("Tcp.InSegs", 100.0)]);
        let b = raw(&[("Tcp.InSegs", 300.0)]);
        assert_eq!(metric("in_segs", Some(&a), &b, 2.0), Ok(100.0));
        let reset = raw(&[("Tcp.InSegs", 5.0)]);
        let e = metric("in_segs", Some(&b), &reset, 1.0).unwrap_err();
        assert!(e.contains("went back"), "{e}");
        assert!(metric("in_segs", None, &b, 1.0)
            .unwrap_err()
            .contains("second sample"));
    }

    #[test]
    fn cpu_shares_come_from_tick_deltas() {
        let a = raw(&[
            ("cpu.idle", 100.0),
            ("cpu.iowait", 0.0),
            ("cpu.total", 200.0),
            ("cpu.user", 100.0),
        ]);
        let b = raw(&[
            ("cpu.idle", 150.0),
            ("cpu.iowait", 10.0),
            ("cpu.total", 300.0),
            ("cpu.user", 140.0),
        ]);
        assert!((metric("cpu_r", Some(&a), &b, 1.0).unwrap() - 0.4).abs() < 1e-9);
        assert!((metric("cpu_user", Some(&a), &b, 1.0).unwrap() - 0.4).abs() < 1e-9);
    }

    #[test]
    fn missing_sources_and_unknown_metrics_say_why() {
        let empty = Raw::new();
        assert!(metric("psi_io_some", None, &empty, 1.0)
            .unwrap_err()
            .contains("not exposed"));
        assert!(metric("warp_core", None, &empty, 1.0)
            .unwrap_err()
            .contains("no collector"));
        let zero = raw(&[("mem.MemAvailable", 0.0), ("mem.MemTotal", 0.0)]);
        assert!(
            metric("mem_u", None, &zero, 1.0).is_ok(),
            "no division by zero"
        );
    }
}
