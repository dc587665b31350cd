//! A real Pebble (Let's Encrypt's ACME test server) with
//! pebble-challtestsrv as its DNS (every name resolves to 127.0.0.1), for
//! `edgebox certguard bench` and the integration tests: started on free
//! loopback ports, validating http-01 on a port the caller chooses,
//! stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::core::ports::free_loopback;

/// A running Pebble.
pub struct Pebble {
    children: Vec<Child>,
    /// The ACME directory URL.
    pub directory: String,
    /// The certificate of Pebble's HTTPS listener (self-signed): trust it
    /// to talk to the directory.
    pub https_ca: PathBuf,
    /// Pebble's issuing root, to verify what it issues.
    pub root: PathBuf,
    /// pebble-challtestsrv's management URL (`/set-txt`, `/clear-txt` for
    /// dns-01 records).
    pub dns_management: String,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pebble {
    /// Starts Pebble and its DNS in `dir`; its validation authority connects
    /// to 127.0.0.1, port `http01_port` for http-01 and `tls_alpn01_port`
    /// for tls-alpn-01 challenges. Certificates live `validity_s` seconds
    /// (absent: Pebble's five years).
    pub fn start(
        dir: &Path,
        http01_port: u16,
        tls_alpn01_port: u16,
        validity_s: Option<u64>,
    ) -> anyhow::Result<Pebble> {
        let missing = "pebble is not installed (Debian package pebble)";
        let dns_port = free_loopback()?;
        let dns_management = format!("http://127.0.0.1:{}", free_loopback()?);
        let mut pebble = Pebble {
            children: Vec::new(),
            directory: String::new(),
            https_ca: dir.join("pebble-https.pem"),
            root: dir.join("pebble-root.pem"),
            dns_management: dns_management.clone(),
        };
        pebble.children.push(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-defaultIPv6", "", "-management", dns_management.trim_start_matches("http://")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context(missing)?,
        );
        let https = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        std::fs::write(&pebble.https_ca, https.cert.pem())?;
        let key = dir.join("pebble-https.key");
        std::fs::write(&key, https.signing_key.serialize_pem())?;
        let (port, mgmt) = (free_loopback()?, free_loopback()?);
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"), "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": pebble.https_ca, "privateKey": key, "httpPort": http01_port, "tlsPort": tls_alpn01_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity_s {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        std::fs::write(dir.join("pebble.json"), config.to_string())?;
        pebble.children.push(
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context(missing)?,
        );
        pebble.directory = format!("https://127.0.0.1:{port}/dir");
        let deadline = Instant::now() + Duration::from_secs(20);
        while pebble.fetch(&pebble.directory).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "pebble did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let root = pebble.fetch(&format!("https://127.0.0.1:{mgmt}/roots/0"))?;
        std::fs::write(&pebble.root, root)?;
        Ok(pebble)
    }

    /// A GET over Pebble's HTTPS.
    fn fetch(&self, url: &str) -> anyhow::Result<Vec<u8>> {
        let out =
            Command::new("curl").args(["-sS", "--max-time", "5", "--cacert"]).arg(&self.https_ca).arg(url).output()?;
        anyhow::ensure!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(out.stdout)
    }
}
