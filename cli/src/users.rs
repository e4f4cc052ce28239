//! `drover users ...` and `drover passwd`: users, their roles and passwords
//! through `/api/v1/users`. Passwords never come from the command line: a
//! file (`-` for stdin), the terminal without echo, or one line of stdin.

use anyhow::{Context as _, bail};
use chrono::Utc;
use drover_api::users::{ChangePassword, CreateUser, Grant, PatchUser, ResetPassword, UserInfo};
use drover_api::{Items, bootstrap::Secret};
use reqwest::Method;

use crate::cli::{NewPasswordArgs, OutputFormat, PasswdArgs, UserGrantsArgs, UsersCommand};
use crate::commands::{Context, Prompt, present, pretty};
use crate::manager_client::{Credentials, NO_BODY, NO_QUERY, PasswordSource, decode};
use crate::remote_hosts::read_secret;
use crate::render;

pub async fn users(ctx: &Context, command: UsersCommand, prompt: &mut dyn Prompt) -> anyhow::Result<String> {
    match command {
        UsersCommand::List => {
            let value = ctx.client.get(&["users"], NO_QUERY).await?;
            present(ctx, value, |list: &Items<UserInfo>| render::users_table(&list.items, Utc::now()))
        }
        UsersCommand::Show(args) => {
            let value = ctx.client.get(&["users", &args.name], NO_QUERY).await?;
            present(ctx, value, |u: &UserInfo| render::user_detail(u, Utc::now()))
        }
        UsersCommand::Create(args) => {
            let password = new_password(&args.password, prompt, &format!("user {}", args.name))?;
            let body = CreateUser { username: args.name.clone(), password: Secret::new(password), grants: args.roles };
            let value = ctx.client.send_json(Method::POST, &["users"], Some(&body)).await?;
            present(ctx, value, |u: &UserInfo| format!("created user {} with {}\n", u.username, roles(&u.grants)))
        }
        UsersCommand::Grant(args) => change_grants(ctx, &args, true).await,
        UsersCommand::Revoke(args) => change_grants(ctx, &args, false).await,
        UsersCommand::Disable(args) => set_disabled(ctx, &args.name, true).await,
        UsersCommand::Enable(args) => set_disabled(ctx, &args.name, false).await,
        UsersCommand::Delete(args) => {
            let user: UserInfo = decode(ctx.client.get(&["users", &args.name], NO_QUERY).await?)?;
            if !args.yes {
                if !prompt.is_interactive() {
                    bail!(
                        "refusing to delete user {} without confirmation: stdin is not a terminal; pass --yes",
                        user.username
                    );
                }
                let question = format!(
                    "Delete user {} (roles: {})? Their API tokens and sessions end. This cannot be undone. [y/N] ",
                    user.username,
                    roles(&user.grants)
                );
                if !prompt.confirm(&question).context("read the answer")? {
                    bail!("not confirmed; user {} was not deleted", user.username);
                }
            }
            ctx.client.call(Method::DELETE, &["users", &user.username], NO_QUERY, NO_BODY).await?;
            Ok(match ctx.output {
                OutputFormat::Json => String::new(),
                OutputFormat::Table => format!("deleted user {}\n", user.username),
            })
        }
        UsersCommand::ResetPassword(args) => {
            let password = new_password(&args.password, prompt, &format!("user {}", args.name))?;
            let body = ResetPassword { password: Secret::new(password) };
            ctx.client.call(Method::PUT, &["users", &args.name, "password"], NO_QUERY, Some(&body)).await?;
            Ok(match ctx.output {
                OutputFormat::Json => String::new(),
                OutputFormat::Table => {
                    format!("password of user {} set; their console sessions were signed out\n", args.name)
                }
            })
        }
    }
}

/// `drover passwd`: the signed-in user's own password.
pub async fn passwd(ctx: &Context, args: &PasswdArgs, prompt: &mut dyn Prompt) -> anyhow::Result<String> {
    let (current, file) = match ctx.client.credentials() {
        Credentials::Password { password, source, .. } => {
            let file = match source {
                PasswordSource::File(path) => Some(path.clone()),
                PasswordSource::Flag => None,
            };
            (password.clone(), file)
        }
        Credentials::ApiToken(_) => {
            if !prompt.is_interactive() {
                bail!(
                    "drover passwd needs your current password: sign in with --user and --password-file \
                     instead of an API token, or run it at a terminal"
                );
            }
            (prompt.secret("Current password: ").context("read the current password")?, None)
        }
    };
    let new = new_password(&args.password, prompt, "you")?;
    let body = ChangePassword { current_password: Secret::new(current), new_password: Secret::new(new) };
    ctx.client.call(Method::PUT, &["users", "me", "password"], NO_QUERY, Some(&body)).await?;
    let mut out = "password changed; your console sessions were signed out (API tokens stay valid)\n".to_owned();
    if let Some(file) = file {
        out.push_str(&format!(
            "note: the CLI signed in with the password in {}; put the new one there for later commands\n",
            file.display()
        ));
    }
    Ok(match ctx.output {
        OutputFormat::Json => String::new(),
        OutputFormat::Table => out,
    })
}

/// A new password: from the file, else typed twice at the terminal, else one
/// line of stdin.
fn new_password(args: &NewPasswordArgs, prompt: &mut dyn Prompt, whose: &str) -> anyhow::Result<String> {
    if let Some(file) = &args.new_password_file {
        return read_secret(file, "new password");
    }
    if !prompt.is_interactive() {
        let line = prompt.secret("").context("read the new password from stdin")?;
        if line.is_empty() {
            bail!("no new password: stdin is empty; give --new-password-file FILE or run at a terminal");
        }
        return Ok(line);
    }
    let first = prompt.secret(&format!("New password for {whose}: ")).context("read the new password")?;
    let again = prompt.secret("Repeat the new password: ").context("read the new password")?;
    if first != again {
        bail!("the passwords differ; nothing was changed");
    }
    if first.is_empty() {
        bail!("no new password given; nothing was changed");
    }
    Ok(first)
}

fn roles(grants: &[Grant]) -> String {
    render::grants_inline(grants)
}

/// Reads the user, adds (`grant`) or removes the roles, and sends the whole
/// list back.
async fn change_grants(ctx: &Context, args: &UserGrantsArgs, grant: bool) -> anyhow::Result<String> {
    let user: UserInfo = decode(ctx.client.get(&["users", &args.name], NO_QUERY).await?)?;
    let (grants, unchanged) = edit_grants(&user.grants, &args.roles, grant);
    if !grant && !unchanged.is_empty() {
        bail!(
            "user {} does not have {}; their roles: {}",
            user.username,
            render::grants_inline(&unchanged),
            roles(&user.grants)
        );
    }
    if grants == user.grants {
        return match ctx.output {
            OutputFormat::Json => pretty(&user),
            OutputFormat::Table => Ok(format!("user {} already has {}\n", user.username, roles(&args.roles))),
        };
    }
    let body = PatchUser { grants: Some(grants), disabled: None };
    let value = ctx.client.send_json(Method::PATCH, &["users", &user.username], Some(&body)).await?;
    present(ctx, value, |u: &UserInfo| format!("user {} now has {}\n", u.username, roles(&u.grants)))
}

/// The grants after adding or removing `change`, and the ones of `change`
/// that were already held (adding) or not held (removing).
pub fn edit_grants(held: &[Grant], change: &[Grant], add: bool) -> (Vec<Grant>, Vec<Grant>) {
    let mut grants = held.to_vec();
    let mut unchanged = Vec::new();
    for g in change {
        let has = grants.contains(g);
        match (add, has) {
            (true, false) => grants.push(g.clone()),
            (false, true) => grants.retain(|x| x != g),
            _ => unchanged.push(g.clone()),
        }
    }
    (grants, unchanged)
}

async fn set_disabled(ctx: &Context, name: &str, disabled: bool) -> anyhow::Result<String> {
    let body = PatchUser { grants: None, disabled: Some(disabled) };
    let value = ctx.client.send_json(Method::PATCH, &["users", name], Some(&body)).await?;
    present(ctx, value, |u: &UserInfo| {
        if disabled {
            format!("disabled user {}; they cannot sign in and their console sessions ended\n", u.username)
        } else {
            format!("enabled user {}\n", u.username)
        }
    })
}

#[cfg(test)]
mod tests {
    use drover_api::users::Role;

    use super::*;

    #[test]
    fn grants_are_added_and_removed_once() {
        let op = Grant::on(Role::Operator, "prod");
        let viewer = Grant::global(Role::Viewer);
        let (g, same) = edit_grants(std::slice::from_ref(&viewer), &[op.clone(), viewer.clone()], true);
        assert_eq!((g, same), (vec![viewer.clone(), op.clone()], vec![viewer.clone()]));
        let (g, missing) = edit_grants(&[viewer.clone(), op.clone()], &[op.clone(), Grant::global(Role::Admin)], false);
        assert_eq!((g, missing), (vec![viewer], vec![Grant::global(Role::Admin)]));
    }
}
