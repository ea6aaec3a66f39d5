//! Genomic regions: samtools' region syntax, and what a region selects.

use datafusion::common::{DataFusionError, Result};

use crate::error::BamError;

/// Which records a region selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionReference {
    /// Any reference (only positions are constrained): no index can narrow that down.
    Any,
    Named(String),
    /// Records without a reference (`rname IS NULL`, samtools' `*`).
    Unplaced,
}

/// Records on `reference` overlapping the 1-based closed interval `[start, end]`: `pos <= end`
/// and `endpos >= start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub reference: RegionReference,
    pub start: u64,
    pub end: u64,
}

impl Region {
    pub fn whole(reference: RegionReference) -> Self {
        Self { reference, start: 1, end: u64::MAX }
    }

    pub(crate) fn intersect(&self, other: &Region) -> Option<Region> {
        use RegionReference::*;
        let reference = match (&self.reference, &other.reference) {
            (Any, r) | (r, Any) => r.clone(),
            (a, b) if a == b => a.clone(),
            _ => return None,
        };
        let (start, end) = (self.start.max(other.start), self.end.min(other.end));
        (start <= end).then_some(Region { reference, start, end })
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reference {
            RegionReference::Any => write!(f, "any")?,
            RegionReference::Named(n) => write!(f, "{n}")?,
            RegionReference::Unplaced => return write!(f, "*"),
        }
        match (self.start, self.end) {
            (1, u64::MAX) => Ok(()),
            (s, u64::MAX) => write!(f, ":{s}-"),
            (s, e) => write!(f, ":{s}-{e}"),
        }
    }
}

/// Parses a region in samtools' syntax: `chr1`, `chr1:100`, `chr1:100-200`, `chr1:-200`,
/// `chr1:1,000-2,000`, `{name:with:colons}:1-100`, and `*` (records without a reference).
pub fn parse_region(text: &str) -> Result<Region> {
    let bad = |why: &str| {
        DataFusionError::from(BamError::invalid_option("region", format!("invalid region '{text}': {why}")))
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    if text == "*" {
        return Ok(Region::whole(RegionReference::Unplaced));
    }
    let (name, range) = if let Some(rest) = text.strip_prefix('{') {
        let close = rest.find('}').ok_or_else(|| bad("'{' without '}'"))?;
        let after = &rest[close + 1..];
        let range = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| bad("expected ':' after '}'"))?),
        };
        (&rest[..close], range)
    } else {
        match text.rsplit_once(':') {
            Some((name, range))
                if !range.is_empty() && range.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '-') =>
            {
                (name, Some(range))
            }
            _ => (text, None),
        }
    };
    if name.is_empty() {
        return Err(bad("the reference name is empty"));
    }
    let number = |s: &str| -> Result<u64> {
        let digits: String = s.chars().filter(|&c| c != ',').collect();
        digits.parse::<u64>().map_err(|_| bad(&format!("'{s}' is not a position")))
    };
    let (start, end) = match range {
        None => (1, u64::MAX),
        Some(r) => match r.split_once('-') {
            None => (number(r)?, u64::MAX),
            Some((s, "")) => (number(s)?, u64::MAX),
            Some(("", e)) => (1, number(e)?),
            Some((s, e)) => (number(s)?, number(e)?),
        },
    };
    if start == 0 {
        return Err(bad("positions are 1-based; 0 is not a position"));
    }
    if end < start {
        return Err(bad("the end is before the start"));
    }
    Ok(Region { reference: RegionReference::Named(name.to_string()), start, end })
}

/// Parses the `region` option: regions in samtools syntax separated by white space.
pub fn parse_regions(text: &str) -> Result<Vec<Region>> {
    let regions = text.split_whitespace().map(parse_region).collect::<Result<Vec<_>>>()?;
    if regions.is_empty() {
        return Err(BamError::invalid_option(
            "region",
            "it is empty: give regions such as 'chr1:100-200 chr2', or leave the option out",
        )
        .into());
    }
    Ok(regions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, start: u64, end: u64) -> Region {
        Region { reference: RegionReference::Named(name.into()), start, end }
    }

    #[test]
    fn samtools_region_syntax() {
        assert_eq!(parse_region("chr1").unwrap(), named("chr1", 1, u64::MAX));
        assert_eq!(parse_region("chr1:100").unwrap(), named("chr1", 100, u64::MAX));
        assert_eq!(parse_region("chr1:100-200").unwrap(), named("chr1", 100, 200));
        assert_eq!(parse_region("chr1:-200").unwrap(), named("chr1", 1, 200));
        assert_eq!(parse_region("chr1:1,000-2,000").unwrap(), named("chr1", 1000, 2000));
        assert_eq!(parse_region("{HLA:1}:5-6").unwrap(), named("HLA:1", 5, 6));
        assert_eq!(parse_region("HLA-A*01:01:x").unwrap(), named("HLA-A*01:01:x", 1, u64::MAX));
        assert_eq!(parse_region("*").unwrap(), Region::whole(RegionReference::Unplaced));
        for bad in ["", "chr1:0-5", "chr1:10-5", "{chr1", ":1-5", "chr1:1-2-3"] {
            assert!(parse_region(bad).is_err(), "{bad} must be rejected");
        }
    }
}
