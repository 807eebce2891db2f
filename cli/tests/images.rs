//! Offline images against the real Docker Engine: with no registry, an image is built from
//! Debian packages and imported; the second time it is simply there.

use gravity::{
    engine::{Engine, LABEL_MANAGED},
    images::{self, Obtained, OfflineRecipe},
    manifest::ImageRef,
};

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_built_from_debian_packages_once() {
    let engine = Engine::connect()
        .await
        .expect("the Docker Engine must be running for this test");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let image = ImageRef::parse(&format!("gravity-test/minbase:{tag}"), "latest").unwrap();
    let recipe = OfflineRecipe {
        packages: vec![],
        changes: vec!["ENV GRAVITY_TEST=offline".to_owned()],
    };

    let first = images::ensure(&engine, &image, Some(&recipe)).await;
    let second = images::ensure(&engine, &image, Some(&recipe)).await;
    let inspected = engine.api().inspect_image(&image.to_string()).await;
    // Clean up before asserting, so a failure leaves nothing behind.
    let _ = engine
        .api()
        .remove_image(
            &image.to_string(),
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;

    assert_eq!(first.unwrap(), Obtained::BuiltOffline);
    assert_eq!(second.unwrap(), Obtained::AlreadyPresent);
    let config = inspected.unwrap().config.unwrap();
    assert_eq!(
        config
            .labels
            .unwrap_or_default()
            .get(LABEL_MANAGED)
            .map(String::as_str),
        Some("true")
    );
    assert!(config
        .env
        .unwrap_or_default()
        .iter()
        .any(|e| e == "GRAVITY_TEST=offline"));
}

#[tokio::test]
async fn an_image_with_no_recipe_and_no_registry_says_what_to_do() {
    let engine = Engine::connect()
        .await
        .expect("the Docker Engine must be running for this test");
    let image = ImageRef::parse("gravity-test/does-not-exist:1", "latest").unwrap();
    let err = images::ensure(&engine, &image, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be pulled"), "{err}");
    assert!(err.contains("docker load"), "{err}");
}
