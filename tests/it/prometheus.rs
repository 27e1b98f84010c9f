//! The shipped alert rules and Grafana dashboard (`deploy/prometheus/`,
//! `deploy/grafana/`): promtool accepts the rules and their unit tests
//! pass, every alert is tested firing and silent, the dashboard's queries
//! parse, and every metric and label the rules and the dashboard name is
//! one the real binary serves (read from the files `--run-now
//! --metrics-file` writes against the simulator).

use crate::util::prometheus::{promql_names, promtool, PromqlNames, Selector, Served};
use crate::util::{args, edit_config, options, output_text, run_bin, write_config};
use contabo_simulator::{Fault, FaultRule, Operation, Simulator, SimulatorOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/contabo-rotator.json";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn text(value: &serde_yaml_ng::Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// `(alert name, expression)` of every rule.
fn alert_rules() -> Vec<(String, String)> {
    let rules: Vec<(String, String)> = yaml(RULES)["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .map(|r| (text(&r["alert"]), text(&r["expr"])))
        .collect();
    assert!(
        rules.iter().all(|(a, e)| !a.is_empty() && !e.is_empty()),
        "{rules:?}"
    );
    rules
}

/// `(where, query)` of every query of the dashboard: each panel's
/// targets, and each query variable's `label_values(SELECTOR, LABEL)` as
/// the PromQL `group by (LABEL) (SELECTOR)`, which names the same things.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo(DASHBOARD)).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "a target without expr: {target}");
            let place = format!(
                "panel \"{}\" {}",
                panel["title"].as_str().unwrap_or_default(),
                target["refId"].as_str().unwrap_or_default()
            );
            queries.push((place, expr.to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap();
        let (selector, label) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("not label_values(SELECTOR, LABEL): {query}"));
        let place = format!("variable {}", variable["name"].as_str().unwrap_or_default());
        queries.push((place, format!("group by ({label}) ({selector})")));
    }
    queries
}

/// `query` with Grafana's variables replaced by values PromQL accepts.
fn as_promql(query: &str) -> String {
    let expr = query
        .replace("$__rate_interval", "5m")
        .replace("$instance", ".*");
    assert!(!expr.contains('$'), "a variable left in {expr}");
    expr
}

/// Runs promtool with `args`; its output when it fails.
fn promtool_ok(args: &[&Path]) -> String {
    let out = std::process::Command::new(promtool())
        .args(args)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
#[ignore = "needs promtool: scripts/test installs it"]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let rules = repo(RULES);
    let checked = promtool_ok(&[Path::new("check"), Path::new("rules"), &rules]);
    let count = alert_rules().len();
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );
    let tested = promtool_ok(&[Path::new("test"), Path::new("rules"), &repo(RULE_TESTS)]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The dashboard's queries, each as a recording rule, pass `promtool
/// check rules` (PromQL syntax and types).
#[test]
#[ignore = "needs promtool: scripts/test installs it"]
fn promtool_parses_every_dashboard_query() {
    let queries = dashboard_queries();
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, query)) in queries.iter().enumerate() {
        // A JSON string is a YAML double-quoted scalar.
        let expr = serde_json::to_string(&as_promql(query)).unwrap();
        file.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, file).unwrap();
    let checked = promtool_ok(&[Path::new("check"), Path::new("rules"), &path]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
}

/// Every alert has a unit test in which it fires and one in which it
/// stays silent, and every test names an alert that exists (promtool
/// passes a test of a misspelt alert that expects nothing).
#[test]
fn every_alert_is_tested_firing_and_silent() {
    let alerts: Vec<String> = alert_rules().into_iter().map(|(a, _)| a).collect();
    let tests = yaml(RULE_TESTS);
    let mut fired = std::collections::BTreeSet::new();
    let mut silent = std::collections::BTreeSet::new();
    for test in tests["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = text(&case["alertname"]);
            assert!(alerts.contains(&name), "a test of an unknown alert {name}");
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                fired.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for alert in &alerts {
        assert!(fired.contains(alert), "no test in which {alert} fires");
        assert!(silent.contains(alert), "no test in which {alert} is silent");
    }
}

/// A twin's two users, with a sink holding the twin, as in twins.rs.
const TWIN_USERS: [&str; 2] = ["user001@example.com", "user002@example.com"];
const RETIRE_AFTER: Duration = Duration::from_secs(1);

/// The series of three real runs, each written with `--metrics-file`: a
/// first run in which one user's listing fails twice (one retry, then a
/// give-up, so that run fails), a forced run that switches the twin, and
/// after `retire_after` a run that retires the keys handed over before.
/// One-shot counters start at zero in each process, so the union is
/// what a daemon doing the same would serve.
async fn served_by_the_binary() -> Served {
    let opts = SimulatorOptions {
        credentials_per_user: 2,
        ..options(4)
    };
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let config = format!(
        "[client_secret]\nrotate = true\n\n\
         [object_storage]\nverify_timeout = \"5s\"\n\n\
         [[object_storage.twins]]\nname = \"app\"\nusers = [\"{}\", \"{}\"]\nretire_after = \"{}s\"\n\n\
         [[sinks]]\ntype = \"file\"\npath = \"{{root}}/app.json\"\nformat = \"json\"\n\
         select = {{ twins = [\"app\"] }}\n\n\
         [[sinks]]\ntype = \"file\"\npath = \"{{root}}/all.json\"\nformat = \"json\"\n",
        TWIN_USERS[0],
        TWIN_USERS[1],
        RETIRE_AFTER.as_secs()
    );
    let setup = write_config(&sim, &opts, &config);
    edit_config(&setup, &[("max_retries = 10", "max_retries = 1")]);
    let failing = sim
        .snapshot()
        .users
        .iter()
        .find(|u| u.email == "user003@example.com")
        .unwrap()
        .user_id
        .clone();
    sim.set_faults(vec![FaultRule::always(Fault::InternalServerError)
        .on(Operation::ListObjectStorageCredentials)
        .on_path(failing)
        .times(2)]);
    let file = setup.dir.path().join("contabo-rotator.prom");
    let file_arg = file.display().to_string();
    let mut served = Served::default();
    for (rest, code) in [(&[][..], 1), (&["--force"][..], 0), (&[][..], 0)] {
        let mut all = vec!["--run-now", "--metrics-file", &file_arg];
        all.extend_from_slice(rest);
        let out = run_bin(args(&setup.config, &all)).await;
        assert_eq!(out.status.code(), Some(code), "{}", output_text(&out));
        served.add(&std::fs::read_to_string(&file).unwrap());
        tokio::time::sleep(RETIRE_AFTER + Duration::from_millis(200)).await;
    }
    served
}

/// Every metric and label the alert rules and the dashboard name is one
/// the binary serves; and the same check refuses each of their
/// expressions with its first metric name misspelt, so it is not passing
/// for want of names found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_name_is_served() {
    let served = served_by_the_binary().await;
    // What the runs were set up to produce.
    for (name, label) in [
        (
            "contabo_rotator_twin_retirement_due_timestamp_seconds",
            "twin",
        ),
        ("contabo_rotator_twin_active_user", "user_email"),
        ("contabo_rotator_api_retries_total", "operation"),
        ("contabo_rotator_api_give_ups_total", "operation"),
        ("contabo_rotator_api_request_duration_seconds_bucket", "le"),
        ("contabo_rotator_rotations_total", "result"),
        ("contabo_rotator_verifications_total", "result"),
    ] {
        assert!(
            served.series.get(name).is_some_and(|l| l.contains(label)),
            "the runs served no {name}{{{label}}}: {:?}",
            served.series.keys()
        );
    }
    let queries: Vec<(String, String)> = alert_rules()
        .into_iter()
        .map(|(alert, expr)| (format!("{RULES}: {alert}"), expr))
        .chain(
            dashboard_queries()
                .into_iter()
                .map(|(place, q)| (format!("{DASHBOARD}: {place}"), q)),
        )
        .collect();
    let mut problems = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for (place, query) in &queries {
        let names = promql_names(query);
        assert!(!names.selectors.is_empty(), "{place}: no metric in {query}");
        named.extend(names.selectors.iter().map(|s| s.metric.clone()));
        let found = served.unknown_in(query);
        if found.is_empty() {
            let first = &names.selectors[0].metric;
            let misspelt = query.replacen(first.as_str(), &format!("{first}s"), 1);
            assert!(
                !served.unknown_in(&misspelt).is_empty(),
                "{place}: {first} misspelt passed the check"
            );
        }
        problems.extend(found.into_iter().map(|p| format!("{place}: {p}")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The rules and the dashboard between them watch every state gauge.
    for gauge in [
        "contabo_rotator_last_success_timestamp_seconds",
        "contabo_rotator_object_storage_credential_next_rotation_timestamp_seconds",
        "contabo_rotator_client_secret_next_rotation_timestamp_seconds",
        "contabo_rotator_webhook_outbox_events",
        "contabo_rotator_twin_retirement_due_timestamp_seconds",
    ] {
        assert!(named.contains(gauge), "nothing watches {gauge}");
    }
}

/// The check itself, on a fixed exposition: what it accepts and what it
/// refuses (a misspelt name, a counter without `_total`, a histogram's
/// base name, a label the metric lacks, a grouping label nothing has).
#[test]
fn the_name_check_refuses_misspelt_names_and_labels() {
    let mut served = Served::default();
    served.add(
        "# TYPE contabo_rotator_runs_total counter\n\
         contabo_rotator_runs_total{result=\"success\"} 1\n\
         contabo_rotator_api_request_duration_seconds_bucket{operation=\"token\",status=\"200\",le=\"0.1\"} 1\n\
         contabo_rotator_api_request_duration_seconds_count{operation=\"token\",status=\"200\"} 1\n\
         contabo_rotator_next_run_timestamp_seconds 0\n\
         contabo_rotator_twin_retirement_due_timestamp_seconds{twin=\"app (a, b)\"} 0\n",
    );
    let accepted = [
        "rate(contabo_rotator_runs_total{result=\"success\", instance=~\"$instance\"}[$__rate_interval])",
        "histogram_quantile(0.95, sum by (le, operation) (rate(contabo_rotator_api_request_duration_seconds_bucket[5m])))",
        "time() - contabo_rotator_twin_retirement_due_timestamp_seconds > 3600 \
         and ignoring(twin) contabo_rotator_next_run_timestamp_seconds > 0",
        "sum without (status) (contabo_rotator_api_request_duration_seconds_count offset 1d) > bool 0",
        "# a comment naming contabo_rotator_nothing\ncontabo_rotator_runs_total",
    ];
    for expr in accepted {
        assert_eq!(served.unknown_in(expr), Vec::<String>::new(), "{expr}");
    }
    let refused = [
        ("contabo_rotator_runs_totl", "metric contabo_rotator_runs_totl is not served"),
        (
            "rate(contabo_rotator_runs[5m])",
            "metric contabo_rotator_runs is not served (but contabo_rotator_runs_total)",
        ),
        (
            "contabo_rotator_api_request_duration_seconds",
            "metric contabo_rotator_api_request_duration_seconds is not served \
             (but contabo_rotator_api_request_duration_seconds_bucket, \
             contabo_rotator_api_request_duration_seconds_count)",
        ),
        (
            "contabo_rotator_runs_total{results=\"success\"}",
            "contabo_rotator_runs_total has no label results",
        ),
        (
            "sum by (operations) (contabo_rotator_runs_total)",
            "no served series has the label operations",
        ),
        (
            "contabo_rotator_twin_retirement_due_timestamp_seconds and on(twins) contabo_rotator_runs_total",
            "no served series has the label twins",
        ),
    ];
    for (expr, problem) in refused {
        assert_eq!(served.unknown_in(expr), [problem], "{expr}");
    }
}

/// What the lexer takes for a metric and what it passes over.
#[test]
fn promql_names_finds_selectors_and_grouping_labels() {
    let sel = |metric: &str, labels: &[&str]| Selector {
        metric: metric.to_owned(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    let table = [
        (
            "sum by (instance, kind) (increase(a_total{result=\"fail, or b\", x=~'$y'}[1h:5m]))",
            vec![sel("a_total", &["result", "x"])],
            vec!["instance", "kind"],
        ),
        (
            "max(b) / on (job) group_left (twin) c {instance!=\"z\"} unless d offset 5m",
            vec![sel("b", &[]), sel("c", &["instance"]), sel("d", &[])],
            vec!["job", "twin"],
        ),
        (
            "topk(5, e) > bool 1e3 or Inf < f and NaN",
            vec![sel("e", &[]), sel("f", &[])],
            vec![],
        ),
    ];
    for (expr, selectors, grouping) in table {
        let grouping = grouping.into_iter().map(str::to_owned).collect();
        assert_eq!(
            promql_names(expr),
            PromqlNames {
                selectors,
                grouping
            },
            "{expr}"
        );
    }
}
