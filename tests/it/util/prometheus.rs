//! What the Prometheus tests need: promtool's path, the series an
//! exposition holds, and the metric and label names a PromQL expression
//! uses, read by a small lexer (enough for the shipped rules and
//! dashboard: selectors, label matchers, grouping clauses, functions,
//! aggregations, numbers, durations, strings and Grafana's `$variables`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// promtool, unpacked from Debian's `prometheus` package by
/// `scripts/install-test-tools`.
pub fn promtool() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/prometheus/usr/bin/promtool");
    assert!(
        path.exists(),
        "promtool is not installed at {}: run scripts/install-test-tools",
        path.display()
    );
    path
}

/// Labels Prometheus adds to every scraped series (the target's), which
/// no exposition carries.
pub const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// The series of one or more expositions (Prometheus text or OpenMetrics):
/// each sample name (`_total`, `_bucket`, `_sum`, `_count` included, as
/// Prometheus stores them) with the label names seen on it.
#[derive(Debug, Default)]
pub struct Served {
    pub series: BTreeMap<String, BTreeSet<String>>,
}

impl Served {
    /// Adds the samples of `text`.
    pub fn add(&mut self, text: &str) {
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = self.series.entry(line[..end].to_owned()).or_default();
            if line[end..].starts_with('{') {
                let chars: Vec<char> = line[end..].chars().collect();
                let mut at = 0;
                labels.extend(matchers(&chars, &mut at));
            }
        }
    }

    /// Every label name served on any series, and the target labels.
    fn all_labels(&self) -> BTreeSet<&str> {
        let served = self.series.values().flatten().map(String::as_str);
        served.chain(TARGET_LABELS).collect()
    }

    /// What in `expr` the expositions do not serve: metric names, label
    /// names in a selector's matchers (checked against that metric's), and
    /// label names in `by`, `without`, `on`, `ignoring` and `group_*`
    /// (checked against every metric's). Empty when all is served.
    pub fn unknown_in(&self, expr: &str) -> Vec<String> {
        let names = promql_names(expr);
        let mut problems = Vec::new();
        for s in &names.selectors {
            let Some(labels) = self.series.get(&s.metric) else {
                let hint = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .map(|suffix| format!("{}{suffix}", s.metric))
                    .filter(|n| self.series.contains_key(n))
                    .collect::<Vec<_>>();
                problems.push(if hint.is_empty() {
                    format!("metric {} is not served", s.metric)
                } else {
                    format!(
                        "metric {} is not served (but {})",
                        s.metric,
                        hint.join(", ")
                    )
                });
                continue;
            };
            for label in &s.labels {
                if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                    problems.push(format!("{} has no label {label}", s.metric));
                }
            }
        }
        let all = self.all_labels();
        for label in &names.grouping {
            if !all.contains(label.as_str()) {
                problems.push(format!("no served series has the label {label}"));
            }
        }
        problems
    }
}

/// One instant or range vector selector: `metric{label="…", …}`.
#[derive(Debug, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub labels: Vec<String>,
}

/// The names a PromQL expression uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PromqlNames {
    pub selectors: Vec<Selector>,
    /// Label names of `by (…)`, `without (…)`, `on (…)`, `ignoring (…)`,
    /// `group_left (…)` and `group_right (…)`, and of a `{…}` with no
    /// metric name before it.
    pub grouping: Vec<String>,
}

/// Binary operators and modifiers, and the number literals (`Inf`, `NaN`),
/// compared in lower case as PromQL does.
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn skip_space(chars: &[char], at: &mut usize) {
    while *at < chars.len() && chars[*at].is_whitespace() {
        *at += 1;
    }
}

fn ident(chars: &[char], at: &mut usize) -> String {
    let start = *at;
    while *at < chars.len() && is_ident(chars[*at]) {
        *at += 1;
    }
    chars[start..*at].iter().collect()
}

/// Skips a quoted string starting at `at` (its opening quote).
fn skip_string(chars: &[char], at: &mut usize) {
    let quote = chars[*at];
    *at += 1;
    while *at < chars.len() && chars[*at] != quote {
        if chars[*at] == '\\' && quote != '`' {
            *at += 1;
        }
        *at += 1;
    }
    *at += 1;
}

/// The label names of a `{…}` matcher list (or of an exposition's label
/// set) starting at `at`, its opening brace; leaves `at` after the closing
/// one.
fn matchers(chars: &[char], at: &mut usize) -> Vec<String> {
    let mut out = Vec::new();
    *at += 1;
    loop {
        skip_space(chars, at);
        match chars.get(*at) {
            None => return out,
            Some('}') => {
                *at += 1;
                return out;
            }
            Some(',') => *at += 1,
            Some(_) => {
                let name = ident(chars, at);
                skip_space(chars, at);
                while *at < chars.len() && matches!(chars[*at], '=' | '!' | '~') {
                    *at += 1;
                }
                skip_space(chars, at);
                if matches!(chars.get(*at), Some('"' | '\'' | '`')) {
                    skip_string(chars, at);
                }
                if name.is_empty() {
                    // Not a matcher list after all; stop rather than loop.
                    *at += 1;
                } else {
                    out.push(name);
                }
            }
        }
    }
}

/// The metric and label names `expr` uses.
pub fn promql_names(expr: &str) -> PromqlNames {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = PromqlNames::default();
    // The selector a following `{…}` belongs to.
    let mut open_selector: Option<usize> = None;
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        if c.is_whitespace() {
            at += 1;
            continue;
        }
        let selector = open_selector.take();
        match c {
            '#' => {
                while at < chars.len() && chars[at] != '\n' {
                    at += 1;
                }
            }
            '"' | '\'' | '`' => skip_string(&chars, &mut at),
            // A range, or a subquery's range and step: durations only.
            '[' => {
                while at < chars.len() && chars[at] != ']' {
                    at += 1;
                }
                at += 1;
            }
            '{' => {
                let labels = matchers(&chars, &mut at)
                    .into_iter()
                    .filter(|name| name != "__name__");
                match selector {
                    Some(i) => names.selectors[i].labels.extend(labels),
                    None => names.grouping.extend(labels),
                }
            }
            // A Grafana variable (`$instance`, `${datasource}`).
            '$' => {
                at += 1;
                if chars.get(at) == Some(&'{') {
                    while at < chars.len() && chars[at] != '}' {
                        at += 1;
                    }
                    at += 1;
                } else {
                    ident(&chars, &mut at);
                }
            }
            // A number or a duration (`0.95`, `1e3`, `5m`, `1h30m`).
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(at + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                while at < chars.len() && (chars[at].is_ascii_alphanumeric() || chars[at] == '.') {
                    at += 1;
                }
            }
            c if is_ident_start(c) => {
                let word = ident(&chars, &mut at);
                let mut next = at;
                skip_space(&chars, &mut next);
                let before_paren = chars.get(next) == Some(&'(');
                let lower = word.to_ascii_lowercase();
                if GROUPING.contains(&word.as_str()) {
                    if before_paren {
                        at = next + 1;
                        while at < chars.len() && chars[at] != ')' {
                            skip_space(&chars, &mut at);
                            let label = ident(&chars, &mut at);
                            if !label.is_empty() {
                                names.grouping.push(label);
                            }
                            skip_space(&chars, &mut at);
                            // Past the comma (or anything else but the end).
                            if chars.get(at) != Some(&')') {
                                at += 1;
                            }
                        }
                        at += 1;
                    }
                } else if before_paren
                    || KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&word.as_str())
                {
                    // A function call, an aggregation or an operator.
                } else {
                    names.selectors.push(Selector {
                        metric: word,
                        labels: Vec::new(),
                    });
                    open_selector = Some(names.selectors.len() - 1);
                }
            }
            _ => at += 1,
        }
    }
    names
}
