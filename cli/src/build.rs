//! Services from source to image: one `cargo build` for all the platform's crates, then one
//! small image per binary on the runtime base, tagged by the binary's content so an unchanged
//! binary is never built into an image twice.

use std::{
    collections::{BTreeMap, HashMap},
    io::Read as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::UNIX_EPOCH,
};

use bollard::query_parameters::BuildImageOptions;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncBufReadExt as _;

use crate::{
    engine::{Engine, EngineError, LABEL_MANAGED},
    images::image_id,
    manifest::ImageRef,
    progress::Task,
};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "cannot run cargo ({0}); install the Rust toolchain (https://rustup.rs) and run again"
    )]
    NoCargo(std::io::Error),
    #[error("cargo build failed:\n{0}\nfix the error above and run `gravity up` again")]
    Cargo(String),
    #[error("cargo built no binary named {0}; check `crate` in gravity.toml names a crate with a binary of that name")]
    NoBinary(String),
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("building the image of {binary} failed: {detail}")]
    Image { binary: String, detail: String },
}

/// A built binary.
#[derive(Debug, Clone)]
pub struct Binary {
    pub name: String,
    pub path: PathBuf,
    /// Hex SHA-256 of the file.
    pub digest: String,
}

#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    executable: Option<PathBuf>,
    #[serde(default)]
    target: Option<Target>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// Builds the binaries of `crates` in one `cargo build`, reporting cargo's progress on `task`.
pub async fn cargo_build(
    workspace: &Path,
    profile: &str,
    crates: &[String],
    task: &Task,
) -> Result<BTreeMap<String, Binary>, BuildError> {
    let mut command =
        tokio::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(workspace)
        .args([
            "build",
            "--bins",
            "--message-format=json-render-diagnostics",
        ])
        .args(["--profile", profile]);
    for c in crates {
        command.args(["-p", c]);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(BuildError::NoCargo)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(BuildError::Cargo(
            "cargo's output was not captured".to_owned(),
        ));
    };
    // Cargo's status lines ("Compiling x") become the progress message, with how many
    // crates are done; the last lines are kept for the error report.
    let compiled = std::sync::atomic::AtomicUsize::new(0);
    let stderr_task = async {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut tail: Vec<String> = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let trimmed = line.trim();
            if trimmed.starts_with("Compiling") || trimmed.starts_with("Building") {
                let done = compiled.load(std::sync::atomic::Ordering::Relaxed);
                task.message(format!("{done} crates built · {trimmed}"));
            }
            tail.push(line);
            if tail.len() > 60 {
                tail.remove(0);
            }
        }
        tail
    };
    let stdout_task = async {
        let mut built = Vec::new();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(msg) = serde_json::from_str::<Message>(&line) {
                if msg.reason == "compiler-artifact" {
                    compiled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let (Some(exe), Some(target)) = (msg.executable, msg.target) {
                        if target.kind.iter().any(|k| k == "bin") {
                            built.push((target.name, exe));
                        }
                    }
                }
            }
        }
        built
    };
    let (tail, built) = tokio::join!(stderr_task, stdout_task);
    let status = child.wait().await.map_err(BuildError::NoCargo)?;
    if !status.success() {
        return Err(BuildError::Cargo(tail.join("\n")));
    }
    let mut binaries = BTreeMap::new();
    for name in crates {
        let Some((_, path)) = built.iter().find(|(n, _)| n == name) else {
            return Err(BuildError::NoBinary(name.clone()));
        };
        let digest = digest_cached(path).await?;
        binaries.insert(
            name.clone(),
            Binary {
                name: name.clone(),
                path: path.clone(),
                digest,
            },
        );
    }
    Ok(binaries)
}

/// What a binary's digest was computed from: if the file's size and modification time are
/// the same, so is its content (cargo replaces binaries, it never edits them in place).
#[derive(Serialize, Deserialize, PartialEq)]
struct Stamp {
    len: u64,
    modified_ns: u128,
    digest: String,
}

/// The file's SHA-256, remembered next to it so an unchanged debug binary of a few hundred
/// megabytes is not read again on every `gravity up`.
async fn digest_cached(path: &Path) -> Result<String, BuildError> {
    let path = path.to_path_buf();
    let io = |path: &Path, error| BuildError::Io {
        path: path.display().to_string(),
        error,
    };
    tokio::task::spawn_blocking(move || {
        let meta = std::fs::metadata(&path).map_err(|e| io(&path, e))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let stamp_path = path.with_extension("gravity-digest");
        if let Ok(text) = std::fs::read_to_string(&stamp_path) {
            if let Ok(stamp) = serde_json::from_str::<Stamp>(&text) {
                let valid =
                    stamp.digest.len() == 64 && stamp.digest.bytes().all(|b| b.is_ascii_hexdigit());
                if valid && stamp.len == meta.len() && stamp.modified_ns == modified_ns {
                    return Ok(stamp.digest);
                }
            }
        }
        let mut file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| io(&path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let stamp = Stamp {
            len: meta.len(),
            modified_ns,
            digest: digest.clone(),
        };
        if let Ok(text) = serde_json::to_string(&stamp) {
            // A cache: failing to write it only costs a re-hash next time.
            let _ = std::fs::write(&stamp_path, text);
        }
        Ok(digest)
    })
    .await
    .map_err(|e| BuildError::Cargo(format!("hashing a binary panicked: {e}")))?
}

/// The image tag of a binary: its name and a prefix of its digest.
pub fn image_ref(binary: &Binary) -> ImageRef {
    ImageRef::parse(
        &format!("gravity-build/{}:{}", binary.name, &binary.digest[..16]),
        "latest",
    )
    .unwrap_or_else(|e| unreachable!("binary names and digests are valid in a tag: {e}"))
}

/// Makes the image of `binary` on top of `base` present; returns its reference and id.
pub async fn service_image(
    engine: &Engine,
    binary: &Binary,
    base: &ImageRef,
) -> Result<(ImageRef, String), BuildError> {
    let image = image_ref(binary);
    if let Some(id) = image_id(engine, &image).await? {
        return Ok((image, id));
    }
    // Two `gravity up`s building the same tag at once would each make an image, the second
    // taking the tag: the first one's containers would then look changed. One builds; the
    // other waits and finds it.
    let _lock = crate::images::BuildLock::acquire(&image).await;
    if let Some(id) = image_id(engine, &image).await? {
        return Ok((image, id));
    }
    let fail = |detail: String| BuildError::Image {
        binary: binary.name.clone(),
        detail,
    };
    let dockerfile = format!(
        "FROM {base}\nCOPY {name} /usr/local/bin/{name}\nUSER 65534:65534\nENTRYPOINT [\"/usr/local/bin/{name}\"]\n",
        name = binary.name
    );
    // The build context: the Dockerfile and the binary, written to a temporary tar file and
    // streamed (debug binaries are large).
    let guard = crate::images::TempPath::new("context", "tar");
    let context = guard.0.clone();
    let ctx_path = context.clone();
    let bin_path = binary.path.clone();
    let bin_name = binary.name.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let file = std::fs::File::create(&ctx_path)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        // Plain ustar entries: the engine's tar reader refuses GNU sparse entries, which
        // `append_file` may write for a binary with holes.
        let mut header = tar::Header::new_ustar();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
        let bin = std::fs::File::open(&bin_path)?;
        let mut header = tar::Header::new_ustar();
        header.set_size(bin.metadata()?.len());
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(&mut header, &bin_name, bin)?;
        tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(e.to_string()))?;
    let result = async {
        let file = tokio::fs::File::open(&context)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".to_owned(),
            t: Some(image.to_string()),
            rm: true,
            forcerm: true,
            labels: Some(HashMap::from([(
                LABEL_MANAGED.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        };
        let mut progress = engine.api().build_image(options, None, Some(body));
        while let Some(step) = progress.next().await {
            let info = step.map_err(|e| fail(e.to_string()))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(fail(detail));
            }
        }
        Ok(())
    }
    .await;
    drop(guard);
    result?;
    let id = image_id(engine, &image)
        .await?
        .ok_or_else(|| fail("the engine reported success but the image is missing".to_owned()))?;
    Ok((image, id))
}
