//! The tenant registry as the responder sees it: who may connect (by
//! certificate identity), which inside subnets each clinic declared, and
//! which dataplane worker owns its tunnels.

use crate::pki::identity::Identity;
use sekisho_dataplane::addr::Ipv4Cidr;

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

#[derive(Debug, Clone, Default)]
pub struct Tenants {
    list: Vec<Tenant>,
}

impl Tenants {
    pub fn new(list: Vec<Tenant>) -> Tenants {
        Tenants { list }
    }

    /// The tenant an authenticated identity belongs to.
    pub fn find(&self, id: &Identity) -> Option<&Tenant> {
        self.list.iter().find(|t| t.identities.contains(id))
    }

    pub fn by_name(&self, name: &str) -> Option<&Tenant> {
        self.list.iter().find(|t| t.name == name)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
