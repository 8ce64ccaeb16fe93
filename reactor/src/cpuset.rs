//! Core masks as SPDK spells them: `0x3` (hex mask), `[0,1]` or `0-3,5` (core list).

use crate::error::{Error, Result};

/// Parses a core mask (`0x3`, `3` hex without prefix as SPDK does) or a core list
/// (`[0,2-3]`, `0,2-3`) into a sorted, de-duplicated list of core ids.
pub fn parse_core_mask(s: &str) -> Result<Vec<usize>> {
    let t = s.trim();
    let bad = |why: &str| Error::CoreMask {
        mask: s.to_string(),
        why: why.to_string(),
    };
    if t.is_empty() {
        return Err(bad("empty"));
    }
    let mut cores = Vec::new();
    let is_list = t.starts_with('[') || t.contains(',') || t.contains('-');
    if is_list {
        let inner = t.trim_start_matches('[').trim_end_matches(']');
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let a: usize = a.parse().map_err(|_| bad("core ids must be decimal"))?;
            let b: usize = b.parse().map_err(|_| bad("core ids must be decimal"))?;
            if a > b || b >= 1024 {
                return Err(bad("range out of order or core id >= 1024"));
            }
            cores.extend(a..=b);
        }
    } else {
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if hex.is_empty() || hex.len() > 256 {
            return Err(bad("hex mask length"));
        }
        for (i, c) in hex.chars().rev().enumerate() {
            let nibble = c.to_digit(16).ok_or_else(|| bad("not a hex digit"))? as usize;
            for bit in 0..4 {
                if nibble & (1 << bit) != 0 {
                    cores.push(i * 4 + bit);
                }
            }
        }
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(bad("selects no core"));
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_lists() {
        assert_eq!(parse_core_mask("0x3").unwrap(), vec![0, 1]);
        assert_eq!(parse_core_mask("0x1").unwrap(), vec![0]);
        assert_eq!(parse_core_mask("F0").unwrap(), vec![4, 5, 6, 7]);
        assert_eq!(parse_core_mask("[0,1]").unwrap(), vec![0, 1]);
        assert_eq!(parse_core_mask("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_core_mask("[3,1,1]").unwrap(), vec![1, 3]);
        assert!(parse_core_mask("0x0").is_err());
        assert!(parse_core_mask("zz").is_err());
        assert!(parse_core_mask("3-1").is_err());
        assert!(parse_core_mask("").is_err());
    }
}
