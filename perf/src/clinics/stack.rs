//! The whole gateway on virtual devices for one run: the emulator (which
//! owns the `net_vhost` sockets), then the dataplane (whose `virtio_user`
//! ports connect to them), then the control process on the dataplane's
//! rings. The emulator starts its clinics once control says it is ready.

use super::setup::Site;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The file the emulator waits for before its clinics start.
pub const GO_FILE: &str = "control-ready";

pub struct Stack {
    site: PathBuf,
    emulator: Child,
    dataplane: Option<Child>,
    control: Option<Child>,
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        if Instant::now() > deadline {
            bail!("{what} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Lines DPDK's vhost library prints at each connection, of no use here.
fn noise(line: &str) -> bool {
    ["VHOST_CONFIG", "EAL:", "TELEMETRY", "vhost_user", "virtio_user"].iter().any(|p| line.starts_with(p))
}

impl Stack {
    /// Starts the emulator (`bin_dir/sekisho-clinics emulate` with `args`),
    /// the dataplane and control for `site`; its live view goes to stderr.
    pub fn start(bin_dir: &Path, site: &Site, args: &[String]) -> Result<Stack> {
        for f in [site.outside_sock(), site.inside_sock(), site.path(GO_FILE)] {
            let _ = std::fs::remove_file(f);
        }
        let mut emulator = Command::new(bin_dir.join("sekisho-clinics"))
            .arg("emulate")
            .arg("--dir")
            .arg(&site.dir)
            .args(args)
            .stdout(std::fs::File::create(site.path("report.json"))?)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting sekisho-clinics emulate")?;
        let stderr = emulator.stderr.take().expect("piped");
        let log = site.path("emulator.log");
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(log).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if !noise(&line) {
                    eprintln!("{line}");
                }
            }
        });
        let mut stack = Stack { site: site.dir.clone(), emulator, dataplane: None, control: None };
        wait_for("the emulator made no vhost sockets", Duration::from_secs(60), || {
            if let Some(status) = stack.emulator.try_wait()? {
                bail!("the emulator ended: {status}");
            }
            Ok(site.outside_sock().exists() && site.inside_sock().exists())
        })?;
        let mut dataplane = Command::new(bin_dir.join("sekisho-dataplane"));
        dataplane.args(["run", "--config"]).arg(site.path("dataplane.toml"));
        let log = site.path("dataplane.log");
        stack.dataplane = Some(start_until(dataplane, (&site.path("dataplane.json"), &log), "the dataplane did not start forwarding", Duration::from_secs(60), || {
            std::fs::read_to_string(&log).unwrap_or_default().contains("forwarding")
        })?);
        let mut control = Command::new(bin_dir.join("sekisho-control"));
        control.args(["run", "--config"]).arg(site.path("control.toml")).arg("--run-dir").arg(site.run_dir());
        let events = site.path("control.jsonl");
        stack.control = Some(start_until(control, (&events, &site.path("control.log")), "control did not link to the dataplane", Duration::from_secs(120), || {
            std::fs::read_to_string(&events).unwrap_or_default().contains("linked to the dataplane")
        })?);
        std::fs::write(site.path(GO_FILE), b"")?;
        Ok(stack)
    }

    /// Waits for the emulator to finish; its JSON report.
    pub fn wait(&mut self) -> Result<(ExitStatus, serde_json::Value)> {
        let status = self.emulator.wait()?;
        let path = self.site.join("report.json");
        let text = std::fs::read_to_string(&path)?;
        let report = serde_json::from_str(&text).with_context(|| format!("the emulator's report {} ({status})", path.display()))?;
        Ok((status, report))
    }

    /// Stops control, then the dataplane; the dataplane's closing summary.
    pub fn stop(&mut self) -> Result<serde_json::Value> {
        for child in [self.control.take(), self.dataplane.take()].into_iter().flatten() {
            terminate(child)?;
        }
        let text = std::fs::read_to_string(self.site.join("dataplane.json")).unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}

/// Starts `command` with its stdout and stderr in files and waits until
/// `ready`; a process that ends first, or is not ready in time, fails with
/// its stderr (and is stopped).
fn start_until(mut command: Command, (stdout, stderr): (&Path, &Path), what: &str, timeout: Duration, ready: impl Fn() -> bool) -> Result<Child> {
    let name = command.get_program().to_string_lossy().into_owned();
    let mut child = command.stdout(std::fs::File::create(stdout)?).stderr(std::fs::File::create(stderr)?).spawn().with_context(|| format!("starting {name}"))?;
    let waited = wait_for(what, timeout, || match child.try_wait()? {
        Some(status) => bail!("{name} ended ({status}):\n{}", std::fs::read_to_string(stderr).unwrap_or_default()),
        None => Ok(ready()),
    });
    match waited {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = terminate(child);
            Err(e)
        }
    }
}

fn terminate(mut child: Child) -> Result<()> {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait()?;
    Ok(())
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.emulator.kill();
        let _ = self.emulator.wait();
        for child in [self.control.take(), self.dataplane.take()].into_iter().flatten() {
            let _ = terminate(child);
        }
    }
}
