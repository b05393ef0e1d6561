//! Parsers against fixtures in the kernel's formats.

use super::*;

#[test]
fn cpu_ticks_are_grouped() {
    let mut r = Raw::new();
    stat(
        "cpu  10 2 30 400 5 6 7 8 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n",
        &mut r,
    );
    assert_eq!(r["cpu.user"], 12.0);
    assert_eq!(r["cpu.system"], 43.0);
    assert_eq!(r["cpu.iowait"], 5.0);
    assert_eq!(r["cpu.steal"], 8.0);
    assert_eq!(r["cpu.total"], 468.0);
}

#[test]
fn meminfo_is_in_bytes() {
    let mut r = Raw::new();
    meminfo(
        "MemTotal:       16384 kB\nShmem:  2 kB\nHugePages_Total:       0\n",
        &mut r,
    );
    assert_eq!(r["mem.MemTotal"], 16384.0 * 1024.0);
    assert_eq!(r["mem.Shmem"], 2048.0);
    assert_eq!(r["mem.HugePages_Total"], 0.0);
}

#[test]
fn diskstats_count_whole_disks_only() {
    let text = "\
 254       0 vda 100 0 800 50 200 0 1600 70 1 120 0 0 0 0 0 0
 254       1 vda1 90 0 700 40 190 0 1500 60 0 110 0 0 0 0 0 0
   7       0 loop0 5 0 10 1 0 0 0 0 0 1 0 0 0 0
 259       0 nvme0n1 10 0 80 5 20 0 160 7 2 30 0 0 0 0 0 0
 259       1 nvme0n1p1 9 0 70 4 19 0 150 6 0 20 0 0 0 0 0 0
";
    let mut r = Raw::new();
    diskstats(text, &mut r);
    assert_eq!(r["disk.reads"], 110.0);
    assert_eq!(r["disk.sectors_written"], 1760.0);
    assert_eq!(r["disk.in_flight"], 3.0);
    assert_eq!(r["disk.ms_io_busiest"], 120.0);
}

#[test]
fn net_dev_skips_loopback() {
    let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0
  eth0: 500 5 0 0 0 0 0 0 700 7 0 0 0 0 0 0
";
    let mut r = Raw::new();
    netdev(text, &mut r);
    assert_eq!(r["net.rx_bytes"], 500.0);
    assert_eq!(r["net.tx_packets"], 7.0);
}

#[test]
fn snmp_sockstat_pressure_and_file_nr() {
    let mut r = Raw::new();
    snmp_table(
        "Tcp: RtoAlgorithm ActiveOpens CurrEstab\nTcp: 1 42 3\nUdp: InDatagrams\nUdp: 9\n",
        &mut r,
    );
    assert_eq!(r["Tcp.ActiveOpens"], 42.0);
    assert_eq!(r["Udp.InDatagrams"], 9.0);
    sockstat(
        "sockets: used 5\nTCP: inuse 4 orphan 0 tw 2 alloc 6 mem 1\n",
        &mut r,
    );
    assert_eq!(r["sockstat.tcp.tw"], 2.0);
    pressure(
        "io",
        "some avg10=1.50 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=1\n",
        &mut r,
    );
    assert_eq!(r["psi.io.some"], 1.5);
    assert_eq!(r["psi.io.full"], 0.25);
    file_nr("1024\t0\t9223372036854775807\n", &mut r);
    assert_eq!(r["fds"], 1024.0);
}
