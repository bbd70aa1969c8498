//! The README's Kubernetes walkthrough, steps 3 to 11, run command for command on the test
//! environment's node (`scripts/testenv.sh up` starts a kubelet, containerd, kube-proxy,
//! CoreDNS and a local-path provisioner beside the API server, and loads the images built from
//! `operator/Dockerfile`, `workers/Dockerfile` and the development infrastructure's stand-ins):
//! the chart with its development Kafka, PostgreSQL and MinIO, a `FintechPipeline` that reaches
//! `Running 3/3`, rows in silver and gold read with `psql`, a transform started by annotation,
//! a Kaggle export uploaded to MinIO and replayed by the producer pod at its share, a bank
//! settlement file with two faults reconciled, suspend and resume, and the clean-up. A second test kills a streamer pod in the middle of a
//! batch and checks that silver then holds every produced event exactly once; a third deploys
//! a wrong image tag and checks that the old pods keep the data flowing until it is undone.
//!
//! Commands run through `bash` with the test environment's `kubectl`, `helm` and `psql` first
//! on `PATH`, so they read as the README prints them. Two things differ from a kind cluster,
//! and only in how the host reaches the cluster: PostgreSQL's NodePort is on the node's address
//! (`FINTECH_TEST_NODE_IP`) instead of kind's `localhost:5432` port mapping, and the node is
//! cordoned between tests (so that the other tests' pods stay Pending as they were written to),
//! which these tests lift while they run.
//!
//! The tests use the README's fixed names (namespace `fintech`, release `fintech-operator`,
//! pipeline `payments`), so they take turns; each starts as on a fresh cluster, without the
//! CRD, which the other test files apply and leave.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::testenv_var;

const REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The tests share the namespace, the release and the node's capacity.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Runs `script` with bash in the repository, with the test environment's tools first on
/// `PATH`; returns stdout, or stdout and stderr as the error.
fn try_sh(script: &str) -> Result<String, String> {
    let tool_dirs: Vec<String> = ["KUBECTL", "HELM"]
        .iter()
        .map(|tool| {
            let path = testenv_var(tool);
            std::path::Path::new(&path)
                .parent()
                .unwrap()
                .display()
                .to_string()
        })
        .chain([testenv_var("FINTECH_TEST_PG_BIN")])
        .collect();
    let path = format!(
        "{}:{}",
        tool_dirs.join(":"),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            &format!("{WAREHOUSE_URL}\n{script}"),
        ])
        .current_dir(REPOSITORY)
        .env("PATH", path)
        .env("KUBECONFIG", testenv_var("KUBECONFIG"))
        .env("FINTECH_TEST_NODE_IP", testenv_var("FINTECH_TEST_NODE_IP"))
        .output()
        .unwrap_or_else(|e| panic!("cannot start bash: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Runs `script` and returns its stdout, failing the test with its output if it fails.
fn sh(script: &str) -> String {
    eprintln!("$ {script}");
    try_sh(script).unwrap_or_else(|output| panic!("`{script}` failed:\n{output}"))
}

/// Polls `check` every two seconds until it returns `Ok`, failing after `timeout` with the
/// last error it returned.
fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if Instant::now() > deadline => {
                panic!("{what}: not within {timeout:?}; last seen:\n{seen}")
            }
            Err(_) => sleep(Duration::from_secs(2)),
        }
    }
}

/// Waits until `script` prints nothing (objects gone, no namespace terminating).
fn until_empty(what: &str, timeout: Duration, script: &str) {
    eventually(what, timeout, || {
        let printed = try_sh(script)?;
        if printed.trim().is_empty() {
            Ok(())
        } else {
            Err(printed)
        }
    });
}

/// A query's single value through `psql`, at the URL the README derives from the Secret.
fn psql(query: &str) -> Result<String, String> {
    try_sh(&format!(
        "psql \"$(warehouse_url)\" -X -q -t -A -v ON_ERROR_STOP=1 -c {}",
        shell_quote(query)
    ))
    .map(|out| out.trim().to_owned())
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn count(query: &str) -> Result<i64, String> {
    let text = psql(query)?;
    text.parse()
        .map_err(|_| format!("`{query}` gave {text:?}, not a count"))
}

/// The cluster as a test found it and leaves it: the node schedulable only while a test runs,
/// and whatever a test installed removed again when it ends, also when it fails (after printing
/// what the pods were doing).
struct Session {
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Session {
    fn start() -> Self {
        let turn = CLUSTER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        remove_everything();
        // Pods of namespaces other tests are still deleting would be scheduled too.
        until_empty(
            "no namespace is being deleted",
            Duration::from_secs(180),
            r#"kubectl get namespaces -o jsonpath='{.items[?(@.status.phase=="Terminating")].metadata.name}'"#,
        );
        sh(&format!(
            "kubectl uncordon {}",
            testenv_var("FINTECH_TEST_NODE")
        ));
        Self { _turn: turn }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for script in [
                "kubectl get pods -A -o wide",
                "kubectl -n fintech get fp,deployments,statefulsets,jobs,pvc -o wide",
                "kubectl -n fintech describe pods",
                "kubectl -n fintech get events --sort-by=.lastTimestamp | tail -40",
                "for p in $(kubectl -n fintech get pods -o name); do echo \"== $p\"; kubectl -n fintech logs --all-containers --tail=40 \"$p\"; done",
            ] {
                eprintln!("$ {script}\n{}", try_sh(script).unwrap_or_else(|e| e));
            }
        }
        remove_everything();
        let _ = try_sh(&format!(
            "kubectl cordon {}",
            testenv_var("FINTECH_TEST_NODE")
        ));
    }
}

/// What `helm install` and `kubectl apply` of the walkthrough create, removed the way README
/// step 11 removes it, and waited for, so that the next test starts on an empty cluster.
fn remove_everything() {
    let _ = try_sh("kubectl -n fintech delete fp --all --wait=true --timeout=120s");
    let _ = try_sh(
        "helm status fintech-operator -n fintech >/dev/null 2>&1 && helm uninstall fintech-operator --namespace fintech --wait --timeout 180s",
    );
    let _ = try_sh("kubectl delete namespace fintech --ignore-not-found --timeout=180s");
    let _ = try_sh("kubectl delete crd fintechpipelines.fintech.io --ignore-not-found");
}

/// README step 6's `PGURL`, defined for every script: the `url` of the Secret, pointed at the
/// node's NodePort where kind would map localhost:5432.
const WAREHOUSE_URL: &str = r#"warehouse_url() { kubectl -n fintech get secret fintech-postgres -o jsonpath='{.data.url}' | base64 -d | sed "s/@fintech-postgres:5432\//@$FINTECH_TEST_NODE_IP:30432\//"; }"#;

/// README steps 3 to 5: the chart with the development infrastructure, the rollouts, the bucket
/// Job, the example pipeline, and `kubectl get fp` showing `Running` and `3/3`.
fn install_and_create_the_pipeline() {
    sh("helm install fintech-operator helm/fintech-operator \
          --namespace fintech --create-namespace \
          --set infra.enabled=true --set infra.exposeNodePorts=true");
    sh("kubectl -n fintech rollout status deployment/fintech-operator --timeout=5m");
    sh(
        "kubectl -n fintech rollout status statefulset/fintech-kafka statefulset/fintech-postgres statefulset/fintech-minio --timeout=5m",
    );
    sh(
        "kubectl -n fintech wait --for=condition=Complete job -l app.kubernetes.io/name=minio-bucket --timeout=5m",
    );

    sh("kubectl -n fintech apply -f manifests/pipeline-example.yaml");
    eventually(
        "kubectl get fp shows Running 3/3",
        Duration::from_secs(300),
        || {
            let table = try_sh("kubectl -n fintech get fp")?;
            let row = table
                .lines()
                .find(|line| line.starts_with("payments "))
                .ok_or_else(|| table.clone())?;
            let columns: Vec<&str> = row.split_whitespace().collect();
            if columns.get(1) == Some(&"Running") && columns.get(2) == Some(&"3/3") {
                Ok(())
            } else {
                Err(table)
            }
        },
    );
    sh("kubectl -n fintech describe fp payments");
    sh(
        "kubectl -n fintech get deployments,cronjobs,services,configmaps -l app.kubernetes.io/instance=payments",
    );
}

/// Every pod of the namespace, as `name phase ready` lines.
fn pods() -> String {
    try_sh(
        "kubectl -n fintech get pods -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.status.containerStatuses[*].ready}{\"\\n\"}{end}'",
    )
    .unwrap_or_else(|e| e)
}

fn rows_in_silver() -> Result<i64, String> {
    count("select count(*) from raw.transactions")
}

/// Waits until silver holds more than `than` rows, and returns how many.
fn silver_grows_past(than: i64, what: &str) -> i64 {
    eventually(what, Duration::from_secs(240), || match rows_in_silver() {
        Ok(rows) if rows > than => Ok(rows),
        Ok(rows) => Err(format!("{rows} rows")),
        Err(error) => Err(error),
    })
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn the_readme_walkthrough_runs_on_a_real_node() {
    let _session = Session::start();
    install_and_create_the_pipeline();
    let running = pods();
    for component in [
        "fintech-operator",
        "fintech-kafka-0",
        "fintech-postgres-0",
        "fintech-minio-0",
        "payments-producer",
        "payments-streamer",
        "payments-loader",
    ] {
        assert!(
            running
                .lines()
                .any(|line| line.starts_with(component) && line.ends_with("Running true")),
            "{component} is not Running and Ready:\n{running}"
        );
    }
    sh("kubectl -n fintech logs deployment/payments-streamer --tail=5");

    // Step 6: silver through psql, and the load audit.
    let silver = silver_grows_past(0, "rows reach raw.transactions");
    eprintln!("silver holds {silver} rows");
    sh(r#"psql "$(warehouse_url)" -c 'select count(*) from raw.transactions'"#);
    let audit = sh(
        r#"psql "$(warehouse_url)" -c 'select run_id, started_at, health, rows_loaded, error from metadata.load_health limit 5'"#,
    );
    assert!(audit.contains("healthy"), "no healthy load run:\n{audit}");

    // Step 7: a transform Job started by the annotation, its logs, and gold.
    sh(
        r#"kubectl -n fintech annotate fp payments fintech.io/run-transform="$(date -u +%Y%m%dT%H%M%SZ)" --overwrite"#,
    );
    let job = eventually(
        "the manual transform Job is named in the status",
        Duration::from_secs(60),
        || {
            let name = try_sh(
                "kubectl -n fintech get fp payments -o jsonpath='{.status.transform.lastManualRunJob}'",
            )?;
            if name.trim().is_empty() {
                Err("no job yet".to_owned())
            } else {
                Ok(name.trim().to_owned())
            }
        },
    );
    sh("kubectl -n fintech get jobs -l app.kubernetes.io/instance=payments");
    sh(&format!(
        "kubectl -n fintech wait --for=condition=Complete job/{job} --timeout=5m"
    ));
    let logs = sh(&format!("kubectl -n fintech logs job/{job}"));
    assert!(!logs.trim().is_empty(), "the transform Job logged nothing");
    eventually("LAST TRANSFORM is set", Duration::from_secs(60), || {
        let last = try_sh(
            "kubectl -n fintech get fp payments -o jsonpath='{.status.transform.lastSuccessfulTime}'",
        )?;
        if last.trim().is_empty() {
            Err(sh("kubectl -n fintech get fp payments -o yaml"))
        } else {
            Ok(())
        }
    });
    sh("kubectl -n fintech get fp payments");
    let gold = count("select count(*) from marts.fact_transactions").unwrap();
    assert!(gold > 0, "the transform left marts.fact_transactions empty");
    sh(
        r#"psql "$(warehouse_url)" -c 'select * from marts.daily_revenue_summary order by payment_date desc, payment_method limit 10'"#,
    );
    sh(
        r#"psql "$(warehouse_url)" -c 'select status, count(*) from marts.fact_transactions group by status'"#,
    );

    data_flowing_turns_false_while_the_loader_cannot_load_and_its_pods_stay_ready();

    kaggle_export_in_minio_is_replayed_at_its_share_by_the_producer_pod();
    a_bank_file_with_two_faults_is_loaded_and_reconciled_on_the_cluster();

    // Step 10: suspend (workers gone, phase Suspended), then resume (rows keep arriving).
    sh(r#"kubectl -n fintech patch fp payments --type merge -p '{"spec":{"suspend":true}}'"#);
    eventually(
        "the pipeline is Suspended with no worker pods",
        Duration::from_secs(180),
        || {
            let phase = try_sh("kubectl -n fintech get fp payments -o jsonpath='{.status.phase}'")?;
            let workers = try_sh(
                "kubectl -n fintech get pods -l 'app.kubernetes.io/instance=payments,app.kubernetes.io/component in (producer,streamer,loader)' -o name",
            )?;
            if phase.trim() == "Suspended" && workers.trim().is_empty() {
                Ok(())
            } else {
                Err(format!("phase {phase}; pods:\n{workers}"))
            }
        },
    );
    sh("kubectl -n fintech get fp payments");
    let suspended = rows_in_silver().unwrap();
    sh(r#"kubectl -n fintech patch fp payments --type merge -p '{"spec":{"suspend":false}}'"#);
    silver_grows_past(suspended, "rows keep arriving after resume");

    // Step 11: the pipeline's children go with it; the release and the CRD go too.
    sh("kubectl -n fintech delete fp payments");
    until_empty(
        "the pipeline's children are gone",
        Duration::from_secs(120),
        "kubectl -n fintech get deployments,cronjobs,services,configmaps,pods -l app.kubernetes.io/instance=payments -o name",
    );
    sh("helm uninstall fintech-operator --namespace fintech --wait");
    sh("kubectl delete crd fintechpipelines.fintech.io");
}

/// The header of Kaggle's `fraudTrain.csv`.
const KAGGLE_HEADER: &str = ",trans_date_trans_time,cc_num,merchant,category,amt,first,last,gender,street,city,state,zip,lat,long,city_pop,job,dob,trans_num,unix_time,merch_lat,merch_long,is_fraud";

/// Writes an export shaped like Kaggle's (`rows` rows, about 250 bytes each, every
/// `trans_num` distinct) to a file and returns its path.
fn write_kaggle_export(rows: usize) -> String {
    use std::fmt::Write;
    let mut text = format!("{KAGGLE_HEADER}\n");
    for row in 0..rows {
        let cents = 100 + row % 20_000;
        writeln!(
            text,
            "{row},2019-01-01 00:{:02}:{:02},4613314721966,\"fraud_Store {}, Inc\",grocery_pos,{}.{:02},\
             Ana,Reyes,F,12 Elm Street,Plano,TX,75023,33.0198,-96.6989,285494,Teacher,1979-05-14,\
             {row:032x},1325376{:03},33.2,-96.4,{}",
            (row / 60) % 60,
            row % 60,
            row % 97,
            cents / 100,
            cents % 100,
            row % 1000,
            u8::from(row % 200 == 0),
        )
        .unwrap();
    }
    let path = format!("{}/walkthrough-fraudTrain.csv", env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(&path, text).unwrap();
    path
}

/// README step 8: an export put in the bucket through `kubectl run`'s standard input, and the
/// producer pod pointed at it with a synthetic share of 0.3. Of the events it sends once
/// rolled, about 70% then reach silver as `kaggle` rows (20,000 rows last the whole check at
/// 35 a second).
fn kaggle_export_in_minio_is_replayed_at_its_share_by_the_producer_pod() {
    let export = write_kaggle_export(20_000);
    sh(&format!(
        r#"MC_HOST_lake="http://fintech:$(kubectl -n fintech get secret fintech-minio -o jsonpath='{{.data.AWS_SECRET_ACCESS_KEY}}' | base64 -d)@fintech-minio:9000"
kubectl -n fintech run kaggle-upload --rm -i --restart=Never \
  --image=quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z --env="MC_HOST_lake=$MC_HOST_lake" \
  -- --config-dir=/tmp/mc pipe lake/fintech/seeds/fraudTrain.csv < {export}"#
    ));
    sh(r#"kubectl -n fintech patch fp payments --type merge \
  -p '{"spec":{"producer":{"syntheticShare":0.3,"kaggleCsv":"s3://fintech/seeds/fraudTrain.csv"}}}'"#);
    sh("kubectl -n fintech rollout status deployment/payments-producer --timeout=3m");
    // Rows the replaced pod sent may still arrive; count only what Kafka stamped after the
    // roll, once the old pod is gone.
    until_empty(
        "the replaced producer pod is gone",
        Duration::from_secs(120),
        "kubectl -n fintech get pods -l app.kubernetes.io/instance=payments,app.kubernetes.io/component=producer -o jsonpath='{.items[?(@.metadata.deletionTimestamp)].metadata.name}'",
    );
    let rolled = psql("select now()").unwrap();
    let mix = format!(
        "select count(*) filter (where source = 'kaggle') || ' ' || count(*) \
         from raw.transactions where kafka_timestamp > '{rolled}'"
    );
    let (kaggle, all) = eventually(
        "1,000 events sent after the roll reach silver",
        Duration::from_secs(300),
        || {
            let counts = psql(&mix)?;
            let (kaggle, all) = counts
                .split_once(' ')
                .and_then(|(k, a)| Some((k.parse::<i64>().ok()?, a.parse::<i64>().ok()?)))
                .ok_or_else(|| format!("`{mix}` gave {counts:?}"))?;
            if all >= 1_000 {
                Ok((kaggle, all))
            } else {
                Err(counts)
            }
        },
    );
    sh(
        r#"psql "$(warehouse_url)" -c "select source, count(*) from raw.transactions where kafka_timestamp > now() - interval '1 minute' group by source""#,
    );
    let share = kaggle as f64 / all as f64;
    eprintln!("{kaggle} of {all} rows sent after the roll are kaggle ({share:.3})");
    assert!(
        (0.62..0.78).contains(&share),
        "{kaggle} of {all} rows sent after the roll are kaggle, not about 70%"
    );
    let merchants = count(&format!(
        "select count(*) from raw.transactions where source = 'kaggle' \
         and kafka_timestamp > '{rolled}' and merchant_name not like 'Store %, Inc'"
    ))
    .unwrap();
    assert_eq!(merchants, 0, "kaggle rows that are not the export's");
}

/// Starts a transform Job with a new value of the annotation and waits for it to complete;
/// returns its name.
fn run_transform_job() -> String {
    let before = try_sh(
        "kubectl -n fintech get fp payments -o jsonpath='{.status.transform.lastManualRunJob}'",
    )
    .unwrap_or_default();
    sh(
        r#"kubectl -n fintech annotate fp payments fintech.io/run-transform="$(date -u +%Y%m%dT%H%M%S%NZ)" --overwrite"#,
    );
    let job = eventually(
        "a new manual transform Job is named in the status",
        Duration::from_secs(60),
        || {
            let name = try_sh(
                "kubectl -n fintech get fp payments -o jsonpath='{.status.transform.lastManualRunJob}'",
            )?;
            let name = name.trim();
            if name.is_empty() || name == before.trim() {
                Err(format!("still {name:?}"))
            } else {
                Ok(name.to_owned())
            }
        },
    );
    sh(&format!(
        "kubectl -n fintech wait --for=condition=Complete job/{job} --timeout=5m"
    ));
    job
}

/// README step 9: the loader pointed at `batch_files/`, today's file written from the topic
/// with `bank-file` in the loader's pod with two faults, loaded by the loader, reconciled by
/// a transform Job: the faults are found with their outcomes, and the loader exports the
/// unmatched count.
fn a_bank_file_with_two_faults_is_loaded_and_reconciled_on_the_cluster() {
    sh(
        r#"kubectl -n fintech patch fp payments --type merge -p '{"spec":{"loader":{"bankFilesUrl":"s3://fintech/batch_files"}}}'"#,
    );
    sh("kubectl -n fintech rollout status deployment/payments-loader --timeout=3m");
    let printed = sh(
        r#"kubectl -n fintech exec deploy/payments-loader -- fintech bank-file --day "$(date -u +%F)" --fault-amount 1 --fault-missing 1"#,
    );
    eprintln!("{printed}");
    let fault = |kind: &str| -> String {
        printed
            .lines()
            .find_map(|line| line.strip_prefix(&format!("fault {kind} ")))
            .unwrap_or_else(|| panic!("no {kind} fault printed:\n{printed}"))
            .trim()
            .to_owned()
    };
    let (amount, missing) = (fault("amount"), fault("missing"));
    eventually(
        "the loader loads the file",
        Duration::from_secs(120),
        || match count("select count(*) from metadata.loaded_bank_files") {
            Ok(1) => Ok(()),
            Ok(n) => Err(format!("{n} files")),
            Err(error) => Err(error),
        },
    );
    sh(
        r#"psql "$(warehouse_url)" -c 'select path, lines_loaded, lines_rejected from metadata.loaded_bank_files'"#,
    );
    // Both payments are in silver before the transform reads it (the bank file was written
    // from Kafka, which runs ahead of silver).
    let both = format!(
        "select count(distinct transaction_id) from raw.transactions \
         where transaction_id in ('{amount}', '{missing}')"
    );
    eventually(
        "both faulty payments reach silver",
        Duration::from_secs(120),
        || match count(&both) {
            Ok(2) => Ok(()),
            Ok(n) => Err(format!("{n} of 2")),
            Err(error) => Err(error),
        },
    );
    run_transform_job();
    sh(
        r#"psql "$(warehouse_url)" -c 'select * from marts.bank_reconciliation_daily order by settlement_date desc, outcome'"#,
    );
    sh(
        r#"psql "$(warehouse_url)" -c "select transaction_id, outcome, bank_amount, stream_amount from marts.bank_reconciliation where outcome <> 'matched'""#,
    );
    let outcome = |id: &str| {
        psql(&format!(
            "select outcome from marts.bank_reconciliation where transaction_id = '{id}'"
        ))
        .unwrap()
    };
    assert_eq!(outcome(&amount), "amount_mismatch");
    assert_eq!(outcome(&missing), "missing_at_bank");
    // The loader reads the reconciliation after its next bank-file run.
    eventually(
        "the loader exports the amount mismatch",
        Duration::from_secs(120),
        || {
            let metrics = try_sh(
                r#"kubectl -n fintech get --raw "/api/v1/namespaces/fintech/pods/$(kubectl -n fintech get pods -l app.kubernetes.io/instance=payments,app.kubernetes.io/component=loader -o jsonpath='{.items[0].metadata.name}'):9090/proxy/metrics""#,
            )?;
            let line = metrics
                .lines()
                .find(|l| {
                    l.starts_with("fintech_loader_bank_unreconciled_items{")
                        && l.contains("outcome=\"amount_mismatch\"")
                })
                .unwrap_or_default()
                .to_owned();
            if line.ends_with(" 1") {
                Ok(())
            } else {
                Err(line)
            }
        },
    );
}

/// The `DataFlowing` condition as `status reason message`.
fn data_flowing() -> Result<String, String> {
    try_sh(
        r#"kubectl -n fintech get fp payments -o jsonpath='{.status.conditions[?(@.type=="DataFlowing")].status} {.status.conditions[?(@.type=="DataFlowing")].reason} {.status.conditions[?(@.type=="DataFlowing")].message}'"#,
    )
}

/// Waits until the `DataFlowing` condition's status and reason are `expected` (`True Flowing`)
/// and returns the condition.
fn data_flowing_becomes(expected: &str, timeout: Duration) -> String {
    eventually(
        &format!("DataFlowing is {expected}"),
        timeout,
        || match data_flowing() {
            Ok(seen) if seen.starts_with(expected) => Ok(seen),
            Ok(seen) => Err(seen),
            Err(error) => Err(error),
        },
    )
}

/// The loader waits for the load lock, which a `psql` session holds, so no load succeeds
/// while every pod stays Ready: `DataFlowing` turns False with the loader named, and True
/// again once the lock is let go. Loads run every 10 s here, so the loader is late after
/// 90 s (three intervals and a minute).
fn data_flowing_turns_false_while_the_loader_cannot_load_and_its_pods_stay_ready() {
    sh(
        r#"kubectl -n fintech patch fp payments --type merge -p '{"spec":{"loader":{"intervalSeconds":10}}}'"#,
    );
    sh("kubectl -n fintech rollout status deployment/payments-loader --timeout=3m");
    data_flowing_becomes("True Flowing", Duration::from_secs(180));
    let table = sh("kubectl -n fintech get fp payments");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PHASE",
            "READY",
            "DATA",
            "LAG",
            "SILVER/MIN",
            "LAST",
            "LOAD",
            "GOLD",
            "AGE"
        ],
        "{table}"
    );
    assert!(table.contains(" Flowing "), "{table}");

    // The loader's advisory lock (`fintech_workers::loader::LOAD_LOCK`), held by a psql
    // session that then waits on its input. Closing the input ends the session, which lets the
    // lock go (a session busy in pg_sleep would not notice its client leave).
    let mut holder = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("{WAREHOUSE_URL}\nexec \"$PSQL\" \"$(warehouse_url)\" -X -q"),
        ])
        .current_dir(REPOSITORY)
        .env(
            "PSQL",
            format!("{}/psql", testenv_var("FINTECH_TEST_PG_BIN")),
        )
        .env(
            "PATH",
            format!(
                "{}:{}",
                std::path::Path::new(&testenv_var("KUBECTL"))
                    .parent()
                    .unwrap()
                    .display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("KUBECONFIG", testenv_var("KUBECONFIG"))
        .env("FINTECH_TEST_NODE_IP", testenv_var("FINTECH_TEST_NODE_IP"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("cannot start psql");
    {
        use std::io::Write;
        let input = holder.stdin.as_mut().unwrap();
        writeln!(input, "select pg_advisory_lock(7379550910619543553);").unwrap();
        input.flush().unwrap();
    }
    let stalled = data_flowing_becomes("False LoaderStalled", Duration::from_secs(300));
    drop(holder.stdin.take());
    let ended = holder.wait().expect("waiting for the psql session");
    assert!(
        ended.success(),
        "the psql session that held the lock failed"
    );
    eprintln!("DataFlowing: {stalled}");
    assert!(
        stalled.contains("no load into silver has succeeded for")
            && stalled.contains("the run in progress started")
            && stalled.contains("kubectl logs deploy/payments-loader"),
        "{stalled}"
    );
    let running = pods();
    assert!(
        running
            .lines()
            .any(|line| line.starts_with("payments-loader") && line.ends_with("Running true")),
        "the loader pod is not Running and Ready:\n{running}"
    );
    sh("kubectl -n fintech get fp payments");
    sh("kubectl -n fintech describe fp payments");
    data_flowing_becomes("True Flowing", Duration::from_secs(240));
}

/// Per Kafka partition of `transactions`, the log end offset, read in the broker's pod with
/// the broker's own tool.
fn end_offsets() -> Vec<(i32, i64)> {
    let out = sh(
        "kubectl -n fintech exec fintech-kafka-0 -- /opt/kafka/bin/kafka-get-offsets.sh --bootstrap-server localhost:9092 --topic transactions",
    );
    let mut offsets: Vec<(i32, i64)> = out
        .lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let (_topic, partition, offset) = (parts.next()?, parts.next()?, parts.next()?);
            Some((partition.parse().ok()?, offset.parse().ok()?))
        })
        .collect();
    offsets.sort_unstable();
    assert!(
        !offsets.is_empty(),
        "kafka-get-offsets printed no offsets:\n{out}"
    );
    offsets
}

/// The offsets the streamer's consumer group has committed, summed over partitions.
fn committed_by_the_streamer() -> Result<i64, String> {
    let out = try_sh(
        "kubectl -n fintech exec fintech-kafka-0 -- /opt/kafka/bin/kafka-consumer-groups.sh --bootstrap-server localhost:9092 --describe --group payments-streamer",
    )?;
    // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
    Ok(out
        .lines()
        .filter(|line| line.starts_with("payments-streamer "))
        .filter_map(|line| line.split_whitespace().nth(3)?.parse::<i64>().ok())
        .sum())
}

/// The streamer's `fintech_streamer_messages`, through the API server's proxy to its Service.
fn messages_read_by_the_streamer() -> Result<f64, String> {
    let body = try_sh(
        "kubectl get --raw /api/v1/namespaces/fintech/services/payments-streamer-metrics:metrics/proxy/metrics",
    )?;
    body.lines()
        .find_map(|line| {
            line.strip_prefix("fintech_streamer_messages_total ")?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| {
            body.lines()
                .filter(|l| l.starts_with("fintech_streamer"))
                .collect::<Vec<_>>()
                .join("\n")
        })
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn a_streamer_pod_killed_mid_batch_leaves_every_event_in_silver_exactly_once() {
    let _session = Session::start();
    install_and_create_the_pipeline();
    silver_grows_past(0, "the first batch reaches silver");

    // Mid-batch: the streamer has read messages that no committed batch holds yet.
    eventually(
        "the streamer holds an open batch",
        Duration::from_secs(120),
        || {
            let read = messages_read_by_the_streamer()?;
            let committed = committed_by_the_streamer()?;
            if read > committed as f64 {
                Ok(())
            } else {
                Err(format!("read {read}, committed {committed}"))
            }
        },
    );
    sh(
        "kubectl -n fintech delete pod -l app.kubernetes.io/instance=payments,app.kubernetes.io/component=streamer --grace-period=0 --force",
    );
    sh("kubectl -n fintech rollout status deployment/payments-streamer --timeout=3m");
    // Let the replacement re-read the killed batch and commit past it while payments go on.
    let before = committed_by_the_streamer().unwrap();
    eventually("the new streamer commits", Duration::from_secs(180), || {
        let now = committed_by_the_streamer()?;
        if now > before {
            Ok(())
        } else {
            Err(format!("committed {now}"))
        }
    });

    // Stop producing, then wait until silver holds every message of the topic.
    sh(
        r#"kubectl -n fintech patch fp payments --type merge -p '{"spec":{"producer":{"enabled":false}}}'"#,
    );
    until_empty(
        "the producer is gone",
        Duration::from_secs(120),
        "kubectl -n fintech get pods -l app.kubernetes.io/instance=payments,app.kubernetes.io/component=producer -o name",
    );
    let ends = end_offsets();
    let produced: i64 = ends.iter().map(|(_, end)| end).sum();
    eventually(
        "silver holds every produced event",
        Duration::from_secs(300),
        || {
            let rows = rows_in_silver()?;
            if rows >= produced {
                Ok(())
            } else {
                Err(format!("{rows} of {produced} rows"))
            }
        },
    );
    for (partition, end) in ends {
        let stats = psql(&format!(
            "select count(*) || ' ' || count(distinct kafka_offset) || ' ' || coalesce(min(kafka_offset), -1) || ' ' || coalesce(max(kafka_offset), -1) \
             from raw.transactions where kafka_partition = {partition}"
        ))
        .unwrap();
        assert_eq!(
            stats,
            format!("{end} {end} 0 {}", end - 1),
            "partition {partition}: rows, distinct offsets, first and last offset in silver \
             against the {end} messages Kafka holds"
        );
    }
    assert_eq!(
        count("select count(*) from raw.rejected_transactions").unwrap(),
        0
    );
}

/// `name phase ready waiting-reason` of each worker pod of the pipeline.
fn worker_pods() -> Result<Vec<String>, String> {
    let text = try_sh(
        "kubectl -n fintech get pods -l 'app.kubernetes.io/instance=payments,app.kubernetes.io/component in (producer,streamer,loader)' \
         -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.status.containerStatuses[*].ready} {.status.containerStatuses[*].state.waiting.reason}{\"\\n\"}{end}'",
    )?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// A spec the API server accepts but whose value is wrong (here an image tag no registry
/// has) rolls the workers, and the roll stops at the new pods, which never become ready:
/// the old pods keep running and data keeps reaching silver. Putting the previous value
/// back converges to `Running 3/3` again.
#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn a_wrong_image_tag_stops_the_roll_and_the_old_pods_keep_data_flowing() {
    let _session = Session::start();
    install_and_create_the_pipeline();
    silver_grows_past(0, "rows reach silver before the bad deploy");
    let old: Vec<String> = worker_pods()
        .unwrap()
        .iter()
        .filter_map(|pod| pod.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(old.len(), 3, "one producer, streamer and loader: {old:?}");

    sh(
        r#"kubectl -n fintech patch fp payments --type merge -p '{"spec":{"image":{"tag":"no-such-tag"}}}'"#,
    );
    eventually(
        "each worker has a new pod that cannot pull its image, beside its old pod still ready",
        Duration::from_secs(180),
        || {
            let pods = worker_pods()?;
            let stuck = pods
                .iter()
                .filter(|pod| pod.ends_with("ErrImagePull") || pod.ends_with("ImagePullBackOff"))
                .count();
            let serving = old
                .iter()
                .filter(|name| {
                    pods.iter()
                        .any(|pod| pod.starts_with(&format!("{name} Running true")))
                })
                .count();
            if stuck == 3 && serving == 3 {
                Ok(())
            } else {
                Err(pods.join("\n"))
            }
        },
    );
    let events = sh(
        "kubectl -n fintech get events --field-selector involvedObject.kind=FintechPipeline,involvedObject.name=payments -o jsonpath='{range .items[*]}{.reason}{\"\\n\"}{end}'",
    );
    assert!(
        events.lines().any(|reason| reason == "Updated"),
        "no Updated Event for the rolled children:\n{events}"
    );
    sh("kubectl -n fintech get fp payments");
    let during = rows_in_silver().unwrap();
    silver_grows_past(
        during,
        "the old pods keep data flowing during the stuck roll",
    );

    sh(r#"kubectl -n fintech patch fp payments --type merge -p '{"spec":{"image":{"tag":""}}}'"#);
    for worker in ["producer", "streamer", "loader"] {
        sh(&format!(
            "kubectl -n fintech rollout status deployment/payments-{worker} --timeout=3m"
        ));
    }
    eventually(
        "only ready pods of the right image are left",
        Duration::from_secs(120),
        || {
            let pods = worker_pods()?;
            if pods.len() == 3 && pods.iter().all(|pod| pod.contains(" Running true")) {
                Ok(())
            } else {
                Err(pods.join("\n"))
            }
        },
    );
    let table = sh("kubectl -n fintech get fp payments");
    assert!(
        table.lines().any(|line| line.starts_with("payments ")
            && line.contains(" Running ")
            && line.contains(" 3/3")),
        "{table}"
    );
}
