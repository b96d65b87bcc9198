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

pub fn canonical_sku(name: &str) -> Option<&'static str> {
    SKUS.iter().copied().find(|s| s.eq_ignore_ascii_case(name))
}

pub fn is_provisioned(sku: &str) -> bool {
    sku.contains("Provisioned")
}
