//! The DPDK port layer on software devices: `net_ring` (TX loops back to RX)
//! and `net_null` (an endless source and a sink). One EAL per process, so all
//! cases share it and run one at a time.

use sekisho_dataplane::craft::{write_udp_frame, Flow};
use sekisho_dataplane::neighbour::NeighbourTable;
use sekisho_dataplane::pipeline::{Counter, Forwarder, Interface};
use sekisho_dataplane::port::dpdk::{Eal, EthPort, Mempool};
use sekisho_dataplane::port::{Batch, PacketBuf, Port};
use sekisho_dataplane::wire::MacAddr;
use sekisho_dataplane::worker::Worker;
use sekisho_dataplane::Side;
use std::sync::{Arc, Mutex, OnceLock};

struct Dpdk {
    eal: Eal,
    pool: Mempool,
}

fn dpdk() -> std::sync::MutexGuard<'static, Dpdk> {
    static DPDK: OnceLock<Mutex<Dpdk>> = OnceLock::new();
    DPDK.get_or_init(|| {
        let args: Vec<String> = ["test", "-l", "0", "--no-huge", "-m", "256", "--no-shconf", "--no-pci", "--log-level=lib.eal:error"]
            .into_iter()
            .chain(["--vdev=net_ring0", "--vdev=net_ring1", "--vdev=net_ring2", "--vdev=net_null0,size=128", "--vdev=net_null1"])
            .map(String::from)
            .collect();
        let eal = Eal::init(&args).expect("EAL init");
        let pool = eal.create_mempool("test_pool", 4095, 0, 2048).expect("mempool");
        Mutex::new(Dpdk { eal, pool })
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

fn start(d: &Dpdk, name: &str) -> EthPort {
    let id = d.eal.port_by_name(name).unwrap_or_else(|| panic!("{name} not probed: {:?}", d.eal.port_names()));
    EthPort::start(&d.eal, id, 1, 256, 256, &d.pool).expect("port start")
}

fn frame(seq: u64, len: usize) -> Vec<u8> {
    let flow = Flow { src: "203.0.113.1".parse().unwrap(), dst: "10.0.0.9".parse().unwrap(), src_port: 1, dst_port: 2 };
    let mut f = vec![0u8; len];
    write_udp_frame(&mut f, MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]), &flow, seq);
    f
}

/// Copies `frames` into fresh mbufs from `port`.
fn batch_of<P: Port>(port: &mut P, frames: &[Vec<u8>]) -> Batch<P::Buf> {
    let mut batch = Batch::new();
    for f in frames {
        let mut buf = port.alloc().expect("mbuf");
        assert!(buf.set_len(f.len()));
        buf.data_mut().copy_from_slice(f);
        batch.push(buf);
    }
    batch
}

#[test]
fn ring_port_loops_frames_back_unchanged_and_returns_every_mbuf() {
    let d = dpdk();
    let base = d.pool.in_use();
    {
        let port = start(&d, "net_ring0");
        let mut queue = port.queue(0, &d.pool);
        let frames: Vec<Vec<u8>> = (0..32).map(|i| frame(i, 60 + i as usize * 40)).collect();
        let mut tx = batch_of(&mut queue, &frames);
        assert_eq!(queue.tx_burst(&mut tx), 32);
        assert!(tx.is_empty());
        let mut rx = Batch::new();
        assert_eq!(queue.rx_burst(&mut rx), 32);
        for (buf, f) in rx.iter().zip(&frames) {
            assert_eq!(buf.data(), &f[..]);
            assert!(!buf.is_segmented());
        }
        assert_eq!(port.stats().tx_packets, 32);
    }
    assert_eq!(d.pool.in_use(), base, "mbufs leaked");
}

#[test]
fn null_port_is_a_source_and_a_sink() {
    let d = dpdk();
    let base = d.pool.in_use();
    {
        let port = start(&d, "net_null0");
        let mut queue = port.queue(0, &d.pool);
        let mut rx = Batch::new();
        assert_eq!(queue.rx_burst(&mut rx), 32);
        assert!(rx.iter().all(|b| b.data().len() == 128));
        assert_eq!(queue.tx_burst(&mut rx), 32, "the sink takes everything");
    }
    assert_eq!(d.pool.in_use(), base, "mbufs leaked");
}

#[test]
fn mbufs_refuse_lengths_beyond_their_room_and_pools_run_dry_cleanly() {
    let d = dpdk();
    let small = d.eal.create_mempool("tiny_pool", 63, 0, 256).expect("mempool");
    let mut held = Vec::new();
    while let Some(buf) = small.alloc() {
        held.push(buf);
    }
    assert_eq!(held.len(), 63);
    assert_eq!(small.in_use(), 63);
    assert!(held[0].set_len(256));
    assert!(!held[0].set_len(257 + 128), "beyond the data room");
    assert!(!held[0].set_len(70_000));
    drop(held);
    assert_eq!((small.in_use(), small.available()), (0, 63));
}

#[test]
fn worker_forwards_between_two_ring_ports() {
    let d = dpdk();
    let base = d.pool.in_use();
    {
        let (outside, inside) = (start(&d, "net_ring1"), start(&d, "net_ring2"));
        let peer = MacAddr([2, 0, 0, 0, 0, 0x99]);
        let interfaces = [
            Interface { ipv4: vec!["203.0.113.254/24".parse().unwrap()], ..Default::default() },
            Interface { ipv4: vec!["10.0.0.1/24".parse().unwrap()], ..Default::default() },
        ];
        let table = Arc::new(NeighbourTable::new([(Side::Inside, "10.0.0.9".parse().unwrap(), peer)]));
        let forwarder = Forwarder::new(interfaces, [outside.mac(), inside.mac()], table).with_bypass();
        let mut worker = Worker::new(outside.queue(0, &d.pool), inside.queue(0, &d.pool), forwarder);
        // A frame put on the outside ring arrives at the worker, which sends
        // it out of the inside ring; that ring loops it back to the inside RX
        // in the same poll, where it is not for us (it is for the peer).
        let mut f = frame(1, 200);
        f[0..6].copy_from_slice(&outside.mac().0);
        let mut tx = batch_of(&mut worker.ports[0], &[f]);
        assert_eq!(worker.ports[0].tx_burst(&mut tx), 1);
        worker.poll(1);
        let c = &worker.forwarder.counters;
        assert_eq!(c.get(Counter::Forwarded), 1, "{}", c.to_json());
        assert_eq!((c.get(Counter::RxPackets), c.get(Counter::TxPackets)), (2, 1));
        assert_eq!(c.dropped(sekisho_dataplane::pipeline::DropReason::NotForUs), 1);
        assert_eq!(c.get(Counter::TxBytes), 200);
        assert_eq!(inside.stats().tx_packets, 1);
    }
    assert_eq!(d.pool.in_use(), base, "mbufs leaked");
}

#[test]
fn esp_steering_is_refused_cleanly_by_a_device_without_rte_flow() {
    let d = dpdk();
    let port = start(&d, "net_null1");
    let reason = port.steer_esp(0xfc00_0000, &[(0, 0), (1 << 26, 1)]).expect_err("net_null has no rte_flow");
    assert!(!reason.is_empty());
}
