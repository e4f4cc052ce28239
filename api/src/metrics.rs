//! Metrics: the query of stored series (`GET /api/v1/metrics/query`), the
//! list of series that exist (`GET /api/v1/metrics/series`) and the names of
//! the statistics, aggregations and resolutions they take.
//!
//! A series is one metric of one host or role with its labels: `cluster`,
//! `service`, `role`, `role_type`, `host` and the metric's own (`mount`,
//! `db`, ...). A selector picks series by name and labels, as Prometheus
//! writes it: `name`, `name{label="v",label!="v",label=~"re",label!~"re"}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Which rollup column a query reads per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    Avg,
    Min,
    Max,
    Last,
}

impl Stat {
    pub const ALL: [Stat; 4] = [Stat::Avg, Stat::Min, Stat::Max, Stat::Last];

    pub fn as_str(self) -> &'static str {
        match self {
            Stat::Avg => "avg",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Last => "last",
        }
    }

    pub fn parse(s: &str) -> Option<Stat> {
        Stat::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// How a query combines series per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    None,
    Sum,
    Avg,
    Min,
    Max,
}

impl Agg {
    pub const ALL: [Agg; 5] = [Agg::None, Agg::Sum, Agg::Avg, Agg::Min, Agg::Max];

    pub fn as_str(self) -> &'static str {
        match self {
            Agg::None => "none",
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
        }
    }

    pub fn parse(s: &str) -> Option<Agg> {
        Agg::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Where a query's points come from: every sample, 1-minute or 1-hour rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Resolution {
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
}

impl Resolution {
    /// The granularity of its points in seconds (raw points are kept per second).
    pub fn seconds(self) -> u64 {
        match self {
            Resolution::Raw => 1,
            Resolution::Minute => 60,
            Resolution::Hour => 3600,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricQuery {
    /// Series selector: `name` or `name{label="v",label!="v",label=~"re",label!~"re"}`
    /// over the labels `cluster`, `service`, `role`, `role_type`, `host` and the
    /// metric's own.
    #[param(example = "host_cpu_percent{cluster=\"prod\"}")]
    pub series: String,
    /// Start, RFC 3339 (default: an hour before `to`).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End, RFC 3339 (default: now).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Step, e.g. `30s`, `5m`, `1h` (default: the range / 300, rounded up to
    /// the resolution); at most 11,000 steps per series.
    #[param(example = "1m")]
    pub step: Option<String>,
    /// Combine series per step (default `none`: every series on its own).
    #[param(inline, value_type = Option<Agg>)]
    pub agg: Option<String>,
    /// With `agg`: the labels to group by, comma-separated (e.g. `service`,
    /// `role_type,host`); none: one series in all.
    #[param(example = "host")]
    pub by: Option<String>,
    /// The statistic of each step (default `avg`).
    #[param(inline, value_type = Option<Stat>)]
    pub stat: Option<String>,
}

/// One series of a query's answer: its labels (all of them, or the `by`
/// labels of an aggregate) and its points, oldest first. Steps without a
/// point are left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeriesValues {
    pub labels: BTreeMap<String, String>,
    /// Start of each step, Unix milliseconds.
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// The answer of `GET /api/v1/metrics/query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryResult {
    pub metric: String,
    /// RFC 3339.
    pub from: String,
    /// RFC 3339.
    pub to: String,
    pub step_seconds: u64,
    pub resolution: Resolution,
    pub series: Vec<SeriesValues>,
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Series selector (`name`, `name{...}` or `{...}`); none: every series.
    #[serde(rename = "match")]
    #[param(rename = "match")]
    pub selector: Option<String>,
}

/// A series that exists, with its latest value when one arrived since the
/// manager started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeriesInfo {
    pub metric: String,
    /// `host` or `role`.
    pub entity: String,
    pub labels: BTreeMap<String, String>,
    pub last_value: Option<f64>,
    /// RFC 3339.
    pub last_at: Option<String>,
}
