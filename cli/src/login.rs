//! `drover login URL`: checks that the manager can be reached, verified and
//! signed in to (`GET /api/v1/users/me`), then saves its URL, the user and
//! how to verify it in the config file (see [`crate::settings`]).

use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::cli::{GlobalArgs, LoginArgs};
use crate::manager_client::{NO_QUERY, decode};
use crate::settings::{Config, ConfigFile, resolve};
use crate::trust::Trust;

/// Runs `drover login`; returns what it prints.
pub async fn login(
    g: &GlobalArgs,
    args: &LoginArgs,
    config: &Config,
    default_password_file: &Path,
) -> anyhow::Result<String> {
    let path = config
        .path
        .as_deref()
        .context("no place for the config file: neither --config (DROVER_CONFIG), XDG_CONFIG_HOME nor HOME is set")?;
    let resolved = resolve(g, config, Some(&args.url))?;
    let client = resolved.client(default_password_file)?;
    let me: Me = decode(client.get(&["users", "me"], NO_QUERY).await?)?;
    let absolute = |p: &Path| std::path::absolute(p).with_context(|| format!("absolute path of {}", p.display()));
    let (ca_pin, ca_cert) = match &resolved.trust {
        Trust::System => (None, None),
        Trust::Pin(fp) => (Some(fp.to_string()), None),
        Trust::CaCert { path, .. } => (None, Some(absolute(path)?)),
    };
    let password_file = resolved.credentials.password_file.as_deref().map(absolute).transpose()?;
    let url = client.display_url();
    let file = ConfigFile {
        url: Some(url.clone()),
        user: Some(me.username.clone()),
        ca_pin,
        ca_cert,
        password_file: password_file.clone(),
    };
    file.save(path)?;

    let mut out = format!("Logged in to {url} as {}.\n", me.username);
    if args.url.scheme() == "https" {
        out.push_str(&format!("Verified with {}.\n", resolved.trust.describe()));
    } else if !is_loopback(&args.url) {
        out.push_str("Warning: plain HTTP; passwords and tokens cross the network unencrypted.\n");
    }
    out.push_str(&format!(
        "Saved to {}; later commands use this manager, user and verification unless flags or DROVER_* variables say otherwise.\n",
        path.display()
    ));
    match password_file {
        Some(p) => out.push_str(&format!("The password is read from {} (the file's path is saved, not the password).\n", p.display())),
        None => out.push_str(
            "No password or token is saved: give --password-file, --password or --api-token (or DROVER_PASSWORD_FILE, DROVER_PASSWORD, DROVER_API_TOKEN) to later commands.\n",
        ),
    }
    Ok(out)
}

/// The part of `GET /api/v1/users/me` login needs.
#[derive(Deserialize)]
struct Me {
    username: String,
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
