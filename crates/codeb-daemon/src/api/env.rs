//! `GET /api/v1/projects/{name}/env?environment=E`: the values of a project environment's
//! env file, for `we scale k8s` to render the Kubernetes Secret from (the env file lives on
//! this host only). Admins and the project's owners (`env_read`); each answer is audited
//! with the keys it carried, never the values, and nothing here logs a value.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use codeb_api::{Action, EnvQuery, EnvValues, codes};
use serde_json::json;

use super::{Api, ApiError, environment, project_name};

pub async fn env_values(
    State(api): State<Arc<Api>>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Result<Json<EnvValues>, ApiError> {
    project_name(&name)?;
    let caller = api.authorize(&h, Action::EnvRead, Some(&name)).await?;
    let env = environment(q.environment.as_deref().unwrap_or("production"))?;
    let project = super::registry::load_project(&api, &name).await?;
    let Some(e) = project
        .spec
        .environments
        .iter()
        .find(|e| e.name == env.as_str())
    else {
        return Err(ApiError::bad(format!(
            "project `{name}` has no {env} environment in the registry"
        )));
    };
    let values = match &e.env_file {
        None => None,
        Some(f) => {
            let path = std::path::PathBuf::from(f);
            let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(&path))
                .await
                .map_err(ApiError::internal)?
                .map_err(|err| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        codes::UNPROCESSABLE,
                        format!(
                            "the env file of {name}/{env} ({f}) cannot be read: {err}; create it (mode 600) or fix the registry's env_file"
                        ),
                    )
                })?;
            // The parse error names a line and a key, never a value.
            let parsed = codeb_api::k8s::parse_env_file(&text).map_err(|m| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    codes::UNPROCESSABLE,
                    format!("the env file of {name}/{env} ({f}): {m}"),
                )
            })?;
            Some(parsed)
        }
    };
    let keys: Vec<&String> = values.iter().flat_map(|v| v.keys()).collect();
    api.audit(
        &caller,
        Action::EnvRead,
        &format!("{name}/{env}"),
        Some(&name),
        &json!({ "environment": env.as_str(), "variables": keys }),
        "ok",
    )
    .await;
    Ok(Json(EnvValues {
        environment: env.as_str().to_owned(),
        values,
    }))
}
