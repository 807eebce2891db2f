//! Images, with and without a registry: use the local image when present, pull it when a
//! registry answers, and otherwise build it here from Debian packages (a minbase root
//! filesystem made by `mmdebstrap`, imported through the Engine API), cached under its tag.

use std::{path::PathBuf, process::Stdio};

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt as _;

use crate::{
    engine::{Engine, EngineError, LABEL_MANAGED},
    manifest::ImageRef,
};

/// How to build an image from Debian packages when it cannot be pulled.
#[derive(Debug, Clone)]
pub struct OfflineRecipe {
    /// Debian packages to install on top of a bookworm minbase.
    pub packages: Vec<String>,
    /// Dockerfile instructions applied on import (`ENV`, `CMD`, `EXPOSE`, `USER`, `LABEL`).
    pub changes: Vec<String>,
}

/// How an image came to be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obtained {
    AlreadyPresent,
    Pulled,
    BuiltOffline,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "image {image} cannot be pulled ({pull_error}) and has no offline recipe; load it with `docker load`, or make a registry reachable"
    )]
    Unavailable { image: String, pull_error: String },
    #[error("mmdebstrap is needed to build {image} without a registry: install it (apt-get install mmdebstrap) and run again")]
    NoMmdebstrap { image: String },
    #[error("building {image} from Debian packages failed: {detail}")]
    Build { image: String, detail: String },
    #[error("importing {image} into the Docker Engine failed: {detail}")]
    Import { image: String, detail: String },
}

pub async fn is_present(engine: &Engine, image: &ImageRef) -> Result<bool, EngineError> {
    match engine.api().inspect_image(&image.to_string()).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Makes `image` present: as it is, pulled, or built offline from `recipe`.
pub async fn ensure(
    engine: &Engine,
    image: &ImageRef,
    recipe: Option<&OfflineRecipe>,
) -> Result<Obtained, ImageError> {
    if is_present(engine, image).await? {
        return Ok(Obtained::AlreadyPresent);
    }
    let pull_error = match pull(engine, image).await {
        Ok(()) => return Ok(Obtained::Pulled),
        Err(e) => e,
    };
    let Some(recipe) = recipe else {
        return Err(ImageError::Unavailable {
            image: image.to_string(),
            pull_error,
        });
    };
    build_offline(engine, image, recipe).await?;
    Ok(Obtained::BuiltOffline)
}

async fn pull(engine: &Engine, image: &ImageRef) -> Result<(), String> {
    let options = CreateImageOptionsBuilder::default()
        .from_image(image.name())
        .tag(image.tag())
        .build();
    let mut progress = engine.api().create_image(Some(options), None, None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Builds `image` from a bookworm minbase with the recipe's packages and imports it.
pub async fn build_offline(
    engine: &Engine,
    image: &ImageRef,
    recipe: &OfflineRecipe,
) -> Result<(), ImageError> {
    let tarball = RootFs::new();
    let mut command = tokio::process::Command::new("mmdebstrap");
    command.args(["--variant=minbase", "--quiet"]);
    if !recipe.packages.is_empty() {
        command.arg(format!("--include={}", recipe.packages.join(",")));
    }
    command
        .arg("bookworm")
        .arg(&tarball.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = match command.output().await {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::NoMmdebstrap {
                image: image.to_string(),
            })
        }
        Err(e) => {
            return Err(ImageError::Build {
                image: image.to_string(),
                detail: e.to_string(),
            })
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(ImageError::Build {
            image: image.to_string(),
            detail: tail.into_iter().rev().collect::<Vec<_>>().join("; "),
        });
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

/// A temporary root-filesystem tarball, deleted when dropped.
struct RootFs(PathBuf);

impl RootFs {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!(
            "gravity-rootfs-{}.tar",
            uuid::Uuid::new_v4().simple()
        )))
    }
}

impl Drop for RootFs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
