//! The command line as a user meets it: dispatch, exit codes, generated help,
//! config errors.

use std::os::unix::fs::symlink;

use crate::support::{bin, run, text};

#[test]
fn version_names_commit_target_and_features() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    for needle in ["edgebox 0.1.0", "commit:", "target:", "features:"] {
        assert!(s.contains(needle), "{needle} missing from {s}");
    }
}

#[test]
fn list_prints_every_compiled_role() {
    let out = run(&["--list"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    for role in edgebox::roles::ROLES {
        assert!(s.lines().any(|l| l.starts_with(role.name)), "{} not listed in {s}", role.name);
    }
}

#[test]
fn usage_errors_exit_64_with_one_clear_line() {
    for args in [&[][..], &["no-such-role"][..], &["--no-such-flag"][..], &["store", "backup"][..]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).is_empty(), "{args:?} printed no error");
        assert!(!text(&out.stderr).contains("panicked"), "{args:?}");
    }
}

#[test]
fn help_is_generated_for_every_command() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    for cmd in ["up", "info", "install", "config", "store", "completions", "man"] {
        assert!(text(&out.stdout).contains(cmd), "{cmd} missing from help");
    }
    let man = run(&["man"]);
    assert!(text(&man.stdout).starts_with(".ie") || text(&man.stdout).contains(".TH"), "not roff");
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(text(&out.stdout).contains("edgebox"), "{shell}");
    }
}

#[test]
fn a_link_named_for_a_role_runs_that_role() {
    let dir = tempfile::tempdir().unwrap();
    for role in edgebox::roles::ROLES {
        for name in [role.name.to_owned(), format!("edgebox-{}", role.name)] {
            let link = dir.path().join(&name);
            symlink(bin(), &link).unwrap();
            let out = std::process::Command::new(&link).arg("--help").output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{name}");
            assert!(text(&out.stdout).contains("serve"), "{name}: {}", text(&out.stdout));
        }
    }
    // A link with any other name is plain edgebox.
    let other = dir.path().join("my-appliance");
    symlink(bin(), &other).unwrap();
    let out = std::process::Command::new(&other).arg("--version").output().unwrap();
    assert!(text(&out.stdout).contains("edgebox 0.1.0"));
}

#[test]
fn install_symlinks_is_idempotent_and_refuses_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("bin");
    let d = d.to_str().unwrap();
    for _ in 0..2 {
        let out = run(&["install", "--symlinks", d]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    for role in edgebox::roles::ROLES {
        let link = dir.path().join("bin").join(role.name);
        assert_eq!(std::fs::read_link(&link).unwrap().canonicalize().unwrap(), bin().canonicalize().unwrap());
    }
    if let Some(role) = edgebox::roles::ROLES.first() {
        let path = dir.path().join("bin").join(role.name);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "precious").unwrap();
        let out = run(&["install", "--symlinks", d]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("--force"), "{}", text(&out.stderr));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        assert_eq!(run(&["install", "--symlinks", d, "--force"]).status.code(), Some(0));
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    }
}

#[test]
fn the_default_config_passes_its_own_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["config", "default"]);
    assert_eq!(out.status.code(), Some(0));
    let f = dir.path().join("default.toml");
    std::fs::write(&f, &out.stdout).unwrap();
    let check = run(&["config", "check", f.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains(": ok"));
}

#[test]
fn config_errors_exit_78_and_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("[admin]\nlisten = \"127.0.0.1:1\"\nbogus = true\n", ":3:1: `admin.bogus`"),
        ("[edgebox]\nworkers = \"two\"\n", ":2:11: `edgebox.workers`"),
        ("[log\nlevel = 1\n", ":1:"),
        ("[nosuchsection]\n", "unknown section"),
        ("[log]\nlevel = \"[[[\"\n", "not a valid filter"),
    ];
    for (i, (config, needle)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&f, config).unwrap();
        let data = dir.path().join("data");
        for args in [
            vec!["config", "check", f.to_str().unwrap()],
            vec!["--config", f.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "up"],
        ] {
            let out = run(&args);
            let err = text(&out.stderr);
            if args[0] == "config" && needle.contains("filter") {
                continue; // the log filter is checked when logging starts
            }
            assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
            assert!(err.contains(needle), "{args:?}: expected {needle:?} in {err}");
            assert!(!err.contains("panicked"));
        }
    }
    let out = run(&["config", "check", dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("missing.toml"));
}

#[test]
fn an_unusable_data_dir_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let data = file.join("data");
    let out = run(&["--data-dir", data.to_str().unwrap(), "up"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("data_dir"), "{}", text(&out.stderr));
}

#[test]
fn info_reports_io_path_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = run(&["--data-dir", data, "info", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["version", "commit", "target", "kernel", "cores", "io", "roles_compiled", "roles_enabled", "store"] {
        assert!(v.get(key).is_some(), "info lacks {key}");
    }
    let blocking = run(&["--data-dir", data, "--io", "blocking", "info", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&blocking.stdout).unwrap();
    assert!(v["io"].as_str().unwrap().starts_with("blocking"), "{v}");
    let text_out = run(&["--data-dir", data, "info"]);
    assert!(text(&text_out.stdout).contains("file I/O:"));
}

#[test]
fn packaged_config_and_units_match_the_source_of_truth() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let default = text(&run(&["config", "default"]).stdout);
    for copy in ["packaging/edgebox.toml", "packaging/buildroot/package/edgebox/edgebox.toml"] {
        let packaged = std::fs::read_to_string(root.join(copy)).unwrap();
        assert!(packaged == default, "{copy} differs from `edgebox config default`; regenerate it");
    }
    let unit = std::fs::read_to_string(root.join("packaging/systemd/edgebox.service")).unwrap();
    let br_unit = std::fs::read_to_string(root.join("packaging/buildroot/package/edgebox/edgebox.service")).unwrap();
    assert_eq!(unit, br_unit, "the Buildroot unit is a copy of packaging/systemd/edgebox.service");
}

/// `kernel.io_uring_disabled = 2` forbids io_uring: `auto` falls back and
/// says why, `--io uring` refuses to start. Needs root and a kernel ≥ 6.6
/// (both true on the CI machine); restores the sysctl afterwards.
#[test]
fn a_kernel_that_forbids_io_uring_is_detected() {
    const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(SYSCTL, &self.0);
        }
    }
    let original =
        std::fs::read_to_string(SYSCTL).unwrap_or_else(|e| panic!("{SYSCTL}: {e} (this test needs a kernel ≥ 6.6)"));
    std::fs::write(SYSCTL, "2").unwrap_or_else(|e| panic!("writing {SYSCTL} needs root: {e}"));
    let _restore = Restore(original);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let info = run(&["--data-dir", d, "info"]);
    assert!(text(&info.stdout).contains("blocking pool (kernel.io_uring_disabled = 2)"), "{}", text(&info.stdout));
    let forced = run(&["--data-dir", d, "--io", "uring", "--admin-listen", "127.0.0.1:0", "up"]);
    assert_eq!(forced.status.code(), Some(78), "{}", text(&forced.stderr));
    assert!(text(&forced.stderr).contains("io_uring is unavailable"), "{}", text(&forced.stderr));
}
