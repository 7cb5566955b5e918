//! The tunnel tables while the dataplane runs. The manager thread is their
//! only writer: it checks each tunnel the control process installs or
//! removes exactly as the config file's tunnels are checked, hands the
//! owner worker its part (SAs and tunnel state, applied between bursts),
//! and publishes new routes once the owner has installed what they point
//! to (make before break). A tunnel index freed by a removal is reused
//! only after every worker has long moved to routes without it.

use crate::tunnels::TunnelConfig;
use crate::esp::sa::{InboundSa, OutboundSa, Tunnel};
use crate::policy::Policy;
use crate::sad::{OutboundRoute, OutboundRoutes, SaTable};
use crate::tunnels::{self, CheckedTunnel};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a freed tunnel index rests before reuse: workers pick up new
/// routes at their next burst, microseconds away; this leaves a wide margin.
pub const INDEX_QUARANTINE: Duration = Duration::from_secs(2);

/// A change for one worker's [`SaTable`].
pub enum TableUpdate {
    /// Installs or updates tunnel `index`: its state, inbound SAs to add
    /// and to remove, and a new outbound SA (None: keep the current one and
    /// its sequence number).
    Tunnel { index: u32, tunnel: Tunnel, add_inbound: Vec<InboundSa>, remove_inbound: Vec<u32>, outbound: Option<Box<OutboundSa>> },
    /// Removes tunnel `index` with its SAs.
    Remove { index: u32, inbound: Vec<u32> },
}

/// Applies an update on the owner worker.
pub fn apply(table: &mut SaTable, update: TableUpdate) {
    match update {
        TableUpdate::Tunnel { index, tunnel, add_inbound, remove_inbound, outbound } => {
            match table.tunnel_mut(index) {
                // NAT-T: keep the peer's port as learned from authenticated packets.
                Some(current) if current.remote == tunnel.remote && current.tenant == tunnel.tenant && current.udp.is_some() && tunnel.udp.is_some() => {
                    current.local = tunnel.local;
                    current.copy_dscp = tunnel.copy_dscp;
                }
                _ => table.install_tunnel(index, tunnel),
            }
            for sa in add_inbound {
                table.install_inbound(sa);
            }
            for spi in remove_inbound {
                table.remove_inbound(spi);
            }
            if let Some(sa) = outbound {
                table.install_outbound(index, *sa);
            }
        }
        TableUpdate::Remove { index, inbound } => {
            for spi in inbound {
                table.remove_inbound(spi);
            }
            table.remove_outbound(index);
            table.remove_tunnel(index);
        }
    }
}

struct Installed {
    checked: CheckedTunnel,
    index: u32,
    /// True for tunnels of the config file: control may not replace them.
    from_config: bool,
}

impl Installed {
    fn route(&self) -> OutboundRoute {
        OutboundRoute { core: self.checked.core, sa: self.index }
    }
    fn spis(&self) -> impl Iterator<Item = u32> + '_ {
        self.checked.inbound.iter().map(|(spi, ..)| *spi)
    }
}

/// What one change does: the owner worker's update, and the routes to
/// publish after it (None: unchanged).
pub struct Change {
    pub core: u8,
    pub update: TableUpdate,
    pub routes: Option<OutboundRoutes>,
    /// Publish the routes before the update (removals), not after.
    pub routes_first: bool,
}

pub struct TableManager {
    workers: usize,
    outside_addrs: Vec<IpAddr>,
    policy: Option<std::sync::Arc<Policy>>,
    routes: OutboundRoutes,
    tunnels: HashMap<String, Installed>,
    next_index: Vec<u32>,
    freed: Vec<Vec<(u32, Instant)>>,
    /// Outbound sequence numbers a previous run recorded, by SPI.
    resume: HashMap<u32, u64>,
}

impl TableManager {
    /// Starts from the config file's tunnels (already built by `tunnels::build`).
    pub fn new(configs: &[TunnelConfig], workers: usize, outside_addrs: Vec<IpAddr>, policy: Option<std::sync::Arc<Policy>>) -> Result<TableManager, (String, String)> {
        let mut m = TableManager { workers, outside_addrs, policy, routes: OutboundRoutes::default(), tunnels: HashMap::new(), next_index: vec![0; workers], freed: vec![Vec::new(); workers], resume: HashMap::new() };
        let mut next_slot = vec![0u32; workers];
        for (t, tc) in configs.iter().enumerate() {
            // The same order as tunnels::build, so the same indices.
            let checked = tunnels::check(t, tc, workers, &m.outside_addrs, m.policy.as_deref(), &mut next_slot)?;
            let core = usize::from(checked.core);
            let index = m.next_index[core];
            m.next_index[core] += 1;
            checked.add_routes(&mut m.routes, OutboundRoute { core: checked.core, sa: index }).map_err(|(f, e)| (format!("tunnels[{t}].{f}"), e))?;
            m.tunnels.insert(tc.name.clone(), Installed { checked, index, from_config: true });
        }
        Ok(m)
    }

    /// Outbound SAs installed again after a restart continue past these
    /// recorded sequence numbers (see `shm::sequences`).
    pub fn resume_sequences(&mut self, recorded: HashMap<u32, u64>) {
        self.resume = recorded;
    }

    fn outbound_sa(&self, checked: &CheckedTunnel, index: u32) -> OutboundSa {
        let mut sa = checked.outbound_sa(index);
        if let Some(last) = self.resume.get(&sa.spi) {
            let limit = if sa.esn { u64::MAX } else { u64::from(u32::MAX) };
            sa.seq = last.saturating_add(crate::shm::sequences::SEQUENCE_MARGIN).min(limit);
        }
        sa
    }

    /// The policy tunnels are checked against from now on (tenants' subnets),
    /// unless an installed tunnel would no longer pass: then the reason, and
    /// the running policy stays.
    pub fn set_policy(&mut self, policy: std::sync::Arc<Policy>) -> Result<(), String> {
        for (name, installed) in &self.tunnels {
            let Some(tenant) = installed.checked.tunnel.tenant else { continue };
            if policy.is_retired(tenant) {
                return Err(format!("tunnel {name} belongs to tenant '{}', which the new policy removes: remove the tunnel first", policy.names[tenant as usize]));
            }
            let declared = &policy.subnets[tenant as usize];
            if let Some(outside) = installed.checked.selectors.ipv4.iter().find(|p| !tunnels::within(declared, p)) {
                return Err(format!("tunnel {name} carries {outside}, outside the new subnets of tenant '{}'", policy.names[tenant as usize]));
            }
        }
        self.policy = Some(policy);
        Ok(())
    }

    pub fn tunnel_count(&self) -> usize {
        self.tunnels.len()
    }

    /// The index a new tunnel on `core` would get (taken by `take_index`).
    fn free_index(&self, core: u8, now: Instant) -> (u32, Option<usize>) {
        let freed = &self.freed[usize::from(core)];
        match freed.iter().position(|(_, when)| now.duration_since(*when) >= INDEX_QUARANTINE) {
            Some(at) => (freed[at].0, Some(at)),
            None => (self.next_index[usize::from(core)], None),
        }
    }

    fn take_index(&mut self, core: u8, from_freed: Option<usize>) {
        match from_freed {
            Some(at) => {
                self.freed[usize::from(core)].swap_remove(at);
            }
            None => self.next_index[usize::from(core)] += 1,
        }
    }

    /// Installs a tunnel, or updates the one of that name (a rekey adds an
    /// inbound SA and replaces the outbound one; a delete drops the old
    /// inbound SA). Refused with the field at fault, changing nothing.
    pub fn upsert(&mut self, config: &TunnelConfig, now: Instant) -> Result<Change, (String, String)> {
        let name = |field: &str| format!("tunnel '{}'.{}", config.name, field.split_once('.').map_or(field, |(_, f)| f));
        let mut scratch_slots = vec![0u32; self.workers];
        let checked = tunnels::check(0, config, self.workers, &self.outside_addrs, self.policy.as_deref(), &mut scratch_slots).map_err(|(f, e)| (name(&f), e))?;
        if config.inbound.iter().any(|sa| sa.spi.is_none()) {
            return Err((name("inbound"), "SPIs are required (the control process allocates them)".into()));
        }
        for (spi, ..) in &checked.inbound {
            if let Some(other) = self.tunnels.iter().find(|(n, t)| **n != config.name && t.spis().any(|s| s == *spi)) {
                return Err((name("inbound"), format!("SPI {spi:#010x} belongs to tunnel '{}'", other.0)));
            }
        }
        let mut routes = self.routes.clone();
        let (index, from_freed) = self.free_index(checked.core, now);
        let (index, add, remove, outbound) = match self.tunnels.get(&config.name) {
            Some(old) if old.from_config => return Err((name("name"), "a tunnel of the config file cannot be replaced".into())),
            Some(old) if old.checked.core != checked.core => return Err((name("worker"), "a tunnel keeps its worker (its SPIs name it)".into())),
            Some(old) if old.checked.tunnel.tenant != checked.tunnel.tenant => return Err((name("tenant"), "a tunnel keeps its tenant".into())),
            Some(old) => {
                old.checked.remove_routes(&mut routes, old.route());
                let kept: Vec<u32> = old.spis().collect();
                let add: Vec<usize> = (0..checked.inbound.len()).filter(|&i| !kept.contains(&checked.inbound[i].0)).collect();
                let remove: Vec<u32> = kept.into_iter().filter(|spi| !checked.inbound.iter().any(|(s, ..)| s == spi)).collect();
                let outbound_changed = old.checked.outbound != checked.outbound;
                (old.index, add, remove, outbound_changed)
            }
            None => (index, (0..checked.inbound.len()).collect(), Vec::new(), true),
        };
        checked.add_routes(&mut routes, OutboundRoute { core: checked.core, sa: index }).map_err(|(f, e)| (name(&f), e))?;
        if !self.tunnels.contains_key(&config.name) {
            self.take_index(checked.core, from_freed);
        }
        let all_inbound = checked.inbound_sas(index);
        let add_inbound = all_inbound.into_iter().enumerate().filter(|(i, _)| add.contains(i)).map(|(_, sa)| sa).collect();
        let update = TableUpdate::Tunnel { index, tunnel: checked.tunnel, add_inbound, remove_inbound: remove, outbound: outbound.then(|| Box::new(self.outbound_sa(&checked, index))) };
        let core = checked.core;
        self.routes = routes.clone();
        self.tunnels.insert(config.name.clone(), Installed { checked, index, from_config: false });
        Ok(Change { core, update, routes: Some(routes), routes_first: false })
    }

    /// Removes a tunnel that control installed.
    pub fn remove(&mut self, tunnel: &str, now: Instant) -> Result<Change, (String, String)> {
        match self.tunnels.get(tunnel) {
            None => return Err((format!("tunnel '{tunnel}'"), "no such tunnel".into())),
            Some(t) if t.from_config => return Err((format!("tunnel '{tunnel}'"), "a tunnel of the config file cannot be removed".into())),
            Some(_) => {}
        }
        let old = self.tunnels.remove(tunnel).expect("checked above");
        old.checked.remove_routes(&mut self.routes, old.route());
        self.freed[usize::from(old.checked.core)].push((old.index, now));
        Ok(Change { core: old.checked.core, update: TableUpdate::Remove { index: old.index, inbound: old.spis().collect() }, routes: Some(self.routes.clone()), routes_first: true })
    }

    /// Names of the tunnels control installed.
    pub fn dynamic_tunnels(&self) -> Vec<String> {
        self.tunnels.iter().filter(|(_, t)| !t.from_config).map(|(n, _)| n.clone()).collect()
    }

    /// Removes every tunnel control installed (a control process that
    /// started afresh does not know them): one removal each.
    pub fn reset(&mut self, now: Instant) -> Vec<Change> {
        self.dynamic_tunnels().iter().map(|name| self.remove(name, now).expect("a tunnel control installed")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sad::SpiParts;

    const KEY: &str = "00112233445566778899aabbccddeeff01020304";

    fn tunnel(name: &str, subnet: &str, inbound: &[u32], outbound: u32) -> TunnelConfig {
        let inbound: String = inbound.iter().map(|spi| format!("[[inbound]]\nspi = {spi}\nkey = \"{KEY}\"\n")).collect();
        toml::from_str(&format!("name = \"{name}\"\nremote = \"2001:db8::2\"\nudp_encap = true\nipv4 = [\"{subnet}\"]\n{inbound}[outbound]\nspi = {outbound}\nkey = \"{KEY}\"\n")).unwrap()
    }

    fn spi(core: u8, slot: u32) -> u32 {
        SpiParts { core, generation: 1, slot }.encode()
    }

    fn applied(table: &mut SaTable, change: Change) -> OutboundRoutes {
        apply(table, change.update);
        change.routes.expect("routes")
    }

    #[test]
    fn tunnels_come_rekey_and_go_while_the_config_ones_stay() {
        let now = Instant::now();
        let addrs: Vec<IpAddr> = vec!["2001:db8::1".parse().unwrap()];
        let fixed = tunnel("fixed", "10.9.0.0/16", &[spi(0, 0)], 500);
        let mut m = TableManager::new(std::slice::from_ref(&fixed), 2, addrs, None).unwrap();
        let mut tables = [SaTable::new(0), SaTable::new(1)];
        let built = tunnels::build(std::slice::from_ref(&fixed), 2, &["2001:db8::1".parse().unwrap()], None).unwrap();
        for (t, b) in tables.iter_mut().zip(built.cores) {
            *t = b;
        }
        let ip = |s: &str| s.parse().unwrap();

        // A new tunnel on worker 1: its SA and its route.
        let first = tunnel("clinic", "192.168.1.0/24", &[spi(1, 0)], 1000);
        let change = m.upsert(&first, now).unwrap();
        assert_eq!(change.core, 1);
        let routes = applied(&mut tables[1], change);
        let route = routes.lookup_ipv4(ip("192.168.1.7")).unwrap();
        assert_eq!(route.core, 1);
        assert!(routes.lookup_ipv4(ip("10.9.0.1")).is_some(), "the config's tunnel keeps its route");
        assert!(tables[1].inbound(spi(1, 0)).is_ok());
        assert_eq!(tables[1].outbound(route.sa).unwrap().0.spi, 1000);

        // Rekey: a second inbound SA and a new outbound SA; the first inbound SA stays.
        tables[1].outbound(route.sa).unwrap().0.seq = 77;
        let change = m.upsert(&tunnel("clinic", "192.168.1.0/24", &[spi(1, 0), spi(1, 1)], 2000), now).unwrap();
        let routes = applied(&mut tables[1], change);
        assert_eq!(routes.lookup_ipv4(ip("192.168.1.7")), Some(route), "same tunnel index");
        assert!(tables[1].inbound(spi(1, 0)).is_ok() && tables[1].inbound(spi(1, 1)).is_ok());
        assert_eq!((tables[1].outbound(route.sa).unwrap().0.spi, tables[1].outbound(route.sa).unwrap().0.seq), (2000, 0));
        // The old inbound SA deleted; the outbound one untouched (its sequence goes on).
        tables[1].outbound(route.sa).unwrap().0.seq = 5;
        applied(&mut tables[1], m.upsert(&tunnel("clinic", "192.168.1.0/24", &[spi(1, 1)], 2000), now).unwrap());
        assert!(tables[1].inbound(spi(1, 0)).is_err() && tables[1].inbound(spi(1, 1)).is_ok());
        assert_eq!(tables[1].outbound(route.sa).unwrap().0.seq, 5);

        // Refused, changing nothing: overlap, someone else's SPI, the config's tunnel, a worker move.
        let (field, why) = m.upsert(&tunnel("other", "192.168.1.0/24", &[spi(1, 5)], 3000), now).err().unwrap();
        assert!(field == "tunnel 'other'.ipv4" && why.contains("already the subnet"), "{field}: {why}");
        let (_, why) = m.upsert(&tunnel("other", "192.168.9.0/24", &[spi(1, 1)], 3000), now).err().unwrap();
        assert!(why.contains("belongs to tunnel 'clinic'"), "{why}");
        assert!(m.upsert(&tunnel("fixed", "10.9.0.0/16", &[spi(0, 3)], 500), now).is_err());
        assert!(m.upsert(&tunnel("clinic", "192.168.1.0/24", &[spi(0, 9)], 2000), now).is_err());
        assert!(m.remove("fixed", now).is_err() && m.remove("nobody", now).is_err());
        assert_eq!(m.tunnel_count(), 2);

        // Removal: routes first, then the SAs; the index rests before reuse.
        let change = m.remove("clinic", now).unwrap();
        assert!(change.routes_first);
        let routes = applied(&mut tables[1], change);
        assert!(routes.lookup_ipv4(ip("192.168.1.7")).is_none());
        assert!(tables[1].inbound(spi(1, 1)).is_err() && tables[1].outbound(route.sa).is_none());
        let soon = m.upsert(&tunnel("next", "192.168.2.0/24", &[spi(1, 2)], 4000), now).unwrap();
        let TableUpdate::Tunnel { index, .. } = soon.update else { panic!() };
        assert_ne!(index, route.sa, "not reused while workers may still route to it");
        m.remove("next", now).unwrap();
        let later = m.upsert(&tunnel("later", "192.168.3.0/24", &[spi(1, 3)], 5000), now + INDEX_QUARANTINE).unwrap();
        let TableUpdate::Tunnel { index, .. } = later.update else { panic!() };
        assert_eq!(index, route.sa, "reused after the quarantine");
        assert_eq!(m.dynamic_tunnels(), vec!["later".to_string()]);

        // After a restart, an outbound SA resumes past its recorded number.
        m.resume_sequences(HashMap::from([(6000, 41)]));
        let change = m.upsert(&tunnel("resumed", "192.168.4.0/24", &[spi(0, 7)], 6000), now).unwrap();
        let TableUpdate::Tunnel { outbound: Some(sa), .. } = change.update else { panic!() };
        assert_eq!(sa.seq, 41 + crate::shm::sequences::SEQUENCE_MARGIN);

        // A control process started afresh takes back all it installed, nothing of the config's.
        assert_eq!(m.reset(now).len(), 2);
        assert!(m.dynamic_tunnels().is_empty() && m.tunnel_count() == 1);
    }

    #[test]
    fn tenants_come_and_go_but_not_from_under_their_tunnels() {
        let now = Instant::now();
        let nat: crate::policy::NatConfig = toml::from_str("pool = [\"100.64.0.0/30\"]").unwrap();
        let tenant = |name: &str, subnet: &str| -> crate::policy::TenantConfig { toml::from_str(&format!("name = \"{name}\"\nsubnets = [\"{subnet}\"]")).unwrap() };
        let running = std::sync::Arc::new(Policy::compile(&nat, &[tenant("a", "192.168.0.0/16"), tenant("b", "192.168.0.0/16")], &[], 2).unwrap());
        let mut m = TableManager::new(&[], 2, vec!["2001:db8::1".parse().unwrap()], Some(running.clone())).unwrap();
        let of = |tenant: &str, name: &str| {
            let mut t = tunnel(name, "192.168.1.0/24", &[spi(0, 0)], 1000);
            t.tenant = Some(tenant.into());
            t
        };
        assert!(m.upsert(&of("c", "c/1"), now).is_err(), "no tenant c yet");
        m.upsert(&of("b", "b/1"), now).unwrap();

        let with_c = std::sync::Arc::new(running.compile_replacement(&nat, &[tenant("a", "192.168.0.0/16"), tenant("b", "192.168.0.0/16"), tenant("c", "192.168.0.0/16")], &[], 2).unwrap());
        m.set_policy(with_c.clone()).unwrap();
        let mut c = of("c", "c/1");
        c.inbound[0].spi = Some(spi(0, 1));
        m.upsert(&c, now).unwrap();

        // b may not go while its tunnel is there, nor shrink from under it.
        let without_b = std::sync::Arc::new(with_c.compile_replacement(&nat, &[tenant("a", "192.168.0.0/16"), tenant("c", "192.168.0.0/16")], &[], 2).unwrap());
        assert!(m.set_policy(without_b.clone()).unwrap_err().contains("tunnel b/1 belongs to tenant 'b'"));
        let narrower = std::sync::Arc::new(with_c.compile_replacement(&nat, &[tenant("a", "192.168.0.0/16"), tenant("b", "192.168.2.0/24"), tenant("c", "192.168.0.0/16")], &[], 2).unwrap());
        assert!(m.set_policy(narrower).unwrap_err().contains("outside the new subnets"));
        m.remove("b/1", now).unwrap();
        m.set_policy(without_b).unwrap();
        assert!(m.upsert(&of("b", "b/2"), now).is_err(), "b is gone");
    }
}
