//! busybox-style dispatch: the basename of argv[0] may name a role.
//!
//! `tsdb serve` (a symlink named `tsdb`) and `edgebox-tsdb serve` both become
//! `edgebox tsdb serve`; anything else is left for clap to parse.

use std::ffi::OsString;
use std::path::Path;

use crate::roles::ROLES;

/// The role an executable name stands for, if any.
pub fn role_for_program(program: &str) -> Option<&'static str> {
    let base = Path::new(program).file_name()?.to_str()?;
    let base = base.strip_suffix(".exe").unwrap_or(base);
    let candidate = base.strip_prefix("edgebox-").unwrap_or(base);
    // The longest role name that matches wins, so `edgebox-agent` never
    // resolves to a shorter name that happens to share a prefix.
    ROLES.iter().filter(|r| r.name == candidate).map(|r| r.name).max_by_key(|n| n.len())
}

/// Rewrites argv so that clap always sees `edgebox <role> …` for a role link.
pub fn resolve_argv(mut args: Vec<OsString>) -> Vec<OsString> {
    let Some(program) = args.first().and_then(|a| a.to_str()).map(str::to_owned) else {
        return args;
    };
    if let Some(role) = role_for_program(&program) {
        args[0] = OsString::from("edgebox");
        args.insert(1, OsString::from(role));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_edgebox_is_left_alone() {
        let args = vec![OsString::from("/usr/bin/edgebox"), OsString::from("info")];
        assert_eq!(resolve_argv(args.clone()), args);
    }

    #[test]
    fn unknown_program_name_is_left_alone() {
        assert_eq!(role_for_program("/usr/bin/not-a-role"), None);
        assert_eq!(role_for_program("edgebox-"), None);
    }

    #[test]
    fn every_role_resolves_from_its_link_names() {
        for role in ROLES {
            assert_eq!(role_for_program(&format!("/bin/{}", role.name)), Some(role.name));
            assert_eq!(role_for_program(&format!("edgebox-{}", role.name)), Some(role.name));
            let args = resolve_argv(vec![OsString::from(role.name), OsString::from("serve")]);
            assert_eq!(args[1], OsString::from(role.name));
        }
    }
}
