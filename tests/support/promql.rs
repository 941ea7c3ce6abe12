//! The metric and label names a PromQL expression uses: a small lexer (strings,
//! label matchers, ranges, numbers and functions are told apart), enough for the
//! dashboards' queries, not a full parser. The dashboards test checks with it that
//! every name a panel uses is one flujo exports; Prometheus itself (in the same test)
//! checks that each expression parses and returns data.

use std::collections::BTreeSet;

/// Names used by one expression.
#[derive(Debug, Default, PartialEq)]
pub struct PromRefs {
    /// Metric names (selectors).
    pub metrics: BTreeSet<String>,
    /// Label names (matchers, `by`/`without`/`on`/`ignoring`/`group_*` lists).
    pub labels: BTreeSet<String>,
    /// Each series selector as written: a metric name with its label matchers, if any
    /// (`flujo_sales_total{category=~"$category"}`).
    pub selectors: BTreeSet<String>,
}

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
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// Metric names and label names of a PromQL expression (a small lexer: strings,
/// label matchers, ranges, numbers and functions are told apart; enough for the
/// dashboards' queries, not a full parser).
pub fn promql_refs(expr: &str) -> PromRefs {
    let s: Vec<char> = expr.chars().collect();
    let mut refs = PromRefs::default();
    let is_ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_string = |i: usize| -> usize {
        let quote = s[i];
        let mut j = i + 1;
        while j < s.len() && s[j] != quote {
            if s[j] == '\\' && quote != '`' {
                j += 1;
            }
            j += 1;
        }
        j + 1
    };
    let read_ident = |i: usize| -> (String, usize) {
        let mut j = i;
        while j < s.len() && is_ident(s[j]) {
            j += 1;
        }
        (s[i..j].iter().collect(), j)
    };
    let next_non_space = |mut j: usize| -> (Option<char>, usize) {
        while j < s.len() && s[j].is_whitespace() {
            j += 1;
        }
        (s.get(j).copied(), j)
    };
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '{' {
            // Label matchers: `name op "value"`, comma separated.
            i += 1;
            while i < s.len() && s[i] != '}' {
                if s[i] == '"' || s[i] == '\'' || s[i] == '`' {
                    i = skip_string(i);
                } else if is_ident_start(s[i]) {
                    let (name, j) = read_ident(i);
                    refs.labels.insert(name);
                    i = j;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == '[' {
            while i < s.len() && s[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let (ident, j) = read_ident(i);
            let lower = ident.to_ascii_lowercase();
            let (next, k) = next_non_space(j);
            i = j;
            if LABEL_LISTS.contains(&lower.as_str()) {
                if next == Some('(') {
                    let mut m = k + 1;
                    while m < s.len() && s[m] != ')' {
                        if is_ident_start(s[m]) {
                            let (label, n) = read_ident(m);
                            refs.labels.insert(label);
                            m = n;
                        } else {
                            m += 1;
                        }
                    }
                    i = m + 1;
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
                || next == Some('(')
            {
                // an operator, an aggregation or a function call
            } else {
                let mut selector = ident.clone();
                if next == Some('{') {
                    let mut m = k + 1;
                    while m < s.len() && s[m] != '}' {
                        m = if s[m] == '"' || s[m] == '\'' || s[m] == '`' {
                            skip_string(m)
                        } else {
                            m + 1
                        };
                    }
                    selector.extend(&s[k..(m + 1).min(s.len())]);
                }
                refs.selectors.insert(selector);
                refs.metrics.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_lexer_finds_metrics_and_labels() {
        let r = promql_refs(
            r#"histogram_quantile(0.99, sum by (le, transport) (rate(flujo_ingest_duration_seconds_bucket{kind=~"a|b", x!="}"}[5m]))) / on(instance) group_left(version) flujo_build_info or vector(0)"#,
        );
        let metrics: Vec<&str> = r.metrics.iter().map(String::as_str).collect();
        assert_eq!(
            metrics,
            ["flujo_build_info", "flujo_ingest_duration_seconds_bucket"]
        );
        let labels: Vec<&str> = r.labels.iter().map(String::as_str).collect();
        assert_eq!(
            labels,
            ["instance", "kind", "le", "transport", "version", "x"]
        );
        let selectors: Vec<&str> = r.selectors.iter().map(String::as_str).collect();
        assert_eq!(
            selectors,
            [
                "flujo_build_info",
                r#"flujo_ingest_duration_seconds_bucket{kind=~"a|b", x!="}"}"#
            ]
        );
        let r = promql_refs("sum(rate(flujo_sales_total[1m])) by (category) > bool 0.5e3");
        assert_eq!(r.metrics.len(), 1);
        assert!(r.labels.contains("category"));
    }
}
