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
