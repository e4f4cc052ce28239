//! REST handlers of users and roles under `/api/v1/users`; the rules are in
//! [`crate::domain::users`] and [`crate::domain::accounts`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
pub use drover_api::users::{ChangePassword, CreateUser, Me, PatchUser, ResetPassword, UserInfo, UserQuery};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, ErrorBody, Items};
use crate::AppState;
use crate::domain;

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/me", get(me))
        .route("/users/me/password", put(change_own_password))
        .route("/users/{name}", get(show).patch(update).delete(delete))
        .route("/users/{name}/password", put(reset_password))
}

/// The calling user, their roles and what they may do.
#[utoipa::path(get, operation_id = "get_me", path = "/api/v1/users/me", responses((status = 200, body = Me), (status = 401, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn me(caller: Caller) -> Json<Me> {
    let (permissions, cluster_permissions) = caller.actor().access.summary();
    Json(Me { user: caller.user.to_api(), permissions, cluster_permissions, via: caller.via.as_str().to_owned() })
}

/// Changes the calling user's password (checked against the current one).
/// Their console sessions end.
#[utoipa::path(put, operation_id = "change_own_password", path = "/api/v1/users/me/password", request_body = ChangePassword,
    responses((status = 204, description = "changed"), (status = 400, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn change_own_password(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    domain::accounts::change_password(
        &state,
        &caller.actor(),
        &caller.user,
        req.current_password.expose(),
        req.new_password.expose(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every user with their roles (needs `users.write`).
#[utoipa::path(get, operation_id = "list_users", path = "/api/v1/users", params(UserQuery), responses((status = 200, body = Items<UserInfo>)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(
    State(state): Shared,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<Items<UserInfo>>, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and 1000, got {limit}")));
    }
    Ok(Json(Items::new(domain::users::list(&state, &caller.actor(), limit).await?)))
}

/// Creates a user with a password and roles.
#[utoipa::path(post, operation_id = "create_user", path = "/api/v1/users", request_body = CreateUser,
    responses((status = 201, body = UserInfo), (status = 400, body = ErrorBody),
    (status = 409, description = "the user exists", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    State(state): Shared,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<impl IntoResponse, ApiError> {
    let user = domain::users::create(&state, &caller.actor(), &req.username, req.password.expose(), req.grants).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// One user (any user may read their own).
#[utoipa::path(get, operation_id = "get_user", path = "/api/v1/users/{name}", params(("name" = String, Path)),
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn show(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(domain::users::get(&state, &caller.actor(), &name).await?))
}

/// Replaces a user's roles, or disables (ending their sessions) or enables
/// them. The last enabled administrator cannot be demoted or disabled.
#[utoipa::path(patch, operation_id = "update_user", path = "/api/v1/users/{name}", params(("name" = String, Path)), request_body = PatchUser,
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody),
    (status = 409, description = "the last enabled administrator", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn update(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<PatchUser>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(domain::users::update(&state, &caller.actor(), &name, req.grants, req.disabled).await?))
}

/// Deletes a user with their API tokens and sessions. The last enabled
/// administrator cannot be deleted.
#[utoipa::path(delete, operation_id = "delete_user", path = "/api/v1/users/{name}", params(("name" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody),
    (status = 409, description = "the last enabled administrator", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    domain::users::delete(&state, &caller.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a user's password (an administrator's reset); their sessions end.
#[utoipa::path(put, operation_id = "reset_user_password", path = "/api/v1/users/{name}/password", params(("name" = String, Path)),
    request_body = ResetPassword,
    responses((status = 204, description = "set"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn reset_password(
    State(state): Shared,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ResetPassword>,
) -> Result<StatusCode, ApiError> {
    domain::users::reset_password(&state, &caller.actor(), &name, req.password.expose()).await?;
    Ok(StatusCode::NO_CONTENT)
}
