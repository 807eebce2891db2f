//! A platform on disk: gravity.toml, the workspace it points at, the names Gravity gives its
//! Docker objects, and its local secrets.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    path::{Path, PathBuf},
};

use rand::{distributions::Alphanumeric, Rng as _};
use serde::{Deserialize, Serialize};

use crate::{
    engine::{LABEL_MANAGED, LABEL_PROJECT, LABEL_SERVICE},
    manifest::{LoadError, Manifest, ServiceName, ServiceSpec},
};

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    Manifest(#[from] LoadError),
    #[error("no service named {name:?} in gravity.toml{}", nearest.as_deref().map(|n| format!("; did you mean {n:?}?")).unwrap_or_default())]
    UnknownService {
        name: String,
        nearest: Option<String>,
    },
    #[error("cannot {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error("{path} is not a valid secrets file ({detail}); restore it from a backup, or delete it together with the platform's data (`gravity down --volumes`)")]
    Secrets { path: String, detail: String },
}

/// A resource of the platform: infrastructure or a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// `infrastructure` or `service`.
    pub kind: &'static str,
    pub port: u16,
    /// A port for people (a management UI) published on an ephemeral loopback port, and what
    /// it is.
    pub ui: Option<(u16, &'static str)>,
}

/// A loaded platform.
#[derive(Debug, Clone)]
pub struct Project {
    pub manifest: Manifest,
    /// The directory holding gravity.toml.
    pub root: PathBuf,
    /// The Cargo workspace with the services' crates and `migrations/`.
    pub workspace: PathBuf,
}

impl Project {
    pub fn load(file: &Path) -> Result<Self, ProjectError> {
        let manifest = Manifest::load(file)?;
        let root = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let root = std::path::absolute(&root).unwrap_or(root);
        let workspace = root.join(&manifest.workspace);
        Ok(Self {
            manifest,
            root,
            workspace,
        })
    }

    pub fn name(&self) -> &str {
        self.manifest.name.as_str()
    }

    pub fn container_name(&self, resource: &str) -> String {
        format!("{}-{resource}", self.name())
    }

    pub fn network_name(&self) -> String {
        format!("{}-network", self.name())
    }

    pub fn volume_name(&self, resource: &str) -> String {
        format!("{}-{resource}-data", self.name())
    }

    /// The labels every object of this platform carries; `resource` names its service.
    pub fn labels(&self, resource: Option<&str>) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_PROJECT.to_owned(), self.name().to_owned()),
        ]);
        if let Some(r) = resource {
            labels.insert(LABEL_SERVICE.to_owned(), r.to_owned());
        }
        labels
    }

    /// Whether Docker labels mark an object as this platform's.
    pub fn owns(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(LABEL_PROJECT).map(String::as_str) == Some(self.name())
    }

    /// Every resource gravity.toml describes, infrastructure first, with its host port.
    pub fn resources(&self) -> Vec<Resource> {
        let m = &self.manifest;
        m.infrastructure
            .iter()
            .map(|(name, infra)| Resource {
                name: name.to_string(),
                kind: "infrastructure",
                port: infra.port.get(),
                ui: infra.kind.ui().map(|ui| (ui.port, ui.what)),
            })
            .chain(m.services.iter().map(|(name, spec)| Resource {
                name: name.to_string(),
                kind: "service",
                port: spec.port.get(),
                ui: None,
            }))
            .collect()
    }

    /// The Docker API filter selecting this platform's objects.
    pub fn label_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_PROJECT}={}", self.name())],
        )])
    }

    /// Where a service's migrations are: gravity.toml's `migrations`, else
    /// `migrations/<service>` in the workspace.
    pub fn migrations_dir(&self, service: &ServiceName) -> PathBuf {
        match self
            .manifest
            .services
            .get(service)
            .and_then(|s| s.migrations.as_ref())
        {
            Some(dir) => self.workspace.join(dir),
            None => self.workspace.join("migrations").join(service.as_str()),
        }
    }

    /// The services that use an infrastructure instance, in name order.
    pub fn dependents<'a>(
        &'a self,
        instance: &crate::infra::Instance<'_>,
    ) -> Vec<crate::infra::Dependent<'a>> {
        self.manifest
            .services
            .iter()
            .filter(|(_, spec)| instance.infra.kind.serves(instance, spec))
            .map(|(name, spec)| crate::infra::Dependent {
                name,
                spec,
                migrations: self.migrations_dir(name),
            })
            .collect()
    }

    /// Looks a service up by the name a user typed.
    pub fn service(&self, name: &str) -> Result<(&ServiceName, &ServiceSpec), ProjectError> {
        self.manifest
            .services
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .ok_or_else(|| ProjectError::UnknownService {
                name: name.to_owned(),
                nearest: self
                    .manifest
                    .services
                    .keys()
                    .map(|k| (strsim::levenshtein(name, k.as_str()), k))
                    .filter(|(d, _)| *d <= 2)
                    .min()
                    .map(|(_, k)| k.to_string()),
            })
    }

    /// The named services plus everything they depend on, in dependency order. No names means
    /// all services.
    pub fn selection(&self, names: &[String]) -> Result<Vec<ServiceName>, ProjectError> {
        let mut wanted: Vec<ServiceName> = Vec::new();
        let roots: Vec<ServiceName> = if names.is_empty() {
            self.manifest.services.keys().cloned().collect()
        } else {
            names
                .iter()
                .map(|n| self.service(n).map(|(k, _)| k.clone()))
                .collect::<Result<_, _>>()?
        };
        fn visit(m: &Manifest, at: &ServiceName, out: &mut Vec<ServiceName>) {
            if out.contains(at) {
                return;
            }
            if let Some(spec) = m.services.get(at) {
                for dep in &spec.depends_on {
                    visit(m, dep, out);
                }
                out.push(at.clone());
            }
        }
        for root in &roots {
            visit(&self.manifest, root, &mut wanted);
        }
        Ok(wanted)
    }

    pub fn secrets_path(&self) -> PathBuf {
        self.root
            .join(".gravity")
            .join(format!("{}.secrets.toml", self.name()))
    }

    /// Whether the platform's secrets file exists.
    pub fn has_secrets(&self) -> bool {
        self.secrets_path().exists()
    }

    /// The platform's secrets as they are on disk, without creating any: for commands that
    /// only look (`gravity status`).
    pub fn existing_secrets(&self) -> Option<Secrets> {
        let text = std::fs::read_to_string(self.secrets_path()).ok()?;
        toml::from_str(&text).ok()
    }

    /// Generates the secrets `secrets` lacks for this platform (never replacing one);
    /// returns whether it did.
    pub fn complete_secrets(&self, secrets: &mut Secrets) -> bool {
        let mut changed = false;
        for (name, infra) in &self.manifest.infrastructure {
            let instance = crate::infra::Instance {
                name,
                infra,
                platform: &self.manifest,
            };
            let dependents = self.dependents(&instance);
            changed |= infra.kind.ensure_secrets(&instance, &dependents, secrets);
        }
        if self
            .manifest
            .services
            .values()
            .any(crate::gateway::is_gateway)
        {
            if secrets.gateway_admin_token.is_empty() {
                secrets.gateway_admin_token = random_password();
                changed = true;
            }
            if secrets.identity_key.is_empty() {
                if let Some(key) = crate::identity::generate() {
                    secrets.identity_key = key;
                    changed = true;
                }
            }
        }
        if self.manifest.services.values().any(|s| s.signing_key) && secrets.signing_key.is_empty()
        {
            if let Some(key) = crate::identity::generate() {
                secrets.signing_key = key;
                changed = true;
            }
        }
        changed
    }

    /// The platform's local secrets, created on first use (file mode 0600).
    pub fn secrets(&self) -> Result<Secrets, ProjectError> {
        let path = self.secrets_path();
        let mut secrets = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<Secrets>(&text).map_err(|e| ProjectError::Secrets {
                path: path.display().to_string(),
                detail: e.message().to_owned(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Secrets::default(),
            Err(error) => {
                return Err(ProjectError::Io {
                    action: "read",
                    path: path.display().to_string(),
                    error,
                })
            }
        };
        let changed = self.complete_secrets(&mut secrets);
        let all_safe = std::iter::once(&secrets.postgres_password)
            .filter(|p| !p.is_empty())
            .chain(secrets.roles.values())
            .chain(Some(&secrets.gateway_admin_token).filter(|t| !t.is_empty()))
            .chain(secrets.infrastructure.values().flat_map(|i| {
                std::iter::once(&i.admin)
                    .chain(i.users.values())
                    .chain(i.extra.values())
            }))
            .all(|p| p.len() >= 16 && p.chars().all(|c| c.is_ascii_alphanumeric()));
        if !all_safe {
            return Err(ProjectError::Secrets {
                path: path.display().to_string(),
                detail: "passwords must be at least 16 letters or digits".to_owned(),
            });
        }
        if !secrets.identity_key.is_empty()
            && crate::identity::public_key(&secrets.identity_key).is_none()
        {
            return Err(ProjectError::Secrets {
                path: path.display().to_string(),
                detail: "identity_key is not an Ed25519 PKCS#8 key in base64url".to_owned(),
            });
        }
        if !secrets.signing_key.is_empty()
            && crate::identity::public_key(&secrets.signing_key).is_none()
        {
            return Err(ProjectError::Secrets {
                path: path.display().to_string(),
                detail: "signing_key is not an Ed25519 PKCS#8 key in base64url".to_owned(),
            });
        }
        if changed {
            write_secrets(&path, &secrets)?;
        }
        Ok(secrets)
    }
}

/// Passwords Gravity generated for this platform. They live as long as the data they guard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Secrets {
    /// PostgreSQL's superuser (`postgres`) password.
    #[serde(default)]
    pub postgres_password: String,
    /// Each service's database role password, by database (= role) name.
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// The bearer token of the gateway's admin endpoints (`gravity status` reads them).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway_admin_token: String,
    /// The private key (PKCS#8, unpadded base64url) the gateway signs callers' identity
    /// assertions with; services get its public half.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity_key: String,
    /// The platform's signing key (Ed25519 PKCS#8, unpadded base64url), given only to the
    /// services with `signing_key = true` (the audit log signs its checkpoints with it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signing_key: String,
    /// Every other infrastructure instance's secrets, by its name (PostgreSQL keeps the two
    /// fields above, which predate this table).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub infrastructure: BTreeMap<String, InfraSecrets>,
}

/// An infrastructure instance's secrets: its administrator's password, each dependent
/// service's own password, and whatever else its kind generates (an Erlang cookie).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InfraSecrets {
    #[serde(default)]
    pub admin: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl InfraSecrets {
    /// A dependent service's password ("" before it is generated).
    pub fn user(&self, service: &str) -> &str {
        self.users.get(service).map(String::as_str).unwrap_or("")
    }

    pub fn extra(&self, name: &str) -> &str {
        self.extra.get(name).map(String::as_str).unwrap_or("")
    }
}

impl Secrets {
    /// The secrets of the infrastructure instance `resource`, once generated.
    pub fn infra(&self, resource: &str) -> Option<&InfraSecrets> {
        self.infrastructure.get(resource)
    }

    /// The administrator password of the instance `resource` ("" before it is generated).
    pub fn infra_admin(&self, resource: &str) -> &str {
        self.infra(resource).map_or("", |s| s.admin.as_str())
    }

    /// `service`'s own password on the instance `resource` ("" before it is generated).
    pub fn infra_user(&self, resource: &str, service: &str) -> &str {
        self.infra(resource).map_or("", |s| s.user(service))
    }

    /// Generates what is missing for `resource`: an administrator password, one password per
    /// dependent and each of `extra`. Existing ones are never replaced. Returns whether
    /// anything was generated.
    pub fn ensure_infra(
        &mut self,
        resource: &str,
        dependents: &[crate::infra::Dependent<'_>],
        extra: &[&str],
    ) -> bool {
        let own = self.infrastructure.entry(resource.to_owned()).or_default();
        let mut changed = false;
        if own.admin.is_empty() {
            own.admin = random_password();
            changed = true;
        }
        for d in dependents {
            if !own.users.contains_key(d.name.as_str()) {
                own.users.insert(d.name.to_string(), random_password());
                changed = true;
            }
        }
        for name in extra {
            if !own.extra.contains_key(*name) {
                own.extra.insert((*name).to_owned(), random_password());
                changed = true;
            }
        }
        changed
    }

    pub fn role_password(&self, database: &str) -> &str {
        self.roles.get(database).map(String::as_str).unwrap_or("")
    }
}

/// 32 random letters and digits.
pub fn random_password() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Writes `secrets` readable by the owner only, in a directory git ignores.
fn write_secrets(path: &Path, secrets: &Secrets) -> Result<(), ProjectError> {
    let io = |action, error| ProjectError::Io {
        action,
        path: path.display().to_string(),
        error,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "*\n").map_err(|e| io("write", e))?;
    }
    let text = format!(
        "# Generated by gravity: the passwords of this platform's databases. Keep this file: the\n# data in the platform's volumes is only reachable with them.\n{}",
        toml::to_string(secrets).unwrap_or_default()
    );
    write_private(path, &text).map_err(|e| io("write", e))
}

/// Writes `text` to `path` readable by the owner only, atomically: a new 0600 file renamed
/// over the old one, so neither a reader nor an existing file's wider mode ever sees it.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}
