//! `swarm certs`: a private CA and the certificates a TLS or mTLS cluster needs (the server's,
//! and one client certificate per worker pool or client, whose DNS name an auth file's
//! `cert_name` can point at). For development, tests and small deployments; production
//! clusters usually issue them with cert-manager or their own PKI (docs/security.md).
//!
//! An existing `ca.pem` + `ca.key` in the directory is reused, so running it again issues more
//! (or renewed) certificates under the same CA.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// What [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct Issued {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Per client name: its certificate and key.
    pub clients: Vec<(String, PathBuf, PathBuf)>,
}

/// Writes into `dir` a CA (unless one is there), a server certificate for `hosts` (DNS names or
/// IP addresses), and a client certificate per name in `clients` (the name is its DNS SAN and
/// common name), each valid for `days`. Keys are written readable by the owner only.
pub fn generate(dir: &Path, hosts: &[String], clients: &[String], days: u32) -> anyhow::Result<Issued> {
    anyhow::ensure!(!hosts.is_empty(), "give at least one --host for the server certificate");
    anyhow::ensure!((1..=3650).contains(&days), "--days must be 1 to 3650");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (ca_pem, ca_key_pem) = (dir.join("ca.pem"), dir.join("ca.key"));
    let issuer = if ca_pem.exists() && ca_key_pem.exists() {
        // The issuer is the CA's name and key: both as this function made them.
        let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_pem)?).context("ca.key")?;
        Issuer::new(ca_params()?, key)
    } else {
        let key = KeyPair::generate()?;
        let mut params = ca_params()?;
        validity(&mut params, days.max(365) * 2);
        let cert = params.self_signed(&key)?;
        write(&ca_pem, cert.pem().as_bytes(), false)?;
        write(&ca_key_pem, key.serialize_pem().as_bytes(), true)?;
        Issuer::new(params, key)
    };
    let leaf =
        |names: Vec<String>, usage: &[ExtendedKeyUsagePurpose], stem: &str| -> anyhow::Result<(PathBuf, PathBuf)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names.clone()).with_context(|| format!("names {names:?}"))?;
            params.distinguished_name.push(DnType::CommonName, names[0].clone());
            params.extended_key_usages = usage.to_vec();
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            validity(&mut params, days);
            let cert = params.signed_by(&key, &issuer)?;
            let (c, k) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
            write(&c, cert.pem().as_bytes(), false)?;
            write(&k, key.serialize_pem().as_bytes(), true)?;
            Ok((c, k))
        };
    // A coordinator's certificate also serves it as a client: a standby presents it when it
    // forwards API calls to a leader that requires client certificates.
    let server_usage = [ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let (server_cert, server_key) = leaf(hosts.to_vec(), &server_usage, "server")?;
    let mut issued = Vec::new();
    for name in clients {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        anyhow::ensure!(ok, "client name `{name}`: use 1 to 63 of [A-Za-z0-9.-] (it becomes a DNS name)");
        let (c, k) = leaf(vec![name.clone()], &[ExtendedKeyUsagePurpose::ClientAuth], name)?;
        issued.push((name.clone(), c, k));
    }
    Ok(Issued { ca: ca_pem, server_cert, server_key, clients: issued })
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "Swarm private CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Revokes the certificates `names` in `dir` (`NAME.pem`, as [`generate`] wrote them, or any
/// PEM certificate this CA issued): their serial numbers join `dir/revoked.txt` (one `SERIAL
/// NAME` line each) and `dir/crl.pem` is written anew from the whole list, signed by the CA,
/// valid for a year. A coordinator given `--tls-crl dir/crl.pem` reloads it and refuses those
/// certificates at the handshake. Returns the CRL's path.
pub fn revoke(dir: &Path, names: &[String]) -> anyhow::Result<PathBuf> {
    let (ca_pem, ca_key_pem) = (dir.join("ca.pem"), dir.join("ca.key"));
    anyhow::ensure!(
        ca_pem.exists() && ca_key_pem.exists(),
        "{}: no ca.pem and ca.key to sign a CRL with",
        dir.display()
    );
    let list = dir.join("revoked.txt");
    let mut revoked: Vec<(String, String)> = std::fs::read_to_string(&list)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(s, n)| (s.to_owned(), n.to_owned())))
        .collect();
    for name in names {
        let path = dir.join(format!("{name}.pem"));
        let pem = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let der = rustls_pki_pem(&pem).with_context(|| format!("{}: no PEM certificate", path.display()))?;
        let serial = serial_of(&der).with_context(|| format!("{}: not an X.509 certificate", path.display()))?;
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        if !revoked.iter().any(|(s, _)| *s == hex) {
            revoked.push((hex, name.clone()));
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let ymd = |t: Duration| {
        let (y, m, d) = swarm_core::time::civil_from_days((t.as_secs() / 86_400) as i64);
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    let this_update = ymd(now.saturating_sub(Duration::from_secs(86_400)));
    let mut revoked_certs = Vec::with_capacity(revoked.len());
    for (hex, name) in &revoked {
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .with_context(|| format!("{}: serial `{hex}` of {name} is not hex", list.display()))?;
        revoked_certs.push(rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&bytes),
            revocation_time: this_update,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_pem)?).context("ca.key")?;
    let issuer = Issuer::new(ca_params()?, key);
    let params = rcgen::CertificateRevocationListParams {
        this_update,
        next_update: ymd(now + Duration::from_secs(365 * 86_400)),
        // Grows with each CRL written (seconds since 1970).
        crl_number: rcgen::SerialNumber::from(now.as_secs()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer)?;
    let text: String = revoked.iter().map(|(s, n)| format!("{s} {n}\n")).collect();
    write(&list, text.as_bytes(), false)?;
    let path = dir.join("crl.pem");
    write(&path, crl.pem()?.as_bytes(), false)?;
    Ok(path)
}

/// The DER of the first certificate in `pem`.
fn rustls_pki_pem(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok().map(|c| c.to_vec())
}

/// A certificate's serial number: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
/// [0] version OPTIONAL, serialNumber INTEGER, … } … }` (RFC 5280), read from its DER.
fn serial_of(der: &[u8]) -> Option<Vec<u8>> {
    /// (tag, contents, the rest after it)
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, b) = b.split_first()?;
        let (len, b) = if first < 0x80 {
            (usize::from(first), b)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            (b[..n].iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)), &b[n..])
        };
        (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
    }
    let (0x30, cert, _) = tlv(der)? else { return None };
    let (0x30, tbs, _) = tlv(cert)? else { return None };
    let (tag, body, rest) = tlv(tbs)?;
    let (tag, body) = if tag == 0xa0 { tlv(rest).map(|(t, b, _)| (t, b))? } else { (tag, body) };
    (tag == 0x02 && !body.is_empty()).then(|| body.to_vec())
}

/// Valid from a day ago (clocks differ) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let ymd = |t: Duration| {
        let (y, m, d) = swarm_core::time::civil_from_days((t.as_secs() / 86_400) as i64);
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    params.not_before = ymd(now.saturating_sub(Duration::from_secs(86_400)));
    params.not_after = ymd(now + Duration::from_secs(u64::from(days) * 86_400));
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = secret;
    // Written beside and renamed, so a server reloading its certificate never reads half a file.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = options.open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_certificate_is_in_a_crl_signed_by_the_ca() {
        let dir = std::env::temp_dir().join(format!("swarm-crl-{}", fastrand::u64(..)));
        generate(&dir, &["localhost".into()], &["bad-bot".into(), "good-bot".into()], 30).expect("issued");
        let pem = std::fs::read_to_string(dir.join("bad-bot.pem")).expect("pem");
        let serial = serial_of(&rustls_pki_pem(&pem).expect("der")).expect("serial");
        assert!(!serial.is_empty());
        let crl = revoke(&dir, &["bad-bot".into()]).expect("revoked");
        revoke(&dir, &["bad-bot".into()]).expect("again: no duplicate");
        let list = std::fs::read_to_string(dir.join("revoked.txt")).expect("list");
        assert_eq!(list.lines().count(), 1, "{list}");
        assert!(list.ends_with(" bad-bot\n"));
        assert!(std::fs::read_to_string(&crl).expect("crl").starts_with("-----BEGIN X509 CRL-----"));
        assert!(revoke(&dir, &["nobody".into()]).is_err(), "an unknown name");
        assert_eq!(serial_of(b"\x30\x03\x02\x01"), None, "truncated DER");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_run_reuses_the_ca() {
        let dir = std::env::temp_dir().join(format!("swarm-certs-{}", fastrand::u64(..)));
        let first = generate(&dir, &["localhost".into()], &["pool-a".into()], 30).expect("first");
        let ca = std::fs::read(&first.ca).expect("ca");
        let second = generate(&dir, &["localhost".into(), "127.0.0.1".into()], &["ci-bot".into()], 30).expect("second");
        assert_eq!(std::fs::read(&second.ca).expect("ca"), ca, "the CA was replaced");
        assert!(generate(&dir, &["localhost".into()], &["bad name".into()], 30).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&second.server_key).expect("key").permissions().mode();
            assert_eq!(mode & 0o077, 0, "a key is readable by others: {mode:o}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
