//! The audit trail: every change to tenants, rules, certificates and CAs
//! (through `sekisho-ctl` or a reload) as one JSON line: when, who (the
//! caller's Unix user), what, and the state before and after. The file is
//! opened for each line, so that rotating it (renaming it away) starts a
//! new one. The NAT log of port blocks (`nat.jsonl`, from the dataplane)
//! lies beside it in the run directory.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Audit {
    path: PathBuf,
}

/// A UTC time as RFC 3339, from seconds since the epoch (civil-from-days,
/// after Howard Hinnant's algorithm).
pub fn rfc3339(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Audit {
    pub fn new(path: &Path) -> Audit {
        Audit { path: path.to_owned() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one change: `action` on `subject` by `actor`, with the
    /// state `before` and `after` (null where there was or is none).
    pub fn record(&self, actor: &str, action: &str, subject: &str, before: Value, after: Value) -> std::io::Result<()> {
        let line = serde_json::json!({"time": rfc3339(now()), "actor": actor, "action": action, "subject": subject, "before": before, "after": after});
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        // One write per line: concurrent appenders never interleave within it.
        file.write_all(format!("{line}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_696_472), "2026-11-26T12:34:32Z");
    }

    #[test]
    fn each_change_is_one_line_and_a_rotated_file_starts_anew() {
        let dir = std::env::temp_dir().join(format!("sekisho-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let audit = Audit::new(&dir.join("audit.jsonl"));
        audit.record("alice", "tenant_add", "clinic-1", Value::Null, serde_json::json!({"name": "clinic-1"})).unwrap();
        std::fs::rename(dir.join("audit.jsonl"), dir.join("audit.jsonl.1")).unwrap();
        audit.record("bob", "tenant_remove", "clinic-1", serde_json::json!({"name": "clinic-1"}), Value::Null).unwrap();
        let old: Value = serde_json::from_str(std::fs::read_to_string(dir.join("audit.jsonl.1")).unwrap().trim()).unwrap();
        let new: Value = serde_json::from_str(std::fs::read_to_string(dir.join("audit.jsonl")).unwrap().trim()).unwrap();
        assert_eq!((old["actor"].as_str(), old["after"]["name"].as_str()), (Some("alice"), Some("clinic-1")));
        assert_eq!((new["action"].as_str(), new["after"].is_null()), (Some("tenant_remove"), true));
        assert!(new["time"].as_str().unwrap().ends_with('Z'));
    }
}
