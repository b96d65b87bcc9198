//! Deployment types (SKUs). Names are case-insensitive on the wire; we store the canonical spelling.

pub const SKUS: &[&str] = &[
    "Standard",
    "GlobalStandard",
    "DataZoneStandard",
    "ProvisionedManaged",
    "ProvisionedStandard",
    "GlobalProvisionedManaged",
    "DataZoneProvisionedManaged",
    "GlobalBatch",
    "DataZoneBatch",
    "Developer",
];

/// The canonical spelling of a SKU name. `DeveloperTier`, the name Azure's newer documentation and
/// CLI examples use (`--sku-name developertier`, api-version 2025-07-01-preview), is `Developer`.
pub fn canonical_sku(name: &str) -> Option<&'static str> {
    if name.eq_ignore_ascii_case("DeveloperTier") {
        return Some("Developer");
    }
    SKUS.iter().copied().find(|s| s.eq_ignore_ascii_case(name))
}

pub fn is_provisioned(sku: &str) -> bool {
    sku.contains("Provisioned")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sku_names_are_case_insensitive_and_developertier_is_developer() {
        assert_eq!(super::canonical_sku("globalstandard"), Some("GlobalStandard"));
        assert_eq!(super::canonical_sku("developertier"), Some("Developer"));
        assert_eq!(super::canonical_sku("DeveloperTier"), Some("Developer"));
        assert_eq!(super::canonical_sku("Premium"), None);
    }
}
