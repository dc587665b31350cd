//! The device's node certificate: got by joining an https orchestrator
//! with a join token, then presented on every connection (mutual TLS) and
//! renewed over it at two thirds of its life. The key is made here
//! (ECDSA P-256) and never leaves the device; the certificate request it
//! signs is all the orchestrator sees. Files, beside the store:
//! `<data_dir>/agent/node.key` (mode 0600), `node.crt` and `node-ca.pem`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use crate::roles::fleet::client::Conn;

/// Where the node certificate lives.
#[derive(Debug, Clone)]
pub struct NodeCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    ca: PathBuf,
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A new key and a certificate request signed by it.
fn request(id: &str) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("generating the node key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, id);
    let csr = params.serialize_request(&key).context("signing the certificate request")?;
    Ok((key.serialize_pem(), csr.pem().context("encoding the certificate request")?))
}

/// Writes `text` to `path` through a temporary file, with `mode`.
fn place(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("placing {}", path.display()))
}

impl NodeCert {
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("agent");
        Self { cert: dir.join("node.crt"), key: dir.join("node.key"), ca: dir.join("node-ca.pem") }
    }

    pub fn present(&self) -> bool {
        self.cert.exists() && self.key.exists()
    }

    /// Whether the certificate has ended (or cannot be read).
    pub fn expired(&self) -> bool {
        self.lifetime().is_none_or(|(_, end)| now_s() >= end)
    }

    /// When the certificate is due for renewal (two thirds of its life)
    /// and when it ends, in seconds since the epoch; None when it cannot
    /// be read (a renewal, or a new join, replaces it).
    pub fn lifetime(&self) -> Option<(i64, i64)> {
        let pem = std::fs::read(&self.cert).ok()?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
        let cert = pem.parse_x509().ok()?;
        let (from, to) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
        Some((from + (to - from) * 2 / 3, to))
    }

    /// Saves the key and what the orchestrator answered.
    fn save(&self, key_pem: &str, answer: &Value) -> anyhow::Result<String> {
        let cert = answer["certificate"].as_str().context("the answer has no certificate")?;
        let ca = answer["ca"].as_str().context("the answer has no ca")?;
        std::fs::create_dir_all(self.cert.parent().unwrap_or(Path::new(".")))?;
        place(&self.key, key_pem, 0o600)?;
        place(&self.cert, cert, 0o644)?;
        place(&self.ca, ca, 0o644)?;
        Ok(answer["spiffe_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Joins: trades the join token (the connection's bearer token) for a
    /// node certificate.
    pub async fn join(&self, conn: &mut Conn, id: &str, machine_id: Option<&str>) -> anyhow::Result<String> {
        let (key, csr) = request(id)?;
        let (status, answer) =
            conn.post_json("/v1/join", &json!({"id": id, "machine_id": machine_id, "csr": csr})).await?;
        match status {
            201 => self.save(&key, &answer),
            400 | 401 | 403 | 409 => {
                Err(super::Refused(format!("join refused ({status}): {}", answer["error"])).into())
            }
            _ => anyhow::bail!("join answered {status}: {}", answer["error"]),
        }
    }

    /// Renews the certificate over the node's own mutual TLS.
    pub async fn renew(&self, conn: &mut Conn, id: &str) -> anyhow::Result<String> {
        let (key, csr) = request(id)?;
        let (status, answer) = conn.post_json(&format!("/v1/nodes/{id}/certificate"), &json!({"csr": csr})).await?;
        anyhow::ensure!(status == 201, "renewal answered {status}: {}", answer["error"]);
        self.save(&key, &answer)
    }
}
