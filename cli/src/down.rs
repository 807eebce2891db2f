//! `gravity down`: remove the platform's containers and network, keeping its data. Volumes go
//! only with `--volumes`, after a confirmation.
//!
//! **Invariant:** this is the only place Gravity deletes a volume.

use bollard::query_parameters::{ListNetworksOptions, ListVolumesOptions, RemoveVolumeOptions};

use crate::{
    containers,
    engine::{is_not_found, resource_of, Engine, EngineError},
    progress::Reporter,
    project::Project,
};

#[derive(Debug, thiserror::Error)]
pub enum DownError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("refusing to delete the data of platform {project} without a confirmation: run in a terminal to be asked, or pass --yes")]
    NotConfirmed { project: String },
    #[error("the data of {project} was kept (the confirmation did not match)")]
    Declined { project: String },
}

impl From<bollard::errors::Error> for DownError {
    fn from(e: bollard::errors::Error) -> Self {
        Self::Engine(e.into())
    }
}

/// Asks the question on a terminal; true when the answer confirms.
pub type Ask = Box<dyn FnOnce(&str) -> bool>;

/// How the deletion of volumes is confirmed.
pub enum Confirm {
    /// `--yes`: confirmed up front.
    Yes,
    /// Ask on the terminal; `None` when there is no terminal.
    Ask(Option<Ask>),
}

/// What `down` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
}

pub async fn down(
    project: &Project,
    volumes: Option<Confirm>,
    reporter: &Reporter,
) -> Result<Removed, DownError> {
    let engine = Engine::connect().await?;
    let filter = project.label_filter();
    // Ask before touching anything, so a refusal leaves the platform as it was.
    let doomed = match &volumes {
        Some(_) => engine
            .api()
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filter.clone()),
            }))
            .await?
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect(),
        None => Vec::new(),
    };
    if let Some(confirm) = volumes {
        if !doomed.is_empty() {
            let question = format!(
                "This deletes all data of platform {} (volumes: {}). Type the platform name to confirm: ",
                project.name(),
                doomed.join(", ")
            );
            let confirmed = match confirm {
                Confirm::Yes => true,
                Confirm::Ask(None) => {
                    return Err(DownError::NotConfirmed {
                        project: project.name().to_owned(),
                    })
                }
                Confirm::Ask(Some(ask)) => ask(&question),
            };
            if !confirmed {
                return Err(DownError::Declined {
                    project: project.name().to_owned(),
                });
            }
        }
    }

    let mut removed = Removed::default();
    let found = engine.containers(filter.clone()).await?;
    let mut work = Vec::new();
    for c in &found {
        let resource = resource_of(c).unwrap_or_default().to_owned();
        let id = c.id.clone().unwrap_or_default();
        let engine = engine.clone();
        let task = reporter.task(&resource, "stopping");
        removed.containers.push(resource);
        work.push(async move {
            match containers::remove(&engine, &id).await {
                Ok(()) => {
                    task.done("removed");
                    Ok(())
                }
                Err(e) => {
                    task.fail(&e.to_string());
                    Err(e)
                }
            }
        });
    }
    for r in futures_util::future::join_all(work).await {
        r?;
    }
    let networks = engine
        .api()
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filter),
        }))
        .await?;
    for n in networks {
        if let Some(name) = n.name {
            match engine.api().remove_network(&name).await {
                Ok(()) => reporter.note("network", &format!("{name} removed")),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for name in doomed {
        match engine
            .api()
            .remove_volume(&name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => {
                reporter.note("volume", &format!("{name} deleted"));
                removed.volumes.push(name);
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}
