//! The operators' socket: `sekisho-ctl` sends one JSON request per
//! connection and reads one JSON answer. Who may use it is the socket
//! file's permission (0660: its owner and group); each request is tagged
//! with the caller's Unix user (SO_PEERCRED) for the audit trail. A thread
//! takes the connections and hands each request to the control loop, which
//! answers between IKE messages, so that a slow client never holds it up.

use crate::config::TenantEdit;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Counters of the responder and a count of SAs and tenants.
    Status,
    Tenants,
    /// IKE SAs and their CHILD_SAs, of one tenant or all.
    Tunnels { tenant: Option<String> },
    /// The dataplane's counters, per worker.
    Dataplane,
    /// The NAT port blocks a tenant holds now (from the dataplane's NAT log).
    Nat { tenant: String },
    /// Deletes a tenant's IKE SAs (it may connect again).
    Terminate { tenant: String },
    Reload,
    Tenant { edit: TenantEdit },
}

/// A request with who sent it and where the answer goes.
pub struct Call {
    pub request: Request,
    pub actor: String,
    pub reply: mpsc::Sender<Result<Value, String>>,
}

/// Longest a client may take to send its request, and control to answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients served at once.
const MAX_CLIENTS: usize = 8;
/// Largest request: a tenant with its rules.
const MAX_REQUEST: u64 = 1 << 20;

/// The Unix user behind a connection, as "name" (or "uid N").
fn actor(stream: &UnixStream) -> String {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) => {
            let uid = nix::unistd::Uid::from_raw(cred.uid());
            match nix::unistd::User::from_uid(uid) {
                Ok(Some(user)) => user.name,
                _ => format!("uid {uid}"),
            }
        }
        Err(_) => "unknown".into(),
    }
}

/// Binds the socket at `path` (a stale one is replaced), readable and
/// writable by its owner and group only, and starts taking connections;
/// the calls come out of the receiver.
pub fn serve(path: &Path) -> std::io::Result<mpsc::Receiver<Call>> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => return Err(std::io::Error::other("exists and is not a socket")),
        Err(_) => {}
    }
    // Born with its final permissions: no moment when others may connect.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(umask);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let (calls, receiver) = mpsc::channel();
    std::thread::Builder::new().name("admin".into()).spawn(move || {
        each_in_own_thread(listener.incoming().flatten(), MAX_CLIENTS, move |stream| {
            let _ = answer(stream, &calls);
        })
    })?;
    Ok(receiver)
}

/// Handles each of `clients` in a thread of its own, at most `most` at
/// once (more wait to be taken): a slow client holds up only itself.
pub fn each_in_own_thread<S: Send + 'static>(clients: impl Iterator<Item = S>, most: usize, handle: impl Fn(S) + Send + Clone + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let busy = std::sync::Arc::new(AtomicUsize::new(0));
    for client in clients {
        while busy.load(Ordering::Acquire) >= most {
            std::thread::sleep(Duration::from_millis(10));
        }
        busy.fetch_add(1, Ordering::AcqRel);
        let (done, handle) = (busy.clone(), handle.clone());
        let spawned = std::thread::Builder::new().spawn(move || {
            handle(client);
            done.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn answer(stream: UnixStream, calls: &mpsc::Sender<Call>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let actor = actor(&stream);
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let result = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (reply, answer) = mpsc::channel();
            if calls.send(Call { request, actor, reply }).is_err() {
                return Ok(());
            }
            answer.recv_timeout(ANSWER_TIMEOUT).unwrap_or_else(|_| Err("the control process did not answer in time".into()))
        }
        Err(e) => Err(format!("not a request: {e}")),
    };
    let body = match result {
        Ok(value) => serde_json::json!({ "ok": value }),
        Err(why) => serde_json::json!({ "error": why }),
    };
    (&stream).write_all(format!("{body}\n").as_bytes())
}

/// Sends `request` to the control process at `path`; its answer, or why
/// there is none (the error it gave, or why it could not be asked).
pub fn call(path: &Path, request: &Request) -> Result<Value, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| format!("{}: {e} (is sekisho-control running, and may you use its socket?)", path.display()))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT + CLIENT_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.write_all(format!("{}\n", serde_json::to_string(request).expect("requests serialize")).as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(|e| e.to_string())?;
    let mut answer: Value = serde_json::from_str(&line).map_err(|e| format!("an answer that is not JSON: {e}"))?;
    match (answer.get_mut("ok").map(Value::take), answer.get("error").and_then(Value::as_str)) {
        (Some(value), _) => Ok(value),
        (None, Some(why)) => Err(why.to_string()),
        _ => Err(format!("an answer without ok or error: {line}")),
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_with_the_callers_user_and_bad_ones_get_a_reason() {
        let path = std::env::temp_dir().join(format!("sekisho-admin-{}.sock", std::process::id()));
        let calls = serve(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        let server = std::thread::spawn(move || {
            let call = calls.recv().unwrap();
            let echo = serde_json::json!({ "request": format!("{:?}", call.request), "actor": call.actor });
            call.reply.send(Ok(echo)).unwrap();
            let call = calls.recv().unwrap();
            call.reply.send(Err("no tenant named 'x'".into())).unwrap();
        });
        let answer = call(&path, &Request::Tunnels { tenant: Some("clinic-1".into()) }).unwrap();
        assert!(answer["request"].as_str().unwrap().contains("clinic-1"));
        assert!(!answer["actor"].as_str().unwrap().is_empty() && answer["actor"] != "unknown");
        assert_eq!(call(&path, &Request::Terminate { tenant: "x".into() }), Err("no tenant named 'x'".into()));
        server.join().unwrap();
        // Not JSON at all: the reason, without bothering the control loop.
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(b"hello\n").unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        assert!(line.contains("not a request"), "{line}");
        // A file that is not a socket is left alone.
        let file = std::env::temp_dir().join(format!("sekisho-admin-{}.txt", std::process::id()));
        std::fs::write(&file, "keep me").unwrap();
        assert!(serve(&file).unwrap_err().to_string().contains("not a socket"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}
