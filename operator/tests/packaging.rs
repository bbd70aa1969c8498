//! The packaging stays in step with the workspace, without building an image or touching a
//! cluster: the Dockerfiles copy files that exist and that the build context lets through,
//! including everything a crate embeds at compile time; the chart carries the same CRD and
//! version as the workspace; kind maps the ports the chart exposes; and the example pipelines
//! are valid, complete and honest about their defaults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fintech_operator::children::{self, Worker};
use fintech_operator::crd::{FintechPipeline, FintechPipelineSpec};
use k8s_openapi::api::core::v1::ResourceRequirements;
use serde_yaml::Value;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate is inside the repository")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

fn yaml(relative: &str) -> Value {
    serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// An image and the crate it is built from.
struct Image {
    dockerfile: &'static str,
    crate_dir: &'static str,
}

const IMAGES: [Image; 2] = [
    Image {
        dockerfile: "operator/Dockerfile",
        crate_dir: "operator",
    },
    Image {
        dockerfile: "workers/Dockerfile",
        crate_dir: "workers",
    },
];

/// One instruction of a Dockerfile: its keyword (upper case) and its arguments.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    arguments: String,
}

/// The instructions of a Dockerfile, continuation lines joined, comments dropped, grouped by
/// build stage (each stage starts with its FROM).
fn stages(dockerfile: &str) -> Vec<Vec<Instruction>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (keyword, arguments) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            arguments: arguments.trim().to_owned(),
        };
        if instruction.keyword == "FROM" || stages.is_empty() {
            stages.push(Vec::new());
        }
        stages.last_mut().unwrap().push(instruction);
    }
    stages
}

/// The build-context sources of a COPY or ADD (none for `--from`, which copies between
/// stages).
fn context_sources(instruction: &Instruction) -> Vec<String> {
    if instruction.keyword != "COPY" && instruction.keyword != "ADD" {
        return Vec::new();
    }
    let arguments = instruction.arguments.trim();
    let words: Vec<String> = if arguments.starts_with('[') {
        serde_json::from_str(arguments)
            .unwrap_or_else(|e| panic!("bad JSON form of {arguments}: {e}"))
    } else {
        arguments.split_whitespace().map(str::to_owned).collect()
    };
    if words.iter().any(|w| w.starts_with("--from=")) {
        return Vec::new();
    }
    let paths: Vec<String> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
    assert!(paths.len() >= 2, "COPY without a destination: {arguments}");
    paths[..paths.len() - 1]
        .iter()
        .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_owned())
        .map(|s| if s.is_empty() { ".".to_owned() } else { s })
        .collect()
}

/// Whether `text` matches the glob `pattern` (`*` within a path segment, `**` across any
/// number of segments), as .dockerignore patterns do.
fn glob_matches(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            glob_matches(&pattern[1..], path)
                || (!path.is_empty() && glob_matches(pattern, &path[1..]))
        }
        (Some(segment), Some(name)) => {
            segment_matches(segment.as_bytes(), name.as_bytes())
                && glob_matches(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], name)
                || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) => p == n && segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Whether the root .dockerignore keeps `path` out of the build context: the last pattern
/// that matches the path or one of its parent folders decides, `!` letting it back in.
fn dockerignore_excludes(dockerignore: &str, path: &str) -> bool {
    let components: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut excluded = false;
    for line in dockerignore.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (include, pattern) = match line.strip_prefix('!') {
            Some(pattern) => (true, pattern),
            None => (false, line),
        };
        let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        let matches = (1..=components.len()).any(|n| glob_matches(&pattern, &components[..n]));
        if matches {
            excluded = !include;
        }
    }
    excluded
}

/// Paths (relative to the repository) of the files and folders a crate embeds at compile time
/// outside its tests: `include_str!`, `include_bytes!`, `include_dir!` and `sqlx::migrate!`.
fn embedded_paths(crate_dir: &str) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root().join(crate_dir).join("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            // Test modules sit at the end of a file; what they embed is not in a release build.
            let source = source.split("#[cfg(test)]").next().unwrap_or_default();
            for macro_name in [
                "include_str!(",
                "include_bytes!(",
                "include_dir!(",
                "migrate!(",
            ] {
                for (index, _) in source.match_indices(macro_name) {
                    let rest = &source[index + macro_name.len()..];
                    let Some(literal) = rest.trim_start().strip_prefix('"') else {
                        continue;
                    };
                    let literal = &literal[..literal.find('"').unwrap()];
                    let resolved = if let Some(rest) = literal.strip_prefix("$CARGO_MANIFEST_DIR/")
                    {
                        root().join(crate_dir).join(rest)
                    } else if macro_name == "migrate!(" {
                        // sqlx resolves it against the crate's manifest folder.
                        root().join(crate_dir).join(literal)
                    } else {
                        path.parent().unwrap().join(literal)
                    };
                    found.insert(normalise(&resolved));
                }
            }
        }
    }
    found
}

/// `path` without `.` and `..`, relative to the repository root.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.strip_prefix(root())
        .map(Path::to_path_buf)
        .unwrap_or(out)
}

#[test]
fn every_dockerfile_copies_only_what_exists_and_the_build_context_lets_through() {
    let dockerignore = read(".dockerignore");
    for image in IMAGES {
        let stages = stages(&read(image.dockerfile));
        let sources: Vec<String> = stages.iter().flatten().flat_map(context_sources).collect();
        assert!(!sources.is_empty(), "{} copies nothing", image.dockerfile);
        for source in sources {
            assert!(
                root().join(&source).exists(),
                "{} copies {source}, which is not in the repository",
                image.dockerfile
            );
            assert!(
                !dockerignore_excludes(&dockerignore, &source),
                "{} copies {source}, but .dockerignore keeps it out of the build context",
                image.dockerfile
            );
        }
    }
}

#[test]
fn every_workspace_member_is_copied_wherever_the_workspace_is() {
    let manifest = read("Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|line| line.trim_start().starts_with("members"))
        .expect("the workspace lists its members on one line");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    assert!(members.len() >= 3, "{members_line}");
    for image in IMAGES {
        for stage in stages(&read(image.dockerfile)) {
            let sources: Vec<String> = stage.iter().flat_map(context_sources).collect();
            // Cargo needs every member's manifest to read the workspace at all.
            if !sources.iter().any(|s| s == "Cargo.toml") {
                continue;
            }
            for member in &members {
                assert!(
                    sources.iter().any(|s| s == member),
                    "{}: a stage copies the workspace but not its member {member}",
                    image.dockerfile
                );
            }
        }
    }
}

#[test]
fn the_dockerignore_matcher_follows_the_last_matching_pattern() {
    let rules = "*\n!operator/\n**/target/\n";
    assert!(dockerignore_excludes(rules, "helm"));
    assert!(!dockerignore_excludes(rules, "operator"));
    assert!(!dockerignore_excludes(rules, "operator/src/main.rs"));
    assert!(dockerignore_excludes(rules, "operator/target/debug"));
    assert!(dockerignore_excludes(rules, "target"));
}

#[test]
fn every_file_a_crate_embeds_at_compile_time_is_in_its_image_build() {
    let dockerignore = read(".dockerignore");
    for image in IMAGES {
        let stages = stages(&read(image.dockerfile));
        let build_stage = stages
            .iter()
            .find(|stage| {
                stage
                    .iter()
                    .any(|i| i.keyword == "RUN" && i.arguments.contains("cargo build"))
            })
            .unwrap_or_else(|| panic!("{} has no stage that runs cargo build", image.dockerfile));
        let copied: Vec<PathBuf> = build_stage
            .iter()
            .flat_map(context_sources)
            .map(PathBuf::from)
            .collect();
        for embedded in embedded_paths(image.crate_dir) {
            assert!(
                root().join(&embedded).exists(),
                "{} embeds {}, which does not exist",
                image.crate_dir,
                embedded.display()
            );
            assert!(
                copied
                    .iter()
                    .any(|c| c.as_os_str() == "." || embedded.starts_with(c)),
                "{} embeds {} at compile time, but {} does not copy it into the build stage",
                image.crate_dir,
                embedded.display(),
                image.dockerfile
            );
            assert!(
                !dockerignore_excludes(&dockerignore, &embedded.to_string_lossy()),
                ".dockerignore keeps {} (embedded by {}) out of the build context",
                embedded.display(),
                image.crate_dir
            );
        }
    }
    // The workers embed the SQL; a scan that found nothing would prove nothing.
    assert!(
        embedded_paths("workers")
            .iter()
            .any(|p| p.starts_with("sql")),
        "found none of the workers' embedded SQL; has the scan broken?"
    );
}

/// The `name = "..."` values of a Cargo.toml section (`[package]` or `[[bin]]`).
fn manifest_names(manifest: &str, section: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_section = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == section;
        } else if in_section
            && let Some(value) = line.strip_prefix("name")
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            names.push(value.trim().trim_matches('"').to_owned());
        }
    }
    names
}

#[test]
fn both_images_share_every_build_stage_so_the_workspace_compiles_once() {
    // A layer is reused when its parent and instruction are the same, so every stage before
    // the runtime stage must be the same, instruction for instruction.
    let build_stages = |dockerfile: &str| -> Vec<(String, String)> {
        let mut stages = stages(&read(dockerfile));
        stages.pop();
        stages
            .into_iter()
            .flatten()
            .map(|i| (i.keyword, i.arguments))
            .collect()
    };
    let [operator, workers] = IMAGES.map(|image| build_stages(image.dockerfile));
    assert_eq!(operator, workers);
    let runs = |prefix: &str| {
        operator
            .iter()
            .filter(|(keyword, arguments)| keyword == "RUN" && arguments.starts_with(prefix))
            .map(|(_, arguments)| arguments.clone())
            .collect::<Vec<_>>()
    };
    // The dependency layer and the build must cover the same packages (the whole workspace)
    // with the same feature flags, or cargo recompiles dependencies whose features differ.
    let feature_flags = |command: &str| -> Vec<String> {
        command
            .split_whitespace()
            .filter(|word| word.contains("feature"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        feature_flags(&runs("cargo chef cook")[0]),
        feature_flags(&runs("cargo build")[0]),
        "the dependency layer and the build select different features"
    );
    for command in [runs("cargo chef cook"), runs("cargo build")] {
        assert_eq!(
            command.len(),
            1,
            "one dependency build and one build: {command:?}"
        );
        assert!(
            !command[0].contains("--package"),
            "{}: must build the whole workspace",
            command[0]
        );
    }
}

#[test]
fn each_image_builds_its_crates_binary_and_runs_it_as_the_non_root_user_of_the_pods() {
    let pod_user = yaml("helm/fintech-operator/values.yaml")["podSecurityContext"]["runAsUser"]
        .as_u64()
        .unwrap();
    for image in IMAGES {
        let dockerfile = read(image.dockerfile);
        let manifest = read(&format!("{}/Cargo.toml", image.crate_dir));
        let package = &manifest_names(&manifest, "[package]")[0];
        let bins = manifest_names(&manifest, "[[bin]]");
        let bin = &bins[0];
        let stages = stages(&dockerfile);
        let runtime = stages.last().unwrap();
        let build = stages
            .iter()
            .flatten()
            .find(|i| i.keyword == "RUN" && i.arguments.starts_with("cargo build"))
            .unwrap_or_else(|| panic!("{}: no `RUN cargo build`", image.dockerfile));
        let built = format!("target/release/{bin}");
        assert!(
            build.arguments.split_whitespace().any(|word| word == built),
            "{}: the build must install {package}'s binary {bin}",
            image.dockerfile
        );
        let find = |keyword: &str| {
            runtime
                .iter()
                .find(|i| i.keyword == keyword)
                .map(|i| i.arguments.clone())
                .unwrap_or_else(|| {
                    panic!("{}: no {keyword} in the runtime stage", image.dockerfile)
                })
        };
        assert!(
            find("FROM").contains(":nonroot"),
            "{}: the runtime image should be a nonroot one",
            image.dockerfile
        );
        assert_eq!(
            find("USER"),
            format!("{pod_user}:{pod_user}"),
            "{}: the image's user must be the pods' runAsUser",
            image.dockerfile
        );
        assert_eq!(
            find("COPY"),
            format!("--from=builder /out/{bin} /usr/local/bin/{bin}"),
            "{}: the runtime must hold the crate's own binary",
            image.dockerfile
        );
        assert_eq!(
            find("ENTRYPOINT"),
            format!(r#"["/usr/local/bin/{bin}"]"#),
            "{}",
            image.dockerfile
        );
    }
}

#[test]
fn the_chart_carries_the_crd_of_crds() {
    assert!(
        read("helm/fintech-operator/files/crds/fintechpipelines.fintech.io.yaml")
            == read("crds/fintechpipelines.fintech.io.yaml"),
        "the chart's copy of the CRD is stale; run \
         `cp crds/fintechpipelines.fintech.io.yaml helm/fintech-operator/files/crds/`"
    );
}

#[test]
fn the_charts_app_version_is_the_workspace_version() {
    // Image tags default to appVersion, and the operator gives pipelines its own version as
    // the workers' tag: the three must be one number.
    let chart = yaml("helm/fintech-operator/Chart.yaml");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "helm/fintech-operator/Chart.yaml appVersion must be the workspace version"
    );
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
}

#[test]
fn kind_maps_the_node_ports_the_chart_exposes() {
    let kind = yaml("kind-config.yaml");
    let values = yaml("helm/fintech-operator/values.yaml");
    let mappings: Vec<(u64, u64)> = kind["nodes"][0]["extraPortMappings"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["containerPort"].as_u64().unwrap(),
                m["hostPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let postgres = values["infra"]["postgres"]["nodePort"].as_u64().unwrap();
    let console = values["infra"]["minio"]["consoleNodePort"]
        .as_u64()
        .unwrap();
    assert!(mappings.contains(&(postgres, 5432)), "{mappings:?}");
    assert!(mappings.contains(&(console, 9001)), "{mappings:?}");
}

/// Dotted paths of the leaves of a CRD schema's `spec` (a `resources` object counts as one).
fn schema_leaves(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(properties) = schema["properties"].as_mapping() else {
        out.insert(prefix.to_owned());
        return;
    };
    for (name, child) in properties {
        let name = name.as_str().unwrap();
        let path = format!("{prefix}.{name}");
        if name == "resources" {
            out.insert(path);
        } else {
            schema_leaves(child, &path, out);
        }
    }
}

fn manifest_leaves(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value.as_mapping() {
        Some(mapping) if !prefix.ends_with(".resources") => {
            for (name, child) in mapping {
                manifest_leaves(child, &format!("{prefix}.{}", name.as_str().unwrap()), out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

fn pipeline(relative: &str) -> FintechPipeline {
    serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

#[test]
fn the_example_pipeline_sets_every_field_of_the_crd() {
    let crd = yaml("crds/fintechpipelines.fintech.io.yaml");
    let spec_schema =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut fields = BTreeSet::new();
    schema_leaves(spec_schema, "spec", &mut fields);
    let mut set = BTreeSet::new();
    manifest_leaves(
        &yaml("manifests/pipeline-example.yaml")["spec"],
        "spec",
        &mut set,
    );
    let missing: Vec<_> = fields.difference(&set).collect();
    assert!(
        missing.is_empty(),
        "manifests/pipeline-example.yaml should set and explain every field; missing {missing:?}"
    );
    let unknown: Vec<_> = set.difference(&fields).collect();
    assert!(
        unknown.is_empty(),
        "fields the CRD does not have: {unknown:?}"
    );
}

#[test]
fn the_example_pipeline_shows_the_defaults_and_the_minimal_one_takes_them() {
    let example = pipeline("manifests/pipeline-example.yaml");
    let minimal = pipeline("manifests/pipeline-minimal.yaml");
    let defaults: FintechPipelineSpec = serde_json::from_str("{}").unwrap();
    assert_eq!(minimal.spec, defaults);

    // Apart from the resources, which the CRD leaves empty, the example is the defaults...
    let mut without_resources = example.spec.clone();
    without_resources.producer.resources = None;
    without_resources.streamer.resources = None;
    without_resources.loader.resources = None;
    without_resources.transform.resources = None;
    assert_eq!(without_resources, defaults);

    // ...and its resources are what the operator gives a pipeline that leaves them empty.
    let resources_of = |p: &FintechPipeline, worker: Worker| -> Option<ResourceRequirements> {
        children::deployment(p, worker, "hash")
            .spec
            .template
            .spec
            .unwrap()
            .containers[0]
            .resources
            .clone()
    };
    for worker in Worker::ALL {
        assert_eq!(
            resources_of(&example, worker),
            resources_of(&minimal, worker),
            "the example's {} resources should be the operator's defaults",
            worker.as_str()
        );
    }
    let transform_resources = |p: &FintechPipeline| {
        children::transform_cron_job(p, "hash")
            .spec
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .resources
            .clone()
    };
    assert_eq!(transform_resources(&example), transform_resources(&minimal));
}
