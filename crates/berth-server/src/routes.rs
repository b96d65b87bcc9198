//! Every route of the server, in one place.

use crate::controllers::{
    accounts, admin, costs, deployments, files, fine_tuning, generation, health, identity, managed_identity, metrics,
    models, operations, portal, quota,
};
use crate::headers::common_headers;
use crate::{AppState, ArmApiError, OpenAiApiError};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use berth_api::openai::{ChatCompletionRequest, CompletionRequest};

const ACCOUNT: &str =
    "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.CognitiveServices/accounts/{account}";

pub fn router(state: AppState) -> Router {
    let region = HeaderValue::from_str(&state.config().location).unwrap_or(HeaderValue::from_static("local"));
    let replica = crate::headers::replica_name(&state.config().replica);
    let mut r = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/portal", get(portal::index))
        .route("/portal/", get(portal::index))
        // The account's endpoint (what the demo and `berth account show` print) leads to the portal too.
        .route("/accounts/{account}/portal", get(portal::to_portal))
        .route("/accounts/{account}/portal/", get(portal::to_portal))
        .route("/portal/portal.js", get(portal::script))
        .route("/portal/portal.css", get(portal::style))
        .route("/subscriptions", get(accounts::list_subscriptions))
        .route("/subscriptions/{subscription}/providers/Microsoft.CognitiveServices/accounts", get(accounts::list_accounts))
        .route(
            "/subscriptions/{subscription}/providers/Microsoft.CognitiveServices/locations/{location}/operationResults/{operation}",
            get(operations::get_operation_status),
        )
        .route("/subscriptions/{subscription}/providers/Microsoft.CognitiveServices/locations/{location}/usages", get(quota::list_usages))
        .route("/subscriptions/{subscription}/providers/Microsoft.CognitiveServices/costs", get(costs::cost_report))
        .route(ACCOUNT, get(accounts::get_account).put(accounts::put_account).delete(accounts::delete_account))
        .route(&format!("{ACCOUNT}/regenerateKey"), post(accounts::regenerate_key))
        .route(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.CognitiveServices/accounts",
            get(accounts::list_accounts_in_group),
        )
        .route(&format!("{ACCOUNT}/deploymentDeletions"), get(costs::list_deletions))
        .route(&format!("{ACCOUNT}/listKeys"), post(accounts::list_keys))
        .route(&format!("{ACCOUNT}/models"), get(models::list_account_models))
        .route(&format!("{ACCOUNT}/models/import"), post(admin::import_model))
        .route(
            &format!("{ACCOUNT}/models/upload"),
            post(admin::upload_model).layer(DefaultBodyLimit::max(admin::MAX_MODEL_UPLOAD_BYTES)),
        )
        .route(&format!("{ACCOUNT}/deployments"), get(deployments::list_deployments))
        .route(
            &format!("{ACCOUNT}/deployments/{{deployment}}"),
            put(deployments::create_or_update_deployment)
                .get(deployments::get_deployment)
                .patch(deployments::update_deployment)
                .delete(deployments::delete_deployment),
        )
        .route(&format!("{ACCOUNT}/deployments/{{deployment}}/skus"), get(quota::list_deployment_skus))
        .route(&format!("{ACCOUNT}/deployments/{{deployment}}/lastHour"), get(deployments::deployment_last_hour))
        .route("/berth/v1/base-models", get(admin::list_base_models).post(admin::add_base_model))
        .route("/berth/v1/engine-pools", get(admin::list_engine_pools).post(admin::add_engine_pool))
        .route("/berth/v1/engine-pools/{name}", get(admin::show_engine_pool).delete(admin::remove_engine_pool))
        .route("/berth/v1/token", post(admin::issue_token))
        .route("/berth/v1/clock", post(costs::move_clock))
        .route("/berth/v1/tenants", post(identity::create_tenant))
        .route("/berth/v1/principals", post(identity::create_principal))
        .route(managed_identity::IDENTITY_TOKEN_PATH, get(managed_identity::identity_token))
        .route("/berth/v1/subscriptions", post(identity::create_subscription));
    // Role assignments at every scope level.
    for scope in
        ["", "/subscriptions/{subscription}", "/subscriptions/{subscription}/resourceGroups/{resource_group}", ACCOUNT]
    {
        r = r
            .route(
                &format!("{scope}/providers/Microsoft.Authorization/roleAssignments"),
                get(identity::list_assignments),
            )
            .route(
                &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{{assignment}}"),
                put(identity::put_assignment).get(identity::list_assignments).delete(identity::delete_assignment),
            );
    }
    // ARM paths are case-insensitive; clients write both spellings of the resource group collection.
    for groups in ["resourceGroups", "resourcegroups"] {
        r = r.route(
            &format!("/subscriptions/{{subscription}}/{groups}/{{resource_group}}"),
            put(accounts::put_resource_group).get(accounts::get_resource_group).delete(accounts::delete_resource_group),
        );
    }
    for prefix in ["", "/accounts/{account}"] {
        r = r
            .route(
                &format!("{prefix}/openai/deployments/{{deployment}}/chat/completions"),
                post(generation::on_deployment::<ChatCompletionRequest>),
            )
            .route(
                &format!("{prefix}/openai/deployments/{{deployment}}/completions"),
                post(generation::on_deployment::<CompletionRequest>),
            )
            // The v1 surface: the deployment in the body's `model`, no api-version.
            .route(&format!("{prefix}/openai/v1/chat/completions"), post(generation::on_v1::<ChatCompletionRequest>))
            .route(&format!("{prefix}/openai/v1/completions"), post(generation::on_v1::<CompletionRequest>));
        // Models, files and fine-tuning answer the same on both surfaces.
        for base in ["/openai", "/openai/v1"] {
            let at = format!("{prefix}{base}");
            r = r
                .route(&format!("{at}/models"), get(models::list_models))
                .route(&format!("{at}/models/{{model}}"), get(models::get_model))
                .route(
                    &format!("{at}/files"),
                    post(files::upload_file)
                        .layer(DefaultBodyLimit::max(berth_control::MAX_FILE_BYTES + (1 << 20)))
                        .get(files::list_files),
                )
                .route(&format!("{at}/files/{{file}}"), get(files::get_file).delete(files::delete_file))
                .route(&format!("{at}/files/{{file}}/content"), get(files::file_content))
                .route(&format!("{at}/fine_tuning/jobs"), post(fine_tuning::create_job).get(fine_tuning::list_jobs))
                .route(&format!("{at}/fine_tuning/jobs/{{job}}"), get(fine_tuning::get_job))
                .route(&format!("{at}/fine_tuning/jobs/{{job}}/{{action}}"), post(fine_tuning::job_action))
                .route(&format!("{at}/fine_tuning/jobs/{{job}}/events"), get(fine_tuning::list_events))
                .route(&format!("{at}/fine_tuning/jobs/{{job}}/checkpoints"), get(fine_tuning::list_checkpoints));
        }
    }
    let r = r
        .route("/metrics", get(metrics::scrape))
        .route_layer(axum::middleware::from_fn(crate::headers::tag_route))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::headers::count_http));
    layered(r.with_state(state), region, replica)
}

/// The layers every route gets, innermost first: a panic anywhere in a request becomes a 500 (the
/// process and other requests go on); refusals and that 500 take the error shape of their plane;
/// every answer gets its request id and region. Public so that a test can put a route that panics
/// under exactly these layers.
pub fn layered(routes: Router, region: HeaderValue, replica: HeaderValue) -> Router {
    routes
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(crate::rejections::panicked))
        .layer(crate::headers::request_log())
        .layer(axum::middleware::from_fn(crate::rejections::shape_rejections))
        .layer(axum::middleware::from_fn(move |req, next| common_headers(region.clone(), replica.clone(), req, next)))
}

async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/subscriptions") {
        ArmApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("The resource '{}' was not found.", uri.path()))
            .into_response()
    } else {
        OpenAiApiError::plain(StatusCode::NOT_FOUND, "404", "Resource not found").into_response()
    }
}
