//! Enrollment tokens (for agents) and API tokens (for scripts and CI): how
//! they are asked for and what the manager answers. A token's secret is in
//! the answer that creates it and never again.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Items;
use crate::model::{EnrollmentTokenInfo, Labels};
use crate::whole;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Lifetime in seconds (default 3600, at most one year).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub ttl_seconds: Option<u64>,
    /// How many hosts may enroll with the token (default 1, at most 100000).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, maximum = 100_000)]
    pub max_uses: Option<u32>,
    /// Labels given to every host enrolled with the token.
    #[serde(default)]
    #[schema(schema_with = crate::hosts::labels_schema)]
    pub labels: Labels,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    pub id: String,
    /// The token to give agents (`--token` / `DROVER_TOKEN`). It carries the
    /// CA fingerprint; it is shown once and cannot be retrieved later.
    pub token: String,
    pub expires_at: String,
    pub max_uses: u32,
    pub labels: Labels,
    /// SHA-256 of the manager's CA certificate.
    pub ca_fingerprint: String,
}

/// The answer of `GET /api/v1/enrollment-tokens`.
pub type EnrollmentTokenList = Items<EnrollmentTokenInfo>;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    /// What the token is for, e.g. "ci-pipeline": 1-100 characters, not only
    /// spaces, no control characters (spaces around it are dropped).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// Lifetime in seconds (at most ten years); omitted means the manager's
    /// default (`--api-token-ttl`, 90 days unless set).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub ttl_seconds: Option<u64>,
    /// What the token may do, each grant within the user's own; omitted
    /// means whatever the user may do (now and after any change to the
    /// user's roles).
    #[serde(default)]
    #[schema(min_items = 1)]
    pub grants: Option<Vec<crate::users::Grant>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiToken {
    pub id: String,
    pub name: String,
    /// Use as `Authorization: Bearer <token>`. Shown once.
    pub token: String,
    pub expires_at: Option<String>,
}

/// An API token as listed to its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiTokenInfo {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Last time the token authenticated a request (to the minute).
    #[serde(default)]
    pub last_used_at: Option<String>,
    /// The token's own grants; absent means its user's.
    #[serde(default)]
    pub grants: Option<Vec<crate::users::Grant>>,
}

/// The answer of `GET /api/v1/api-tokens`.
pub type ApiTokenList = Items<ApiTokenInfo>;
