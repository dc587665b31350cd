//! Config tests: the documented defaults equal the code's, and every error
//! names its line and key.

use super::*;

#[test]
fn documented_defaults_equal_the_code_defaults() {
    let loaded = load_text(&default_config_text(), "defaults").unwrap();
    assert_eq!(loaded.core, CoreConfig::default());
}

#[test]
fn every_key_in_the_default_config_is_documented() {
    let text = default_config_text();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let l = line.trim();
        let is_key = !l.is_empty() && !l.starts_with('#') && !l.starts_with('[');
        if is_key {
            assert!(i > 0 && lines[i - 1].trim_start().starts_with('#'), "undocumented key at line {}: {l}", i + 1);
        }
    }
}

#[test]
fn empty_config_is_all_defaults() {
    assert_eq!(load_text("", "empty").unwrap().core, CoreConfig::default());
}

#[test]
fn unknown_key_names_line_and_key() {
    let text = "[log]\nlevel = \"debug\"\n\n[admin]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n";
    let err = load_text(text, "x.toml").err().unwrap();
    let p = &err.problems()[0];
    assert_eq!(p.line, 6, "{err}");
    assert!(p.message.contains("unknown field `listen_port`"), "{err}");
    assert!(err.to_string().starts_with("x.toml:6:"), "{err}");
}

#[test]
fn wrong_type_names_the_nested_key() {
    let text = "[edgebox]\nworkers = \"many\"\n";
    let err = load_text(text, "x.toml").err().unwrap();
    let p = &err.problems()[0];
    assert_eq!((p.line, p.key.as_deref()), (2, Some("edgebox.workers")), "{err}");
}

#[test]
fn unknown_section_is_rejected() {
    let err = load_text("[nope]\na = 1\n", "x.toml").err().unwrap();
    assert!(err.to_string().contains("unknown section"), "{err}");
    assert_eq!(err.problems()[0].line, 1);
}

#[test]
fn syntax_errors_carry_positions() {
    let err = load_text("[log]\nlevel = \n", "x.toml").err().unwrap();
    assert_eq!(err.problems()[0].line, 2, "{err}");
}

#[test]
fn several_errors_are_all_reported() {
    let text = "[edgebox]\nworkers = -1\n[log]\nformat = \"xml\"\n[admin]\nlisten = \"0.0.0.0:9464\"\n";
    let err = load_text(text, "x.toml").err().unwrap();
    let lines: Vec<_> = err.problems().iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![2, 4, 6], "{err}");
}

#[test]
fn unauthenticated_admin_on_a_network_address_is_refused() {
    let err = load_text("[admin]\nlisten = \"0.0.0.0:9464\"\n", "x.toml").err().unwrap();
    assert!(err.to_string().contains("not a loopback address"), "{err}");
    let ok = load_text("[admin]\nlisten = \"0.0.0.0:9464\"\nauth = \"bearer\"\ntoken_file = \"/t\"\n", "x.toml");
    assert!(ok.is_ok());
}

#[test]
fn roles_must_be_compiled_in() {
    let err = load_text("[edgebox]\nroles = [\"no-such-role\"]\n", "x.toml").err().unwrap();
    assert!(err.to_string().contains("not compiled into this binary"), "{err}");
}
