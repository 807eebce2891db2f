//! Images, with and without a registry: use the local image when present, pull it when a
//! registry answers, and otherwise build it here from Debian packages (a minbase root
//! filesystem made by `mmdebstrap`, imported through the Engine API), cached under its tag.

use std::{collections::HashMap, path::PathBuf, process::Stdio};

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt as _;

use crate::{
    engine::{is_not_found, Engine, EngineError, LABEL_MANAGED},
    manifest::ImageRef,
    progress::Task,
};

/// How to build an image from Debian packages when it cannot be pulled.
#[derive(Debug, Clone, Default)]
pub struct OfflineRecipe {
    /// Debian packages to install on top of a bookworm minbase.
    pub packages: Vec<String>,
    /// Files written into the root filesystem: (absolute path, content, mode).
    pub files: Vec<(String, String, u32)>,
    /// Commands run inside the finished root filesystem (through `chroot`).
    pub commands: Vec<String>,
    /// Dockerfile instructions applied on import (`ENV`, `CMD`, `EXPOSE`, `USER`, `LABEL`).
    pub changes: Vec<String>,
}

/// Where an image comes from when the one asked for cannot be pulled: a local image under
/// Gravity's own tag, built from `recipe`.
#[derive(Debug, Clone)]
pub struct Offline {
    pub image: ImageRef,
    pub recipe: OfflineRecipe,
}

/// How an image came to be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obtained {
    /// The image asked for was already present.
    Present,
    /// Gravity's offline build of it was already present.
    PresentOffline,
    Pulled,
    BuiltOffline,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference actually used (the offline tag when it stands in for the one asked for).
    pub image: ImageRef,
    pub id: String,
    pub obtained: Obtained,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "image {image} cannot be pulled ({pull_error}) and Gravity has no offline recipe for it; load it with `docker load`, or make a registry reachable"
    )]
    Unavailable { image: String, pull_error: String },
    #[error("mmdebstrap is needed to build {image} without a registry: install it (apt-get install mmdebstrap) and run again")]
    NoMmdebstrap { image: String },
    #[error("building {image} from Debian packages failed: {detail}")]
    Build { image: String, detail: String },
    #[error("importing {image} into the Docker Engine failed: {detail}")]
    Import { image: String, detail: String },
}

/// The image's id, or `None` when it is not present.
pub async fn image_id(engine: &Engine, image: &ImageRef) -> Result<Option<String>, EngineError> {
    match engine.api().inspect_image(&image.to_string()).await {
        Ok(inspect) => Ok(Some(inspect.id.unwrap_or_default())),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes `wanted` (or its offline stand-in) present: as it is, pulled, or built from Debian
/// packages. An offline build already made is used before any pull is tried, so an
/// air-gapped machine never waits on a registry twice.
pub async fn resolve(
    engine: &Engine,
    wanted: &ImageRef,
    offline: Option<&Offline>,
    task: Option<&Task>,
) -> Result<Resolved, ImageError> {
    let found = |image: &ImageRef, id: String, obtained| Resolved {
        image: image.clone(),
        id,
        obtained,
    };
    if let Some(id) = image_id(engine, wanted).await? {
        return Ok(found(wanted, id, Obtained::Present));
    }
    if let Some(off) = offline {
        if let Some(id) = image_id(engine, &off.image).await? {
            return Ok(found(&off.image, id, Obtained::PresentOffline));
        }
    }
    if let Some(task) = task {
        task.message(format!("pulling {wanted}"));
    }
    let pull_error = match pull(engine, wanted, task).await {
        Ok(()) => {
            let id = image_id(engine, wanted).await?.unwrap_or_default();
            return Ok(found(wanted, id, Obtained::Pulled));
        }
        Err(e) => e,
    };
    let Some(off) = offline else {
        return Err(ImageError::Unavailable {
            image: wanted.to_string(),
            pull_error,
        });
    };
    // Several gravity processes (or tests) may want the same image: one builds it, the others
    // wait and then find it present.
    let _lock = BuildLock::acquire(&off.image).await;
    if let Some(id) = image_id(engine, &off.image).await? {
        return Ok(found(&off.image, id, Obtained::PresentOffline));
    }
    if let Some(task) = task {
        task.message(format!(
            "no registry reachable: building {} from Debian packages",
            off.image
        ));
    }
    build_offline(engine, &off.image, &off.recipe).await?;
    let id = image_id(engine, &off.image).await?.unwrap_or_default();
    Ok(found(&off.image, id, Obtained::BuiltOffline))
}

async fn pull(engine: &Engine, image: &ImageRef, task: Option<&Task>) -> Result<(), String> {
    let options = CreateImageOptionsBuilder::default()
        .from_image(image.name())
        .tag(image.tag())
        .build();
    let mut progress = engine.api().create_image(Some(options), None, None);
    // Per-layer byte counts, summed into one figure for the progress line.
    let mut layers: HashMap<String, (i64, i64)> = HashMap::new();
    while let Some(step) = progress.next().await {
        let info = step.map_err(|e| e.to_string())?;
        if let (Some(task), Some(id), Some(detail)) = (task, info.id, info.progress_detail) {
            if let (Some(current), Some(total)) = (detail.current, detail.total) {
                layers.insert(id, (current, total));
                let (done, all) = layers
                    .values()
                    .fold((0, 0), |(d, a), (c, t)| (d + c, a + t));
                task.message(format!(
                    "pulling {image}: {} / {} MB",
                    done / 1_000_000,
                    all / 1_000_000
                ));
            }
        }
    }
    Ok(())
}

/// Builds `image` from a bookworm minbase with the recipe's packages and imports it.
pub async fn build_offline(
    engine: &Engine,
    image: &ImageRef,
    recipe: &OfflineRecipe,
) -> Result<(), ImageError> {
    let build_error = |detail: String| ImageError::Build {
        image: image.to_string(),
        detail,
    };
    let tarball = TempPath::new("rootfs", "tar");
    let mut uploads = Vec::new();
    let mut command = tokio::process::Command::new("mmdebstrap");
    command.args([
        "--variant=minbase",
        "--quiet",
        // Documentation and translations are dead weight in a container image.
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
    ]);
    if !recipe.packages.is_empty() {
        command.arg(format!("--include={}", recipe.packages.join(",")));
    }
    for (path, content, mode) in &recipe.files {
        let local = TempPath::new("file", "txt");
        std::fs::write(&local.0, content).map_err(|e| build_error(e.to_string()))?;
        command.arg(format!(
            "--customize-hook=upload {} {path}",
            local.0.display()
        ));
        command.arg(format!(
            "--customize-hook=chroot \"$1\" chmod {mode:o} {path}"
        ));
        uploads.push(local);
    }
    for cmd in &recipe.commands {
        command.arg(format!("--customize-hook=chroot \"$1\" sh -c '{cmd}'"));
    }
    command
        .arg("bookworm")
        .arg(&tarball.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match command.output().await {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::NoMmdebstrap {
                image: image.to_string(),
            })
        }
        Err(e) => return Err(build_error(e.to_string())),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(build_error(
            tail.into_iter().rev().collect::<Vec<_>>().join("; "),
        ));
    }

    let file = tokio::fs::File::open(&tarball.0)
        .await
        .map_err(|e| ImageError::Import {
            image: image.to_string(),
            detail: e.to_string(),
        })?;
    // Streamed: a root filesystem with PostgreSQL is ~500 MB, not something to hold in memory.
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
    let mut changes = recipe.changes.clone();
    changes.push(format!("LABEL {LABEL_MANAGED}=true"));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(image.name())
        .tag(image.tag())
        .changes(changes)
        .build();
    let mut progress = engine.api().create_image(Some(options), Some(body), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| ImageError::Import {
            image: image.to_string(),
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

/// An exclusive lock on building one image, across processes (a lock file in the temp dir).
pub(crate) struct BuildLock(Option<std::fs::File>);

impl BuildLock {
    pub(crate) async fn acquire(image: &ImageRef) -> Self {
        let name: String = image
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = std::env::temp_dir().join(format!("gravity-image-{name}.lock"));
        let locked = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .ok()?;
            file.lock().ok()?;
            Some(file)
        })
        .await
        .ok()
        .flatten();
        // Without a lock (read-only temp dir) two builds may race; both produce the same image.
        Self(locked)
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        if let Some(file) = &self.0 {
            let _ = file.unlock();
        }
    }
}

/// A temporary file, deleted when dropped (also when the work is interrupted).
pub(crate) struct TempPath(pub(crate) PathBuf);

impl TempPath {
    pub(crate) fn new(kind: &str, ext: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "gravity-{kind}-{}.{ext}",
            uuid::Uuid::new_v4().simple()
        )))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
