//! The transform project: seeds, models and data tests from `sql/`, and the DAG between them.
//!
//! A model is one SQL file under `models/<schema>/<name>.sql`; it becomes the relation
//! `<schema>.<name>`. Its header comments configure it:
//!
//! ```sql
//! -- grain: one row per transaction_id
//! -- materialized: view | table | incremental
//! -- unique_key: transaction_id            (incremental only)
//! -- incremental_column: status_updated_at (incremental only)
//! -- test: unique transaction_id
//! -- test: not_null transaction_id, status
//! -- test: accepted_values status PENDING, SUCCESS, FAILED
//! -- test: relationships customer_id marts.dim_customers customer_id
//! ```
//!
//! Dependencies are derived from the SQL: a model depends on every other model whose
//! qualified name it mentions. Custom data tests are queries in `tests/` that return the
//! failing rows. Seeds are the CSV files in `seeds/`, loaded as `seeds.<name>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use include_dir::{Dir, include_dir};

/// The project built into the binary.
static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../sql");

/// Schema that seeds are loaded into.
pub const SEEDS_SCHEMA: &str = "seeds";

/// Model layers, in the order they may depend on each other.
const LAYERS: [&str; 3] = ["staging", "intermediate", "marts"];

/// Errors in the project itself, found before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The project folder or one of its subfolders cannot be listed. A missing folder is an
    /// error rather than an empty project, which would run nothing and report success.
    #[error("cannot read the project folder {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The folder exists but holds no model, most likely because it is not laid out like `sql/`.
    #[error(
        "{path} holds no model; models are files models/<layer>/<name>.sql, the layers being {}",
        LAYERS.join(", ")
    )]
    NoModels {
        /// The folder.
        path: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file name or header names something that is not a plain SQL identifier; generated
    /// SQL places these names as they are, so anything else could inject SQL.
    #[error("{file}: {name:?} is not a lower-case SQL identifier")]
    Identifier {
        /// The file that holds the name.
        file: String,
        /// The name.
        name: String,
    },
    /// A header names a model without its schema.
    #[error("{file}: {name:?} is not a schema-qualified model name")]
    QualifiedName {
        /// The model's file.
        file: String,
        /// The name.
        name: String,
    },
    /// A header line is not understood.
    #[error("{file}: {message}")]
    Header {
        /// The model or test file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A `relationships` test names a model or seed the project does not have; caught here
    /// rather than as a failing test at the end of a run.
    #[error(
        "{file}: the relationships test refers to {model}, which is not a model or seed of the project"
    )]
    UnknownReference {
        /// The model's file.
        file: String,
        /// The relation it names.
        model: String,
    },
    /// Two seeds, models or tests share a name. A run records each node under its name
    /// (the key of `metadata.transform_runs`), so the second one would abort the run.
    #[error("{first} and {second} both define {name:?}; seed, model and test names must be unique")]
    DuplicateName {
        /// The name.
        name: String,
        /// The file of the first definition.
        first: String,
        /// The file of the second.
        second: String,
    },
    /// The models depend on each other in a circle.
    #[error("models depend on each other in a cycle: {0}")]
    Cycle(String),
    /// `--select` names no model.
    #[error("no model is named {0:?}; `fintech transform --list` shows the models")]
    UnknownModel(String),
}

/// How a model is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialized {
    /// A view, replaced on every run.
    View,
    /// A table, rebuilt on every run.
    Table,
    /// A table merged on its unique key with the rows changed within the lookback window.
    Incremental,
}

/// A test declared in a model's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenericTest {
    /// No two rows share these columns.
    Unique(Vec<String>),
    /// The column is never null.
    NotNull(String),
    /// The column holds only these values.
    AcceptedValues {
        /// The column.
        column: String,
        /// The values.
        values: Vec<String>,
    },
    /// Every non-null value of the column exists in another model's column.
    Relationships {
        /// The column.
        column: String,
        /// The referenced model, `schema.name`.
        to_model: String,
        /// The referenced column.
        to_column: String,
    },
}

/// One model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// `schema.name`.
    pub name: String,
    /// The schema (its layer).
    pub schema: String,
    /// The select statement.
    pub sql: String,
    /// How it is built.
    pub materialized: Materialized,
    /// The merge key of an incremental model.
    pub unique_key: Option<String>,
    /// The column an incremental run filters on.
    pub incremental_column: Option<String>,
    /// Tests declared in the header.
    pub tests: Vec<GenericTest>,
    /// Models it reads, `schema.name`.
    pub depends_on: BTreeSet<String>,
}

/// Starts a line of an incremental model that only its incremental runs read: the rest of
/// the line is SQL in which `{since}` stands for the start of the run's window.
pub const INCREMENTAL_MARKER: &str = "-- incremental:";

impl Model {
    /// The select statement without a trailing semicolon, ready to be embedded. A full
    /// refresh runs it as written, where the `-- incremental:` lines are comments.
    pub fn select(&self) -> &str {
        self.sql.trim().trim_end_matches(';')
    }

    /// The select statement of an incremental run: each `-- incremental:` line uncommented,
    /// with `{since}` replaced by `since`. This is how a model reads only what changed
    /// before its window functions and joins rather than filtering their output.
    pub fn incremental_select(&self, since: &str) -> String {
        self.select()
            .lines()
            .map(
                |line| match line.trim_start().strip_prefix(INCREMENTAL_MARKER) {
                    Some(filter) => filter.replace("{since}", since),
                    None => line.to_owned(),
                },
            )
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `name` if it is a plain lower-case SQL identifier, which generated SQL may use as is.
pub fn plain_identifier(name: &str) -> Option<&str> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    ok.then_some(name)
}

/// A data test: a query returning the failing rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataTest {
    /// Its name in reports and in `metadata.transform_runs`.
    pub name: String,
    /// The query.
    pub sql: String,
    /// Models it reads.
    pub depends_on: BTreeSet<String>,
    /// For a test of one column of one model, the condition that picks its failing rows:
    /// the runner counts the failures of all such tests of a model in one scan of its table
    /// and runs a test's own query only when it has failures to show.
    pub screen: Option<Screen>,
    /// For a test generated from the header of an incremental model: the same test held to
    /// the rows that model's run merged.
    pub window: Option<TestWindow>,
}

/// The failing rows of a column test, as a condition on its model's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    /// The model's table, `schema.name`.
    pub table: String,
    /// The condition a failing row meets.
    pub failing: String,
}

/// A test of an incremental model's rows, held to the rows an incremental run merged: the
/// rows whose `incremental_column` is at or after the start of the run's window. Rows before
/// it were checked by the run that wrote them and have not changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestWindow {
    /// The incremental model, `schema.name`.
    pub model: String,
    /// The model's `incremental_column`.
    pub column: String,
    /// The test's query over the window, `{since}` standing for its start.
    pub sql: String,
}

/// One seed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The table name in the `seeds` schema.
    pub name: String,
    /// The CSV text.
    pub csv: String,
}

/// The whole project, models in dependency order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Seed tables.
    pub seeds: Vec<Seed>,
    /// Models, each after the models it depends on.
    pub models: Vec<Model>,
    /// Custom data tests and those generated from model headers.
    pub tests: Vec<DataTest>,
}

impl Project {
    /// The project built into the binary.
    pub fn embedded() -> Result<Self, ProjectError> {
        Self::from_files(embedded_files())
    }

    /// The project in a folder laid out like `sql/` (for development). `seeds/`, `tests/`
    /// and any layer may be left out, but the folder itself must exist and hold a model.
    pub fn from_folder(folder: &Path) -> Result<Self, ProjectError> {
        let unreadable = |path: &Path| {
            let path = path.display().to_string();
            move |source| ProjectError::Folder { path, source }
        };
        std::fs::read_dir(folder).map_err(unreadable(folder))?;
        let mut files = Vec::new();
        let folders = ["seeds", "tests"]
            .into_iter()
            .map(str::to_owned)
            .chain(LAYERS.iter().map(|layer| format!("models/{layer}")));
        for relative in folders {
            let subfolder = folder.join(&relative);
            let entries = match std::fs::read_dir(&subfolder) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(unreadable(&subfolder)(error)),
            };
            for entry in entries {
                let entry = entry.map_err(unreadable(&subfolder))?;
                let path = entry.path();
                let text = std::fs::read_to_string(&path).map_err(|source| ProjectError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                files.push((format!("{relative}/{name}"), text));
            }
        }
        let project = Self::from_files(files)?;
        if project.models.is_empty() {
            return Err(ProjectError::NoModels {
                path: folder.display().to_string(),
            });
        }
        Ok(project)
    }

    /// Builds the project from (relative path, text) pairs.
    pub fn from_files(files: Vec<(String, String)>) -> Result<Self, ProjectError> {
        // Each node with the file that defines it, for the errors that name both files.
        let mut seeds: Vec<(String, Seed)> = Vec::new();
        let mut models: Vec<(String, Model)> = Vec::new();
        let mut custom_tests: Vec<(String, DataTest)> = Vec::new();
        for (path, text) in files {
            let parts: Vec<&str> = path.split('/').collect();
            match parts.as_slice() {
                ["seeds", file] if file.ends_with(".csv") => {
                    let seed = Seed {
                        name: identifier(&path, file.trim_end_matches(".csv"))?,
                        csv: text,
                    };
                    seeds.push((path, seed));
                }
                ["models", layer, file] if file.ends_with(".sql") && LAYERS.contains(layer) => {
                    let model = parse_model(&path, layer, file.trim_end_matches(".sql"), &text)?;
                    models.push((path, model));
                }
                ["tests", file] if file.ends_with(".sql") => {
                    let test = DataTest {
                        name: identifier(&path, file.trim_end_matches(".sql"))?,
                        sql: text,
                        depends_on: BTreeSet::new(),
                        screen: None,
                        window: None,
                    };
                    custom_tests.push((path, test));
                }
                _ => {}
            }
        }
        let names: Vec<String> = models.iter().map(|(_, m)| m.name.clone()).collect();
        check_references(&models, &seeds, &names)?;
        for (_, model) in &mut models {
            model.depends_on = references(&model.sql, &names, Some(&model.name));
        }
        let mut tests: Vec<(String, DataTest)> = models
            .iter()
            .flat_map(|(path, model)| generic_tests(model).into_iter().map(|t| (path.clone(), t)))
            .collect();
        for (path, mut test) in custom_tests {
            test.depends_on = references(&test.sql, &names, None);
            tests.push((path, test));
        }
        check_unique(
            seeds
                .iter()
                .map(|(path, s)| (path, &s.name))
                .chain(models.iter().map(|(path, m)| (path, &m.name)))
                .chain(tests.iter().map(|(path, t)| (path, &t.name))),
        )?;
        let models = order(models.into_iter().map(|(_, m)| m).collect())?;
        let mut seeds: Vec<Seed> = seeds.into_iter().map(|(_, s)| s).collect();
        seeds.sort_by(|a, b| a.name.cmp(&b.name));
        let mut tests: Vec<DataTest> = tests.into_iter().map(|(_, t)| t).collect();
        tests.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            seeds,
            models,
            tests,
        })
    }

    /// The models to run for `select`: that model and everything downstream of it; all
    /// models without a selection.
    pub fn selection(&self, select: Option<&str>) -> Result<BTreeSet<String>, ProjectError> {
        let Some(select) = select else {
            return Ok(self.models.iter().map(|m| m.name.clone()).collect());
        };
        let root = self
            .models
            .iter()
            .find(|m| m.name == select || m.name.split('.').nth(1) == Some(select))
            .ok_or_else(|| ProjectError::UnknownModel(select.to_owned()))?;
        let mut selected = BTreeSet::from([root.name.clone()]);
        // Models are in dependency order, so one pass finds every descendant.
        for model in &self.models {
            if model.depends_on.iter().any(|d| selected.contains(d)) {
                selected.insert(model.name.clone());
            }
        }
        Ok(selected)
    }

    /// The DAG as text, one model per line with what it reads.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for model in &self.models {
            let kind = match model.materialized {
                Materialized::View => "view",
                Materialized::Table => "table",
                Materialized::Incremental => "incremental",
            };
            let deps: Vec<&str> = model.depends_on.iter().map(String::as_str).collect();
            text.push_str(&format!(
                "{:<40} {:<12} <- {}\n",
                model.name,
                kind,
                if deps.is_empty() {
                    "(sources)".to_owned()
                } else {
                    deps.join(", ")
                }
            ));
        }
        text
    }
}

/// The files of the project built into the binary, as (relative path, text) pairs.
pub fn embedded_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    collect_embedded(&EMBEDDED, &mut files);
    files
}

fn collect_embedded(dir: &Dir<'_>, files: &mut Vec<(String, String)>) {
    for file in dir.files() {
        if let Some(text) = file.contents_utf8() {
            files.push((file.path().to_string_lossy().into_owned(), text.to_owned()));
        }
    }
    for sub in dir.dirs() {
        collect_embedded(sub, files);
    }
}

/// Checks that a name from the project is a plain SQL identifier, so that it can be placed
/// in generated SQL as is.
fn identifier(file: &str, name: &str) -> Result<String, ProjectError> {
    plain_identifier(name)
        .map(str::to_owned)
        .ok_or_else(|| ProjectError::Identifier {
            file: file.to_owned(),
            name: name.to_owned(),
        })
}

fn qualified(file: &str, name: &str) -> Result<String, ProjectError> {
    match name.split_once('.') {
        Some((schema, table)) => Ok(format!(
            "{}.{}",
            identifier(file, schema)?,
            identifier(file, table)?
        )),
        None => Err(ProjectError::QualifiedName {
            file: file.to_owned(),
            name: name.to_owned(),
        }),
    }
}

/// Checks that every `relationships` test that names a relation in a schema of the project
/// (a layer or the seeds) names one the project has. Relations in other schemas are sources
/// such as `raw.transactions`, which only the warehouse knows.
fn check_references(
    models: &[(String, Model)],
    seeds: &[(String, Seed)],
    model_names: &[String],
) -> Result<(), ProjectError> {
    let known = |relation: &str| {
        model_names.iter().any(|name| name == relation)
            || relation.split_once('.').is_some_and(|(schema, table)| {
                schema == SEEDS_SCHEMA && seeds.iter().any(|(_, seed)| seed.name == table)
            })
    };
    for (path, model) in models {
        for test in &model.tests {
            let GenericTest::Relationships { to_model, .. } = test else {
                continue;
            };
            let schema = to_model.split('.').next().unwrap_or_default();
            let ours = schema == SEEDS_SCHEMA || LAYERS.contains(&schema);
            if ours && !known(to_model) {
                return Err(ProjectError::UnknownReference {
                    file: path.clone(),
                    model: to_model.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Checks that no two nodes, given as (file, name), share a name.
fn check_unique<'a>(
    nodes: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<(), ProjectError> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (file, name) in nodes {
        if let Some(first) = seen.insert(name, file) {
            return Err(ProjectError::DuplicateName {
                name: name.clone(),
                first: first.to_owned(),
                second: file.clone(),
            });
        }
    }
    Ok(())
}

fn parse_model(path: &str, layer: &str, stem: &str, text: &str) -> Result<Model, ProjectError> {
    let header_error = |message: String| ProjectError::Header {
        file: path.to_owned(),
        message,
    };
    let mut model = Model {
        name: format!("{layer}.{}", identifier(path, stem)?),
        schema: layer.to_owned(),
        sql: text.to_owned(),
        materialized: Materialized::View,
        unique_key: None,
        incremental_column: None,
        tests: Vec::new(),
        depends_on: BTreeSet::new(),
    };
    for line in text
        .lines()
        .map(str::trim)
        .take_while(|l| l.starts_with("--") || l.is_empty())
    {
        let Some((key, value)) = line.trim_start_matches('-').trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "materialized" => {
                model.materialized = match value {
                    "view" => Materialized::View,
                    "table" => Materialized::Table,
                    "incremental" => Materialized::Incremental,
                    other => {
                        return Err(header_error(format!("unknown materialization {other:?}")));
                    }
                }
            }
            "unique_key" => model.unique_key = Some(identifier(path, value)?),
            "incremental_column" => model.incremental_column = Some(identifier(path, value)?),
            "test" => model.tests.extend(parse_test(path, value)?),
            _ => {}
        }
    }
    if model.materialized == Materialized::Incremental
        && (model.unique_key.is_none() || model.incremental_column.is_none())
    {
        return Err(header_error(
            "an incremental model needs `unique_key:` and `incremental_column:`".to_owned(),
        ));
    }
    let filters: Vec<&str> = text
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix(INCREMENTAL_MARKER))
        .collect();
    if !filters.is_empty() && model.materialized != Materialized::Incremental {
        return Err(header_error(format!(
            "`{INCREMENTAL_MARKER}` lines belong to incremental models; this one is {:?}",
            model.materialized
        )));
    }
    // The lines may span a clause (a union with the model's own table, say), but together
    // they must narrow the read to the window, or the run would read everything anyway.
    if !filters.is_empty() && !filters.iter().any(|filter| filter.contains("{since}")) {
        return Err(header_error(format!(
            "the `{INCREMENTAL_MARKER}` lines do not use {{since}}, the start of the window: {}",
            filters.join(" ")
        )));
    }
    Ok(model)
}

fn parse_test(path: &str, spec: &str) -> Result<Vec<GenericTest>, ProjectError> {
    let (kind, rest) = spec.split_once(' ').unwrap_or((spec, ""));
    let list = |text: &str| -> Result<Vec<String>, ProjectError> {
        text.split(',')
            .map(|c| identifier(path, c.trim()))
            .collect()
    };
    Ok(match kind {
        "unique" => vec![GenericTest::Unique(list(rest)?)],
        "not_null" => list(rest)?.into_iter().map(GenericTest::NotNull).collect(),
        "accepted_values" => {
            let (column, values) = rest.trim().split_once(' ').unwrap_or((rest, ""));
            let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
            if let Some(bad) = values
                .iter()
                .find(|v| v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                return Err(ProjectError::Header {
                    file: path.to_owned(),
                    message: format!("accepted value {bad:?} must be letters, digits or '_'"),
                });
            }
            vec![GenericTest::AcceptedValues {
                column: identifier(path, column.trim())?,
                values,
            }]
        }
        "relationships" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [column, to_model, to_column] = words.as_slice() else {
                return Err(ProjectError::Header {
                    file: path.to_owned(),
                    message: "relationships needs: column schema.model column".to_owned(),
                });
            };
            vec![GenericTest::Relationships {
                column: identifier(path, column)?,
                to_model: qualified(path, to_model)?,
                to_column: identifier(path, to_column)?,
            }]
        }
        other => {
            return Err(ProjectError::Header {
                file: path.to_owned(),
                message: format!(
                    "unknown test {other:?} (unique, not_null, accepted_values, relationships)"
                ),
            });
        }
    })
}

/// The models of `names` that `sql` mentions as whole words outside `--` comments, except
/// `own`.
fn references(sql: &str, names: &[String], own: Option<&str>) -> BTreeSet<String> {
    let sql: String = sql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    let sql = sql.as_str();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    names
        .iter()
        .filter(|name| Some(name.as_str()) != own)
        .filter(|name| {
            sql.match_indices(name.as_str()).any(|(at, _)| {
                let before = sql[..at].chars().next_back();
                let after = sql[at + name.len()..].chars().next();
                !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
            })
        })
        .cloned()
        .collect()
}

/// Orders models so that each comes after its dependencies (Kahn's algorithm, ties broken by
/// layer then name), or names the models caught in a cycle.
fn order(models: Vec<Model>) -> Result<Vec<Model>, ProjectError> {
    let layer = |m: &Model| {
        LAYERS
            .iter()
            .position(|l| *l == m.schema)
            .unwrap_or(LAYERS.len())
    };
    let mut pending: BTreeMap<(usize, String), Model> = models
        .into_iter()
        .map(|m| ((layer(&m), m.name.clone()), m))
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::new();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .find(|(_, m)| m.depends_on.iter().all(|d| done.contains(d)))
            .map(|(key, _)| key.clone());
        match ready {
            Some(key) => {
                let model = pending
                    .remove(&key)
                    .unwrap_or_else(|| unreachable!("the key was just found"));
                done.insert(model.name.clone());
                ordered.push(model);
            }
            None => {
                let names: Vec<String> = pending.values().map(|m| m.name.clone()).collect();
                return Err(ProjectError::Cycle(names.join(", ")));
            }
        }
    }
    Ok(ordered)
}

/// The queries of the tests declared in a model's header.
fn generic_tests(model: &Model) -> Vec<DataTest> {
    let table = &model.name;
    let short = model.name.replace('.', "_");
    // The window of an incremental model: its rows merged since `{since}`.
    let column = model
        .incremental_column
        .as_ref()
        .filter(|_| model.materialized == Materialized::Incremental);
    let in_window = |alias: &str| column.map(|c| format!("{alias}{c} >= {{since}}"));
    let window = |sql: Option<String>| {
        Some(TestWindow {
            model: model.name.clone(),
            column: column?.clone(),
            sql: sql?,
        })
    };
    model
        .tests
        .iter()
        .map(|test| match test {
            GenericTest::Unique(columns) => {
                let list = columns.join(", ");
                let duplicates = |rows: &str| {
                    format!(
                        "select {list}, count(*) as occurrences from {table} {rows}\
                         group by {list} having count(*) > 1"
                    )
                };
                // Only a key the window holds can have gained a duplicate.
                let windowed = in_window("").map(|since| {
                    duplicates(&format!(
                        "where ({list}) in (select {list} from {table} where {since}) "
                    ))
                });
                DataTest {
                    name: format!("unique_{short}_{}", columns.join("_")),
                    sql: duplicates(""),
                    depends_on: BTreeSet::from([model.name.clone()]),
                    screen: None,
                    window: window(windowed),
                }
            }
            GenericTest::NotNull(column) => {
                let failing = format!("{column} is null");
                let rows = |filter: &str| format!("select * from {table} where {filter}");
                DataTest {
                    name: format!("not_null_{short}_{column}"),
                    sql: rows(&failing),
                    depends_on: BTreeSet::from([model.name.clone()]),
                    window: window(
                        in_window("").map(|since| rows(&format!("{failing} and {since}"))),
                    ),
                    screen: Some(Screen {
                        table: table.clone(),
                        failing,
                    }),
                }
            }
            GenericTest::AcceptedValues { column, values } => {
                let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
                let failing = format!("{column} not in ({})", quoted.join(", "));
                let rows = |filter: &str| {
                    format!(
                        "select {column}, count(*) as occurrences from {table} \
                         where {filter} group by {column}"
                    )
                };
                DataTest {
                    name: format!("accepted_values_{short}_{column}"),
                    sql: rows(&failing),
                    depends_on: BTreeSet::from([model.name.clone()]),
                    window: window(
                        in_window("").map(|since| rows(&format!("{failing} and {since}"))),
                    ),
                    screen: Some(Screen {
                        table: table.clone(),
                        failing,
                    }),
                }
            }
            GenericTest::Relationships {
                column,
                to_model,
                to_column,
            } => {
                let orphans = |filter: &str| {
                    format!(
                        "select child.{column} from {table} as child \
                         left join {to_model} as parent on parent.{to_column} = child.{column} \
                         where child.{column} is not null and parent.{to_column} is null{filter}"
                    )
                };
                DataTest {
                    name: format!("relationships_{short}_{column}"),
                    sql: orphans(""),
                    depends_on: BTreeSet::from([model.name.clone(), to_model.clone()]),
                    screen: None,
                    window: window(
                        in_window("child.").map(|since| orphans(&format!(" and {since}"))),
                    ),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> (String, String) {
        (path.to_owned(), text.to_owned())
    }

    #[test]
    fn column_tests_are_screened_on_their_model_and_the_others_run_alone() {
        let project = Project::embedded().unwrap();
        let test = |name: &str| project.tests.iter().find(|t| t.name == name).unwrap();
        let screen = |name: &str| test(name).screen.clone().map(|s| (s.table, s.failing));
        assert_eq!(
            screen("not_null_marts_fact_transactions_amount_inr"),
            Some((
                "marts.fact_transactions".to_owned(),
                "amount_inr is null".to_owned()
            ))
        );
        assert_eq!(
            screen("accepted_values_staging_stg_transactions_status"),
            Some((
                "staging.stg_transactions".to_owned(),
                "status not in ('PENDING', 'SUCCESS', 'FAILED')".to_owned()
            ))
        );
        // The screen picks the rows the test's own query reports.
        let own = &test("not_null_marts_fact_transactions_amount_inr").sql;
        assert!(own.ends_with("where amount_inr is null"), "{own}");
        for alone in [
            "unique_marts_fact_transactions_transaction_id",
            "relationships_marts_fact_transactions_customer_id",
            "assert_fact_amounts_positive",
        ] {
            assert_eq!(screen(alone), None, "{alone}");
        }
    }

    #[test]
    fn the_embedded_project_orders_its_models_by_dependency() {
        let project = Project::embedded().unwrap();
        let names: Vec<&str> = project.models.iter().map(|m| m.name.as_str()).collect();
        let position = |n: &str| names.iter().position(|m| *m == n).unwrap();
        assert!(
            position("staging.stg_transactions")
                < position("intermediate.int_transactions_enriched")
        );
        assert!(
            position("intermediate.int_transactions_enriched")
                < position("marts.fact_transactions")
        );
        assert!(position("marts.fact_transactions") < position("marts.daily_revenue_summary"));
        let fact = &project.models[position("marts.fact_transactions")];
        assert_eq!(fact.materialized, Materialized::Incremental);
        assert_eq!(
            fact.depends_on,
            BTreeSet::from(["intermediate.int_transactions_enriched".to_owned()])
        );
        assert!(project.seeds.iter().any(|s| s.name == "indian_cities"));
        assert!(
            project
                .tests
                .iter()
                .any(|t| t.name == "unique_marts_fact_transactions_transaction_id")
        );
        assert!(
            project
                .tests
                .iter()
                .any(|t| t.name == "assert_daily_summary_matches_fact")
        );
    }

    #[test]
    fn select_takes_the_model_and_its_descendants() {
        let project = Project::embedded().unwrap();
        let selected = project
            .selection(Some("int_transactions_enriched"))
            .unwrap();
        assert!(selected.contains("marts.fact_transactions"));
        assert!(selected.contains("marts.daily_revenue_summary"));
        assert!(!selected.contains("staging.stg_transactions"));
        let error = project.selection(Some("nope")).unwrap_err();
        assert!(error.to_string().contains("--list"));
    }

    #[test]
    fn refuses_cycles_and_bad_headers() {
        let cycle = Project::from_files(vec![
            file("models/staging/a.sql", "select * from staging.b"),
            file("models/staging/b.sql", "select * from staging.a"),
        ]);
        assert!(matches!(cycle, Err(ProjectError::Cycle(names)) if names.contains("staging.a")));
        let bad = Project::from_files(vec![file(
            "models/staging/a.sql",
            "-- materialized: incremental\nselect 1",
        )]);
        assert!(bad.unwrap_err().to_string().contains("unique_key"));
        let injection = Project::from_files(vec![file(
            "models/staging/a.sql",
            "-- test: not_null x; drop table y\nselect 1",
        )]);
        assert!(injection.is_err());
    }

    #[test]
    fn an_incremental_run_reads_the_filter_lines_a_full_refresh_skips() {
        let text = "-- materialized: incremental\n-- unique_key: id\n-- incremental_column: at\n\
                    select * from raw.events\n    -- incremental: where at >= {since}\n";
        let project =
            Project::from_files(vec![file("models/staging/stg_events.sql", text)]).unwrap();
        let model = &project.models[0];
        assert!(
            model
                .select()
                .ends_with("-- incremental: where at >= {since}")
        );
        assert_eq!(
            model.incremental_select("now() - interval '1 day'"),
            "-- materialized: incremental\n-- unique_key: id\n-- incremental_column: at\n\
             select * from raw.events\n where at >= now() - interval '1 day'"
        );

        let misplaced = Project::from_files(vec![file(
            "models/staging/a.sql",
            "-- materialized: table\nselect 1\n-- incremental: where true and {since} is not null",
        )]);
        assert!(
            misplaced
                .unwrap_err()
                .to_string()
                .contains("incremental models")
        );
        let windowless = Project::from_files(vec![file(
            "models/staging/a.sql",
            &text.replace("{since}", "now()"),
        )]);
        assert!(windowless.unwrap_err().to_string().contains("{since}"));
    }

    #[test]
    fn names_its_errors_precisely() {
        let bad_name = Project::from_files(vec![file("models/staging/Bad.sql", "select 1")]);
        assert!(
            matches!(&bad_name, Err(ProjectError::Identifier { file, name }) if file == "models/staging/Bad.sql" && name == "Bad"),
            "{bad_name:?}"
        );
        let unqualified = Project::from_files(vec![file(
            "models/staging/a.sql",
            "-- test: relationships x dim_b y\nselect 1 as x",
        )]);
        assert!(
            matches!(&unqualified, Err(ProjectError::QualifiedName { name, .. }) if name == "dim_b"),
            "{unqualified:?}"
        );
    }

    #[test]
    fn refuses_relationships_to_relations_the_project_lacks() {
        let relationships = |to: &str| {
            Project::from_files(vec![
                file(
                    "models/marts/a.sql",
                    &format!("-- test: relationships x {to} y\nselect 1 as x"),
                ),
                file("models/marts/b.sql", "select 1 as y"),
                file("seeds/c.csv", "y\n1\n"),
            ])
        };
        let error = relationships("marts.nope").unwrap_err();
        assert!(
            matches!(&error, ProjectError::UnknownReference { file, model } if file == "models/marts/a.sql" && model == "marts.nope"),
            "{error:?}"
        );
        assert!(relationships("seeds.nope").is_err());
        // Models, seeds, and sources outside the project's schemas are fine.
        assert!(relationships("marts.b").is_ok());
        assert!(relationships("seeds.c").is_ok());
        assert!(relationships("raw.transactions").is_ok());
    }

    #[test]
    fn refuses_two_nodes_of_one_name() {
        let error = Project::from_files(vec![
            file("models/staging/a.sql", "-- test: not_null x\nselect 1 as x"),
            file("tests/not_null_staging_a_x.sql", "select 1 where false"),
        ])
        .unwrap_err();
        assert!(
            matches!(&error, ProjectError::DuplicateName { name, first, second }
                if name == "not_null_staging_a_x"
                    && first == "models/staging/a.sql"
                    && second == "tests/not_null_staging_a_x.sql"),
            "{error:?}"
        );
        let twice = Project::from_files(vec![file(
            "models/staging/a.sql",
            "-- test: not_null x\n-- test: not_null x\nselect 1 as x",
        )]);
        assert!(matches!(twice, Err(ProjectError::DuplicateName { .. })));
    }

    #[test]
    fn reads_a_folder_and_refuses_a_missing_or_empty_one() {
        let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
        assert_eq!(
            Project::from_folder(&sql).unwrap(),
            Project::embedded().unwrap()
        );

        let folder = tempfile::tempdir().unwrap();
        let missing = folder.path().join("nope");
        let error = Project::from_folder(&missing).unwrap_err();
        assert!(matches!(&error, ProjectError::Folder { .. }), "{error:?}");
        // The io::Error stays reachable as the source, for `{:#}`.
        assert!(std::error::Error::source(&error).is_some());
        assert!(error.to_string().contains("nope"), "{error}");

        let error = Project::from_folder(folder.path()).unwrap_err();
        assert!(matches!(&error, ProjectError::NoModels { .. }), "{error:?}");
        assert!(
            error.to_string().contains("models/<layer>/<name>.sql"),
            "{error}"
        );
    }

    #[test]
    fn references_need_whole_names() {
        let names = vec!["staging.stg_a".to_owned(), "staging.stg_ab".to_owned()];
        let found = references("select * from staging.stg_ab", &names, None);
        assert_eq!(found, BTreeSet::from(["staging.stg_ab".to_owned()]));
    }
}
