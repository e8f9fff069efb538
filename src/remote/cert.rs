//! The subject common name of an X.509 certificate, which `tls-server-auth` authorizes by.
//!
//! The certificate has already been verified against the CA by rustls when this runs; the walk
//! below still treats every byte as hostile (lengths are checked, nothing is indexed blindly).

/// DER of the attribute type `id-at-commonName` (2.5.4.3).
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

/// One DER element: its tag and contents, and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed value, in order.
fn children(mut der: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, body, rest) = element(der)?;
        der = rest;
        Some((tag, body))
    })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// The subject's common name (the last one, as most TLS stacks take it), or `None` when the
/// certificate has none or is not a certificate.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    let (SEQUENCE, cert, _) = element(certificate)? else { return None };
    let (SEQUENCE, tbs, _) = element(cert)? else { return None };
    let mut fields = children(tbs).peekable();
    if fields.peek().is_some_and(|(tag, _)| *tag == VERSION) {
        fields.next();
    }
    // serialNumber, signature, issuer, validity, then subject.
    let (tag, subject) = fields.nth(4)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut found = None;
    for (tag, rdn) in children(subject) {
        if tag != SET {
            return None;
        }
        for (tag, pair) in children(rdn) {
            if tag != SEQUENCE {
                return None;
            }
            let mut parts = children(pair);
            let (OID, oid) = parts.next()? else { return None };
            let (_, value) = parts.next()?;
            if oid == COMMON_NAME_OID {
                found = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A certificate made by `openssl req -x509 -subj "/O=pgstrata tests/CN=pgbackrest@cluster-uid"`.
    const PEM: &str = include_str!("../../fixtures/tls/client-cn.pem");

    fn der() -> Vec<u8> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(PEM.as_bytes()).unwrap().to_vec()
    }

    #[test]
    fn reads_the_subject_common_name() {
        assert_eq!(common_name(&der()).as_deref(), Some("pgbackrest@cluster-uid"));
    }

    #[test]
    fn truncated_or_foreign_bytes_have_no_name() {
        let der = der();
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            // The outer length no longer fits: nothing is read from a cut certificate.
            assert_eq!(common_name(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(b"not a certificate"), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
