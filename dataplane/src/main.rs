//! `sekisho-dataplane`: the DPDK process. `run` forwards packets between the
//! configured ports until SIGINT/SIGTERM; `check` validates a config; `stats`
//! reads the counters of a running (or finished) dataplane.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sekisho_dataplane::config::Config;
use sekisho_dataplane::neighbour::NeighbourTable;
use sekisho_dataplane::pipeline::{CounterBlock, Forwarder};
use sekisho_dataplane::port::dpdk::{Eal, EthPort, Mbuf, Mempool};
use sekisho_dataplane::shm::stats::{self, StatsArea, STATE_STOPPED};
use sekisho_dataplane::worker::{Handoff, Worker, HANDOFF_RING};
use sekisho_dataplane::nat::{NatCore, NatEvent};
use sekisho_dataplane::shm::messages::{TenantParts, ToControl, ToDataplane, CONTROL_MESSAGE_BYTES, FIXED_LEN};
use sekisho_dataplane::policy::Policy;
use sekisho_dataplane::sad::RouteTable;
use sekisho_dataplane::shm::sequences::SequenceLog;
use sekisho_dataplane::tables::{Change, TableManager};
use sekisho_dataplane::worker::{Task, Tasks};
use sekisho_dataplane::esp::sa::Expiry;
use sekisho_dataplane::shm::ring;
use sekisho_dataplane::pipeline::Event;
use std::io::Write;
use sekisho_dataplane::sad::SaTable;
use crossbeam_queue::ArrayQueue;
use std::sync::Mutex;

/// SA lifetime events waiting for the manager thread.
const EVENT_QUEUE: usize = 65536;
/// Punt rings: room for a frame of a full mbuf and the message header, 1,024 deep.
const PUNT_MESSAGE_BYTES: usize = 2048 + 64;
const PUNT_SLOTS: u64 = 1024;
/// The events ring: SA lifetime events, 4,096 deep.
const EVENT_MESSAGE_BYTES: usize = 64;
const EVENT_SLOTS: u64 = 4096;
/// The control ring: tunnels (JSON) and IKE messages to send, 1,024 deep.
const CONTROL_SLOTS: u64 = 1024;
/// Outbound SAs per worker whose sequence numbers are kept across restarts.
const SEQUENCE_SLOTS: usize = 1 << 16;
/// Tasks waiting for each worker (table updates, IKE packets to send).
const TASK_QUEUE: usize = 4096;
/// How long the manager waits for a worker to take its part of a change.
const TASK_WAIT: Duration = Duration::from_secs(2);
use sekisho_dataplane::Side;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sekisho-dataplane", version, about = "Sekisho's DPDK dataplane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dataplane with a configuration file until SIGINT or SIGTERM.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a configuration file and exit (0 if usable).
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print the per-core counters of the dataplane using RUN_DIR.
    Stats {
        #[arg(long, default_value = "/run/sekisho")]
        run_dir: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Repeat every SECONDS with rates, until interrupted.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<f64>,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colours for a terminal only: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => Config::load(&config).map_err(Into::into).and_then(|c| run(&c)),
        Command::Check { config } => check(&config),
        Command::Stats { run_dir, json, watch } => show_stats(&run_dir.join("stats"), json, watch),
    };
    if let Err(err) = result {
        eprintln!("sekisho-dataplane: error: {err:#}");
        std::process::exit(2);
    }
}

/// CPUs this machine has online, from `/sys/devices/system/cpu/online` ("0-3,6").
fn online_cpus() -> Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").context("reading the online CPU list")?;
    let mut cpus = Vec::new();
    for range in text.trim().split(',').filter(|r| !r.is_empty()) {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        cpus.extend(lo.parse::<u32>()?..=hi.parse::<u32>()?);
    }
    Ok(cpus)
}

/// Fails early, with the fix, where EAL would fail late or obscurely.
fn preflight(config: &Config) -> Result<()> {
    let cpus = online_cpus()?;
    let d = &config.dataplane;
    for (field, lcore) in std::iter::once(("dataplane.main_lcore", d.main_lcore)).chain(d.workers.iter().map(|&w| ("dataplane.workers", w))) {
        if !cpus.contains(&lcore) {
            bail!("{field}: core {lcore} is out of range: this machine's online cores are {cpus:?}");
        }
    }
    if !d.eal_args.iter().any(|a| a == "--no-huge") {
        let free: u64 = std::fs::read_dir("/sys/kernel/mm/hugepages")
            .map(|dirs| {
                dirs.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("free_hugepages")).ok())
                    .filter_map(|s| s.trim().parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        if free == 0 {
            bail!("no free hugepages: reserve some (echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages) or pass --no-huge in dataplane.eal_args");
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        if !mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs")) {
            bail!("no hugetlbfs is mounted: mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages");
        }
    }
    Ok(())
}

fn eal_args(config: &Config) -> Vec<String> {
    let d = &config.dataplane;
    let lcores: Vec<String> = std::iter::once(d.main_lcore).chain(d.workers.iter().copied()).map(|l| l.to_string()).collect();
    let mut args = vec!["sekisho-dataplane".to_owned(), "-l".to_owned(), lcores.join(","), "--main-lcore".to_owned(), d.main_lcore.to_string()];
    let ports = [&config.ports.outside, &config.ports.inside];
    if !ports.iter().any(|p| p.is_pci()) {
        args.push("--no-pci".to_owned());
    }
    // PCI devices are allow-listed here; vdevs are probed one by one after
    // start-up, so that a bad one is reported with the port it belongs to.
    for port in ports.iter().filter(|p| p.is_pci()) {
        args.extend(["-a".to_owned(), port.device.clone()]);
    }
    if !d.eal_args.iter().any(|a| a.starts_with("--file-prefix")) {
        args.push("--file-prefix=sekisho".to_owned());
    }
    args.extend(d.eal_args.iter().cloned());
    args
}

fn start_port(eal: &Eal, config: &Config, side: Side, pool: &Mempool) -> Result<EthPort> {
    let port = config.port(side);
    let name = port.device_name();
    if !port.is_pci() {
        eal.probe(&port.device).with_context(|| format!("ports.{side}.device"))?;
    }
    let Some(id) = eal.port_by_name(&name) else {
        bail!("ports.{side}.device: DPDK has no port named '{name}' (device \"{}\"); the ports it found are {:?}", port.device, eal.port_names());
    };
    let d = &config.dataplane;
    let eth = EthPort::start(eal, id, d.workers.len() as u16, d.rx_descriptors, d.tx_descriptors, pool).with_context(|| format!("ports.{side}"))?;
    tracing::info!(%side, port = id, name = eth.name(), mac = %eth.mac(), rss = eth.rss(), link_up = eth.link_up(), "port started");
    if d.workers.len() > 1 && !eth.rss() {
        tracing::warn!(%side, "device has no RSS: each queue gets what the peer sends to it");
    }
    if side == Side::Outside && d.workers.len() > 1 {
        // Inbound SPIs name their owner worker in their top bits: where the
        // NIC can match ESP, it delivers each SA to its owner's queue.
        let shift = sekisho_dataplane::sad::GENERATION_BITS + sekisho_dataplane::sad::SLOT_BITS;
        let rules: Vec<(u32, u16)> = (0..d.workers.len() as u32).map(|w| (w << shift, w as u16)).collect();
        match eth.steer_esp(u32::MAX << shift, &rules) {
            Ok(n) => tracing::info!(rules = n, "ESP steered to each SA's owner worker by SPI"),
            Err(reason) => tracing::info!(%reason, "the NIC cannot steer ESP by SPI: packets reaching another worker are handed to the owner"),
        }
    }
    Ok(eth)
}

fn run(config: &Config) -> Result<()> {
    preflight(config)?;
    let eal = Eal::init(&eal_args(config))?;
    let d = &config.dataplane;
    let pool = eal.create_mempool("sekisho_mbufs", d.mempool_size, d.mempool_cache, 2048)?;
    let ports = [start_port(&eal, config, Side::Outside, &pool)?, start_port(&eal, config, Side::Inside, &pool)?];
    let statics = [Side::Outside, Side::Inside]
        .into_iter()
        .flat_map(|side| config.port(side).neighbours.iter().map(move |n| (side, n.ip, n.mac)));
    let neighbours = Arc::new(NeighbourTable::new(statics));
    let stats_path = d.run_dir.join("stats");
    let stats = StatsArea::create(&stats_path, &d.workers, d.mempool_size).with_context(|| format!("creating {}", stats_path.display()))?;
    // One ring per worker for the packets the control process answers (IKE);
    // the control process reads them when it runs, and they wait (or fill) until then.
    let mut punt_rings = Vec::new();
    for index in 0..d.workers.len() {
        let path = d.run_dir.join(format!("punt-{index}.ring"));
        ring::create(&path, PUNT_MESSAGE_BYTES, PUNT_SLOTS).with_context(|| format!("creating {}", path.display()))?;
        punt_rings.push(Some(ring::Producer::open(&path).with_context(|| format!("opening {}", path.display()))?));
    }
    // SA lifetime events for the control process (rekey at soft, delete at hard).
    let events_path = d.run_dir.join("events.ring");
    ring::create(&events_path, EVENT_MESSAGE_BYTES, EVENT_SLOTS).with_context(|| format!("creating {}", events_path.display()))?;
    let mut events_ring = ring::Producer::open(&events_path).with_context(|| format!("opening {}", events_path.display()))?;
    // Tunnels and IKE packets from the control process.
    let control_path = d.run_dir.join("control.ring");
    ring::create(&control_path, CONTROL_MESSAGE_BYTES, CONTROL_SLOTS).with_context(|| format!("creating {}", control_path.display()))?;
    let mut control_ring = ring::Consumer::open(&control_path).with_context(|| format!("opening {}", control_path.display()))?;
    tracing::info!(dir = %d.run_dir.display(), "IKE packets for the control process go to punt-<worker>.ring there, SA events to events.ring; tunnels come from control.ring");

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let in_use_before = pool.in_use();
    tracing::info!(workers = ?d.workers, stats = %stats_path.display(), mbufs_in_use = in_use_before, "forwarding");

    let policy = config.policy().map_err(|(field, message)| anyhow::anyhow!("{field}: {message}"))?.map(Arc::new);
    let tables = config.tables(policy.as_deref()).map_err(|(field, message)| anyhow::anyhow!("{field}: {message}"))?;
    let route_table = Arc::new(RouteTable::new(tables.routes));
    let mut table_manager = TableManager::new(&config.tunnels, d.workers.len(), config.outside_addrs(), policy.clone())
        .map_err(|(field, message)| anyhow::anyhow!("{field}: {message}"))?;
    let tasks: Vec<Arc<Tasks>> = (0..d.workers.len()).map(|_| Arc::new(Tasks::new(TASK_QUEUE))).collect();
    let mut running_policy = policy.clone();
    let mut tenant_parts = TenantParts::default();
    // Each worker's outbound sequence numbers, kept for the next run.
    let mut sequence_logs = Vec::new();
    let mut recorded = std::collections::HashMap::new();
    for index in 0..d.workers.len() {
        let path = d.run_dir.join(format!("seq-{index}"));
        let (log, previous) = SequenceLog::open(&path, SEQUENCE_SLOTS).with_context(|| format!("opening {}", path.display()))?;
        recorded.extend(previous);
        sequence_logs.push(Some(log));
    }
    if !recorded.is_empty() {
        tracing::info!(sas = recorded.len(), "outbound sequence numbers of the previous run: SAs installed again resume past them");
    }
    table_manager.resume_sequences(recorded);
    // Port-block loans and returns (RFC 7422) and logged sessions, one JSON line each.
    let nat_log_path = d.run_dir.join("nat.jsonl");
    let mut nat_log = match &policy {
        Some(_) => Some(
            std::fs::OpenOptions::new().create(true).append(true).open(&nat_log_path).with_context(|| format!("opening {}", nat_log_path.display()))?,
        ),
        None => None,
    };
    // Blocks lent before are all back now (a reader of the log starts over here).
    if let Some(log) = &mut nat_log {
        writeln!(log, "{}", serde_json::json!({"unix_ms": sekisho_dataplane::nat::ports::unix_ms(), "event": "dataplane_started"})).with_context(|| format!("writing {}", nat_log_path.display()))?;
    }
    let settings = config.esp.settings();
    for (name, spis) in &tables.inbound_spis {
        let spis: Vec<String> = spis.iter().map(|s| format!("{s:#010x}")).collect();
        tracing::info!(tunnel = %name, inbound_spis = ?spis, "static tunnel");
    }
    let mut sa_tables = tables.cores.into_iter();
    // Packets for an SA owned by another worker travel to it through a ring.
    let handoff = Arc::new(Handoff::<Mbuf>::new(d.workers.len(), HANDOFF_RING));
    let events = Arc::new(ArrayQueue::<Event>::new(EVENT_QUEUE));
    // Each worker's per-SA counters and NAT use, handed over as it stops.
    let sa_report = Arc::new(Mutex::new(Vec::new()));
    let nat_report = Arc::new(Mutex::new(Vec::new()));

    let clock = Instant::now();
    let now_ms = move || clock.elapsed().as_millis() as u64;
    eal.scope(|scope| -> Result<()> {
        for (index, &lcore) in d.workers.iter().enumerate() {
            let (sad, route_table, handoff, tasks) = (sa_tables.next().expect("one SA table per worker"), route_table.clone(), handoff.clone(), tasks[index].clone());
            let (events, sa_report, nat_report, policy) = (events.clone(), sa_report.clone(), nat_report.clone(), policy.clone());
            let punt = punt_rings[index].take().expect("one ring per worker");
            let sequence_log = sequence_logs[index].take().expect("one log per worker");
            let (ports, pool, stats, stop, neighbours) = (&ports, &pool, &stats, &stop, neighbours.clone());
            let interfaces = [config.ports.outside.interface(), config.ports.inside.interface()];
            scope.launch(lcore, move || {
                let queue = index as u16;
                let mut forwarder =
                    Forwarder::new(interfaces, [ports[0].mac(), ports[1].mac()], neighbours).with_tunnels(sad, route_table.snapshot(), settings).with_route_table(route_table);
                if let Some(policy) = policy {
                    forwarder = forwarder.with_nat(NatCore::new(policy, index as u8));
                }
                let mut worker =
                    Worker::new(ports[0].queue(queue, pool), ports[1].queue(queue, pool), forwarder)
                        .with_handoff(index, handoff)
                        .with_events(events)
                        .with_punt(punt)
                        .with_tasks(tasks);
                let mut polls = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    worker.poll(now_ms());
                    polls += 1;
                    // Publishing is a few hundred bytes of stores: not every poll.
                    if polls.is_multiple_of(1024) {
                        worker.report_activity(now_ms());
                        stats.publish(index, &worker.forwarder.counters);
                        sequence_log.record(worker.forwarder.sad().outbound_sas().map(|sa| (sa.spi, sa.seq)));
                    }
                }
                stats.publish(index, &worker.forwarder.counters);
                sequence_log.record(worker.forwarder.sad().outbound_sas().map(|sa| (sa.spi, sa.seq)));
                sa_report.lock().expect("no worker panics (panic = abort)").extend(sa_counters(worker.forwarder.sad()));
                if let Some(nat) = worker.forwarder.nat() {
                    let (blocks, ports) = nat.sessions.ports().usage();
                    nat_report.lock().expect("no worker panics (panic = abort)").push(serde_json::json!({
                        "worker": index, "sessions": nat.sessions.len(), "port_blocks": blocks, "ports": ports }));
                }
                0
            })?;
        }
        // The manager: sole writer of the neighbour table, and the stats gauges.
        while !stop.load(Ordering::Relaxed) {
            neighbours.maintain(now_ms());
            stats.set_mempool_in_use(pool.in_use());
            while let Some(event) = events.pop() {
                match event {
                    // Traffic reports (`Live`) go to control quietly; a lifetime reached is logged too.
                    Event::Sa(e) => {
                        let lifetime = e.expiry != Expiry::Live;
                        if lifetime {
                            tracing::warn!(spi = %format!("{:#010x}", e.spi), direction = ?e.direction, stage = ?e.expiry, packets = e.packets, bytes = e.bytes, "SA lifetime reached");
                        }
                        if events_ring.push_parts(&ToControl::SaEvent(e).encode(&mut [0u8; FIXED_LEN])).is_err() && lifetime {
                            tracing::error!(spi = %format!("{:#010x}", e.spi), "the control process is not reading events.ring: SA event not passed on");
                        }
                    }
                    // Session counts are for the operators (through control), not the NAT log.
                    // Names from the running policy: it names every tenant index
                    // a worker can hold (retired tenants keep theirs).
                    Event::Nat(NatEvent::Sessions { tenant, core, sessions }) => {
                        if let Some(name) = running_policy.as_ref().and_then(|p| p.names.get(tenant as usize)) {
                            let _ = events_ring.push_parts(&ToControl::TenantSessions { worker: core, sessions, tenant: name }.encode(&mut [0u8; FIXED_LEN]));
                        }
                    }
                    Event::Nat(e) => {
                        if let (Some(log), Some(policy)) = (&mut nat_log, &running_policy) {
                            if let Err(error) = writeln!(log, "{}", e.log_line(policy)) {
                                tracing::error!(%error, path = %nat_log_path.display(), "cannot write the NAT log");
                            }
                        }
                    }
                }
            }
            let mut message = vec![0u8; CONTROL_MESSAGE_BYTES];
            loop {
                match control_ring.pop(&mut message) {
                    Ok(Some(len)) => from_control(&message[..len], &mut table_manager, &route_table, &tasks, config, (&mut running_policy, &mut tenant_parts)),
                    Ok(None) => break,
                    Err(corrupt) => {
                        tracing::error!(?corrupt, path = %control_path.display(), "control.ring is corrupt: messages skipped");
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    })?;

    // Drivers keep sent mbufs in their TX rings until reused: reclaim them so
    // that any difference from the count before traffic is a real leak.
    let in_flight = handoff.drain();
    if in_flight > 0 {
        tracing::info!(packets = in_flight, "dropped packets still in the handoff rings at stop");
    }
    let reclaimed: Vec<Option<u32>> = ports.iter().map(|p| p.tx_done_cleanup()).collect();
    let in_use_after = pool.in_use();
    let port_stats: Vec<_> = ports.iter().map(|p| p.stats()).collect();
    for port in &ports {
        port.stop();
    }
    drop(ports);
    let in_use_closed = pool.in_use();
    stats.set_mempool_in_use(in_use_closed);
    stats.set_state(STATE_STOPPED);
    let final_stats = stats::read(&stats_path)?;
    print_table(&final_stats);
    let mut summary = final_stats.to_json();
    summary["event"] = "stopped".into();
    summary["ports"] = serde_json::json!({ "outside": port_stats[0], "inside": port_stats[1] });
    summary["sas"] = serde_json::Value::Array(std::mem::take(&mut *sa_report.lock().expect("workers joined")));
    summary["nat"] = serde_json::Value::Array(std::mem::take(&mut *nat_report.lock().expect("workers joined")));
    summary["mempool"] = serde_json::json!({ "size": d.mempool_size, "in_use_before_traffic": in_use_before,
        "in_use_after_traffic": in_use_after, "in_use_after_close": in_use_closed, "tx_reclaimed": reclaimed });
    println!("{summary}");
    tracing::info!(mbufs_in_use = in_use_closed, "stopped");
    drop(pool);
    drop(eal);
    Ok(())
}

/// One message from the control process: a tunnel to install, update or
/// remove (its owner worker's part first, then the routes, or the other
/// way round for a removal), or an IKE packet to send. Anything refused is
/// logged with its reason and changes nothing.
fn from_control(bytes: &[u8], manager: &mut TableManager, routes: &RouteTable, tasks: &[Arc<Tasks>], config: &Config, (policy, parts): (&mut Option<Arc<Policy>>, &mut TenantParts)) {
    let message = match ToDataplane::decode(bytes) {
        Ok(m) => m,
        Err(error) => return tracing::error!(%error, "message from the control process refused"),
    };
    let change = match message {
        ToDataplane::SendIke { from, to, payload } => {
            if tasks[0].queue.push(Task::SendIke { from, to, payload: payload.to_vec() }).is_err() {
                tracing::warn!(%to, "worker 0's task queue is full: IKE packet dropped (the peer retransmits)");
            }
            return;
        }
        ToDataplane::Tunnel(config) => manager.upsert(&config, Instant::now()),
        ToDataplane::TunnelDown(name) => manager.remove(name, Instant::now()),
        ToDataplane::Reset => {
            let removals = manager.reset(Instant::now());
            tracing::info!(tunnels = removals.len(), "the control process started afresh: removing the tunnels it installed before");
            return removals.into_iter().for_each(|change| apply_change(change, routes, tasks));
        }
        ToDataplane::Tenants { part, parts: count, tenants } => {
            return match parts.add(part, count, tenants) {
                Ok(Some(all)) => replace_policy(all, manager, tasks, config, policy),
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "tenants from the control process refused"),
            };
        }
    };
    match change {
        Ok(change) => apply_change(change, routes, tasks),
        Err((field, message)) => tracing::error!(%field, %message, "tunnel from the control process refused"),
    }
}

/// Queues a task for a worker. The manager already counts the change as
/// made: it waits for room (up to [`TASK_WAIT`]) rather than let the
/// worker's tables and its own differ.
fn push_task(worker: &Tasks, mut task: Task) -> bool {
    let deadline = Instant::now() + TASK_WAIT;
    while let Err(back) = worker.queue.push(task) {
        if Instant::now() > deadline {
            return false;
        }
        task = back;
        std::thread::yield_now();
    }
    true
}

/// Hands a tunnel change to its owner worker and publishes its routes, in
/// the order the change asks for.
fn apply_change(change: Change, routes: &RouteTable, tasks: &[Arc<Tasks>]) {
    let Change { core, update, routes: new_routes, routes_first } = change;
    let worker = &tasks[usize::from(core)];
    let (before, after) = if routes_first { (new_routes, None) } else { (None, new_routes) };
    if let Some(r) = before {
        routes.publish(r);
    }
    let target = worker.done.load(Ordering::Acquire) + 1 + worker.queue.len() as u64;
    if !push_task(worker, Task::Update(update)) {
        return tracing::error!(core, "worker task queue full for {TASK_WAIT:?}: tunnel change lost (the worker is stuck?)");
    }
    if let Some(r) = after {
        // Make before break: routes only to what the owner has installed.
        let deadline = Instant::now() + TASK_WAIT;
        while worker.done.load(Ordering::Acquire) < target {
            if Instant::now() > deadline {
                tracing::error!(core, "worker did not take its tunnel change in time: routes published anyway");
                break;
            }
            std::thread::yield_now();
        }
        routes.publish(r);
    }
}

/// The tenants' policy from the control process: compiled as a
/// replacement of the running one (tenants may come and go, see
/// `Policy::compile_replacement`), checked against the installed tunnels,
/// then handed to every worker (each picks it up between bursts).
fn replace_policy(tenants: Vec<sekisho_dataplane::policy::TenantConfig>, manager: &mut TableManager, tasks: &[Arc<Tasks>], config: &Config, policy: &mut Option<Arc<Policy>>) {
    let (Some(nat), Some(running)) = (&config.nat, policy.as_ref()) else {
        return tracing::error!("tenants from the control process refused: this dataplane has no [nat] section");
    };
    let compiled = match running.compile_replacement(nat, &tenants, &config.rules, config.dataplane.workers.len() as u8) {
        Ok(p) => Arc::new(p),
        Err((field, message)) => return tracing::error!(%field, %message, "tenants from the control process refused"),
    };
    if let Err(fault) = manager.set_policy(compiled.clone()) {
        return tracing::error!(%fault, "tenants from the control process refused");
    }
    for worker in tasks {
        if !push_task(worker, Task::Policy(compiled.clone())) {
            tracing::error!("worker task queue full for {TASK_WAIT:?}: policy update lost on one worker (the worker is stuck?)");
        }
    }
    let active = compiled.tenants.iter().filter(|t| !t.retired).count();
    tracing::info!(tenants = active, retired = compiled.tenants.len() - active, rules = compiled.rules.len(), "tenants' policy replaced");
    *policy = Some(compiled);
}

/// Validates a config and prints what the peers need: each static tunnel's
/// inbound SPIs (allocated when the config leaves them out).
fn check(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    println!("{}: ok ({} workers, {} tunnels, {} tenants)", path.display(), config.dataplane.workers.len(), config.tunnels.len(), config.tenants.len());
    let policy = config.policy().map_err(|(field, message)| anyhow::anyhow!("{field}: {message}"))?;
    let tables = config.tables(policy.as_ref()).map_err(|(field, message)| anyhow::anyhow!("{field}: {message}"))?;
    for (name, spis) in &tables.inbound_spis {
        let spis: Vec<String> = spis.iter().map(|s| format!("{s:#010x}")).collect();
        println!("tunnel {name}: inbound SPI {}", spis.join(", "));
    }
    Ok(())
}

/// Each SA's counters, for the final summary.
fn sa_counters(sad: &SaTable) -> Vec<serde_json::Value> {
    let inbound = sad.inbound_sas().map(|sa| {
        serde_json::json!({ "spi": format!("{:#010x}", sa.spi), "direction": "inbound", "expiry": sa.expiry,
            "replay_top": sa.replay.top(), "counters": sa.counters })
    });
    let outbound = sad.outbound_sas().map(|sa| {
        serde_json::json!({ "spi": format!("{:#010x}", sa.spi), "direction": "outbound", "expiry": sa.expiry,
            "sequence": sa.seq, "counters": sa.counters })
    });
    inbound.chain(outbound).collect()
}

fn print_table(snapshot: &stats::StatsSnapshot) {
    let total = snapshot.total();
    let mut header = format!("{:<30}", "counter");
    for (lcore, _) in &snapshot.workers {
        header += &format!("{:>16}", format!("lcore {lcore}"));
    }
    header += &format!("{:>16}", "total");
    eprintln!("{header}");
    for (slot, name) in CounterBlock::slot_names().enumerate() {
        if total.values[slot] == 0 {
            continue;
        }
        let mut line = format!("{name:<30}");
        for (_, block) in &snapshot.workers {
            line += &format!("{:>16}", block.values[slot]);
        }
        eprintln!("{line}{:>16}", total.values[slot]);
    }
    eprintln!("mempool: {} of {} mbufs in use; dataplane {}", snapshot.mempool_in_use, snapshot.mempool_size, if snapshot.running { "running" } else { "stopped" });
}

fn show_stats(path: &Path, json: bool, watch: Option<f64>) -> Result<()> {
    let mut previous: Option<(Instant, CounterBlock)> = None;
    loop {
        let snapshot = stats::read(path)?;
        if json {
            println!("{}", snapshot.to_json());
        } else {
            print_table(&snapshot);
        }
        let Some(seconds) = watch else { return Ok(()) };
        let total = snapshot.total();
        if let Some((at, before)) = &previous {
            use sekisho_dataplane::pipeline::Counter;
            let dt = at.elapsed().as_secs_f64();
            let rate = |c: Counter| (total.get(c) - before.get(c)) as f64 / dt;
            eprintln!(
                "rate: rx {:.0} pps, tx {:.0} pps, forwarded {:.0} pps, {:.3} Gbit/s out, drops {:.0}/s",
                rate(Counter::RxPackets),
                rate(Counter::TxPackets),
                rate(Counter::Forwarded),
                rate(Counter::TxBytes) * 8.0 / 1e9,
                (total.total_dropped() - before.total_dropped()) as f64 / dt
            );
        }
        previous = Some((Instant::now(), total));
        std::thread::sleep(Duration::from_secs_f64(seconds.max(0.1)));
    }
}

