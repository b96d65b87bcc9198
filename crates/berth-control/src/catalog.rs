//! The catalog: regions, the deployment types each offers for which model families, provisioned
//! capacity rules and default quotas. A TOML file (`catalog/default.toml` is built in; an operator
//! passes their own with `berth serve --catalog`), checked whole when it is read.

use crate::sku::{canonical_sku, is_provisioned, SKUS};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEFAULT_CATALOG: &str = include_str!("../catalog/default.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub display_name: String,
    #[serde(default)]
    pub fine_tuning: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtuRule {
    pub min: i64,
    pub step: i64,
}

/// Prices in the catalog's currency.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per hour a fine-tuned model is deployed (not for Developer deployments).
    pub hosting_per_hour: f64,
    pub input_per_million: f64,
    pub cached_input_per_million: f64,
    pub output_per_million: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    pub models: Vec<String>,
    #[serde(default)]
    pub price: Price,
    /// Tokens per minute one PTU serves (provisioned admission drains at this rate).
    pub ptu_tokens_per_minute: i64,
    /// Capacity rules per provisioned deployment type.
    #[serde(default)]
    pub provisioned: BTreeMap<String, PtuRule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    pub skus: Vec<String>,
    pub families: Vec<String>,
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaDefaults {
    /// Thousands of tokens per minute, per subscription, region and family, for the standard types.
    pub standard_ktpm: i64,
    /// PTU per subscription, region and family, for the provisioned types.
    pub provisioned_ptu: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default = "default_currency")]
    pub currency: String,
    pub regions: BTreeMap<String, Region>,
    pub families: BTreeMap<String, Family>,
    pub offers: Vec<Offer>,
    pub quota: QuotaDefaults,
}

fn default_currency() -> String {
    "USD".into()
}

/// Azure's location names: lower case without spaces (`East US 2` -> `eastus2`).
pub fn normalize_region(name: &str) -> String {
    name.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

impl Catalog {
    /// The most capacity one deployment of a type may have: its quota limit (kTPM for the standard
    /// types, PTU for the provisioned ones). Every capacity a client sends is bounded by this before it
    /// meets any arithmetic.
    pub fn max_capacity(&self, sku: &str) -> i64 {
        if crate::sku::is_provisioned(sku) {
            self.quota.provisioned_ptu
        } else {
            self.quota.standard_ktpm
        }
    }

    /// The built-in catalog.
    pub fn builtin() -> Catalog {
        Catalog::parse(DEFAULT_CATALOG).expect("the built-in catalog is valid (a unit test reads it)")
    }

    /// Reads and checks a catalog: every offer names known deployment types, families and regions;
    /// at most one family is the wildcard; capacity rules are positive.
    pub fn parse(text: &str) -> Result<Catalog, String> {
        let mut c: Catalog = toml::from_str(text).map_err(|e| format!("the catalog is not valid: {e}"))?;
        c.regions = c.regions.into_iter().map(|(k, v)| (normalize_region(&k), v)).collect();
        for offer in &mut c.offers {
            for sku in &mut offer.skus {
                if sku != "*" {
                    *sku = canonical_sku(sku)
                        .ok_or_else(|| {
                            format!(
                                "the catalog offers an unknown deployment type '{sku}'; use one of {}",
                                SKUS.join(", ")
                            )
                        })?
                        .to_owned();
                }
            }
            for f in &offer.families {
                if !c.families.contains_key(f) {
                    return Err(format!("the catalog offers the unknown model family '{f}'"));
                }
            }
            for r in &mut offer.regions {
                *r = normalize_region(r);
                if !c.regions.contains_key(r.as_str()) {
                    return Err(format!("the catalog offers the unknown region '{r}'"));
                }
            }
        }
        let wildcards = c.families.values().filter(|f| f.models.iter().any(|m| m == "*")).count();
        if wildcards > 1 {
            return Err("more than one model family of the catalog is the wildcard '*'".into());
        }
        for (name, f) in &c.families {
            let p = f.price;
            if [p.hosting_per_hour, p.input_per_million, p.cached_input_per_million, p.output_per_million]
                .iter()
                .any(|v| v.is_nan() || *v < 0.0)
            {
                return Err(format!("model family '{name}': prices must be numbers of at least 0"));
            }
            if f.ptu_tokens_per_minute <= 0 {
                return Err(format!("model family '{name}': ptu_tokens_per_minute must be positive"));
            }
            for (sku, rule) in &f.provisioned {
                if canonical_sku(sku).is_none_or(|s| !is_provisioned(s)) {
                    return Err(format!("model family '{name}': '{sku}' is not a provisioned deployment type"));
                }
                if rule.min < 1 || rule.step < 1 {
                    return Err(format!("model family '{name}', {sku}: min and step must be at least 1"));
                }
            }
        }
        if c.quota.standard_ktpm < 0 || c.quota.provisioned_ptu < 0 {
            return Err("quotas cannot be negative".into());
        }
        Ok(c)
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.get(&normalize_region(name))
    }

    /// The family of a base model: the one that names it, else the wildcard family.
    pub fn family_of(&self, base_model: &str) -> Option<(&str, &Family)> {
        let named = self.families.iter().find(|(_, f)| f.models.iter().any(|m| m.eq_ignore_ascii_case(base_model)));
        named
            .or_else(|| self.families.iter().find(|(_, f)| f.models.iter().any(|m| m == "*")))
            .map(|(k, f)| (k.as_str(), f))
    }

    /// Whether `region` offers deployment type `sku` for `family`.
    pub fn offers(&self, sku: &str, family: &str, region: &str) -> bool {
        let region = normalize_region(region);
        self.offers.iter().any(|o| {
            o.families.iter().any(|f| f == family)
                && o.regions.contains(&region)
                && o.skus.iter().any(|s| s == "*" || s.eq_ignore_ascii_case(sku))
        })
    }

    /// The deployment types `region` offers for `family`, in the order of [`SKUS`].
    pub fn skus_for(&self, family: &str, region: &str) -> Vec<&'static str> {
        SKUS.iter().copied().filter(|s| self.offers(s, family, region)).collect()
    }

    /// Capacity rule of a provisioned type for a family (1, 1 when the family names none).
    pub fn ptu_rule(&self, family: &str, sku: &str) -> PtuRule {
        self.families.get(family).and_then(|f| f.provisioned.get(sku)).copied().unwrap_or(PtuRule { min: 1, step: 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_reproduces_azures_table() {
        let c = Catalog::builtin();
        assert!(c.offers("Standard", "gpt-35-turbo-finetune", "Switzerland West"));
        assert!(!c.offers("Standard", "gpt-4o-finetune", "switzerlandwest"));
        assert!(c.offers("ProvisionedManaged", "gpt-4o-mini-finetune", "northcentralus"));
        assert!(!c.offers("GlobalStandard", "gpt-35-turbo-finetune", "eastus2"));
        assert!(!c.offers("Standard", "gpt-35-turbo-finetune", "francecentral"));
        assert_eq!(c.family_of("gpt-4o-mini-2024-07-18").unwrap().0, "gpt-4o-mini-finetune");
        assert_eq!(c.family_of("smollm2").unwrap().0, "local");
        assert_eq!(c.skus_for("local", "local").len(), SKUS.len());
        assert_eq!(c.ptu_rule("gpt-4o-mini-finetune", "ProvisionedManaged"), PtuRule { min: 25, step: 25 });
        assert_eq!(c.ptu_rule("gpt-4o-mini-finetune", "GlobalProvisionedManaged"), PtuRule { min: 15, step: 5 });
        assert!(!c.region("francecentral").unwrap().fine_tuning);
    }

    #[test]
    fn a_broken_catalog_is_refused_with_the_reason() {
        let bad = DEFAULT_CATALOG.replace("regions = [\"local\"]", "regions = [\"atlantis\"]");
        assert_eq!(Catalog::parse(&bad).unwrap_err(), "the catalog offers the unknown region 'atlantis'");
        let bad = DEFAULT_CATALOG.replace("skus = [\"Developer\"]", "skus = [\"Deluxe\"]");
        assert!(Catalog::parse(&bad).unwrap_err().contains("unknown deployment type 'Deluxe'"));
        assert!(Catalog::parse("regions = 3").unwrap_err().starts_with("the catalog is not valid"));
    }
}
