//! The service answers as its OpenAPI document says: schemathesis, with every check, against
//! the real application (exceptions, each with its reason, in `tests/schemathesis.toml`).

use service_kit::testing::Contract;

use crate::helpers::{access, spawn_app};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");

#[tokio::test]
async fn every_operation_answers_as_the_openapi_document_says() {
    let app = spawn_app().await;
    let (_, admin) = app.new_admin().await;
    let schema = app.url("/openapi.json");
    // As an admin, so that the admin operations are reached too; everything but logging
    // out, which would end the run's own session half-way.
    let as_admin = Contract::new(&schema)
        .config_file(CONFIG)
        .header("Authorization", &format!("Bearer {}", access(&admin)))
        .exclude_path("/api/v1/logout")
        .run()
        .await;
    if let Err(e) = as_admin {
        panic!("{e}");
    }
    // Logging out, with a session of its own.
    let (_, user) = app.new_user().await;
    let logout = Contract::new(&schema)
        .config_file(CONFIG)
        .header("Authorization", &format!("Bearer {}", access(&user)))
        .only_path("/api/v1/logout")
        .run()
        .await;
    if let Err(e) = logout {
        panic!("{e}");
    }
}
