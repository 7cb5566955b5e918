//! `sekisho-ctl`: the operators' command line. It talks to a running
//! `sekisho-control` over its Unix socket (who may is the socket's file
//! permission); every change is recorded in the audit trail with the
//! caller's Unix user. Tables for people, `--json` for scripts.

use clap::{Parser, Subcommand};
use sekisho_control::admin::{call, Request};
use sekisho_control::config::TenantEdit;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "sekisho-ctl", about = "Operate a running Sekisho gateway")]
struct Cli {
    /// The control process's socket (gateway.admin_socket).
    #[arg(long, default_value = "/etc/sekisho/admin.sock")]
    socket: PathBuf,
    /// Answers as JSON, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SAs, tenants and the responder's counters.
    Status,
    /// Every tenant, with its tunnels and traffic.
    Tenants,
    /// IKE SAs and their CHILD_SAs: age, rekeys, traffic.
    Tunnels {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The dataplane's counters, per worker.
    Dataplane,
    /// A tenant's NAT sessions and the port blocks it holds.
    Nat { tenant: String },
    /// Ends a tenant's tunnels (its clinics may connect again).
    Terminate { tenant: String },
    /// Loads the config file again.
    Reload,
    /// Adds, changes, disables, enables or removes a tenant (the config file is rewritten).
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(Subcommand)]
enum TenantCommand {
    /// A new tenant from FILE: one [[tenants]] entry's keys (name, identities, subnets, rules...).
    Add { file: PathBuf },
    /// Replaces the tenant of FILE's name.
    Change { file: PathBuf },
    Remove { name: String },
    /// Keeps the tenant in the file, but ends its tunnels and lets nobody connect as it.
    Disable { name: String },
    Enable { name: String },
}

fn read(file: &PathBuf) -> String {
    std::fs::read_to_string(file).unwrap_or_else(|e| fail(&format!("{}: {e}", file.display())))
}

fn fail(why: &str) -> ! {
    eprintln!("sekisho-ctl: {why}");
    std::process::exit(1);
}

fn main() {
    let cli = Cli::parse();
    let request = match &cli.command {
        Command::Status => Request::Status,
        Command::Tenants => Request::Tenants,
        Command::Tunnels { tenant } => Request::Tunnels { tenant: tenant.clone() },
        Command::Dataplane => Request::Dataplane,
        Command::Nat { tenant } => Request::Nat { tenant: tenant.clone() },
        Command::Terminate { tenant } => Request::Terminate { tenant: tenant.clone() },
        Command::Reload => Request::Reload,
        Command::Tenant(t) => Request::Tenant {
            edit: match t {
                TenantCommand::Add { file } => TenantEdit::Add(read(file)),
                TenantCommand::Change { file } => TenantEdit::Change(read(file)),
                TenantCommand::Remove { name } => TenantEdit::Remove(name.clone()),
                TenantCommand::Disable { name } => TenantEdit::Disable(name.clone()),
                TenantCommand::Enable { name } => TenantEdit::Enable(name.clone()),
            },
        },
    };
    let answer = call(&cli.socket, &request).unwrap_or_else(|why| fail(&why));
    if cli.json {
        println!("{answer}");
        return;
    }
    match &cli.command {
        Command::Tenants => table(&answer, &["name", "disabled", "worker", "subnets", "ike_sas", "child_sas", "received_packets", "received_bytes"]),
        Command::Tunnels { .. } => {
            let rows: Vec<Value> = answer
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|sa| {
                    sa["child_sas"].as_array().cloned().unwrap_or_default().into_iter().map(move |c| {
                        serde_json::json!({"tenant": sa["tenant"], "peer": sa["peer"], "ike_age_s": sa["age_seconds"], "ike_rekey_in_s": sa["rekey_in_seconds"],
                            "inbound_spi": c["inbound_spi"], "outbound_spi": c["outbound_spi"], "clinic": c["clinic"], "age_s": c["age_seconds"], "rekeys": c["rekeys"], "rekey_in_s": c["rekey_in_seconds"],
                            "received_packets": c["received_packets"]})
                    })
                })
                .collect();
            table(&Value::Array(rows), &["tenant", "peer", "ike_age_s", "ike_rekey_in_s", "inbound_spi", "outbound_spi", "clinic", "age_s", "rekeys", "rekey_in_s", "received_packets"]);
        }
        Command::Nat { .. } => {
            println!("sessions: {}", cell(&answer["sessions"]));
            table(&answer["port_blocks"], &["address", "ports", "worker"]);
        }
        Command::Dataplane => {
            let rows: Vec<Value> = answer["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|w| w["counters"].as_object().into_iter().flatten().filter(|(_, v)| v.as_u64() != Some(0)).map(move |(k, v)| serde_json::json!({"lcore": w["lcore"], "counter": k, "value": v})))
                .collect();
            table(&Value::Array(rows), &["lcore", "counter", "value"]);
        }
        _ => pairs(&answer, ""),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Rows of objects as an aligned table with `columns`.
fn table(rows: &Value, columns: &[&str]) {
    let rows: Vec<Vec<String>> = rows.as_array().into_iter().flatten().map(|r| columns.iter().map(|c| cell(&r[*c])).collect()).collect();
    let widths: Vec<usize> = columns.iter().enumerate().map(|(i, c)| rows.iter().map(|r| r[i].len()).chain([c.len()]).max().unwrap_or(0)).collect();
    let line = |cells: Vec<String>| cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string();
    println!("{}", line(columns.iter().map(|c| c.to_uppercase()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
}

/// An object as `key: value` lines, nested keys joined by dots.
fn pairs(v: &Value, prefix: &str) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                pairs(v, &if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") });
            }
        }
        other => println!("{prefix}: {}", cell(other)),
    }
}
