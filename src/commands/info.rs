//! `edgebox info`: the build, the machine, the I/O path, the roles and the
//! store, without starting anything.

use serde_json::json;

use crate::commands::Invocation;
use crate::core::{control, runtime, store, sysinfo};
use crate::roles::ROLES;

pub fn run(inv: &Invocation, as_json: bool) -> anyhow::Result<()> {
    let loaded = inv.load_config()?;
    let core = &loaded.core;
    let io = match runtime::choose(core.edgebox.io) {
        Ok(path) => path.to_string(),
        Err(e) => format!("unavailable: {e}"),
    };
    let store_path = core.store_path();
    let store_bytes = std::fs::metadata(&store_path).map(|m| m.len()).ok();
    let running = control::call(&core.control_socket(), &control::Request::StoreInfo).is_ok();
    let schema = if running { None } else { store_bytes.and_then(|_| store::info(&store_path).ok()).map(|i| i.schema) };
    let kernel = sysinfo::kernel();
    let workers = if core.edgebox.workers == 0 { runtime::default_workers() } else { core.edgebox.workers };
    let facts = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("EDGEBOX_GIT_COMMIT"),
        "target": env!("EDGEBOX_TARGET"),
        "kernel": kernel,
        "cores": runtime::default_workers(),
        "workers": workers,
        "io": io,
        "roles_compiled": ROLES.iter().map(|r| r.name).collect::<Vec<_>>(),
        "roles_enabled": loaded.enabled_roles(),
        "config": loaded.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into()),
        "data_dir": core.edgebox.data_dir,
        "store": { "path": store_path, "bytes": store_bytes, "in_use": running, "schema": schema },
        "admin": core.admin.listen.to_string(),
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&facts)?);
        return Ok(());
    }
    let list = |v: &serde_json::Value| {
        let names: Vec<String> =
            v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_owned)).collect();
        if names.is_empty() { "none".to_owned() } else { names.join(", ") }
    };
    println!(
        "edgebox {} ({}, {})",
        facts["version"].as_str().unwrap_or(""),
        facts["commit"].as_str().unwrap_or(""),
        facts["target"].as_str().unwrap_or("")
    );
    println!("kernel:         {} ({})", kernel.release, kernel.machine);
    println!("cores:          {} (runtime workers: {workers})", facts["cores"]);
    println!("file I/O:       {io}");
    println!("roles compiled: {}", list(&facts["roles_compiled"]));
    println!("roles enabled:  {}", list(&facts["roles_enabled"]));
    println!("config:         {}", facts["config"].as_str().unwrap_or(""));
    println!("data dir:       {}", core.edgebox.data_dir.display());
    match store_bytes {
        Some(b) => println!(
            "store:          {} ({b} bytes{})",
            store_path.display(),
            if running { ", in use by a running appliance" } else { "" }
        ),
        None => println!("store:          {} (not created yet)", store_path.display()),
    }
    println!("admin:          http://{}", core.admin.listen);
    Ok(())
}
