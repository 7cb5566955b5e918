//! The SA payload's proposals and transforms (RFC 7296 §3.3): read from a
//! payload body, written for the one proposal a responder chooses.

use super::keys::Prf;
use super::sk::{Protection, ENCR_AES_CBC, ENCR_AES_GCM_16};
use super::wire::WireError;

/// Protocol IDs (§3.3.1).
pub const PROTOCOL_IKE: u8 = 1;
pub const PROTOCOL_ESP: u8 = 3;

/// Transform types (§3.3.2).
pub const ENCR: u8 = 1;
pub const PRF: u8 = 2;
pub const INTEG: u8 = 3;
pub const DH: u8 = 4;
pub const ESN: u8 = 5;

/// The Key Length attribute (§3.3.5), the only one IKEv2 defines.
const ATTRIBUTE_KEY_LENGTH: u16 = 14;
const LAST: u8 = 0;
const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;

/// One transform of a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transform {
    pub kind: u8,
    pub id: u16,
    /// Key length in bits, for ciphers with variable keys (AES).
    pub key_length: Option<u16>,
    /// It carried an attribute this implementation does not know: such a
    /// transform must not be chosen (§3.3.6).
    pub unknown_attribute: bool,
}

/// One proposal: its number, protocol, SPI and transforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal<'a> {
    pub number: u8,
    pub protocol: u8,
    pub spi: &'a [u8],
    pub transforms: Vec<Transform>,
}

fn syntax(why: &'static str) -> WireError {
    WireError::InvalidSyntax(why)
}

/// Reads the proposals of an SA payload body.
pub fn parse_sa(mut body: &[u8]) -> Result<Vec<Proposal<'_>>, WireError> {
    let mut proposals = Vec::new();
    loop {
        let h = body.first_chunk::<8>().ok_or(syntax("a proposal header past the end"))?;
        let length = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if length < 8 || length > body.len() {
            return Err(syntax("a proposal length beyond the payload"));
        }
        let (more, number, protocol, spi_size, count) = (h[0], h[4], h[5], usize::from(h[6]), h[7]);
        // §3.3.1: numbered 1, 2, ... in order.
        if usize::from(number) != proposals.len() + 1 {
            return Err(syntax("proposals not numbered 1, 2, ..."));
        }
        let proposal = &body[8..length];
        let spi = proposal.get(..spi_size).ok_or(syntax("an SPI beyond the proposal"))?;
        let transforms = parse_transforms(&proposal[spi_size..], count)?;
        proposals.push(Proposal { number, protocol, spi, transforms });
        body = &body[length..];
        match more {
            LAST if body.is_empty() => return Ok(proposals),
            MORE_PROPOSALS if !body.is_empty() => {}
            _ => return Err(syntax("the last proposal is not marked last")),
        }
    }
}

fn parse_transforms(mut body: &[u8], count: u8) -> Result<Vec<Transform>, WireError> {
    let mut transforms = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        let h = body.first_chunk::<8>().ok_or(syntax("a transform header past the end"))?;
        let length = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if length < 8 || length > body.len() {
            return Err(syntax("a transform length beyond the proposal"));
        }
        let expected_more = if i + 1 == count { LAST } else { MORE_TRANSFORMS };
        if h[0] != expected_more {
            return Err(syntax("transform count and last-transform marks differ"));
        }
        let mut transform = Transform { kind: h[4], id: u16::from_be_bytes([h[6], h[7]]), key_length: None, unknown_attribute: false };
        let mut attributes = &body[8..length];
        while !attributes.is_empty() {
            let a = attributes.first_chunk::<4>().ok_or(syntax("a truncated attribute"))?;
            let kind = u16::from_be_bytes([a[0], a[1]]);
            let value = u16::from_be_bytes([a[2], a[3]]);
            // TV format (AF set): the value is the last two bytes; else a length follows.
            let size = if kind & 0x8000 != 0 { 4 } else { 4 + usize::from(value) };
            if size > attributes.len() {
                return Err(syntax("an attribute beyond its transform"));
            }
            match kind {
                k if k == 0x8000 | ATTRIBUTE_KEY_LENGTH => transform.key_length = Some(value),
                _ => transform.unknown_attribute = true,
            }
            attributes = &attributes[size..];
        }
        transforms.push(transform);
        body = &body[length..];
    }
    if !body.is_empty() {
        return Err(syntax("bytes after the last transform"));
    }
    Ok(transforms)
}

/// Writes one proposal (numbered `number`, the last) as an SA payload
/// body into `out`; returns its length, or None if it does not fit.
pub fn write_sa(out: &mut [u8], number: u8, protocol: u8, spi: &[u8], transforms: &[Transform]) -> Option<usize> {
    let transform_len = |t: &Transform| 8 + if t.key_length.is_some() { 4 } else { 0 };
    let length = 8 + spi.len() + transforms.iter().map(transform_len).sum::<usize>();
    if length > out.len() || length > usize::from(u16::MAX) || spi.len() > 255 || transforms.len() > 255 {
        return None;
    }
    out[..8].copy_from_slice(&[LAST, 0, (length >> 8) as u8, length as u8, number, protocol, spi.len() as u8, transforms.len() as u8]);
    out[8..8 + spi.len()].copy_from_slice(spi);
    let mut at = 8 + spi.len();
    for (i, t) in transforms.iter().enumerate() {
        let len = transform_len(t);
        let more = if i + 1 == transforms.len() { LAST } else { MORE_TRANSFORMS };
        out[at..at + 8].copy_from_slice(&[more, 0, 0, len as u8, t.kind, 0, (t.id >> 8) as u8, t.id as u8]);
        if let Some(bits) = t.key_length {
            out[at + 8..at + 12].copy_from_slice(&[0x80, ATTRIBUTE_KEY_LENGTH as u8, (bits >> 8) as u8, bits as u8]);
        }
        at += len;
    }
    Some(length)
}

/// The algorithms of an IKE SA, chosen from a peer's proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeChoice {
    pub number: u8,
    pub protection: Protection,
    pub prf: Prf,
    /// The DH groups this proposal offers that we support, in our order.
    pub groups: Vec<u16>,
}

impl IkeChoice {
    /// The transforms to answer with, for DH group `group`.
    pub fn transforms(&self, group: u16) -> Vec<Transform> {
        let t = |kind, id, key_length| Transform { kind, id, key_length, unknown_attribute: false };
        let mut out = Vec::with_capacity(4);
        match self.protection {
            Protection::AesGcm16 { key } => out.push(t(ENCR, ENCR_AES_GCM_16, Some(key as u16 * 8))),
            Protection::AesCbc { key, integrity } => {
                out.push(t(ENCR, ENCR_AES_CBC, Some(key as u16 * 8)));
                out.push(t(INTEG, integrity.id(), None));
            }
        }
        out.push(t(PRF, self.prf.id(), None));
        out.push(t(DH, group, None));
        out
    }
}

/// Usable transforms of one type in a proposal, in the peer's order.
fn usable<'p>(p: &'p Proposal, kind: u8) -> impl Iterator<Item = &'p Transform> {
    p.transforms.iter().filter(move |t| t.kind == kind && !t.unknown_attribute)
}

/// The first of the peer's IKE proposals (it lists them by preference,
/// §2.7) whose every transform type has one we do (RFC 8247 §3).
/// `spi_len` is 0 in IKE_SA_INIT and 8 when rekeying the IKE SA.
pub fn choose_ike(proposals: &[Proposal], our_groups: &[u16], spi_len: usize) -> Option<IkeChoice> {
    proposals.iter().filter(|p| p.protocol == PROTOCOL_IKE && p.spi.len() == spi_len).find_map(|p| {
        let prf = usable(p, PRF).find_map(|t| Prf::from_id(t.id))?;
        let groups: Vec<u16> = our_groups.iter().copied().filter(|g| usable(p, DH).any(|t| t.id == *g)).collect();
        if groups.is_empty() {
            return None;
        }
        let integrities: Vec<u16> = usable(p, INTEG).map(|t| t.id).collect();
        let protection = usable(p, ENCR).find_map(|e| match e.id {
            ENCR_AES_GCM_16 => Protection::from_transforms(e.id, e.key_length, None),
            _ => integrities.iter().find_map(|&i| Protection::from_transforms(e.id, e.key_length, Some(i))),
        })?;
        // An AEAD proposal may list no integrity transform, or only NONE (0).
        if matches!(protection, Protection::AesGcm16 { .. }) && integrities.iter().any(|&i| i != 0) && !integrities.contains(&0) {
            return None;
        }
        Some(IkeChoice { number: p.number, protection, prf, groups })
    })
}

/// The algorithms of a CHILD_SA: ESP with AES-GCM-16 (RFC 8221).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspChoice {
    pub number: u8,
    /// AES key bytes (16 or 32); the salt adds 4 (RFC 4106 §8.1).
    pub key: usize,
    pub esn: bool,
    /// The peer's inbound SPI: our outbound one.
    pub peer_spi: u32,
    /// DH groups offered for PFS that we support, in our order (empty: none offered).
    pub groups: Vec<u16>,
}

impl EspChoice {
    pub fn transforms(&self, group: Option<u16>) -> Vec<Transform> {
        let t = |kind, id, key_length| Transform { kind, id, key_length, unknown_attribute: false };
        let mut out = vec![t(ENCR, ENCR_AES_GCM_16, Some(self.key as u16 * 8))];
        if let Some(group) = group {
            out.push(t(DH, group, None));
        }
        out.push(t(ESN, u16::from(self.esn), None));
        out
    }
}

/// The first of the peer's ESP proposals we can do. With `our_groups`
/// None (IKE_AUTH, which has no KE) DH transforms are ignored; else the
/// proposal's DH transforms must allow one of them, or NONE when the list
/// is empty (no KE sent). Whether PFS is required is the caller's call.
pub fn choose_esp(proposals: &[Proposal], our_groups: Option<&[u16]>) -> Option<EspChoice> {
    proposals.iter().filter(|p| p.protocol == PROTOCOL_ESP && p.spi.len() == 4).find_map(|p| {
        let key = usable(p, ENCR).find_map(|e| match (e.id, e.key_length) {
            (ENCR_AES_GCM_16, Some(128)) => Some(16),
            (ENCR_AES_GCM_16, Some(256)) => Some(32),
            _ => None,
        })?;
        if usable(p, INTEG).any(|t| t.id != 0) && !usable(p, INTEG).any(|t| t.id == 0) {
            return None;
        }
        // No ESN transform means no ESN (§3.3.2 makes it mandatory, but be lenient).
        let esn = match usable(p, ESN).next() {
            None => false,
            Some(_) => usable(p, ESN).find(|t| t.id <= 1)?.id == 1,
        };
        let offered: Vec<u16> = usable(p, DH).map(|t| t.id).collect();
        let groups: Vec<u16> = match our_groups {
            None => Vec::new(),
            Some(ours) => {
                let common: Vec<u16> = ours.iter().copied().filter(|g| offered.contains(g)).collect();
                let fits = if ours.is_empty() { offered.is_empty() || offered.contains(&0) } else { !common.is_empty() };
                if !fits {
                    return None;
                }
                common
            }
        };
        let peer_spi = u32::from_be_bytes(p.spi.try_into().ok()?);
        Some(EspChoice { number: p.number, key, esn, peer_spi, groups })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AES-GCM-16 (20) with 256-bit keys, PRF HMAC-SHA2-256 (5), MODP-2048 (14).
    fn ike_transforms() -> Vec<Transform> {
        vec![
            Transform { kind: ENCR, id: 20, key_length: Some(256), unknown_attribute: false },
            Transform { kind: PRF, id: 5, key_length: None, unknown_attribute: false },
            Transform { kind: DH, id: 14, key_length: None, unknown_attribute: false },
        ]
    }

    #[test]
    fn a_written_proposal_reads_back_with_the_rfc_layout() {
        let mut out = [0u8; 128];
        let len = write_sa(&mut out, 1, PROTOCOL_IKE, &[], &ike_transforms()).unwrap();
        // §3.3.1/3.3.2: proposal header, then transforms; the key length as a TV attribute.
        assert_eq!(&out[..8], &[0, 0, 0, len as u8, 1, PROTOCOL_IKE, 0, 3]);
        assert_eq!(&out[8..20], &[3, 0, 0, 12, ENCR, 0, 0, 20, 0x80, 14, 1, 0]);
        let proposals = parse_sa(&out[..len]).unwrap();
        assert_eq!(proposals, vec![Proposal { number: 1, protocol: PROTOCOL_IKE, spi: &[], transforms: ike_transforms() }]);
        // An ESP proposal with its 4-byte SPI.
        let esp = [Transform { kind: ENCR, id: 20, key_length: Some(128), unknown_attribute: false }, Transform { kind: ESN, id: 1, key_length: None, unknown_attribute: false }];
        let len = write_sa(&mut out, 1, PROTOCOL_ESP, &[0xc0, 0xff, 0xee, 0x01], &esp).unwrap();
        assert_eq!(parse_sa(&out[..len]).unwrap()[0].spi, &[0xc0, 0xff, 0xee, 0x01]);
    }

    fn t(kind: u8, id: u16, key_length: Option<u16>) -> Transform {
        Transform { kind, id, key_length, unknown_attribute: false }
    }

    #[test]
    fn the_first_acceptable_proposal_is_chosen() {
        let cbc_sha1 = Proposal { number: 1, protocol: PROTOCOL_IKE, spi: &[], transforms: vec![t(ENCR, 12, Some(128)), t(INTEG, 2, None), t(PRF, 2, None), t(DH, 14, None)] };
        let cbc = Proposal { number: 2, protocol: PROTOCOL_IKE, spi: &[], transforms: vec![t(ENCR, 12, Some(256)), t(INTEG, 2, None), t(INTEG, 12, None), t(PRF, 5, None), t(DH, 2, None), t(DH, 31, None), t(DH, 14, None)] };
        let choice = choose_ike(&[cbc_sha1.clone(), cbc], &[14, 19, 31], 0).unwrap();
        assert_eq!(choice.number, 2);
        assert_eq!(choice.protection, Protection::AesCbc { key: 32, integrity: crate::ike::sk::Integrity::Sha256_128 });
        assert_eq!((choice.prf, choice.groups.clone()), (Prf::HmacSha256, vec![14, 31]));
        assert_eq!(choice.transforms(31).len(), 4);
        assert_eq!(choose_ike(&[cbc_sha1], &[14], 0), None, "SHA-1 PRF and integrity are not offered by us");
        let gcm = Proposal { number: 1, protocol: PROTOCOL_IKE, spi: &[], transforms: vec![t(ENCR, 20, Some(128)), t(PRF, 7, None), t(DH, 19, None)] };
        assert_eq!(choose_ike(std::slice::from_ref(&gcm), &[14], 0), None, "no common group");
        assert_eq!(choose_ike(&[gcm], &[14, 19], 0).unwrap().protection, Protection::AesGcm16 { key: 16 });

        let spi = [1, 2, 3, 4];
        let esp = Proposal { number: 1, protocol: PROTOCOL_ESP, spi: &spi, transforms: vec![t(ENCR, 20, Some(256)), t(DH, 14, None), t(ESN, 0, None)] };
        let choice = choose_esp(std::slice::from_ref(&esp), Some(&[14])).unwrap();
        assert_eq!((choice.key, choice.esn, choice.peer_spi, choice.groups.clone()), (32, false, 0x01020304, vec![14]));
        assert_eq!(choose_esp(std::slice::from_ref(&esp), Some(&[19])), None, "PFS group we do not do");
        assert_eq!(choose_esp(std::slice::from_ref(&esp), Some(&[])), None, "PFS asked for, but no KE sent");
        assert_eq!(choose_esp(std::slice::from_ref(&esp), None).unwrap().groups, Vec::<u16>::new(), "IKE_AUTH ignores DH");
        let cbc_esp = Proposal { transforms: vec![t(ENCR, 12, Some(128)), t(INTEG, 12, None), t(ESN, 0, None)], ..esp };
        assert_eq!(choose_esp(&[cbc_esp], None), None);
    }

    #[test]
    fn several_proposals_and_what_is_refused() {
        let mut one = [0u8; 64];
        let len = write_sa(&mut one, 1, PROTOCOL_IKE, &[], &ike_transforms()).unwrap();
        let mut two = [0u8; 64];
        let len2 = write_sa(&mut two, 2, PROTOCOL_IKE, &[], &ike_transforms()[..2]).unwrap();
        let mut both = one[..len].to_vec();
        both[0] = MORE_PROPOSALS;
        both.extend_from_slice(&two[..len2]);
        let proposals = parse_sa(&both).unwrap();
        assert_eq!((proposals.len(), proposals[1].number, proposals[1].transforms.len()), (2, 2, 2));
        // Every truncation is refused, never a panic.
        for cut in 0..both.len() {
            assert!(parse_sa(&both[..cut]).is_err(), "{cut}");
        }
        let mut misnumbered = both.clone();
        misnumbered[len + 4] = 3;
        assert_eq!(parse_sa(&misnumbered), Err(WireError::InvalidSyntax("proposals not numbered 1, 2, ...")));
        let mut unmarked = both.clone();
        unmarked[0] = LAST;
        assert!(parse_sa(&unmarked).is_err());
        let mut miscounted = one[..len].to_vec();
        miscounted[7] = 2;
        assert!(parse_sa(&miscounted).is_err());
        // An unknown attribute makes the transform unusable, not the message invalid.
        let mut odd = one[..len].to_vec();
        odd[17] = 99;
        assert!(parse_sa(&odd).unwrap()[0].transforms[0].unknown_attribute);
    }
}
