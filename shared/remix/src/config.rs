//! The target mixture, read from TOML:
//!
//! ```toml
//! group_by = "lang"      # any column; "domain" falls back to the url's host
//! unit = "bytes"         # shares and caps count bytes of text, or "documents"
//! seed = 0               # which documents are repeated or dropped
//! max_repeat = 3.0       # at most this many copies of a group on average (ceil of it per document)
//!
//! [groups.en]
//! weight = 0.5           # target share of the output
//! [groups.zh]
//! weight = 0.5
//! cap = 5e9              # at most this many units after remixing
//!
//! [default]              # groups the file does not name
//! weight = 0.0           # drop them; without a weight a group is kept as it is
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What shares and caps count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// UTF-8 bytes of the `text` column.
    #[default]
    Bytes,
    /// Documents (rows).
    Documents,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Documents => "documents",
        }
    }
}

/// What to do with one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupRule {
    /// Target share of the output (0 drops the group). Without a weight the group is kept as
    /// it is (only a cap or the other groups' shares can shrink it).
    pub weight: Option<f64>,
    /// Most units (bytes or documents) of this group after remixing.
    pub cap: Option<f64>,
    /// Overrides the top-level `max_repeat` for this group.
    pub max_repeat: Option<f64>,
}

/// The whole remix configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemixConfig {
    /// The column whose values name the groups.
    pub group_by: String,
    pub unit: Unit,
    pub seed: u64,
    /// Up-sampling bound: a group's output is at most this many times its input.
    pub max_repeat: f64,
    /// Rules by group name.
    pub groups: BTreeMap<String, GroupRule>,
    /// The rule of every group not named in `groups`.
    pub default: GroupRule,
}

impl Default for RemixConfig {
    fn default() -> Self {
        RemixConfig {
            group_by: "lang".into(),
            unit: Unit::Bytes,
            seed: 0,
            max_repeat: 1.0,
            groups: BTreeMap::new(),
            default: GroupRule::default(),
        }
    }
}

impl RemixConfig {
    /// Reads a TOML file; missing keys take their defaults, unknown keys are errors that name
    /// the file.
    pub fn from_toml_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: RemixConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serializes")
    }

    /// The documented example: English and Chinese at half the bytes each, others dropped.
    pub fn example() -> Self {
        let mut config = RemixConfig { max_repeat: 3.0, ..RemixConfig::default() };
        for lang in ["en", "zh"] {
            config.groups.insert(lang.into(), GroupRule { weight: Some(0.5), ..GroupRule::default() });
        }
        config.default.weight = Some(0.0);
        config
    }

    /// The rule that applies to `group`.
    pub fn rule(&self, group: &str) -> &GroupRule {
        self.groups.get(group).unwrap_or(&self.default)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.group_by.is_empty() {
            return Err("group_by must name a column".into());
        }
        let check = |name: &str, rule: &GroupRule| -> Result<(), String> {
            if let Some(w) = rule.weight {
                if !(w.is_finite() && (0.0..=1.0).contains(&w)) {
                    return Err(format!("{name}: weight {w} must be a share between 0 and 1"));
                }
            }
            if let Some(c) = rule.cap {
                if !(c.is_finite() && c >= 0.0) {
                    return Err(format!("{name}: cap {c} must be a number of {} >= 0", self.unit.name()));
                }
            }
            if let Some(m) = rule.max_repeat {
                if !(m.is_finite() && m >= 1.0) {
                    return Err(format!("{name}: max_repeat {m} must be at least 1"));
                }
            }
            Ok(())
        };
        if !(self.max_repeat.is_finite() && self.max_repeat >= 1.0) {
            return Err(format!("max_repeat {} must be at least 1 (1 never repeats)", self.max_repeat));
        }
        for (name, rule) in &self.groups {
            check(&format!("groups.{name}"), rule)?;
        }
        check("default", &self.default)?;
        let named: f64 = self.groups.values().filter_map(|r| r.weight).sum();
        if named > 1.0 + 1e-9 {
            return Err(format!("the groups' weights sum to {named}: target shares must sum to at most 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_example_and_rejects_bad_files() {
        let c = RemixConfig::from_toml(
            "group_by = \"lang\"\nunit = \"bytes\"\nmax_repeat = 3\n[groups.en]\nweight = 0.5\n[groups.zh]\nweight = 0.5\ncap = 1e6\n[default]\nweight = 0.0\n",
        )
        .unwrap();
        assert_eq!(c.rule("zh").cap, Some(1e6));
        assert_eq!(c.rule("fr").weight, Some(0.0));
        assert_eq!(RemixConfig::from_toml(&c.to_toml()).unwrap(), c);
        for (bad, needle) in [
            ("unit = \"tokens\"", "unknown variant"),
            ("[groups.en]\nweight = 1.5", "weight 1.5"),
            ("[groups.en]\nweight = 0.7\n[groups.zh]\nweight = 0.7", "sum to"),
            ("max_repeat = 0.5", "max_repeat"),
            ("grup_by = \"lang\"", "unknown field"),
        ] {
            let err = RemixConfig::from_toml(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mix.toml");
        std::fs::write(&path, "unit = 3").unwrap();
        let err = RemixConfig::from_toml_file(&path).unwrap_err();
        assert!(err.contains("mix.toml"), "{err}");
    }
}
