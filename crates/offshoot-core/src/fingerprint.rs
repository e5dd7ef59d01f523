//! Fingerprints: a hash per asset of everything that decides its data, including the fingerprints
//! of everything upstream. Two deployments whose asset has the same fingerprint would build the
//! same table from the same inputs.
//!
//! Tags, metadata, group and description are deliberately left out: they do not change data.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::{Asset, AssetKey, PartitionsDefinition, Snapshot};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// `upstream` must be the fingerprints of `asset.deps`, in the deps' (sorted) order.
    pub fn compute<'a>(
        asset: &Asset,
        upstream: impl IntoIterator<Item = &'a Fingerprint>,
    ) -> Fingerprint {
        let mut hasher = Sha256::new();
        let mut field = |name: &str, value: &[u8]| {
            hasher.update(name.as_bytes());
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value);
        };
        field("key", asset.key.as_str().as_bytes());
        field("kind", asset.kind.as_str().as_bytes());
        field("code_version", asset.code_version.value.as_bytes());
        match &asset.partitions {
            None => field("partitions", b""),
            Some(PartitionsDefinition::Time { cadence, start, end }) => {
                field("partitions", cadence.as_str().as_bytes());
                field("start", start.as_bytes());
                field("end", end.as_deref().unwrap_or("").as_bytes());
            }
            Some(PartitionsDefinition::Static { keys }) => {
                field("partitions", b"static");
                for key in keys {
                    field("partition_key", key.as_bytes());
                }
            }
            Some(PartitionsDefinition::Other { description }) => {
                field("partitions", b"other");
                field("description", description.as_bytes());
            }
        }
        for (dep, fingerprint) in asset.deps.iter().zip(upstream) {
            field("dep", dep.as_str().as_bytes());
            field("dep_fingerprint", &fingerprint.0);
        }
        Fingerprint(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses [`Fingerprint::to_hex`]'s output (64 hex digits, either case).
    pub fn from_hex(text: &str) -> Option<Fingerprint> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            let digits = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(digits, 16).ok()?;
        }
        Some(Fingerprint(bytes))
    }

    /// The first 12 hex digits, for display.
    pub fn short(&self) -> String {
        hex(&self.0[..6])
    }
}

/// What a fingerprint is made of, kept with every materialization (its provenance) so that a
/// mismatch can say what differs: the code, the partitions, or which upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintParts {
    pub code_version: String,
    /// The partitions definition as [`PartitionsDefinition`]'s `Display` renders it; empty for
    /// none.
    pub partitions: String,
    /// The fingerprint of every upstream, by key.
    pub upstream: BTreeMap<AssetKey, Fingerprint>,
}

impl FingerprintParts {
    /// The parts of `key`'s fingerprint in `snapshot`; `None` if the snapshot lacks it.
    pub fn of(snapshot: &Snapshot, key: &AssetKey) -> Option<FingerprintParts> {
        let asset = snapshot.get(key)?;
        let upstream = asset
            .deps
            .iter()
            .map(|dep| Some((dep.clone(), snapshot.fingerprint(dep)?)))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(FingerprintParts {
            code_version: asset.code_version.value.clone(),
            partitions: asset.partitions.as_ref().map(|p| p.to_string()).unwrap_or_default(),
            upstream,
        })
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// SHA-256 of `bytes` in hex: the derived code versions use it.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AssetKind, CodeVersion};

    #[test]
    fn hex_round_trips_and_bad_text_is_refused() {
        let mut asset = Asset::new(AssetKey::new("orders").expect("key"), AssetKind::Sql);
        asset.code_version = CodeVersion::explicit("v1");
        let fingerprint = Fingerprint::compute(&asset, []);
        assert_eq!(Fingerprint::from_hex(&fingerprint.to_hex()), Some(fingerprint));
        assert_eq!(Fingerprint::from_hex(&fingerprint.to_hex().to_uppercase()), Some(fingerprint));
        for bad in ["", "ab", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65), &"é".repeat(32)] {
            assert_eq!(Fingerprint::from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn parts_name_what_the_fingerprint_is_made_of() {
        let key = |k: &str| AssetKey::new(k).expect("key");
        let mut raw = Asset::new(key("raw"), AssetKind::Source);
        raw.code_version = CodeVersion::explicit("");
        let mut orders = Asset::new(key("orders"), AssetKind::Sql);
        orders.deps = [key("raw")].into();
        orders.code_version = CodeVersion::explicit("v2");
        orders.partitions =
            Some(PartitionsDefinition::Static { keys: vec!["eu".into(), "us".into()] });
        let snapshot = Snapshot::new([raw, orders]).expect("snapshot");
        let parts = FingerprintParts::of(&snapshot, &key("orders")).expect("parts");
        assert_eq!(parts.code_version, "v2");
        assert_eq!(parts.partitions, "static [eu, us]");
        assert_eq!(
            parts.upstream,
            [(key("raw"), snapshot.fingerprint(&key("raw")).expect("fp"))].into()
        );
        assert_eq!(FingerprintParts::of(&snapshot, &key("missing")), None);
    }
}
