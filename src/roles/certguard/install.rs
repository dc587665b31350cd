//! Putting a certificate on a target: files written atomically (a temporary
//! file in the same directory, fsync, rename, directory fsync), so a reader
//! sees the old file or the new one and never a half-written one; the
//! reload action that makes the server read them; and putting the previous
//! files back.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::config::Target;
use crate::core::httpclient::{self, Endpoint};

/// Who owns a written file: user and group ids, None to keep certguard's.
pub type Owner = (Option<u32>, Option<u32>);

/// Replaces `path` with `bytes`, mode `mode`, atomically and durably.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    write_owned(path, bytes, mode, (None, None))
}

/// `write_atomically`, the file owned by `owner`.
pub fn write_owned(path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.certguard-{}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        // The mode given at creation is filtered by the umask; set it exactly.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        if owner != (None, None) {
            std::os::unix::fs::fchown(&f, owner.0, owner.1)?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

/// What a target's files held before a new certificate replaced them.
pub struct Previous {
    files: Option<(Vec<u8>, Vec<u8>)>,
}

/// Writes a certificate to a target: the key first (a server that reloads
/// between the two writes then fails to load a mismatched pair and keeps
/// the old one), then the chain. Returns what the files held before.
pub async fn put(target: &Target, chain: String, key: String) -> anyhow::Result<Previous> {
    let mode = target.mode().map_err(anyhow::Error::msg)?;
    let t = target.clone();
    tokio::task::spawn_blocking(move || {
        let owner = owner_of(&t)?;
        let files = match (std::fs::read(&t.cert_file), std::fs::read(&t.key_file)) {
            (Ok(c), Ok(k)) => Some((c, k)),
            _ => None,
        };
        write_owned(&t.key_file, key.as_bytes(), 0o600, owner)?;
        write_owned(&t.cert_file, chain.as_bytes(), mode, owner)?;
        anyhow::Ok(Previous { files })
    })
    .await?
}

/// Puts the previous files back and reloads. A target that had none keeps
/// the new ones: there is nothing older to serve.
pub async fn restore(target: &Target, previous: Previous) -> anyhow::Result<()> {
    let Some((cert, key)) = previous.files else { return Ok(()) };
    let mode = target.mode().map_err(anyhow::Error::msg)?;
    let t = target.clone();
    tokio::task::spawn_blocking(move || {
        let owner = owner_of(&t)?;
        write_owned(&t.key_file, &key, 0o600, owner)?;
        write_owned(&t.cert_file, &cert, mode, owner)
    })
    .await??;
    reload(target).await
}

/// Runs the target's reload action, if it has one.
pub async fn reload(target: &Target) -> anyhow::Result<()> {
    if let Some(pid_file) = &target.reload_pid_file {
        let pid = std::fs::read_to_string(pid_file)
            .with_context(|| format!("reload_pid_file {}", pid_file.display()))?
            .trim()
            .parse::<u32>()
            .with_context(|| format!("reload_pid_file {}: not a process id", pid_file.display()))?;
        let signal = target.signal().map_err(anyhow::Error::msg)?;
        run(&["kill".into(), format!("-{signal}"), pid.to_string()], Duration::from_secs(5)).await?;
    }
    if !target.reload_command.is_empty() {
        run(&target.reload_command, Duration::from_secs(target.reload_timeout_s)).await?;
    }
    if let Some(url) = &target.reload_url {
        post(url, Duration::from_secs(target.reload_timeout_s)).await.with_context(|| format!("reload_url {url}"))?;
    }
    Ok(())
}

/// POSTs to an http:// URL within `timeout`; 2xx is success.
async fn post(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let rest = url.strip_prefix("http://").context("must start with http://")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path }.to_owned();
    let host = if host.contains(':') { host.to_owned() } else { format!("{host}:80") };
    let call = tokio::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs;
        let addr = host.to_socket_addrs()?.next().with_context(|| format!("{host} resolves to no address"))?;
        let to = Endpoint { addr, host, tls: None };
        httpclient::request(&to, "POST", &path, &[], b"")
    });
    let reply =
        tokio::time::timeout(timeout, call).await.map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))???;
    anyhow::ensure!(
        (200..300).contains(&reply.status),
        "answered {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body).trim()
    );
    Ok(())
}

/// The ids `owner` names: "user", "user:group" or numbers, names looked up
/// in /etc/passwd and /etc/group.
fn owner_of(target: &Target) -> anyhow::Result<Owner> {
    let Some(spec) = &target.owner else { return Ok((None, None)) };
    let (user, group) = spec.split_once(':').map_or((spec.as_str(), None), |(u, g)| (u, Some(g)));
    let lookup = |file: &str, name: &str| -> anyhow::Result<u32> {
        if let Ok(id) = name.parse() {
            return Ok(id);
        }
        let table = std::fs::read_to_string(file).with_context(|| format!("owner {spec:?}: reading {file}"))?;
        table
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| f.get(2)?.parse().ok())
            .with_context(|| format!("owner {spec:?}: no {name:?} in {file}"))
    };
    let uid = (!user.is_empty()).then(|| lookup("/etc/passwd", user)).transpose()?;
    let gid = group.map(|g| lookup("/etc/group", g)).transpose()?;
    Ok((uid, gid))
}

/// Runs argv to completion within `timeout`; a command still running then
/// is killed. Its stderr goes into the error. (Reload actions, dns-01 hooks.)
pub async fn run(argv: &[String], timeout: Duration) -> anyhow::Result<()> {
    let shown = argv.join(" ");
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("reload `{shown}`: cannot start"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("reload `{shown}`: still running after {timeout:?}; killed"))??;
    if !out.status.success() {
        anyhow::bail!("reload `{shown}`: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_file_with_the_mode_asked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        write_atomically(&f, b"one", 0o600).unwrap();
        write_atomically(&f, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        let e = write_atomically(&dir.path().join("missing/k.pem"), b"x", 0o600).unwrap_err();
        assert!(format!("{e:#}").contains("missing/k.pem"), "{e:#}");
    }

    fn target(extra: &str) -> Target {
        toml::from_str(&format!("cert_file = \"/tmp/c.pem\"\nkey_file = \"/tmp/c.key\"\n{extra}")).unwrap()
    }

    #[test]
    fn owners_are_names_or_ids_and_unknown_names_are_refused() {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(owner_of(&target("")).unwrap(), (None, None));
        assert_eq!(owner_of(&target("owner = \"123:456\"")).unwrap(), (Some(123), Some(456)));
        let nobody = owner_of(&target("owner = \"nobody\"")).unwrap();
        assert!(nobody.0.is_some() && nobody.1.is_none());
        let e = owner_of(&target("owner = \"no-such-user-here\"")).unwrap_err();
        assert!(format!("{e:#}").contains("no-such-user-here"), "{e:#}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        write_owned(&f, b"x", 0o600, (Some(123), Some(456))).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.uid(), m.gid()), (123, 456));
    }

    #[tokio::test]
    async fn reload_urls_need_a_2xx_answer() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (status, conn) in ["200 OK", "500 Internal Server Error"].into_iter().zip(listener.incoming()) {
                let mut conn = conn.unwrap();
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody");
            }
        });
        let url = format!("http://{addr}/-/reload");
        assert!(post(&url, Duration::from_secs(5)).await.is_ok());
        let e = post(&url, Duration::from_secs(5)).await.unwrap_err();
        assert!(format!("{e:#}").contains("answered 500"), "{e:#}");
        assert!(post("http://127.0.0.1:1/x", Duration::from_secs(5)).await.is_err());
    }

    #[tokio::test]
    async fn reload_commands_fail_clearly_and_hang_no_longer_than_their_timeout() {
        let ok = run(&["true".into()], Duration::from_secs(5)).await;
        assert!(ok.is_ok());
        let failed = run(&["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()], Duration::from_secs(5)).await;
        let e = format!("{:#}", failed.unwrap_err());
        assert!(e.contains("nope") && e.contains("exit status: 3"), "{e}");
        let started = std::time::Instant::now();
        let hung = run(&["sleep".into(), "30".into()], Duration::from_millis(300)).await;
        assert!(format!("{:#}", hung.unwrap_err()).contains("still running"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
