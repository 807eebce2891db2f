//! Offline images against the real Docker Engine: with no registry, an image is built from
//! Debian packages under Gravity's own tag and imported; the second time it is simply there.

use gravity::{
    engine::{Engine, LABEL_MANAGED},
    images::{self, Obtained, Offline, OfflineRecipe},
    manifest::ImageRef,
};

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_built_from_debian_packages_once() {
    let engine = Engine::connect()
        .await
        .expect("the Docker Engine must be running for this test");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let wanted = ImageRef::parse(&format!("gravity-test/unpullable:{tag}"), "latest").unwrap();
    let offline = Offline {
        image: ImageRef::parse(&format!("gravity-test/minbase:{tag}"), "latest").unwrap(),
        recipe: OfflineRecipe {
            packages: vec![],
            files: vec![(
                "/etc/gravity-test".to_owned(),
                "written by the recipe\n".to_owned(),
                0o640,
            )],
            commands: vec!["mkdir -p /srv/made-in-chroot".to_owned()],
            changes: vec!["ENV GRAVITY_TEST=offline".to_owned()],
        },
    };

    let first = images::resolve(&engine, &wanted, Some(&offline), None).await;
    let second = images::resolve(&engine, &wanted, Some(&offline), None).await;
    let inspected = engine.api().inspect_image(&offline.image.to_string()).await;
    // Clean up before asserting, so a failure leaves nothing behind.
    let _ = engine
        .api()
        .remove_image(
            &offline.image.to_string(),
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;

    let first = first.unwrap();
    assert_eq!(first.obtained, Obtained::BuiltOffline);
    assert_eq!(first.image, offline.image);
    let second = second.unwrap();
    assert_eq!(second.obtained, Obtained::PresentOffline);
    assert_eq!(second.id, first.id);
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
    let err = images::resolve(&engine, &image, None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be pulled"), "{err}");
    assert!(err.contains("docker load"), "{err}");
}
