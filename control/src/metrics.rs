//! What operators watch: the NAT port blocks each tenant holds (followed
//! in the dataplane's NAT log as it grows), and the Prometheus text
//! exposition of the responder's, the tenants' and the dataplane workers'
//! counters, served on a local address by a thread of its own.

use crate::ike::responder::Responder;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most bytes of the NAT log read per [`NatBlocks::update`].
const MAX_READ_PER_UPDATE: u64 = 1 << 20;

/// The port blocks each tenant holds, from the NAT log's `port_block_*`
/// lines: (pool address, "first-last" ports, worker), by tenant.
#[derive(Default)]
pub struct NatBlocks {
    path: PathBuf,
    offset: u64,
    /// The log's inode: a rotated log is a new file.
    inode: u64,
    pub held: BTreeMap<String, BTreeSet<(String, String, u64)>>,
}

impl NatBlocks {
    pub fn new(path: &Path) -> NatBlocks {
        NatBlocks { path: path.to_owned(), ..NatBlocks::default() }
    }

    /// Reads what the log gained since the last call (from the start
    /// again if it was rotated or truncated).
    pub fn update(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else { return };
        let Ok(meta) = file.metadata() else { return };
        let (length, inode) = (meta.len(), std::os::unix::fs::MetadataExt::ino(&meta));
        if length < self.offset || inode != self.inode {
            (self.offset, self.held, self.inode) = (0, BTreeMap::new(), inode);
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        // A bounded share per call: a long log is caught up over a few
        // seconds rather than holding up the control loop.
        let mut reader = BufReader::new(file.take((length - self.offset).min(MAX_READ_PER_UPDATE)));
        let mut line = Vec::new();
        // Only whole lines: the dataplane may be writing the last one.
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) && line.ends_with(b"\n") {
            self.offset += line.len() as u64;
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                // A dataplane (re)started: the blocks of the one before are gone.
                if v["event"] == "dataplane_started" {
                    self.held.clear();
                }
                let text = |k: &str| v[k].as_str().map(str::to_owned).or_else(|| v[k].as_u64().map(|n| n.to_string())).unwrap_or_default();
                let block = (text("address"), text("ports"), v["worker"].as_u64().unwrap_or(0));
                let tenant = text("tenant");
                match v["event"].as_str() {
                    Some("port_block_allocated") => {
                        self.held.entry(tenant).or_default().insert(block);
                    }
                    Some("port_block_released") => {
                        if let Some(blocks) = self.held.get_mut(&tenant) {
                            blocks.remove(&block);
                        }
                    }
                    _ => {}
                }
            }
            line.clear();
        }
    }
}

/// Prometheus' label value escaping.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The text exposition (version 0.0.4) of everything an operator graphs.
pub fn render(responder: &Responder, nat: &NatBlocks, sessions: Option<&crate::dataplane::TenantSessions>, dataplane: Option<&Value>) -> String {
    let mut out = String::new();
    let counters = serde_json::to_value(&responder.counters).expect("counters serialize");
    out.push_str("# HELP sekisho_ike_events_total IKE events and refusals by kind, since start.\n# TYPE sekisho_ike_events_total counter\n");
    for (event, value) in counters.as_object().into_iter().flatten() {
        let _ = writeln!(out, "sekisho_ike_events_total{{event=\"{event}\"}} {value}");
    }
    let _ = writeln!(out, "# HELP sekisho_ike_sas IKE SAs now, established or half-open.\n# TYPE sekisho_ike_sas gauge");
    let _ = writeln!(out, "sekisho_ike_sas{{state=\"established\"}} {}", responder.ike_sa_count().saturating_sub(responder.half_open_count()));
    let _ = writeln!(out, "sekisho_ike_sas{{state=\"half_open\"}} {}", responder.half_open_count());
    let h = &responder.handshake_seconds;
    let _ = writeln!(out, "# HELP sekisho_ike_handshake_seconds From IKE_SA_INIT to the IKE SA established.\n# TYPE sekisho_ike_handshake_seconds histogram");
    let mut cumulative = 0;
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        let _ = writeln!(out, "sekisho_ike_handshake_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "sekisho_ike_handshake_seconds_bucket{{le=\"+Inf\"}} {}\nsekisho_ike_handshake_seconds_sum {}\nsekisho_ike_handshake_seconds_count {}", h.count, h.sum, h.count);

    let mut tenants: BTreeMap<&str, (u64, u64, u64)> = responder.tenant_names().map(|n| (n, (0, 0, 0))).collect();
    for (sa, child) in responder.children() {
        let entry = tenants.entry(sa.tenant().unwrap_or("?")).or_default();
        entry.0 += 1;
        entry.1 += child.received.0;
        entry.2 += child.received.1;
    }
    let _ = writeln!(out, "# HELP sekisho_tenant_child_sas CHILD_SAs (tunnels) up, by tenant.\n# TYPE sekisho_tenant_child_sas gauge");
    for (tenant, (up, _, _)) in &tenants {
        let _ = writeln!(out, "sekisho_tenant_child_sas{{tenant=\"{}\"}} {up}", label(tenant));
    }
    // Gauges: each SA counts from zero, so the sums drop at every rekey.
    let _ = writeln!(out, "# HELP sekisho_tenant_received_packets Packets received from the tenant's clinics on its current SAs.\n# TYPE sekisho_tenant_received_packets gauge");
    for (tenant, (_, packets, _)) in &tenants {
        let _ = writeln!(out, "sekisho_tenant_received_packets{{tenant=\"{}\"}} {packets}", label(tenant));
    }
    let _ = writeln!(out, "# HELP sekisho_tenant_received_bytes Inner bytes received from the tenant's clinics on its current SAs.\n# TYPE sekisho_tenant_received_bytes gauge");
    for (tenant, (_, _, bytes)) in &tenants {
        let _ = writeln!(out, "sekisho_tenant_received_bytes{{tenant=\"{}\"}} {bytes}", label(tenant));
    }
    let _ = writeln!(out, "# HELP sekisho_tenant_nat_port_blocks NAT port blocks the tenant holds, over all workers.\n# TYPE sekisho_tenant_nat_port_blocks gauge");
    for (tenant, blocks) in &nat.held {
        let _ = writeln!(out, "sekisho_tenant_nat_port_blocks{{tenant=\"{}\"}} {}", label(tenant), blocks.len());
    }
    let _ = writeln!(out, "# HELP sekisho_tenant_nat_sessions NAT sessions the tenant has, over all workers (reported every 10 s).\n# TYPE sekisho_tenant_nat_sessions gauge");
    for (tenant, per_worker) in sessions.into_iter().flatten() {
        let _ = writeln!(out, "sekisho_tenant_nat_sessions{{tenant=\"{}\"}} {}", label(tenant), per_worker.values().map(|&n| u64::from(n)).sum::<u64>());
    }
    if let Some(workers) = dataplane.and_then(|d| d["workers"].as_array()) {
        let _ = writeln!(out, "# HELP sekisho_dataplane_total Dataplane counters by worker (drop_* are drops by reason).\n# TYPE sekisho_dataplane_total counter");
        for w in workers {
            for (counter, value) in w["counters"].as_object().into_iter().flatten() {
                let _ = writeln!(out, "sekisho_dataplane_total{{worker=\"{}\",counter=\"{counter}\"}} {value}", w["lcore"]);
            }
        }
    }
    out
}

/// Scrapes served at once.
const MAX_SCRAPES: usize = 8;

/// Serves the latest `text` at `GET /metrics` on `address`, from a thread.
pub fn serve(address: SocketAddr) -> std::io::Result<Arc<Mutex<String>>> {
    let listener = TcpListener::bind(address)?;
    let text = Arc::new(Mutex::new(String::new()));
    let shared = text.clone();
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        crate::admin::each_in_own_thread(listener.incoming().flatten(), MAX_SCRAPES, move |stream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            let mut request = String::new();
            // The request line is all we need.
            if BufReader::new(&stream).take(8192).read_line(&mut request).is_err() {
                return;
            }
            let response = if request.starts_with("GET /metrics ") {
                let body = shared.lock().map(|t| t.clone()).unwrap_or_default();
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = (&stream).write_all(response.as_bytes());
        })
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_blocks_are_followed_as_the_nat_log_grows_and_after_rotation() {
        let path = std::env::temp_dir().join(format!("sekisho-natlog-{}.jsonl", std::process::id()));
        let line = |event: &str, ports: &str| format!("{{\"event\":\"port_block_{event}\",\"tenant\":\"clinic-1\",\"address\":\"100.64.0.1\",\"ports\":\"{ports}\",\"worker\":0}}\n");
        std::fs::write(&path, line("allocated", "1024-1535") + &line("allocated", "1536-2047")).unwrap();
        let mut blocks = NatBlocks::new(&path);
        blocks.update();
        assert_eq!(blocks.held["clinic-1"].len(), 2);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(line("released", "1024-1535").as_bytes()).unwrap();
        file.write_all(b"{\"event\":\"port_block_allocated\",\"ten").unwrap();
        blocks.update();
        assert_eq!(blocks.held["clinic-1"].len(), 1, "a half-written line waits");
        std::fs::write(&path, line("allocated", "4096-4607")).unwrap();
        blocks.update();
        assert_eq!(blocks.held["clinic-1"].iter().map(|b| b.1.as_str()).collect::<Vec<_>>(), vec!["4096-4607"], "rotated: read anew");
        // A line that is not UTF-8 is passed over; a restarted dataplane holds nothing.
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"\xff\xfe\n{\"event\":\"dataplane_started\"}\n").unwrap();
        file.write_all(line("allocated", "512-1023").as_bytes()).unwrap();
        blocks.update();
        assert_eq!(blocks.held["clinic-1"].iter().map(|b| b.1.as_str()).collect::<Vec<_>>(), vec!["512-1023"]);
    }
}
