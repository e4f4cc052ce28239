//! Drover service types: descriptors with typed parameters and templates, configuration
//! resolution, and rendering of a role into the files, process and health checks an agent runs.
//! The manager alone uses this crate; the software itself comes in parcels (`drover-parcels`).
//!
//! - [`descriptor`]: `parcels/<service>/service.toml` + `templates/`, validated into a [`Catalog`];
//! - [`dashboard`]: the charts of a type's console dashboard, checked against its metric sources;
//! - [`logformat`]: `[role_types.log]`: rotation and the shipped line formats (redis, zookeeper, nginx);
//! - [`params`]: parameter kinds, validation and normalisation of values, masking of secrets;
//! - [`config`]: values at service / group / role level, effective values, patches, changes;
//! - [`render`]: a role's context, templates rendered in strict mode, `${ROLE_DIR}` contract.
//!
//! The format is documented in `docs/service-descriptors.md`.

pub mod config;
pub mod dashboard;
pub mod descriptor;
pub mod logformat;
pub mod params;
pub mod render;

pub use descriptor::{Catalog, DescriptorError, ServiceType};
