//! `AppState`: what every handler can reach. One `Arc`, so the per-request clone axum makes
//! is a single atomic increment rather than one per handle.

use std::{ops::Deref, sync::Arc};

use sqlx::PgPool;

use crate::{config::Settings, email::Mailer, templates};

pub struct Handles {
    pub db: PgPool,
    pub settings: Settings,
    /// The SMTP server's connections, when one is configured.
    pub mailer: Option<Mailer>,
    /// Text message providers, when any is configured.
    pub texter: Option<crate::sms::Texter>,
    /// Templates compiled once per version.
    pub templates: templates::Cache,
}

#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl AppState {
    pub fn new(handles: Handles) -> Self {
        Self(Arc::new(handles))
    }
}

impl Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}
