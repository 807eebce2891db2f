//! The service answers as its OpenAPI document says: schemathesis, with every check, against
//! the real application, called as an admin the gateway verified (exceptions, each with its
//! reason, in `tests/schemathesis.toml`).

use service_kit::testing::Contract;

use crate::helpers::{caller, gateway_key, in_five_minutes, spawn_app};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");

#[tokio::test]
async fn every_operation_answers_as_the_openapi_document_says() {
    let app = spawn_app().await;
    let admin = caller(&["admin"])
        .to_signed_headers(gateway_key(), in_five_minutes())
        .expect("a signed identity");
    let contract = admin.iter().fold(
        Contract::new(app.url("/openapi.json")).config_file(CONFIG),
        |contract, (name, value)| {
            contract.header(name.as_str(), value.to_str().unwrap_or_default())
        },
    );
    if let Err(e) = contract.run().await {
        panic!("{e}");
    }
}
