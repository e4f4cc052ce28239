//! Parcels: the repository's list with each version's state per cluster and
//! host, uploads, the parcels a cluster wants, and the cluster-level
//! lifecycle commands (distribute, activate, deactivate, remove).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A parcel lifecycle command for every host of a cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParcelCommand {
    /// `distribute`, `activate`, `deactivate` or `remove`.
    pub name: String,
    /// Parcel name, e.g. `redis`.
    pub parcel: String,
    /// Version; for `deactivate` it may be omitted.
    #[serde(default)]
    pub version: Option<String>,
}

/// One piece of software in a parcel.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ParcelComponent {
    /// The Debian package name, e.g. `redis-server`.
    pub name: String,
    /// The upstream version, e.g. `7.0.15`.
    pub version: String,
    /// The full package version, e.g. `5:7.0.15-1~deb12u10`.
    pub pkg_version: String,
}

/// A parcel's entry in a repository manifest.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ParcelEntry {
    /// The file name, `NAME-VERSION-DISTRO.parcel`.
    pub parcel_name: String,
    pub name: String,
    pub version: String,
    pub distro: String,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    pub size: u64,
    pub components: Vec<ParcelComponent>,
    pub depends: Vec<String>,
    pub conflicts: Vec<String>,
    pub provides: Vec<String>,
}

/// Where a cluster wants a parcel version to be on its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParcelTarget {
    /// On every host, unpacked, not in use.
    Distributed,
    /// In use: the version its services run.
    Active,
}

impl ParcelTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            ParcelTarget::Distributed => "distributed",
            ParcelTarget::Active => "active",
        }
    }

    /// The target of its name; `None` for any other text.
    pub fn parse(s: &str) -> Option<ParcelTarget> {
        match s {
            "distributed" => Some(ParcelTarget::Distributed),
            "active" => Some(ParcelTarget::Active),
            _ => None,
        }
    }
}

/// A parcel version on one host, as its agent last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostParcelState {
    /// Not on the host.
    Available,
    Downloading,
    Distributed,
    Active,
    Failed,
    /// The agent reported a state this manager does not know.
    Unknown,
}

impl HostParcelState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostParcelState::Available => "available",
            HostParcelState::Downloading => "downloading",
            HostParcelState::Distributed => "distributed",
            HostParcelState::Active => "active",
            HostParcelState::Failed => "failed",
            HostParcelState::Unknown => "unknown",
        }
    }

    /// The state an agent reported; one this manager does not know is `Unknown`.
    pub fn parse(s: &str) -> HostParcelState {
        match s {
            "downloading" => HostParcelState::Downloading,
            "distributed" => HostParcelState::Distributed,
            "active" => HostParcelState::Active,
            "failed" => HostParcelState::Failed,
            _ => HostParcelState::Unknown,
        }
    }
}

/// A parcel version on one host of a cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HostParcel {
    pub host_id: String,
    pub state: HostParcelState,
    /// How much is downloaded, while `downloading`.
    pub percent: Option<u64>,
    /// Why it `failed`; empty otherwise.
    pub error: String,
}

/// A parcel version in one cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ParcelInCluster {
    pub cluster: String,
    /// What the cluster wants; null when it does not use this version.
    pub target: Option<ParcelTarget>,
    pub hosts: Vec<HostParcel>,
}

/// A known parcel with its state in every cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ParcelView {
    pub parcel_name: String,
    pub name: String,
    pub version: String,
    pub distro: String,
    pub sha256: String,
    pub size: u64,
    pub components: Vec<ParcelComponent>,
    pub depends: Vec<String>,
    pub source: Source,
    pub clusters: Vec<ParcelInCluster>,
}

/// The answer of `GET /parcels`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ParcelList {
    pub items: Vec<ParcelView>,
    /// The remote repositories this manager follows.
    pub repositories: Vec<RemoteState>,
}

#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// `NAME-VERSION-DISTRO.parcel`, under the rules of
    /// [`drover_parcels::name`].
    #[param(
        pattern = r"^[a-z0-9][a-z0-9_]{0,63}-[A-Za-z0-9][A-Za-z0-9.+~_-]{0,127}-[a-z0-9][a-z0-9._]{0,31}\.parcel$"
    )]
    pub file_name: String,
    /// What the uploader says the file's sha256 is (hex); checked.
    #[param(pattern = r"^\s*[0-9A-Fa-f]{64}\s*$")]
    pub sha256: String,
}

/// A parcel version a cluster wants on its hosts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterParcel {
    pub cluster: String,
    pub name: String,
    pub version: String,
    pub file_name: String,
    pub sha256: String,
    pub size: u64,
    pub target: ParcelTarget,
    /// When it was last activated, Unix milliseconds (0: never).
    pub activated_at: i64,
    /// When the target last changed, Unix milliseconds.
    pub updated_at: i64,
}

/// A cluster-level parcel command: which one, for which parcel version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum NewParcelCommand {
    /// Download and unpack the version on every host of the cluster.
    Distribute { parcel: String, version: String },
    /// Make the (distributed) version the one the cluster's services use.
    Activate { parcel: String, version: String },
    /// Stop using the version (default: the active one).
    Deactivate {
        parcel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// Delete the (inactive) version from every host.
    Remove { parcel: String, version: String },
}

// Written out: the derived schema of an internally tagged enum would let
// through the unknown fields the server refuses.
impl utoipa::PartialSchema for NewParcelCommand {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let variant = |name: &str, description: &str, version_required: bool| {
            let string = || ObjectBuilder::new().schema_type(Type::String);
            let mut o = ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(description))
                .property("name", string().enum_values(Some([name])))
                .required("name")
                .property("parcel", string().description(Some("Parcel name, e.g. `redis`.")))
                .required("parcel")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            if version_required {
                o = o.property("version", string()).required("version");
            } else {
                o = o.property(
                    "version",
                    ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
                        .description(Some("Default: the active version.")),
                );
            }
            o
        };
        OneOfBuilder::new()
            .description(Some("A cluster-level parcel command: which one, for which parcel version."))
            .item(variant("distribute", "Download and unpack the version on every host of the cluster.", true))
            .item(variant("activate", "Make the (distributed) version the one the cluster's services use.", true))
            .item(variant("deactivate", "Stop using the version (default: the active one).", false))
            .item(variant("remove", "Delete the (inactive) version from every host.", true))
            .into()
    }
}

impl ToSchema for NewParcelCommand {}

impl From<NewParcelCommand> for ParcelCommand {
    fn from(c: NewParcelCommand) -> Self {
        let (name, parcel, version) = match c {
            NewParcelCommand::Distribute { parcel, version } => ("distribute", parcel, Some(version)),
            NewParcelCommand::Activate { parcel, version } => ("activate", parcel, Some(version)),
            NewParcelCommand::Deactivate { parcel, version } => ("deactivate", parcel, version),
            NewParcelCommand::Remove { parcel, version } => ("remove", parcel, Some(version)),
        };
        ParcelCommand { name: name.to_owned(), parcel, version }
    }
}

/// Where a parcel can be had from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// In the manager's own repository: agents can fetch it now.
    Local,
    /// Only in a remote repository; distributing it downloads it first.
    Remote { url: String },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
pub struct RemoteState {
    pub url: String,
    pub refreshed_at: Option<i64>,
    pub error: Option<String>,
    pub parcels: usize,
}
