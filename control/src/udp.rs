//! IKE over the host's own UDP sockets, for a control process that runs
//! without a dataplane in front of it (IKE interop tests, the IKE load
//! tester's target). With a dataplane, IKE comes and goes through the
//! shared-memory link instead (`link`).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};

/// The port of UDP-encapsulated ESP and of IKE after NAT detection (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// On port 4500, IKE messages start with four zero bytes (RFC 3948 §2.2).
const NON_ESP_MARKER: [u8; 4] = [0; 4];

pub struct UdpTransport {
    sockets: Vec<UdpSocket>,
    buf: Vec<u8>,
    /// ESP datagrams on 4500 (they have nowhere to go without a dataplane).
    pub esp_ignored: u64,
}

/// One IKE datagram received: peer, our address, the IKE message.
pub struct Received {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub len: usize,
    offset: usize,
}

impl UdpTransport {
    pub fn bind(addresses: &[SocketAddr]) -> std::io::Result<UdpTransport> {
        let mut sockets = Vec::new();
        for a in addresses {
            let s = UdpSocket::bind(a).map_err(|e| std::io::Error::new(e.kind(), format!("{a}: {e}")))?;
            s.set_nonblocking(true)?;
            sockets.push(s);
        }
        Ok(UdpTransport { sockets, buf: vec![0u8; 65536], esp_ignored: 0 })
    }

    /// The next IKE datagram waiting on any socket, if there is one.
    pub fn receive(&mut self) -> std::io::Result<Option<Received>> {
        for s in &self.sockets {
            loop {
                match s.recv_from(&mut self.buf) {
                    Ok((len, from)) => {
                        let to = s.local_addr()?;
                        if to.port() != NAT_T_PORT {
                            return Ok(Some(Received { from, to, len, offset: 0 }));
                        }
                        if len >= 4 && self.buf[..4] == NON_ESP_MARKER {
                            return Ok(Some(Received { from, to, len: len - 4, offset: 4 }));
                        }
                        // A NAT-keepalive (one 0xff byte) or ESP: not ours.
                        if len > 1 {
                            self.esp_ignored += 1;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(None)
    }

    pub fn datagram(&self, r: &Received) -> &[u8] {
        &self.buf[r.offset..r.offset + r.len]
    }

    /// Sends from our address `from` (one of the bound ones).
    pub fn send(&self, from: SocketAddr, to: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        let socket = self.sockets.iter().find(|s| s.local_addr().is_ok_and(|a| a == from)).or_else(|| self.sockets.iter().find(|s| s.local_addr().is_ok_and(|a| a.port() == from.port())));
        let Some(socket) = socket else {
            return Err(std::io::Error::new(ErrorKind::AddrNotAvailable, format!("no socket bound to {from}")));
        };
        if from.port() == NAT_T_PORT {
            socket.send_to(&[&NON_ESP_MARKER[..], datagram].concat(), to)?;
        } else {
            socket.send_to(datagram, to)?;
        }
        Ok(())
    }
}
