//! `edgebox install --symlinks DIR`: one link per role, pointing at this
//! binary. Idempotent; never replaces a file that is not its own link unless
//! --force.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::roles::ROLES;

pub fn run(dir: &Path, force: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut made = 0;
    for role in ROLES {
        let link = dir.join(role.name);
        if link_action(&link, &exe, force)? {
            std::os::unix::fs::symlink(&exe, &link)
                .with_context(|| format!("{}: cannot create symlink", link.display()))?;
            made += 1;
        }
    }
    println!("{}: {made} link(s) created, {} already in place", dir.display(), ROLES.len() - made);
    Ok(())
}

/// True when a link must be (re)created at `link`.
fn link_action(link: &Path, exe: &PathBuf, force: bool) -> anyhow::Result<bool> {
    let Ok(meta) = std::fs::symlink_metadata(link) else {
        return Ok(true);
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(link)?;
        let resolved = link.parent().unwrap_or(Path::new(".")).join(&target);
        let resolved = resolved.canonicalize().unwrap_or(resolved);
        if &resolved == exe {
            return Ok(false);
        }
    }
    if !force {
        anyhow::bail!("{}: exists and is not a link to {}; use --force to replace it", link.display(), exe.display());
    }
    if meta.is_dir() {
        anyhow::bail!("{}: is a directory; not replacing it even with --force", link.display());
    }
    std::fs::remove_file(link).with_context(|| format!("{}: cannot remove", link.display()))?;
    Ok(true)
}
