//! `gravity new service NAME`: a new service rendered from `templates/service/`, added to the
//! workspace and to gravity.toml (own database, next free port, gateway route).
//!
//! Everything is planned in memory first: the name is checked against everything it could
//! collide with, the template is rendered, and the two edited files are re-serialised with
//! `toml_edit` (which keeps the user's comments and layout). Only a complete plan is applied,
//! new files with `create_new` (never overwriting), edited files by atomic rename; a failure
//! part-way removes what this run created and restores what it edited.

use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use toml_edit::{value, Array, DocumentMut, Item, Table};

use crate::{
    gateway::is_gateway,
    manifest::{Port, ServiceName},
    project::Project,
};

/// Where the template lives in the workspace.
pub const TEMPLATE_DIR: &str = "templates/service";
/// Where the shared events crate keeps its modules, one per publishing service.
const EVENTS_CRATE: &str = "services/events/src";
/// Template files end in this suffix, removed from the written file's name.
const TEMPLATE_SUFFIX: &str = ".jinja";
/// The first port tried for a new service when none is given.
const FIRST_PORT: u16 = 8001;

/// Names that would collide with something other than a service: infrastructure the platform
/// runs or will run, the workspace's own folders and crates, and names Cargo refuses.
const RESERVED: &[(&str, &str)] = &[
    ("postgres", "the platform's PostgreSQL"),
    ("template0", "a PostgreSQL template database"),
    ("template1", "a PostgreSQL template database"),
    ("public", "a role name PostgreSQL refuses"),
    ("none", "a role name PostgreSQL refuses"),
    ("gateway", "the platform's API gateway"),
    ("redis", "the platform's Redis"),
    ("rabbitmq", "the platform's message broker"),
    ("prometheus", "the platform's metrics store"),
    ("grafana", "the platform's dashboards"),
    ("jaeger", "the platform's tracing"),
    ("gravity", "the platform manager"),
    (
        "events",
        "the event payload crate and the exchange every event passes through",
    ),
    ("cli", "the platform manager's folder"),
    ("service-kit", "the library every service shares"),
    ("templates", "a workspace folder"),
    ("migrations", "a workspace folder"),
    ("services", "a workspace folder"),
    ("docs", "a workspace folder"),
    ("scripts", "a workspace folder"),
    ("tests", "a workspace folder"),
    ("target", "Cargo's build folder"),
    ("build", "a name Cargo refuses for binaries"),
    ("deps", "a name Cargo refuses for binaries"),
    ("examples", "a name Cargo refuses for binaries"),
    ("incremental", "a name Cargo refuses for binaries"),
    ("test", "Rust's built-in test crate"),
    ("std", "Rust's standard library"),
    ("core", "Rust's core library"),
    ("alloc", "Rust's alloc library"),
    ("proc-macro", "Rust's proc_macro library"),
    ("con", "a reserved file name on Windows"),
    ("nul", "a reserved file name on Windows"),
    ("aux", "a reserved file name on Windows"),
    ("prn", "a reserved file name on Windows"),
];

/// Rust keywords: a crate whose library would be named one cannot be imported.
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "do", "dyn", "else",
    "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop",
    "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return", "self",
    "static", "struct", "super", "trait", "true", "try", "type", "typeof", "unsafe", "unsized",
    "use", "virtual", "where", "while", "yield", "abstract", "become",
];

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{name:?} is reserved for {why}; pick another name (e.g. \"{name}-service\")")]
    Reserved { name: String, why: &'static str },
    #[error("{name:?} is taken: {by}; pick another name")]
    Taken { name: String, by: String },
    #[error("{0}")]
    Port(String),
    #[error("no free port from {FIRST_PORT} up; pass one with --port")]
    NoFreePort,
    #[error("gravity.toml has no [infrastructure.postgres], and a new service has its own database; add PostgreSQL to gravity.toml first")]
    NoPostgres,
    #[error("no service template at {0}; `gravity new service` renders the workspace's templates/service/ folder: restore it from version control")]
    NoTemplate(String),
    #[error("template {file}: {error:#}")]
    Template {
        file: String,
        error: minijinja::Error,
    },
    #[error("{file} is not valid TOML ({error}); fix it, then run the command again")]
    Toml { file: String, error: String },
    #[error("{file}: {message}")]
    Edit { file: String, message: String },
    #[error("these files exist and would be overwritten, so nothing was written:\n  {}\nmove them away or pick another name", .0.join("\n  "))]
    Exists(Vec<String>),
    #[error("{path} changed while the service was being planned; nothing was changed, run the command again")]
    Changed { path: String },
    #[error("cannot {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: String,
        error: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NewError + 'a {
    move |error| NewError::Io {
        action,
        path: path.display().to_string(),
        error,
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct NewService {
    pub name: String,
    pub port: Option<u16>,
}

/// A file the plan writes from nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

/// A file the plan rewrites: its text when planned (checked again before writing) and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub path: PathBuf,
    pub before: String,
    pub after: String,
    /// What changes, in words.
    pub summary: String,
}

/// Everything `gravity new service` will write.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: ServiceName,
    pub port: Port,
    pub database: String,
    /// The gateway prefix, when the platform has a gateway.
    pub route: Option<String>,
    pub creates: Vec<NewFile>,
    pub edits: Vec<Edit>,
}

/// `user-profiles` → `user_profiles`: the crate's library name, the database name.
fn snake(name: &ServiceName) -> String {
    name.as_str().replace('-', "_")
}

/// `user-profiles` → `User profiles`.
fn title(name: &ServiceName) -> String {
    let words = name.as_str().replace('-', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => words,
    }
}

/// Checks the name on its own: its shape, and the names reserved for something else.
pub fn parse_name(raw: &str) -> Result<ServiceName, NewError> {
    let name = ServiceName::parse(raw).map_err(NewError::InvalidName)?;
    if let Some((_, why)) = RESERVED.iter().find(|(r, _)| *r == name.as_str()) {
        return Err(NewError::Reserved {
            name: name.to_string(),
            why,
        });
    }
    // A service's database and role are named after it, and PostgreSQL keeps `pg_` names.
    if name.as_str().starts_with("pg-") {
        return Err(NewError::Reserved {
            name: name.to_string(),
            why: "PostgreSQL (its database and role would start with pg_)",
        });
    }
    if KEYWORDS.contains(&name.as_str()) {
        return Err(NewError::Reserved {
            name: name.to_string(),
            why: "a Rust keyword",
        });
    }
    Ok(name)
}

/// Plans the new service without writing anything.
pub fn plan(
    project: &Project,
    gravity_toml: &Path,
    request: &NewService,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Plan, NewError> {
    let name = parse_name(&request.name)?;
    let manifest = &project.manifest;
    let workspace = &project.workspace;
    let database = snake(&name);
    let taken = |by: String| NewError::Taken {
        name: name.to_string(),
        by,
    };

    if manifest.services.contains_key(&name) {
        return Err(taken(format!("gravity.toml already has [services.{name}]")));
    }
    let Some((database_server, _)) = manifest.database_server() else {
        return Err(NewError::NoPostgres);
    };
    for (other, spec) in &manifest.services {
        if spec.crate_name == name.as_str() || spec.crate_name.replace('-', "_") == database {
            return Err(taken(format!(
                "service {other} runs the crate {}",
                spec.crate_name
            )));
        }
        if spec.database.as_deref() == Some(database.as_str()) {
            return Err(taken(format!(
                "service {other} uses the database {database}"
            )));
        }
        if let Some(route) = &spec.route {
            if route.prefix.trim_end_matches('/') == format!("/{name}") {
                return Err(taken(format!(
                    "service {other} is reached through the gateway at {}",
                    route.prefix
                )));
            }
        }
    }
    let cargo_path = workspace.join("Cargo.toml");
    let cargo_before = fs::read_to_string(&cargo_path).map_err(io("read", &cargo_path))?;
    let mut cargo = parse_toml(&cargo_path, &cargo_before)?;
    check_workspace(&cargo, workspace, &name, &database).map_err(taken)?;
    for dir in [
        workspace.join("services").join(name.as_str()),
        workspace.join("migrations").join(name.as_str()),
    ] {
        if dir.exists() {
            return Err(taken(format!("{} exists", shown(project, &dir))));
        }
    }

    let port = match request.port {
        Some(p) => {
            let port = Port::parse(i64::from(p)).map_err(NewError::Port)?;
            if let Some(r) = project.resources().iter().find(|r| r.port == p) {
                return Err(NewError::Port(format!(
                    "port {p} is already used by {} in gravity.toml",
                    r.name
                )));
            }
            port
        }
        None => next_free_port(project)?,
    };
    let gateway = manifest.services.values().any(is_gateway);
    let route = gateway.then(|| format!("/{name}"));

    let vars = Value::from(std::collections::BTreeMap::from([
        ("name".to_owned(), Value::from(name.as_str())),
        ("ident".to_owned(), Value::from(snake(&name))),
        ("title".to_owned(), Value::from(title(&name))),
        ("database".to_owned(), Value::from(database.as_str())),
        ("port".to_owned(), Value::from(port.get())),
        (
            "prefix".to_owned(),
            Value::from(route.clone().unwrap_or_default()),
        ),
        (
            "version".to_owned(),
            Value::from(now.format("%Y%m%d%H%M%S").to_string()),
        ),
    ]));
    let template = workspace.join(TEMPLATE_DIR);
    if !template.join("crate").is_dir() {
        return Err(NewError::NoTemplate(template.display().to_string()));
    }
    let mut creates = render(
        &template.join("crate"),
        &workspace.join("services").join(name.as_str()),
        &vars,
    )?;
    if template.join("migrations").is_dir() {
        creates.extend(render(
            &template.join("migrations"),
            &workspace.join("migrations").join(name.as_str()),
            &vars,
        )?);
    }

    let mut edits = Vec::new();
    // The service's event types go into the crate publishers and consumers share.
    if template.join("events").is_dir() {
        let events = workspace.join(EVENTS_CRATE);
        let lib = events.join("lib.rs");
        let before = fs::read_to_string(&lib).map_err(io("read", &lib))?;
        let module = snake(&name);
        let after = add_module(&before, &module).map_err(|message| NewError::Edit {
            file: lib.display().to_string(),
            message,
        })?;
        creates.extend(render(&template.join("events"), &events, &vars)?);
        edits.push(Edit {
            summary: format!("add the module `{module}` (its event types) to the events crate"),
            path: lib,
            before,
            after,
        });
    }
    let member = format!("services/{name}");
    if add_member(&mut cargo, &member).map_err(|message| NewError::Edit {
        file: cargo_path.display().to_string(),
        message,
    })? {
        edits.push(Edit {
            summary: format!("add \"{member}\" to the workspace members"),
            path: cargo_path,
            before: cargo_before,
            after: cargo.to_string(),
        });
    }
    let gravity_before = fs::read_to_string(gravity_toml).map_err(io("read", gravity_toml))?;
    let mut gravity = parse_toml(gravity_toml, &gravity_before)?;
    let mut depends_on = vec![database_server.as_str()];
    depends_on.extend(manifest.event_broker().map(ServiceName::as_str));
    add_service(
        &mut gravity,
        &name,
        port,
        &database,
        &depends_on,
        route.as_deref(),
    )
    .map_err(|message| NewError::Edit {
        file: gravity_toml.display().to_string(),
        message,
    })?;
    // The edited file must load as gravity.toml does on `up`: whatever the checks above do
    // not know about is refused here, before anything is written.
    let gravity_after = gravity.to_string();
    crate::manifest::Manifest::parse(&gravity_toml.display().to_string(), &gravity_after).map_err(
        |error| NewError::Edit {
            file: gravity_toml.display().to_string(),
            message: format!("the edited file would not load:\n{error}"),
        },
    )?;
    edits.push(Edit {
        summary: match &route {
            Some(prefix) => format!(
                "add [services.{name}] (port {}, database {database}) and its gateway route {prefix}",
                port.get()
            ),
            None => format!("add [services.{name}] (port {}, database {database})", port.get()),
        },
        path: gravity_toml.to_path_buf(),
        before: gravity_before,
        after: gravity_after,
    });
    Ok(Plan {
        name,
        port,
        database,
        route,
        creates,
        edits,
    })
}

fn parse_toml(path: &Path, text: &str) -> Result<DocumentMut, NewError> {
    text.parse::<DocumentMut>().map_err(|e| NewError::Toml {
        file: path.display().to_string(),
        error: e.to_string(),
    })
}

/// A path relative to the workspace (or to gravity.toml's directory), for messages.
pub fn shown(project: &Project, path: &Path) -> String {
    path.strip_prefix(&project.workspace)
        .or_else(|_| path.strip_prefix(&project.root))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Whether the workspace already has a crate, member or dependency by this name.
fn check_workspace(
    cargo: &DocumentMut,
    workspace: &Path,
    name: &ServiceName,
    lib: &str,
) -> Result<(), String> {
    let ws = cargo.get("workspace").and_then(Item::as_table_like);
    let deps = ws
        .and_then(|w| w.get("dependencies"))
        .and_then(Item::as_table_like);
    if let Some(deps) = deps {
        for (dep, _) in deps.iter() {
            if dep == name.as_str() || dep.replace('-', "_") == lib {
                return Err(format!("the workspace depends on a crate named {dep}"));
            }
        }
    }
    let members = ws
        .and_then(|w| w.get("members"))
        .and_then(Item::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>())
        .unwrap_or_default();
    for member in members.iter().filter(|m| !m.contains('*')) {
        let manifest = workspace.join(member).join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        let package = text
            .parse::<DocumentMut>()
            .ok()
            .and_then(|d| d.get("package")?.get("name")?.as_str().map(str::to_owned));
        if let Some(package) = package {
            if package == name.as_str() || package.replace('-', "_") == lib {
                return Err(format!(
                    "the workspace member {member} is the crate {package}"
                ));
            }
        }
    }
    Ok(())
}

/// The first port from 8001 up that gravity.toml does not use and nothing on this machine
/// listens on.
fn next_free_port(project: &Project) -> Result<Port, NewError> {
    let used: BTreeSet<u16> = project.resources().iter().map(|r| r.port).collect();
    (FIRST_PORT..=u16::MAX)
        .filter(|p| !used.contains(p))
        .find(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).is_ok())
        .and_then(|p| Port::parse(i64::from(p)).ok())
        .ok_or(NewError::NoFreePort)
}

/// Renders every file under `from` into memory, as it would be written under `to`. Both
/// the file's text and its path are templates; files without the `.jinja` suffix are copied
/// as they are.
fn render(from: &Path, to: &Path, vars: &Value) -> Result<Vec<NewFile>, NewError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Jinja drops a template's final newline by default; source files must keep theirs.
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true);
    env.set_syntax(syntax.build().map_err(|error| NewError::Template {
        file: from.display().to_string(),
        error,
    })?);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    let mut files = Vec::new();
    let mut pending = vec![from.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(io("read", &dir))?
            .collect::<Result<_, _>>()
            .map_err(io("read", &dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(from).unwrap_or(&path);
            let shown_name = relative.display().to_string();
            let template_error = |error| NewError::Template {
                file: path.display().to_string(),
                error,
            };
            let relative = relative.to_string_lossy();
            let (relative, templated) = match relative.strip_suffix(TEMPLATE_SUFFIX) {
                Some(stem) => (stem.to_owned(), true),
                None => (relative.into_owned(), false),
            };
            let target = env.render_str(&relative, vars).map_err(template_error)?;
            let raw = fs::read(&path).map_err(io("read", &path))?;
            let contents = if templated {
                let text = String::from_utf8(raw).map_err(|_| NewError::Edit {
                    file: shown_name.clone(),
                    message: "a .jinja template must be UTF-8 text".to_owned(),
                })?;
                env.render_str(&text, vars)
                    .map_err(template_error)?
                    .into_bytes()
            } else {
                raw
            };
            files.push(NewFile {
                path: to.join(target),
                contents,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// `lib.rs` of the events crate with `pub mod <module>;` among its `pub mod` lines, where
/// rustfmt's order puts it (by name), so the crate stays `cargo fmt`-clean.
fn add_module(lib: &str, module: &str) -> Result<String, String> {
    let line = format!("pub mod {module};");
    if lib.lines().any(|l| l.trim() == line) {
        return Err(format!("it already has `{line}`"));
    }
    let mut lines: Vec<&str> = lib.lines().collect();
    let name_of = |l: &str| {
        l.strip_prefix("pub mod ")
            .and_then(|rest| rest.strip_suffix(';'))
            .map(str::to_owned)
    };
    let last = lines
        .iter()
        .rposition(|l| l.starts_with("pub mod "))
        .ok_or("it has no `pub mod` line to add the new module after")?;
    let at = lines
        .iter()
        .position(|l| name_of(l).is_some_and(|name| name.as_str() > module))
        .filter(|at| *at <= last)
        .unwrap_or(last + 1);
    lines.insert(at, &line);
    let mut out = lines.join("\n");
    if lib.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Adds `member` to `[workspace] members`, unless a glob there (`services/*`) covers it.
/// Returns whether the file changed.
fn add_member(cargo: &mut DocumentMut, member: &str) -> Result<bool, String> {
    let members = cargo
        .get_mut("workspace")
        .and_then(|w| w.get_mut("members"))
        .and_then(Item::as_array_mut)
        .ok_or("no [workspace] members array; is this the workspace's Cargo.toml?")?;
    let covered = members.iter().filter_map(|v| v.as_str()).any(|m| {
        m == member
            || m.strip_suffix("/*")
                .is_some_and(|dir| member.rsplit_once('/').map(|(d, _)| d) == Some(dir))
    });
    if covered {
        return Ok(false);
    }
    // An array written one member per line gets the new member on a line of its own.
    let prefix = members
        .iter()
        .last()
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        // Only the indentation: a comment above the last member stays with it.
        .map(|p| match p.rsplit_once('\n') {
            Some((_, indent)) => format!("\n{indent}"),
            None => " ".to_owned(),
        });
    members.push(member);
    if let (Some(prefix), Some(last)) = (prefix, members.iter_mut().last()) {
        last.decor_mut().set_prefix(prefix);
    }
    Ok(true)
}

/// Adds `[services.NAME]` (and its route) at the end of gravity.toml.
fn add_service(
    doc: &mut DocumentMut,
    name: &ServiceName,
    port: Port,
    database: &str,
    depends_on: &[&str],
    route: Option<&str>,
) -> Result<(), String> {
    let services = doc
        .entry("services")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or("`services` is not a table")?;
    let mut service = Table::new();
    service.decor_mut().set_prefix(format!(
        "\n# The {} service, from templates/service/. Its own database, role and broker\n# user; started after what it depends on.\n",
        name
    ));
    service.insert("crate", value(name.as_str()));
    service.insert("port", value(i64::from(port.get())));
    service.insert("database", value(database));
    service.insert(
        "depends_on",
        value(depends_on.iter().copied().collect::<Array>()),
    );
    service.insert("health", value("/health/ready"));
    if let Some(prefix) = route {
        let mut table = Table::new();
        table.decor_mut().set_prefix(format!(
            "\n# Reached through the gateway at {prefix}/...; every path but these needs an access token.\n"
        ));
        table.insert("prefix", value(prefix));
        let mut public = Array::new();
        for p in ["/openapi.json", "/docs", "/docs/*"] {
            public.push(p);
        }
        table.insert("public_paths", value(public));
        service.insert("route", Item::Table(table));
    }
    services.insert(name.as_str(), Item::Table(service));
    Ok(())
}

/// Writes the plan: new files first (never over an existing one), then the edits, each by
/// an atomic rename. On failure, what this run created is removed and what it edited is
/// restored, so the workspace is as it was.
pub fn apply(plan: &Plan) -> Result<(), NewError> {
    let existing: Vec<String> = plan
        .creates
        .iter()
        .filter(|f| f.path.exists())
        .map(|f| f.path.display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err(NewError::Exists(existing));
    }
    for edit in &plan.edits {
        let now = fs::read_to_string(&edit.path).map_err(io("read", &edit.path))?;
        if now != edit.before {
            return Err(NewError::Changed {
                path: edit.path.display().to_string(),
            });
        }
    }
    let mut undo = Undo::default();
    let outcome = (|| {
        for file in &plan.creates {
            undo.create(file)?;
        }
        for edit in &plan.edits {
            replace(&edit.path, &edit.after)?;
            undo.edited.push(edit);
        }
        Ok(())
    })();
    if outcome.is_err() {
        undo.roll_back();
    }
    outcome
}

/// What `apply` has done so far, to take back on failure.
#[derive(Default)]
struct Undo<'a> {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    edited: Vec<&'a Edit>,
}

impl Undo<'_> {
    fn create(&mut self, file: &NewFile) -> Result<(), NewError> {
        if let Some(parent) = file.path.parent() {
            // Remember each directory this run creates, outermost first.
            let mut missing: Vec<PathBuf> = parent
                .ancestors()
                .take_while(|d| !d.exists())
                .map(Path::to_path_buf)
                .collect();
            missing.reverse();
            fs::create_dir_all(parent).map_err(io("create", parent))?;
            self.dirs.extend(missing);
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file.path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    NewError::Exists(vec![file.path.display().to_string()])
                } else {
                    io("create", &file.path)(e)
                }
            })?;
        self.files.push(file.path.clone());
        out.write_all(&file.contents)
            .map_err(io("write", &file.path))
    }

    fn roll_back(self) {
        for edit in self.edited.iter().rev() {
            let _ = replace(&edit.path, &edit.before);
        }
        for file in self.files.iter().rev() {
            let _ = fs::remove_file(file);
        }
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Replaces a file's contents atomically: a sibling temporary file, then a rename, so a
/// crash leaves either the old or the new file, never half of one. Permissions are kept.
fn replace(path: &Path, text: &str) -> Result<(), NewError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.gravity-{}",
        file_name.unwrap_or_default(),
        uuid::Uuid::new_v4().simple()
    ));
    let permissions = fs::metadata(path).map(|m| m.permissions()).ok();
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Some(p) = permissions {
            fs::set_permissions(&tmp, p)?;
        }
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_for_shape_and_reservations() {
        assert!(parse_name("inventory").is_ok());
        assert!(parse_name("user-profiles").is_ok());
        for bad in [
            "Inventory",
            "user_profiles",
            "-x",
            "x-",
            "a--b",
            "9lives",
            "x",
        ] {
            assert!(
                matches!(parse_name(bad), Err(NewError::InvalidName(_))),
                "{bad}"
            );
        }
        for reserved in [
            "postgres",
            "redis",
            "service-kit",
            "test",
            "build",
            "gravity",
            "gateway",
            "cli",
            "template0",
            "template1",
            "public",
            "none",
            "pg-stats",
        ] {
            assert!(
                matches!(parse_name(reserved), Err(NewError::Reserved { .. })),
                "{reserved}"
            );
        }
        assert!(matches!(
            parse_name("type"),
            Err(NewError::Reserved {
                why: "a Rust keyword",
                ..
            })
        ));
    }

    #[test]
    fn titles_and_identifiers_come_from_the_name() {
        let name = ServiceName::parse("user-profiles").unwrap();
        assert_eq!(title(&name), "User profiles");
        assert_eq!(snake(&name), "user_profiles");
    }

    #[test]
    fn members_are_added_in_the_array_style_already_there() {
        let mut one_line: DocumentMut =
            "[workspace]\nmembers = [\"cli\", \"services/auth\"] # all\n"
                .parse()
                .unwrap();
        assert!(add_member(&mut one_line, "services/shop").unwrap());
        assert_eq!(
            one_line.to_string(),
            "[workspace]\nmembers = [\"cli\", \"services/auth\", \"services/shop\"] # all\n"
        );
        let mut per_line: DocumentMut =
            "[workspace]\nmembers = [\n    \"cli\",\n    # the services\n    \"services/auth\",\n]\n"
                .parse()
                .unwrap();
        assert!(add_member(&mut per_line, "services/shop").unwrap());
        assert_eq!(
            per_line.to_string(),
            "[workspace]\nmembers = [\n    \"cli\",\n    # the services\n    \"services/auth\",\n    \"services/shop\",\n]\n"
        );
        let mut glob: DocumentMut = "[workspace]\nmembers = [\"cli\", \"services/*\"]\n"
            .parse()
            .unwrap();
        assert!(!add_member(&mut glob, "services/shop").unwrap());
    }

    #[test]
    fn a_service_is_appended_and_every_comment_kept() {
        let before = "# my platform\n[platform]\nname = \"pp\" # inline\n\n[services.auth]\ncrate = \"auth\"\nport = 8000\n\n[services.auth.route]\nprefix = \"/auth\"\n\n# trailing note\n";
        let mut doc: DocumentMut = before.parse().unwrap();
        let name = ServiceName::parse("shop").unwrap();
        let port = Port::parse(8001).unwrap();
        add_service(&mut doc, &name, port, "shop", &["postgres"], Some("/shop")).unwrap();
        let after = doc.to_string();
        assert!(
            after.starts_with(before.trim_end_matches("\n# trailing note\n")),
            "{after}"
        );
        assert!(after.contains("# trailing note"), "{after}");
        let parsed = crate::manifest::Manifest::parse(
            "gravity.toml",
            &format!("{after}\n[infrastructure.postgres]\nimage = \"postgres\"\nversion = \"15\"\nport = 5999\n"),
        )
        .unwrap();
        let shop = &parsed.services[&name];
        assert_eq!(shop.port.get(), 8001);
        assert_eq!(shop.database.as_deref(), Some("shop"));
        assert_eq!(shop.route.as_ref().unwrap().prefix, "/shop");
        assert_eq!(shop.depends_on[0].as_str(), "postgres");
    }

    /// A workspace in a temporary directory: Cargo.toml, gravity.toml, the real template.
    fn workspace(gravity: &str) -> (PathBuf, Project) {
        let dir = std::env::temp_dir().join(format!("gravity-new-{}", uuid::Uuid::new_v4()));
        let template = dir.join(TEMPLATE_DIR);
        fs::create_dir_all(&template).unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/service"),
            &template,
        );
        fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\n# every crate\nmembers = [\"services/auth\"]\n\n[workspace.dependencies]\ntokio = \"1\"\n",
        )
        .unwrap();
        fs::create_dir_all(dir.join("services/auth")).unwrap();
        fs::write(
            dir.join("services/auth/Cargo.toml"),
            "[package]\nname = \"auth\"\n",
        )
        .unwrap();
        fs::create_dir_all(dir.join(EVENTS_CRATE)).unwrap();
        fs::write(
            dir.join(EVENTS_CRATE).join("lib.rs"),
            "//! Events.\n\npub mod auth;\n\npub trait Event {}\n",
        )
        .unwrap();
        fs::write(dir.join("gravity.toml"), gravity).unwrap();
        let project = Project::load(&dir.join("gravity.toml")).unwrap();
        (dir, project)
    }

    #[test]
    fn a_new_module_goes_where_rustfmt_orders_it() {
        let lib = "//! Events.\n\npub mod auth;\npub mod users;\n\npub trait Event {}\n";
        let added = add_module(lib, "inventory").unwrap();
        assert!(
            added.contains("pub mod auth;\npub mod inventory;\npub mod users;\n"),
            "{added}"
        );
        let added = add_module(lib, "zoo").unwrap();
        assert!(added.contains("pub mod users;\npub mod zoo;\n"), "{added}");
        let added = add_module(lib, "accounts").unwrap();
        assert!(
            added.contains("pub mod accounts;\npub mod auth;\n"),
            "{added}"
        );
        assert!(add_module(lib, "users").is_err());
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_dir() {
                copy_dir(&entry.path(), &to.join(entry.file_name()));
            } else {
                fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    const PLATFORM: &str = "# the platform\n[platform]\nname = \"shop\"\n\n[infrastructure.postgres]\nimage = \"postgres\"\nversion = \"15\"\nport = 55432\n\n[services.auth]\ncrate = \"auth\"\nport = 8000\ndatabase = \"auth\"\ndepends_on = [\"postgres\"]\n\n[services.gateway] # the edge\ncrate = \"gateway\"\nport = 8080\ndepends_on = [\"auth\"]\n";

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-25T10:20:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn request(name: &str) -> NewService {
        NewService {
            name: name.to_owned(),
            port: None,
        }
    }

    #[test]
    fn a_new_service_depends_on_the_platforms_broker_when_it_has_one() {
        let with_broker = PLATFORM.replace(
            "\n[services.auth]",
            "\n[infrastructure.events]\nkind = \"rabbitmq\"\nport = 55672\n\n[services.auth]",
        );
        for (platform, expected) in [
            (PLATFORM, vec!["postgres"]),
            (with_broker.as_str(), vec!["postgres", "events"]),
        ] {
            let (dir, project) = workspace(platform);
            let plan = plan(
                &project,
                &dir.join("gravity.toml"),
                &request("orders"),
                now(),
            )
            .unwrap();
            let edited = &plan.edits.last().unwrap().after;
            let manifest = crate::manifest::Manifest::parse("gravity.toml", edited).unwrap();
            let name = ServiceName::parse("orders").unwrap();
            let depends: Vec<&str> = manifest.services[&name]
                .depends_on
                .iter()
                .map(ServiceName::as_str)
                .collect();
            assert_eq!(depends, expected);
            fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn a_plan_writes_nothing_and_applying_it_writes_everything() {
        let (dir, project) = workspace(PLATFORM);
        let toml = dir.join("gravity.toml");
        let plan = plan(&project, &toml, &request("user-profiles"), now()).unwrap();
        assert!(
            !dir.join("services/user-profiles").exists(),
            "planning writes nothing"
        );
        assert_eq!(fs::read_to_string(&toml).unwrap(), PLATFORM);
        assert!(plan.port.get() >= FIRST_PORT);
        assert_eq!(plan.database, "user_profiles");
        assert_eq!(plan.route.as_deref(), Some("/user-profiles"));
        let paths: Vec<String> = plan
            .creates
            .iter()
            .map(|f| shown(&project, &f.path))
            .collect();
        assert!(
            paths.contains(&"services/user-profiles/Cargo.toml".to_owned()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"migrations/user-profiles/20261125102030_create_items.sql".to_owned()),
            "{paths:?}"
        );
        assert!(paths.iter().all(|p| !p.ends_with(".jinja")), "{paths:?}");

        apply(&plan).unwrap();
        let main = fs::read_to_string(dir.join("services/user-profiles/src/main.rs")).unwrap();
        assert!(main.contains("use user_profiles::{"), "{main}");
        let cargo = fs::read_to_string(dir.join("services/user-profiles/Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"user-profiles\""));
        let ws = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            ws.contains("# every crate\nmembers = [\"services/auth\", \"services/user-profiles\"]"),
            "{ws}"
        );
        let edited = fs::read_to_string(&toml).unwrap();
        assert!(edited.starts_with(PLATFORM), "{edited}");
        let manifest = crate::manifest::Manifest::parse("gravity.toml", &edited).unwrap();
        let name = ServiceName::parse("user-profiles").unwrap();
        assert_eq!(manifest.services[&name].port, plan.port);
        // Its event types join the shared crate, beside the others.
        let lib = fs::read_to_string(dir.join(EVENTS_CRATE).join("lib.rs")).unwrap();
        assert!(
            lib.contains("pub mod auth;\npub mod user_profiles;\n"),
            "{lib}"
        );
        let events = fs::read_to_string(dir.join(EVENTS_CRATE).join("user_profiles.rs")).unwrap();
        assert!(
            events.contains("\"user-profiles.item.created.v1\""),
            "{events}"
        );

        // The name is now taken, in every way it can be.
        let again = plan_again(&dir, "user-profiles");
        assert!(matches!(again, Err(NewError::Taken { .. })), "{again:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_next_free_port_skips_the_manifests_and_any_held_on_this_machine() {
        let (dir, project) = workspace(PLATFORM);
        let toml = dir.join("gravity.toml");
        let first = plan(&project, &toml, &request("billing"), now())
            .unwrap()
            .port;
        assert!(first.get() >= FIRST_PORT);
        assert!(![8000, 8080, 55432].contains(&first.get()));
        // Something else on this machine starts listening there: the next plan moves on.
        // (Another test's plan may probe the same port for an instant: try a few times.)
        let held = (0..100)
            .find_map(|_| {
                TcpListener::bind((Ipv4Addr::LOCALHOST, first.get()))
                    .inspect_err(|_| std::thread::sleep(std::time::Duration::from_millis(10)))
                    .ok()
            })
            .expect("hold the port the plan picked");
        let next = plan(&project, &toml, &request("billing"), now())
            .unwrap()
            .port;
        assert!(
            next.get() > first.get(),
            "{} after {}",
            next.get(),
            first.get()
        );
        drop(held);
        fs::remove_dir_all(dir).unwrap();
    }

    fn plan_again(dir: &Path, name: &str) -> Result<Plan, NewError> {
        let toml = dir.join("gravity.toml");
        let project = Project::load(&toml).unwrap();
        plan(&project, &toml, &request(name), now())
    }

    #[test]
    fn taken_names_ports_and_missing_pieces_are_refused_with_nothing_written() {
        let (dir, project) = workspace(PLATFORM);
        let toml = dir.join("gravity.toml");
        for (name, why) in [
            ("auth", "gravity.toml already has"),
            ("tokio", "depends on a crate named tokio"),
        ] {
            match plan(&project, &toml, &request(name), now()) {
                Err(NewError::Taken { by, .. }) => assert!(by.contains(why), "{by}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        fs::create_dir_all(dir.join("migrations/orders")).unwrap();
        assert!(matches!(
            plan(&project, &toml, &request("orders"), now()),
            Err(NewError::Taken { .. })
        ));
        let taken_port = NewService {
            name: "billing".into(),
            port: Some(8080),
        };
        assert!(matches!(
            plan(&project, &toml, &taken_port, now()),
            Err(NewError::Port(m)) if m.contains("gateway")
        ));
        let (bare, bare_project) = workspace("[platform]\nname = \"pp\"\n");
        assert!(matches!(
            plan(
                &bare_project,
                &bare.join("gravity.toml"),
                &request("billing"),
                now()
            ),
            Err(NewError::NoPostgres)
        ));
        assert_eq!(fs::read_to_string(&toml).unwrap(), PLATFORM);
        fs::remove_dir_all(dir).unwrap();
        fs::remove_dir_all(bare).unwrap();
    }

    #[test]
    fn an_existing_file_stops_the_whole_plan_and_a_failed_apply_is_rolled_back() {
        let (dir, project) = workspace(PLATFORM);
        let toml = dir.join("gravity.toml");
        let plan = plan(&project, &toml, &request("billing"), now()).unwrap();
        // Someone writes one of the files after the plan was made.
        let mine = plan.creates[3].path.clone();
        fs::create_dir_all(mine.parent().unwrap()).unwrap();
        fs::write(&mine, "my own work\n").unwrap();
        assert!(matches!(apply(&plan), Err(NewError::Exists(files)) if files.len() == 1));
        assert_eq!(fs::read_to_string(&mine).unwrap(), "my own work\n");
        assert_eq!(fs::read_to_string(&toml).unwrap(), PLATFORM);
        fs::remove_file(&mine).unwrap();
        // The folder this test made for it, so that only `apply` creates folders below.
        fs::remove_dir_all(dir.join("services/billing")).unwrap();

        // gravity.toml changed since the plan: nothing is written.
        fs::write(&toml, format!("{PLATFORM}# edited meanwhile\n")).unwrap();
        assert!(matches!(apply(&plan), Err(NewError::Changed { .. })));
        fs::write(&toml, PLATFORM).unwrap();

        // A file that cannot be created part-way: what was created is removed again.
        let mut broken = plan.clone();
        let last = broken.creates.len() - 1;
        broken.creates[last].path = dir.join("Cargo.toml").join("cannot-be-a-file");
        assert!(apply(&broken).is_err());
        assert!(!dir.join("services/billing").exists());
        assert!(!dir.join("migrations/billing").exists());
        assert_eq!(fs::read_to_string(&toml).unwrap(), PLATFORM);
        apply(&plan).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    /// rustfmt decides line breaks by length, so a name's length could make the rendered
    /// code unformatted; the shortest and longest names must both come out clean.
    #[test]
    fn rendered_code_is_rustfmt_clean_for_short_and_long_names() {
        for name in ["ab", "a-very-long-service-name-of-forty-charsx"] {
            let (dir, project) = workspace(PLATFORM);
            let plan = plan(&project, &dir.join("gravity.toml"), &request(name), now()).unwrap();
            apply(&plan).unwrap();
            let root = dir.join("services").join(name);
            let out = std::process::Command::new("rustfmt")
                .args(["--check", "--edition", "2021"])
                .arg(root.join("src/main.rs"))
                .arg(root.join("src/lib.rs"))
                .arg(root.join("build.rs"))
                .arg(root.join("tests/api/main.rs"))
                .output()
                .expect("rustfmt runs");
            assert!(
                out.status.success(),
                "{name}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            fs::remove_dir_all(dir).unwrap();
        }
    }
}
