//! `gravity check`, run as a user runs it.

use std::process::Command;

fn gravity(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gravity"))
        .args(args)
        .output()
        .expect("run gravity")
}

#[test]
fn check_describes_the_shipped_platform() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../gravity.toml");
    let out = gravity(&["--file", file, "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("auth"), "{text}");
    assert!(text.contains("postgres:15"), "{text}");
}

#[test]
fn a_mistake_is_reported_with_line_column_and_a_suggestion() {
    let dir = std::env::temp_dir().join(format!("gravity-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gravity.toml");
    std::fs::write(
        &file,
        "[platform]\nname = \"shop\"\n\n[infrastructure.redis]\nimage = \"redis\"\nversion = \"7\"\nport = 6379\n\n[services.api]\nport = 9000\ndepends_on = [\"rdis\"]\n",
    )
    .unwrap();
    let out = gravity(&["--file", file.to_str().unwrap(), "check"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gravity.toml:11:15: unknown name \"rdis\""),
        "{err}"
    );
    assert!(err.contains("did you mean \"redis\""), "{err}");
}

#[test]
fn a_missing_file_says_what_to_do() {
    let out = gravity(&["--file", "/nonexistent/gravity.toml", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --file"));
}

/// The platform manager links no service: its dependency tree holds no crate of
/// `services/` but the gateway's configuration schema.
#[test]
fn gravity_links_no_service_crate() {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args([
            "tree",
            "-p",
            "gravity",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let services_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/");
    let services = std::path::Path::new(services_dir)
        .canonicalize()
        .expect("the services folder");
    let linked: Vec<&str> = tree
        .lines()
        .filter(|l| {
            // A path dependency's line: `name vX.Y.Z (/path/to/it)`, maybe then ` (*)`.
            l.split_once('(')
                .and_then(|(_, rest)| rest.split(')').next())
                .is_some_and(|path| {
                    std::path::Path::new(path)
                        .canonicalize()
                        .is_ok_and(|p| p.starts_with(&services))
                })
        })
        .collect();
    assert!(tree.contains("gateway-config v"), "{tree}");
    assert!(
        !linked.is_empty(),
        "path dependencies are recognised: {tree}"
    );
    assert!(
        linked.iter().all(|l| l.starts_with("gateway-config v")),
        "gravity links service crates: {linked:?}"
    );
}
