//! strongSwan as a real IKEv2 peer (a clinic router), each instance in a
//! network namespace of its own, with the userspace `kernel-libipsec`
//! plugin (this kernel has no XFRM). Recipes: ../shared/design/PEERS.md.

use sekisho_control::pki::issue::{Authority, KeyKind};
use crate::bin;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A network namespace, deleted (with its links) when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run("ip", &["netns", "add", name]);
        let ns = Netns(name.to_owned());
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// A command inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Runs a command that must succeed; its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A veth pair between two namespaces, up, with addresses (prefix included).
pub fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    run("ip", &["link", "add", a_if, "netns", &a.0, "type", "veth", "peer", "name", b_if, "netns", &b.0]);
    for (ns, name, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if addr.contains(':') {
            ns.ip(&["addr", "add", addr, "dev", name, "nodad"]);
        } else {
            ns.ip(&["addr", "add", addr, "dev", name]);
        }
        ns.ip(&["link", "set", name, "up"]);
    }
}

/// A test PKI: a CA, the gateway's certificate, clinics', and one from a
/// CA the gateway does not trust. PEM files in `dir`.
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    /// Writes ca.pem, gw.pem/gw.key (gw.sekisho.example), and for each
    /// clinic name NAME.pem/NAME.key; `foreign` gets a certificate from
    /// another CA, as foreign.pem/foreign.key.
    pub fn create(dir: &Path, clinics: &[&str], foreign: &str) -> TestPki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca = Authority::new("Sekisho Test CA", KeyKind::Rsa2048);
        let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).expect("write PEM");
        write("ca.pem", ca.cert.to_pem().expect("PEM"));
        // The operator's CA key, for the tools that issue router certificates.
        write("ca.key", ca.key.private_key_to_pem_pkcs8().expect("PEM"));
        let (cert, key) = ca.issue("gw.sekisho.example", KeyKind::Rsa2048, -1, 30);
        write("gw.pem", cert.to_pem().expect("PEM"));
        write("gw.key", key.private_key_to_pem_pkcs8().expect("PEM"));
        for name in clinics {
            let (cert, key) = ca.issue(name, KeyKind::Rsa2048, -1, 30);
            write(&format!("{name}.pem"), cert.to_pem().expect("PEM"));
            write(&format!("{name}.key"), key.private_key_to_pem_pkcs8().expect("PEM"));
        }
        let other = Authority::new("Someone Else's CA", KeyKind::Rsa2048);
        let (cert, key) = other.issue(foreign, KeyKind::Rsa2048, -1, 30);
        write("foreign.pem", cert.to_pem().expect("PEM"));
        write("foreign.key", key.private_key_to_pem_pkcs8().expect("PEM"));
        TestPki { dir: dir.to_owned() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A charon daemon in a namespace, configured from `dir`; killed when dropped.
pub struct Charon {
    pub dir: PathBuf,
    ns: String,
    process: std::process::Child,
}

impl Charon {
    /// Starts charon with `swanctl_conf`, the CA and the given
    /// certificate/key pairs (file names in `pki`), and loads them.
    pub fn start(ns: &Netns, dir: &Path, pki: &TestPki, certs: &[(&str, &str)], swanctl_conf: &str) -> Charon {
        for sub in ["x509ca", "x509", "private"] {
            std::fs::create_dir_all(dir.join("swanctl").join(sub)).expect("swanctl dir");
        }
        std::fs::copy(pki.path("ca.pem"), dir.join("swanctl/x509ca/ca.pem")).expect("CA");
        for (cert, key) in certs {
            std::fs::copy(pki.path(cert), dir.join("swanctl/x509").join(cert)).expect("cert");
            std::fs::copy(pki.path(key), dir.join("swanctl/private").join(key)).expect("key");
        }
        std::fs::write(dir.join("swanctl/swanctl.conf"), swanctl_conf).expect("swanctl.conf");
        Charon::configured(ns, dir)
    }

    /// Starts charon with the swanctl configuration already in `dir/swanctl`
    /// (as a router installs it in /etc/swanctl), and loads it.
    pub fn configured(ns: &Netns, dir: &Path) -> Charon {
        std::fs::create_dir_all(dir.join("run")).expect("run dir");
        let d = dir.display();
        let conf = format!(
            "charon {{\n  load_modular = no\n  load = random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey gcm aes sha2 sha1 hmac kdf gmp kernel-libipsec kernel-netlink socket-default vici updown\n  \
             retransmit_timeout = 1.0\n  retransmit_tries = 3\n  \
             filelog {{\n    peer {{\n      path = {d}/charon.log\n      flush_line = yes\n      default = 1\n      ike = 2\n      cfg = 1\n    }}\n  }}\n  \
             plugins {{\n    vici {{\n      socket = unix://{d}/run/charon.vici\n    }}\n  }}\n}}\nswanctl {{\n  socket = unix://{d}/run/charon.vici\n}}\n"
        );
        std::fs::write(dir.join("strongswan.conf"), conf).expect("strongswan.conf");
        let child = ns
            .command("setsid")
            .arg("/usr/sbin/charon-systemd")
            .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .stdout(std::fs::File::create(dir.join("charon.out")).expect("charon.out"))
            .stderr(std::fs::File::create(dir.join("charon.err")).expect("charon.err"))
            .spawn()
            .expect("charon-systemd");
        let charon = Charon { dir: dir.to_owned(), ns: ns.0.clone(), process: child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.join("run/charon.vici").exists() {
            assert!(Instant::now() < deadline, "charon did not start: {}", charon.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let (ok, out) = charon.swanctl(&["--load-all"]);
        assert!(ok, "swanctl --load-all: {out}");
        charon
    }

    /// Runs swanctl with this instance's config; (success, output).
    pub fn swanctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "swanctl"])
            .args(args)
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .env("SWANCTL_DIR", self.dir.join("swanctl"))
            .output()
            .expect("swanctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        // The TPM plugin's complaints are noise on machines without one.
        let text = text.lines().filter(|l| !l.to_ascii_lowercase().contains("tpm")).collect::<Vec<_>>().join("\n");
        (out.status.success(), text)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.process.id().to_string()).output();
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One connection of a clinic's swanctl.conf: `name` to `remote` with
/// child `lan` for `local_ts`, certificate `cert`, identity `id`. Wrap
/// connections with [`swanctl_conf`].
pub fn clinic_connection(name: &str, local: &str, remote: &str, id: &str, cert: &str, local_ts: &str, remote_ts: &str) -> String {
    format!(
        "  {name} {{\n    version = 2\n    local_addrs = {local}\n    remote_addrs = {remote}\n    proposals = aes256gcm16-prfsha256-modp2048\n    \
         local {{\n      auth = pubkey\n      certs = {cert}\n      id = {id}\n    }}\n    remote {{\n      auth = pubkey\n      id = gw.sekisho.example\n    }}\n    \
         children {{\n      lan {{\n        local_ts = {local_ts}\n        remote_ts = {remote_ts}\n        esp_proposals = aes128gcm16-modp2048\n        mode = tunnel\n        start_action = none\n      }}\n    }}\n  }}\n"
    )
}

pub fn swanctl_conf(connections: &[String]) -> String {
    format!("connections {{\n{}}}\n", connections.concat())
}

/// `sekisho-control run` in a namespace, its events in a file.
pub struct Control {
    child: Child,
    events: PathBuf,
}

impl Control {
    /// Starts it with `args` after `--config` (`--listen ...` or `--run-dir ...`).
    pub fn start(ns: &Netns, dir: &Path, config: &str, args: &[&str]) -> Control {
        std::fs::create_dir_all(dir).expect("dir");
        let config_path = dir.join("control.toml");
        std::fs::write(&config_path, config).unwrap();
        let events = dir.join("events.jsonl");
        let mut command = ns.command(bin("sekisho-control").to_str().unwrap());
        command.arg("run").arg("--config").arg(&config_path);
        command.args(args);
        let child = command.stdout(std::fs::File::create(&events).unwrap()).stderr(Stdio::inherit()).spawn().unwrap();
        let control = Control { child, events };
        control.wait_for("ready", |v| v.get("ready").is_some());
        control
    }

    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits for an event line matching `f`; returns it.
    pub fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = self.lines().into_iter().find(|v| f(v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "no {what} from sekisho-control; its events:\n{}", std::fs::read_to_string(&self.events).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many of its event lines carry `key` (`child_up`, `child_down`...).
    pub fn count(&self, key: &str) -> usize {
        self.lines().iter().filter(|v| v.get(key).is_some()).count()
    }

    /// Waits up to `timeout` until `n` of its event lines carry `key`;
    /// fails with its log and that of its peer `charon`.
    pub fn wait_for_count(&self, key: &str, n: usize, timeout: Duration, charon: &Charon) {
        crate::wait_until(timeout, || self.count(key) >= n, || format!("no {key} #{n} from sekisho-control:\n{}\ncharon:\n{}", self.logs(), charon.log()));
    }

    /// Replaces its config file and sends SIGHUP.
    pub fn reload(&self, config: &str) {
        std::fs::write(self.events.with_file_name("control.toml"), config).expect("config");
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Stops it (SIGTERM) and returns its closing summary.
    pub fn stop(mut self) -> Value {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let _ = self.child.wait();
        self.lines().into_iter().find_map(|v| v.get("summary").cloned()).unwrap_or_else(|| panic!("no summary from sekisho-control:\n{}", self.logs()))
    }

    pub fn logs(&self) -> String {
        self.lines().iter().filter_map(|v| v["log"].as_str().map(str::to_owned)).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}


/// `sekisho-dataplane run` in a namespace with af_packet ports on veths.
pub struct Dataplane {
    child: Option<Child>,
    pub run_dir: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Dataplane {
    /// Starts it with `config` (written to `dir`) and waits for its rings.
    pub fn start(ns: &Netns, dir: &Path, config: &str, run_dir: &Path) -> Dataplane {
        std::fs::create_dir_all(dir).expect("dir");
        let path = dir.join("dataplane.toml");
        std::fs::write(&path, config).expect("config");
        let (stdout, stderr) = (dir.join("dataplane.out"), dir.join("dataplane.err"));
        let child = ns
            .command(bin("sekisho-dataplane").to_str().expect("path"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(std::fs::File::create(&stdout).expect("stdout"))
            .stderr(std::fs::File::create(&stderr).expect("stderr"))
            .spawn()
            .expect("sekisho-dataplane");
        let d = Dataplane { child: Some(child), run_dir: run_dir.to_owned(), stdout, stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&d.stderr).unwrap_or_default().contains("forwarding") {
            assert!(Instant::now() < deadline, "the dataplane did not start:\n{}", std::fs::read_to_string(&d.stderr).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// Stops it (SIGINT) and returns its closing summary.
    pub fn stop(mut self) -> Value {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the dataplane did not stop:\n{}", std::fs::read_to_string(&self.stderr).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::last_json(&std::fs::read_to_string(&self.stdout).unwrap_or_default())
    }

    /// Its log, and its counters now (for failure messages).
    pub fn log(&self) -> String {
        let stats = Command::new(bin("sekisho-dataplane")).args(["stats", "--json", "--run-dir"]).arg(&self.run_dir).output();
        let counters = stats.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        format!("{}\ncounters: {counters}", std::fs::read_to_string(&self.stderr).unwrap_or_default())
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `tests/peers/udp_echo.py` in a namespace.
pub fn udp_echo(ns: &Netns, args: &[&str]) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/udp_echo.py");
    let mut c = ns.command("/usr/bin/python3");
    c.arg(script).args(args);
    c
}
