//! `sekisho-control`: the control process.
//!
//! - `run --config FILE --run-dir DIR`: the IKEv2 responder behind a
//!   running dataplane: IKE comes from its punt rings and goes back through
//!   its control ring, with every CHILD_SA as a tunnel it installs; after a
//!   dataplane restart every tunnel is installed again.
//! - `run --config FILE --listen ADDR...`: the same on the host's own UDP
//!   sockets, without a dataplane (IKE interop tests, the load tester).
//!
//! Either prints one JSON line per event (CHILD_SA up or down, log lines);
//! SIGHUP reloads the config, SIGTERM stops it with a summary of its counters.
//! - `check --config FILE`: loads the config and says what is wrong with it.
//! - `watch --run-dir DIR`: prints what a running dataplane passes to control.
//! - `router-config --config FILE --tenant NAME --gateway ADDR --ca-cert PEM
//!   --ca-key PEM --out DIR [--csr PEM] [--days N]`: writes what a clinic's
//!   strongSwan router needs to connect by itself (zero-touch): swanctl.conf,
//!   a certificate for the tenant's identity (for a fresh key, or for the
//!   key of the router's CSR) and the CA, in /etc/swanctl's layout.

use sekisho_control::admin::{self, Call, Request};
use sekisho_control::audit::Audit;
use sekisho_control::config::{self, TenantEdit};
use sekisho_control::metrics::{self, NatBlocks};
use sekisho_dataplane::shm::stats;
use serde_json::Value;
use sekisho_control::dataplane::{Link, TenantSessions, TunnelBook};
use sekisho_dataplane::policy::TenantConfig;
use sekisho_dataplane::shm::messages::ToDataplane;
use sekisho_control::ike::responder::{Event, Responder};
use sekisho_control::link::FromDataplane;
use sekisho_control::udp::UdpTransport;
use sekisho_dataplane::esp::sa::{Direction, Expiry};
use sekisho_dataplane::shm::messages::ToControl;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: sekisho-control run --config FILE (--run-dir DIR | --listen ADDR:PORT [--listen ...])");
    eprintln!("       sekisho-control check --config FILE");
    eprintln!("       sekisho-control watch --run-dir DIR [--count N] [--seconds S]");
    eprintln!("       sekisho-control router-config --config FILE --tenant NAME --gateway ADDR --ca-cert PEM --ca-key PEM --out DIR [--csr PEM] [--days N]");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| usage());
    let mut flags: Vec<(String, String)> = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        flags.push((flag, value));
    }
    let get = |name: &str| flags.iter().filter(|(f, _)| f == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    match command.as_str() {
        "run" => run(PathBuf::from(get("--config").pop().unwrap_or_else(|| usage())), get("--listen"), get("--run-dir").pop().map(PathBuf::from)),
        "check" => match config::load(&PathBuf::from(get("--config").pop().unwrap_or_else(|| usage()))) {
            Ok(c) => println!("config ok: {} tenants, {} workers, DH groups {:?}", c.tenants.len(), c.workers, c.settings.dh_groups),
            Err(e) => {
                eprintln!("sekisho-control: {e}");
                std::process::exit(1);
            }
        },
        "watch" => watch(
            PathBuf::from(get("--run-dir").pop().unwrap_or_else(|| usage())),
            get("--count").pop().map_or(u64::MAX, |v| v.parse().unwrap_or_else(|_| usage())),
            get("--seconds").pop().map_or(f64::INFINITY, |v| v.parse().unwrap_or_else(|_| usage())),
        ),
        "router-config" => {
            let one = |name: &str| get(name).pop().unwrap_or_else(|| usage());
            let days = get("--days").pop().map_or(825, |v| v.parse().unwrap_or_else(|_| usage()));
            if let Err(e) = router_config(&one("--config"), &one("--tenant"), &one("--gateway"), (&one("--ca-cert"), &one("--ca-key")), get("--csr").pop(), days, &one("--out")) {
                eprintln!("sekisho-control: {e}");
                std::process::exit(1);
            }
        }
        _ => usage(),
    }
}

fn router_config(config: &str, tenant: &str, gateway: &str, (ca_cert, ca_key): (&str, &str), csr: Option<String>, days: u32, out: &str) -> Result<(), String> {
    let c = config::load(Path::new(config))?;
    let ca = sekisho_control::pki::issue::Authority::load(Path::new(ca_cert), Path::new(ca_key))?;
    let csr = match csr {
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            Some(openssl::x509::X509Req::from_pem(&pem).map_err(|e| format!("{path}: not a PEM CSR: {e}"))?)
        }
        None => None,
    };
    let bundle = sekisho_control::router_config::bundle(&c, tenant, gateway, &ca, csr.as_ref(), days)?;
    bundle.write(Path::new(out)).map_err(|e| format!("{out}: {e}"))?;
    let not_after = bundle.cert.not_after().to_string();
    let serial = bundle.cert.serial_number().to_bn().and_then(|b| b.to_hex_str().map(|s| s.to_string())).unwrap_or_default();
    let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map_or_else(|| format!("uid {}", nix::unistd::getuid()), |u| u.name);
    let issued = serde_json::json!({"serial": serial, "not_after": not_after, "issuer": sekisho_control::pki::identity::dn_text(ca.cert.subject_name()), "router_key": if bundle.key.is_some() { "made here" } else { "CSR" }});
    Audit::new(&c.audit_log).record(&user, "router_certificate_issued", tenant, Value::Null, issued).map_err(|e| format!("audit trail {}: {e}", c.audit_log.display()))?;
    println!("{}", serde_json::json!({"router_config": {"tenant": tenant, "dir": out, "certificate_until": not_after, "key": if bundle.key.is_some() { "made here" } else { "the router's own (CSR)" }}}));
    Ok(())
}

/// Where IKE comes from and goes to (one per process: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Transport {
    Udp(UdpTransport),
    Dataplane { run_dir: PathBuf, link: Option<Link>, book: TunnelBook, policies: Vec<TenantConfig>, sessions: TenantSessions },
}

impl Transport {
    /// Tenants' NAT sessions as the dataplane reports them (None: no dataplane).
    fn sessions(&self) -> Option<&TenantSessions> {
        match self {
            Transport::Dataplane { sessions, .. } => Some(sessions),
            Transport::Udp(_) => None,
        }
    }
}

fn run(config_path: PathBuf, listen: Vec<String>, run_dir: Option<PathBuf>) {
    let fail = |e: String| -> ! {
        eprintln!("sekisho-control: {e}");
        std::process::exit(1);
    };
    let c = config::load(&config_path).unwrap_or_else(|e| fail(e));
    let mut transport = match (run_dir, listen.is_empty()) {
        (Some(run_dir), true) => Transport::Dataplane { run_dir, link: None, book: TunnelBook::new(c.replay_window), policies: c.policies.clone(), sessions: TenantSessions::new() },
        (None, false) => {
            let addresses: Vec<SocketAddr> = listen.iter().map(|a| a.parse().unwrap_or_else(|_| fail(format!("--listen {a}: not ADDR:PORT")))).collect();
            Transport::Udp(UdpTransport::bind(&addresses).unwrap_or_else(|e| fail(e.to_string())))
        }
        _ => usage(),
    };
    let terminate = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, terminate.clone()).expect("SIGTERM handler");
    signal_hook::flag::register(signal_hook::consts::SIGINT, terminate.clone()).expect("SIGINT handler");
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()).expect("SIGHUP handler");

    let workers = c.workers;
    let calls = admin::serve(&c.admin_socket).unwrap_or_else(|e| fail(format!("{}: {e}", c.admin_socket.display())));
    let metrics_text = c.metrics.map(|a| metrics::serve(a).unwrap_or_else(|e| fail(format!("gateway.metrics {a}: {e}"))));
    let run_dir = match &transport {
        Transport::Dataplane { run_dir, .. } => Some(run_dir.clone()),
        Transport::Udp(_) => None,
    };
    let mut ops = Ops {
        config_path: config_path.clone(),
        workers,
        audit: Audit::new(&c.audit_log),
        nat: NatBlocks::new(&run_dir.as_ref().map_or_else(PathBuf::new, |d| d.join("nat.jsonl"))),
        stats: run_dir.map(|d| d.join("stats")),
        disabled: c.disabled.clone(),
        summary: c.summary(),
    };
    let mut responder = Responder::new(c.settings, c.local_id, c.credentials, c.trust, c.tenants, workers, Instant::now());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::json!({"ready": {"listen": listen, "admin_socket": c.admin_socket}})).ok();
    out.flush().ok();
    let mut events = Vec::new();
    let mut last_tick = Instant::now();
    let mut policies_changed = false;
    while !terminate.load(Ordering::Relaxed) {
        if reload.swap(false, Ordering::Relaxed) {
            // A bad file is refused whole; the running state stays (tunnels too).
            match ops.reload(&mut transport, &mut responder, &mut policies_changed, &mut events) {
                Ok(change) => ops.record("SIGHUP", "reload", change),
                Err(e) => events.push(Event::Log(format!("reload refused: {e}"))),
            }
        }
        for call in calls.try_iter() {
            let answer = ops.operate(&call, &mut transport, &mut responder, &mut policies_changed, &mut events);
            let _ = call.reply.send(answer);
        }
        let busy = match &mut transport {
            Transport::Udp(udp) => receive_udp(udp, &mut responder, &mut events),
            Transport::Dataplane { run_dir, link, book, policies, sessions } => receive_dataplane(run_dir, (link, sessions), book, policies, &mut responder, &mut events),
        };
        if last_tick.elapsed() >= Duration::from_secs(1) {
            responder.tick(Instant::now(), &mut events);
            last_tick = Instant::now();
            if let Some(text) = &metrics_text {
                ops.nat.update();
                let dataplane = ops.stats.as_ref().and_then(|p| stats::read(p).ok()).map(|s| s.to_json());
                *text.lock().expect("the metrics thread never panics") = metrics::render(&responder, &ops.nat, transport.sessions(), dataplane.as_ref());
            }
        }
        for e in events.drain(..) {
            if let Some(line) = e.json() {
                writeln!(out, "{line}").ok();
            }
            match (&mut transport, e) {
                (Transport::Udp(udp), Event::Send { from, to, datagram }) => {
                    if let Err(e) = udp.send(from, to, &datagram) {
                        writeln!(out, "{}", serde_json::json!({"log": format!("send to {to}: {e}")})).ok();
                    }
                }
                (Transport::Dataplane { link, book, .. }, e) => {
                    let Some(link) = link else { continue };
                    match e {
                        Event::Send { from, to, datagram } => link.send(&ToDataplane::SendIke { from, to, payload: &datagram }),
                        other => {
                            for change in book.apply(&other) {
                                link.send(&change.message());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        // After the tunnels of removed tenants went (above): the dataplane
        // refuses to remove a tenant from under its tunnels.
        if let (true, Transport::Dataplane { link: Some(link), policies, .. }) = (std::mem::take(&mut policies_changed), &mut transport) {
            link.send_tenants(policies);
        }
        out.flush().ok();
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (esp_ignored, tunnels, unsent) = match &transport {
        Transport::Udp(udp) => (udp.esp_ignored, 0, 0),
        Transport::Dataplane { link, book, .. } => (0, book.len(), link.as_ref().map_or(0, |l| l.unsent)),
    };
    writeln!(
        out,
        "{}",
        serde_json::json!({"summary": {"ike_sas": responder.ike_sa_count(), "child_sas": responder.children().count(), "tunnels": tunnels,
            "esp_ignored": esp_ignored, "control_ring_full": unsent, "counters": responder.counters}})
    )
    .ok();
}

fn receive_udp(udp: &mut UdpTransport, responder: &mut Responder, events: &mut Vec<Event>) -> bool {
    let mut busy = false;
    loop {
        match udp.receive() {
            Ok(Some(r)) => {
                busy = true;
                responder.handle(Instant::now(), r.from, r.to, udp.datagram(&r), events);
            }
            Ok(None) => return busy,
            Err(e) => {
                events.push(Event::Log(format!("receive: {e}")));
                return busy;
            }
        }
    }
}

fn receive_dataplane(run_dir: &Path, (link, sessions): (&mut Option<Link>, &mut TenantSessions), book: &TunnelBook, policies: &[TenantConfig], responder: &mut Responder, events: &mut Vec<Event>) -> bool {
    let Some(l) = link else {
        match Link::open(run_dir) {
            Ok(Some(mut opened)) => {
                // A control process that starts afresh knows none of the
                // tunnels a previous one installed, and cannot rekey them:
                // they go, and their clinics connect again.
                events.push(Event::Log(format!("linked to the dataplane in {}: tunnels of an earlier control process removed", run_dir.display())));
                opened.send(&ToDataplane::Reset);
                *link = Some(opened);
                resync(link.as_mut().expect("just set"), book, policies, events);
            }
            Ok(None) => {}
            Err((path, e)) => events.push(Event::Log(format!("{}: {e}", path.display()))),
        }
        return false;
    };
    l.flush();
    if l.restarted() {
        sessions.clear();
        events.push(Event::Log("the dataplane restarted: installing every tunnel again".into()));
        resync(l, book, policies, events);
    }
    let mut sa_events = Vec::new();
    let taken = l.drain(|from, to, datagram| responder.handle(Instant::now(), from, to, datagram, events), |e| sa_events.push(e), sessions);
    for e in sa_events {
        let inbound = e.direction == Direction::Inbound;
        match e.expiry {
            Expiry::Live if inbound => responder.sa_activity(Instant::now(), e.spi, e.packets, e.bytes),
            Expiry::Live => {}
            expiry => responder.sa_limit_reached(Instant::now(), e.spi, inbound, expiry == Expiry::Hard, events),
        }
    }
    taken > 0
}

/// Gives a (re)started dataplane the tenants' policy and every tunnel of the book.
fn resync(link: &mut Link, book: &TunnelBook, policies: &[TenantConfig], events: &mut Vec<Event>) {
    link.send_tenants(policies);
    for tunnel in book.all() {
        link.send(&ToDataplane::Tunnel(tunnel.clone()));
    }
    if !book.is_empty() {
        events.push(Event::Log(format!("{} tunnels installed again", book.len())));
    }
}

fn watch(run_dir: PathBuf, count: u64, seconds: f64) {
    let start = Instant::now();
    // The dataplane creates the rings as it starts: wait for them.
    let mut rings = loop {
        match FromDataplane::open(&run_dir) {
            Ok(rings) if !rings.is_empty() => break rings,
            Ok(_) if start.elapsed().as_secs_f64() < seconds.min(30.0) => std::thread::sleep(Duration::from_millis(50)),
            Ok(_) => {
                eprintln!("sekisho-control: no events.ring in {}: is the dataplane running?", run_dir.display());
                std::process::exit(2);
            }
            Err((path, e)) => {
                eprintln!("sekisho-control: {}: {e}", path.display());
                std::process::exit(2);
            }
        }
    };
    let mut seen = 0u64;
    while seen < count && start.elapsed().as_secs_f64() < seconds {
        let taken = rings.drain(|message| match message {
            ToControl::Punted { worker, side, frame } => {
                println!("{{\"punted\":{{\"worker\":{worker},\"side\":\"{side}\",\"bytes\":{}}}}}", frame.len());
            }
            ToControl::SaEvent(e) => println!("{{\"sa_event\":{{\"spi\":{},\"expiry\":\"{:?}\"}}}}", e.spi, e.expiry),
            ToControl::TenantSessions { worker, sessions, tenant } => println!("{}", serde_json::json!({"tenant_sessions": {"tenant": tenant, "worker": worker, "sessions": sessions}})),
        });
        seen += taken as u64;
        if taken == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    eprintln!("sekisho-control: {seen} messages, broken {:?}", rings.broken);
}

/// The operators' side of the control process: reloads, the requests of
/// `sekisho-ctl`, and the audit trail of every change.
struct Ops {
    config_path: PathBuf,
    workers: usize,
    audit: Audit,
    nat: NatBlocks,
    /// The dataplane's stats file, when there is one.
    stats: Option<PathBuf>,
    /// Tenants the config has, disabled.
    disabled: Vec<String>,
    /// The running config's tenants and trust, as the audit trail shows them.
    summary: Value,
}

impl Ops {
    /// Loads the config file again: refused whole (the running state stays)
    /// or applied whole; tunnels stay unless the new file refuses them.
    /// Also returns the tenants and trust before and after.
    fn reload(&mut self, transport: &mut Transport, responder: &mut Responder, policies_changed: &mut bool, events: &mut Vec<Event>) -> Result<(Value, Value), String> {
        let c = config::load(&self.config_path)?;
        if c.workers != self.workers {
            return Err("gateway.workers cannot change while running".into());
        }
        events.push(Event::Log(format!("config reloaded from {}", self.config_path.display())));
        if let Transport::Dataplane { policies, book, .. } = transport {
            *policies = c.policies.clone();
            book.replay_window = c.replay_window;
            *policies_changed = true;
        }
        let before = std::mem::replace(&mut self.summary, c.summary());
        self.disabled = c.disabled;
        responder.reconfigure(c.settings, c.tenants, c.trust, Some((c.local_id, c.credentials)), Instant::now(), events);
        Ok((before, self.summary.clone()))
    }

    fn record(&self, actor: &str, action: &str, (before, after): (Value, Value)) {
        let subject = self.config_path.display().to_string();
        if let Err(e) = self.audit.record(actor, action, &subject, before, after) {
            eprintln!("sekisho-control: audit trail {}: {e}", self.audit.path().display());
        }
    }

    fn operate(&mut self, call: &Call, transport: &mut Transport, responder: &mut Responder, policies_changed: &mut bool, events: &mut Vec<Event>) -> Result<Value, String> {
        let now = Instant::now();
        let known = |r: &Responder, name: &str| r.tenants().by_name(name).is_some();
        match &call.request {
            Request::Status => Ok(serde_json::json!({
                "ike_sas": responder.ike_sa_count(), "half_open": responder.half_open_count(), "child_sas": responder.children().count(),
                "tenants": responder.tenants().len(), "disabled_tenants": self.disabled.len(),
                "dataplane": match transport { Transport::Dataplane { link, .. } => if link.is_some() { "linked" } else { "waiting" }, Transport::Udp(_) => "none" },
                "counters": responder.counters,
            })),
            Request::Tenants => {
                let mut list: Vec<Value> = responder
                    .tenants()
                    .iter()
                    .map(|t| {
                        let sas: Vec<_> = responder.ike_sas().filter(|sa| sa.tenant() == Some(t.name.as_str())).collect();
                        let children: Vec<_> = sas.iter().flat_map(|sa| sa.children.iter()).collect();
                        serde_json::json!({
                            "name": t.name, "identities": t.identities.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                            "subnets": t.subnets.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "worker": t.worker, "disabled": false,
                            "ike_sas": sas.len(), "child_sas": children.len(),
                            "received_packets": children.iter().map(|c| c.received.0).sum::<u64>(), "received_bytes": children.iter().map(|c| c.received.1).sum::<u64>(),
                        })
                    })
                    .collect();
                list.extend(self.disabled.iter().map(|name| serde_json::json!({"name": name, "disabled": true, "ike_sas": 0, "child_sas": 0})));
                Ok(Value::Array(list))
            }
            Request::Tunnels { tenant } => {
                if let Some(name) = tenant.as_deref().filter(|n| !known(responder, n)) {
                    return Err(format!("no tenant named '{name}'"));
                }
                let seconds = |at: Option<Instant>| at.map(|t| t.saturating_duration_since(now).as_secs());
                let list: Vec<Value> = responder
                    .ike_sas()
                    .filter(|sa| sa.tenant().is_some() && (tenant.is_none() || sa.tenant() == tenant.as_deref()))
                    .map(|sa| {
                        serde_json::json!({
                            "tenant": sa.tenant(), "peer": sa.peer.to_string(), "ike_spi": format!("{:016x}", sa.our_spi()),
                            "age_seconds": now.saturating_duration_since(sa.created).as_secs(), "rekey_in_seconds": seconds(sa.rekey_at),
                            "started_by_gateway": sa.initiator, "nat_t": sa.nat,
                            "child_sas": sa.children.iter().map(|c| serde_json::json!({
                                "inbound_spi": format!("{:08x}", c.inbound_spi), "outbound_spi": format!("{:08x}", c.outbound_spi),
                                "clinic": c.clinic.iter().map(|t| format!("{}-{}", t.start, t.end)).collect::<Vec<_>>(),
                                "age_seconds": now.saturating_duration_since(c.created).as_secs(), "rekeys": c.rekeys,
                                "pfs_group": c.pfs_group, "rekey_in_seconds": seconds(c.rekey_at), "expires_in_seconds": seconds(Some(c.expire_at)),
                                "received_packets": c.received.0, "received_bytes": c.received.1,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                Ok(Value::Array(list))
            }
            Request::Dataplane => {
                let path = self.stats.as_ref().ok_or("no dataplane: this control process runs on its own sockets")?;
                stats::read(path).map(|s| s.to_json()).map_err(|e| format!("{}: {e}", path.display()))
            }
            Request::Nat { tenant } => {
                if self.stats.is_none() {
                    return Err("no dataplane: this control process runs on its own sockets".into());
                }
                if !known(responder, tenant) && !self.disabled.contains(tenant) {
                    return Err(format!("no tenant named '{tenant}'"));
                }
                self.nat.update();
                let blocks: Vec<Value> = self.nat.held.get(tenant).into_iter().flatten().map(|(address, ports, worker)| serde_json::json!({"address": address, "ports": ports, "worker": worker})).collect();
                let per_worker = transport.sessions().and_then(|s| s.get(tenant)).cloned().unwrap_or_default();
                let total: u32 = per_worker.values().sum();
                Ok(serde_json::json!({"tenant": tenant, "sessions": total, "sessions_by_worker": per_worker, "port_blocks": blocks}))
            }
            Request::Terminate { tenant } => {
                if !known(responder, tenant) {
                    return Err(format!("no tenant named '{tenant}'"));
                }
                let ended = responder.terminate(tenant, now, events);
                self.record(&call.actor, "terminate", (Value::Null, serde_json::json!({"tenant": tenant, "ike_sas_deleted": ended})));
                Ok(serde_json::json!({"tenant": tenant, "ike_sas_deleted": ended}))
            }
            Request::Reload => {
                let change = self.reload(transport, responder, policies_changed, events)?;
                self.record(&call.actor, "reload", change);
                Ok(serde_json::json!({"reloaded": self.config_path}))
            }
            Request::Tenant { edit } => {
                let path = self.config_path.clone();
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let (new_text, name, before, after) = config::edit_tenants(&text, edit)?;
                // Checked whole before anything is written or applied.
                let checked = config::parse(&new_text, path.parent().unwrap_or(Path::new("."))).map_err(|e| format!("refused, the config would not load: {e}"))?;
                if checked.workers != self.workers {
                    return Err("refused: the file's gateway.workers differs from the running one (restart to change it)".into());
                }
                replace_file(&path, &new_text).map_err(|e| format!("{}: {e}", path.display()))?;
                if let Err(e) = self.reload(transport, responder, policies_changed, events) {
                    // Not applied: the file goes back to what runs.
                    let _ = replace_file(&path, &text);
                    return Err(format!("refused, the reload failed: {e}"));
                }
                let action = match edit {
                    TenantEdit::Add(_) => "tenant_add",
                    TenantEdit::Change(_) => "tenant_change",
                    TenantEdit::Remove(_) => "tenant_remove",
                    TenantEdit::Disable(_) => "tenant_disable",
                    TenantEdit::Enable(_) => "tenant_enable",
                };
                if let Err(e) = self.audit.record(&call.actor, action, &name, before, after) {
                    eprintln!("sekisho-control: audit trail {}: {e}", self.audit.path().display());
                }
                Ok(serde_json::json!({"tenant": name, "done": action}))
            }
        }
    }
}

/// Replaces a file's contents in one step (a temporary file beside it,
/// flushed, then renamed over it), keeping its permissions.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temporary)?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    let permissions = std::fs::metadata(path).map(|m| m.permissions());
    let result = written.and_then(|()| permissions.and_then(|p| std::fs::set_permissions(&temporary, p))).and_then(|()| std::fs::rename(&temporary, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}
