//! `AppState`: what every handler can reach. One `Arc`, so the per-request clone axum makes
//! is a single atomic increment rather than one per handle.

use std::{ops::Deref, sync::Arc};

use sqlx::PgPool;

use crate::config::Settings;

pub struct Handles {
    pub db: PgPool,
    pub settings: Settings,
    /// The attribute schema, kept by version.
    pub schemas: crate::schema::Cache,
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
