//! The tenant registry as the responder sees it: who may connect (by
//! certificate identity), which inside subnets each clinic declared, and
//! which dataplane worker owns its tunnels.

use crate::pki::identity::Identity;
use sekisho_dataplane::addr::Ipv4Cidr;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    /// Identities the clinic's router may authenticate as (subject DN or a SubjectAltName).
    pub identities: Vec<Identity>,
    /// Its declared subnets: the most its traffic selectors may cover.
    pub subnets: Vec<Ipv4Cidr>,
    /// The dataplane worker that owns its SAs and NAT sessions.
    pub worker: u8,
}

/// The registry, indexed by identity and by name: thousands of clinics.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    list: Vec<Tenant>,
    by_identity: HashMap<Identity, usize>,
    by_name: HashMap<String, usize>,
}

impl Tenants {
    /// The first tenant listing an identity gets it (the config refuses duplicates).
    pub fn new(list: Vec<Tenant>) -> Tenants {
        let mut by_identity = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, t) in list.iter().enumerate() {
            by_name.entry(t.name.clone()).or_insert(i);
            for id in &t.identities {
                by_identity.entry(id.clone()).or_insert(i);
            }
        }
        Tenants { list, by_identity, by_name }
    }

    /// The tenant an authenticated identity belongs to.
    pub fn find(&self, id: &Identity) -> Option<&Tenant> {
        self.by_identity.get(id).map(|&i| &self.list[i])
    }

    pub fn by_name(&self, name: &str) -> Option<&Tenant> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.list.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
