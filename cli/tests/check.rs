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
