//! Helpers for operator tests that need the test environment (`scripts/test.sh`).

#![allow(dead_code)]

/// Reads a variable of the test environment's env file, failing loudly when it is missing so
/// that a test can never pass without the service it is meant to exercise.
pub fn testenv_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs the real services; run scripts/test.sh, or \
             scripts/testenv.sh up and then `set -a; . \"$(scripts/testenv.sh env)\"; set +a`"
        )
    })
}

/// Creates the namespace `name` through `client`.
pub async fn create_namespace(client: &kube::Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{ObjectMeta, PostParams};
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    kube::Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}
