//! `sekisho-control`: the control process. Until the IKEv2 responder lands,
//! `watch` reads what the dataplane passes to it (IKE packets, SA events)
//! and prints one JSON line per message.

use sekisho_control::link::FromDataplane;
use sekisho_dataplane::shm::messages::ToControl;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: sekisho-control watch --run-dir DIR [--count N] [--seconds S]");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("watch") {
        usage();
    }
    let (mut run_dir, mut count, mut seconds) = (None::<PathBuf>, u64::MAX, f64::INFINITY);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--run-dir" => run_dir = Some(value.into()),
            "--count" => count = value.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let run_dir = run_dir.unwrap_or_else(|| usage());
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
