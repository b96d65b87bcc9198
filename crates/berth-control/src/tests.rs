use crate::deployments::valid_resource_name;
use crate::{canonical_sku, Control, ControlConfig, DeploymentPutInput};

fn temp_control() -> (std::sync::Arc<Control>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("berth-control-{}-{}", std::process::id(), crate::new_hex_id()));
    let control = Control::open(ControlConfig::new(dir.clone(), "http://127.0.0.1:1".into())).unwrap();
    (control, dir)
}

#[test]
fn sku_names_are_case_insensitive() {
    assert_eq!(canonical_sku("standard"), Some("Standard"));
    assert_eq!(canonical_sku("GLOBALSTANDARD"), Some("GlobalStandard"));
    assert_eq!(canonical_sku("Premium"), None);
}

#[test]
fn resource_names_follow_arm_rules() {
    assert!(valid_resource_name("gpt-35-turbo-ft"));
    assert!(!valid_resource_name("a"));
    assert!(!valid_resource_name("-leading"));
    assert!(!valid_resource_name("has space"));
}

#[tokio::test]
async fn first_start_bootstraps_once_and_credentials_survive_a_restart() {
    let (control, dir) = temp_control();
    let creds = control.credentials().clone();
    let principal = control.authenticate_bearer(&creds.admin_token).unwrap();
    assert_eq!(principal.tenant_id, creds.tenant_id);
    assert!(control.authenticate_bearer("nope").is_err());
    drop(control);
    let again = Control::open(ControlConfig::new(dir.clone(), "http://127.0.0.1:2".into())).unwrap();
    assert_eq!(again.credentials().admin_token, creds.admin_token);
    assert_eq!(again.credentials().endpoint, "http://127.0.0.1:2");
    assert_eq!(again.accounts_in_subscription(&creds.subscription_id).unwrap().len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_put_for_an_unknown_model_fails_synchronously_and_stores_nothing() {
    let (control, dir) = temp_control();
    let c = control.credentials().clone();
    let account = berth_store::AccountKey {
        subscription_id: c.subscription_id,
        resource_group: c.resource_group,
        account: c.account,
    };
    let err = control
        .put_deployment(
            &account,
            "dep",
            DeploymentPutInput {
                sku_name: Some("standard".into()),
                sku_capacity: Some(1),
                model_name: Some("missing".into()),
                api_version: "2024-10-01".into(),
                caller: "t".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("'missing'"), "{err}");
    assert!(control.deployments(&account).unwrap().is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 12, item 3: an assignment id named by someone who can manage access elsewhere must not take
/// over (or strip) an assignment at a scope they do not manage.
#[tokio::test]
async fn a_role_assignment_id_cannot_be_reused_to_replace_anothers_assignment() {
    let (control, dir) = temp_control();
    let c = control.credentials().clone();
    let admin = control.authenticate_bearer(&c.admin_token).unwrap();
    let (owner, _) = control.add_principal(&admin, &c.tenant_id, "rg-owner", "User").unwrap();
    let owner = crate::Principal { tenant_id: owner.tenant_id, object_id: owner.object_id };
    let rg_scope = format!("/subscriptions/{}/resourceGroups/{}", c.subscription_id, c.resource_group);
    control.assign_role(&admin, "11111111-1111-1111-1111-111111111111", &rg_scope, "Owner", &owner.object_id).unwrap();
    // The owner of the group sees the administrator's Owner-at-`/` assignment in the group's listing.
    let admins = control.role_assignments(&owner, &rg_scope).unwrap();
    let root = admins.iter().find(|a| a.principal == admin.object_id && a.role == "Owner").unwrap().clone();
    // ... and reuses its id at the scope it owns, naming itself.
    let err = control.assign_role(&owner, &root.id, &rg_scope, "Owner", &owner.object_id).unwrap_err();
    assert!(
        matches!(err, crate::ControlError::ConflictCode { code: "RoleAssignmentUpdateNotPermitted", .. }),
        "{err:?}"
    );
    // The administrator keeps every right at `/`.
    let still = control.role_assignments(&admin, "/").unwrap();
    assert!(still.iter().any(|a| a.id == root.id && a.principal == admin.object_id && a.scope == root.scope));
    control.authorize(&admin, "/", crate::Action::ManageAccess).unwrap();
    // Assigning the same role to the same principal at the same scope under a new id is a conflict too.
    let err = control
        .assign_role(&admin, "22222222-2222-2222-2222-222222222222", &rg_scope, "Owner", &owner.object_id)
        .unwrap_err();
    assert!(matches!(err, crate::ControlError::ConflictCode { code: "RoleAssignmentExists", .. }), "{err:?}");
    // An identical PUT is idempotent.
    let again =
        control.assign_role(&admin, "11111111-1111-1111-1111-111111111111", &rg_scope, "Owner", &owner.object_id);
    assert_eq!(again.unwrap().principal, owner.object_id);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 12, item 7: a damaged signing key stops the start, naming the file, and is left as it was;
/// the data directory and the key are the owner's alone.
#[cfg(unix)]
#[tokio::test]
async fn a_damaged_signing_key_is_refused_not_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let (control, dir) = temp_control();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("token-signing.key")), 0o600);
    drop(control);
    let key = dir.join("token-signing.key");
    std::fs::write(&key, "not a key\n").unwrap();
    let err = Control::open(ControlConfig::new(dir.clone(), "http://127.0.0.1:1".into())).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("token-signing.key") && message.contains("damaged"), "{message}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "not a key\n");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Bearer tokens through `jsonwebtoken`: they expire on Berth's clock, and neither a changed claim,
/// nor `alg: none`, nor another audience gets through.
#[tokio::test]
async fn bearer_tokens_expire_and_cannot_be_forged() {
    use base64::Engine as _;
    let dir = std::env::temp_dir().join(format!("berth-control-{}-{}", std::process::id(), crate::new_hex_id()));
    let mut config = ControlConfig::new(dir.clone(), "http://127.0.0.1:1".into());
    config.token_ttl_seconds = 1;
    let control = Control::open(config).unwrap();
    let admin = control.authenticate_bearer(&control.credentials().admin_token.clone()).unwrap();
    let token = control.issue_token(&admin, None).unwrap().token;
    assert_eq!(control.authenticate_bearer(&token).unwrap(), admin);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["oid"] = "someone-else".into();
    let forged = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
    let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    for bad in [forged.as_str(), none.as_str(), "a.b.c"] {
        let err = control.authenticate_bearer(bad).unwrap_err();
        assert!(
            matches!(err, crate::ControlError::Unauthenticated { code: "InvalidAuthenticationToken", .. }),
            "{err:?}"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let err = control.authenticate_bearer(&token).unwrap_err();
    assert!(matches!(err, crate::ControlError::Unauthenticated { code: "ExpiredAuthenticationToken", .. }), "{err:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
