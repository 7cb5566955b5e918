//! `sekisho-control`: the control process.
//!
//! - `run --config FILE --listen ADDR...`: the IKEv2 responder on the
//!   host's own UDP sockets (no dataplane in front), printing one JSON line
//!   per event (CHILD_SA up or down, log lines); SIGHUP reloads the config,
//!   SIGTERM stops it with a summary of its counters.
//! - `check --config FILE`: loads the config and says what is wrong with it.
//! - `watch --run-dir DIR`: prints what a running dataplane passes to control.

use sekisho_control::config;
use sekisho_control::ike::responder::{Event, Responder};
use sekisho_control::link::FromDataplane;
use sekisho_control::udp::UdpTransport;
use sekisho_dataplane::shm::messages::ToControl;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: sekisho-control run --config FILE --listen ADDR:PORT [--listen ...]");
    eprintln!("       sekisho-control check --config FILE");
    eprintln!("       sekisho-control watch --run-dir DIR [--count N] [--seconds S]");
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
        "run" => run(PathBuf::from(get("--config").pop().unwrap_or_else(|| usage())), get("--listen")),
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
        _ => usage(),
    }
}

fn run(config_path: PathBuf, listen: Vec<String>) {
    let fail = |e: String| -> ! {
        eprintln!("sekisho-control: {e}");
        std::process::exit(1);
    };
    let c = config::load(&config_path).unwrap_or_else(|e| fail(e));
    let addresses: Vec<SocketAddr> = listen.iter().map(|a| a.parse().unwrap_or_else(|_| fail(format!("--listen {a}: not ADDR:PORT")))).collect();
    if addresses.is_empty() {
        usage();
    }
    let mut transport = UdpTransport::bind(&addresses).unwrap_or_else(|e| fail(e.to_string()));
    let terminate = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, terminate.clone()).expect("SIGTERM handler");
    signal_hook::flag::register(signal_hook::consts::SIGINT, terminate.clone()).expect("SIGINT handler");
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()).expect("SIGHUP handler");

    let workers = c.workers;
    let mut responder = Responder::new(c.settings, c.local_id, c.credentials, c.trust, c.tenants, workers, Instant::now());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::json!({"ready": {"listen": listen}})).ok();
    out.flush().ok();
    let mut events = Vec::new();
    let mut last_tick = Instant::now();
    while !terminate.load(Ordering::Relaxed) {
        if reload.swap(false, Ordering::Relaxed) {
            // A bad file is refused whole; the running state stays (tunnels too).
            match config::load(&config_path) {
                Ok(c) if c.workers == workers => {
                    responder.reconfigure(c.settings, c.tenants, c.trust);
                    events.push(Event::Log(format!("config reloaded from {}", config_path.display())));
                }
                Ok(_) => events.push(Event::Log("reload refused: gateway.workers cannot change while running".into())),
                Err(e) => events.push(Event::Log(format!("reload refused: {e}"))),
            }
        }
        let mut busy = false;
        loop {
            match transport.receive() {
                Ok(Some(r)) => {
                    busy = true;
                    responder.handle(Instant::now(), r.from, r.to, transport.datagram(&r), &mut events);
                }
                Ok(None) => break,
                Err(e) => {
                    events.push(Event::Log(format!("receive: {e}")));
                    break;
                }
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            responder.tick(Instant::now(), &mut events);
            last_tick = Instant::now();
        }
        for e in events.drain(..) {
            match e {
                Event::Send { from, to, datagram } => {
                    if let Err(e) = transport.send(from, to, &datagram) {
                        writeln!(out, "{}", serde_json::json!({"log": format!("send to {to}: {e}")})).ok();
                    }
                }
                other => {
                    if let Some(line) = other.json() {
                        writeln!(out, "{line}").ok();
                    }
                }
            }
        }
        out.flush().ok();
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    writeln!(out, "{}", serde_json::json!({"summary": {"ike_sas": responder.ike_sa_count(), "child_sas": responder.children().count(), "esp_ignored": transport.esp_ignored, "counters": responder.counters}})).ok();
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
        });
        seen += taken as u64;
        if taken == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    eprintln!("sekisho-control: {seen} messages, broken {:?}", rings.broken);
}
