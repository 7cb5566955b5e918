//! Helpers for tests that run Sekisho's real binaries as separate processes.

pub mod strongswan;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A workspace binary, built beside the test (`cargo build --release --bins`
/// runs before `cargo test --release` in the test script).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build the binaries first (cargo build --release --bins)", path.display());
    path
}

/// Waits up to `timeout` for `done`, looking every 50 ms; fails with
/// `context` if it never comes.
pub fn wait_until(timeout: Duration, done: impl Fn() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?}:\n{}", context());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sekisho-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process that is killed if the test ends before it does.
pub struct Process {
    pub child: Option<Child>,
    pub name: String,
}

impl Process {
    pub fn spawn(name: &str, command: &mut Command) -> Process {
        let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Process { child: Some(child), name: name.to_owned() }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("kill");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Waits up to `timeout` for exit; panics (after killing it) if it does not.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                let Output { status, stdout, stderr } = child.wait_with_output().expect("output");
                return (status, String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{} did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last line of `stdout` that parses as JSON.
pub fn last_json(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line in output:\n{stdout}"))
}
