//! Named resources (GPUs, FPGAs, ...): what a worker offers as addresses, what a driver or
//! executor asks for as counts, and the checks and parsing both sides share.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{error::InvalidInput, proto::ResourceAddresses};

/// Most kinds of resource one worker offers or one process asks for.
pub const MAX_KINDS: usize = 16;
/// Most addresses of one kind on a worker, and most asked for by one process.
pub const MAX_ADDRESSES: usize = 1024;
const MAX_NAME_BYTES: usize = 32;
const MAX_ADDRESS_BYTES: usize = 64;

/// `gpu`, `fpga`, `nvidia.com_gpu`: lower-case letters, digits, `.`, `_`, `-`, starting with a
/// letter, so it reads the same in an environment variable's name and a metric label.
pub fn validate_name(field: &str, name: &str) -> Result<(), InvalidInput> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new(
            field,
            format!(
                "{name:?} is not a resource name (1 to {MAX_NAME_BYTES} lower-case letters, \
                 digits, '.', '_', '-', starting with a letter, like gpu)"
            ),
        ))
    }
}

/// Checks what a driver or executor asks for: known-good names, 1 to [`MAX_ADDRESSES`] each.
pub fn validate_asks(field: &str, asks: &HashMap<String, u32>) -> Result<(), InvalidInput> {
    if asks.len() > MAX_KINDS {
        return Err(InvalidInput::new(
            field,
            format!("{} kinds of resource; at most {MAX_KINDS}", asks.len()),
        ));
    }
    let mut names = BTreeSet::new();
    for (name, count) in asks {
        validate_name(field, name)?;
        if !names.insert(env_name(name)) {
            return Err(InvalidInput::new(
                field,
                format!("{name}: asked twice, under names that differ only in '.', '_', '-'"),
            ));
        }
        if *count == 0 || *count as usize > MAX_ADDRESSES {
            return Err(InvalidInput::new(
                field,
                format!("{name}: {count} asked; must be 1 to {MAX_ADDRESSES}"),
            ));
        }
    }
    Ok(())
}

/// Checks what a worker offers: good names, each once, with 1 to [`MAX_ADDRESSES`] distinct
/// addresses of letters, digits and `-_.:`.
pub fn validate_offer(field: &str, offer: &[ResourceAddresses]) -> Result<(), InvalidInput> {
    if offer.len() > MAX_KINDS {
        return Err(InvalidInput::new(
            field,
            format!("{} kinds of resource; at most {MAX_KINDS}", offer.len()),
        ));
    }
    let mut names = BTreeSet::new();
    for r in offer {
        validate_name(field, &r.name)?;
        if !names.insert(env_name(&r.name)) {
            return Err(InvalidInput::new(
                field,
                format!(
                    "{} is offered twice (or with a name that differs only in '.', '_', '-')",
                    r.name
                ),
            ));
        }
        if r.addresses.is_empty() || r.addresses.len() > MAX_ADDRESSES {
            return Err(InvalidInput::new(
                field,
                format!(
                    "{}: {} addresses; must be 1 to {MAX_ADDRESSES}",
                    r.name,
                    r.addresses.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for a in &r.addresses {
            let ok = !a.is_empty()
                && a.len() <= MAX_ADDRESS_BYTES
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
            if !ok {
                return Err(InvalidInput::new(
                    field,
                    format!(
                        "{}: {a:?} is not an address (1 to {MAX_ADDRESS_BYTES} letters, digits, \
                         '-', '_', '.', ':', '/')",
                        r.name
                    ),
                ));
            }
            if !seen.insert(a.as_str()) {
                return Err(InvalidInput::new(
                    field,
                    format!("{}: address {a} is listed twice", r.name),
                ));
            }
        }
    }
    Ok(())
}

/// `gpu=1`: a name and how many.
pub fn parse_ask(field: &str, text: &str) -> Result<(String, u32), InvalidInput> {
    let (name, count) = text.split_once('=').ok_or_else(|| {
        InvalidInput::new(field, format!("{text:?}: expected NAME=COUNT, like gpu=1"))
    })?;
    let name = name.trim().to_string();
    validate_name(field, &name)?;
    let count: u32 = count.trim().parse().map_err(|_| {
        InvalidInput::new(field, format!("{text:?}: the count must be a whole number"))
    })?;
    if count == 0 || count as usize > MAX_ADDRESSES {
        return Err(InvalidInput::new(
            field,
            format!("{text:?}: the count must be 1 to {MAX_ADDRESSES}"),
        ));
    }
    Ok((name, count))
}

/// `gpu=0,1,3` (those addresses) or `gpu=4` (addresses 0 to 3), as a worker offers them.
pub fn parse_offer(field: &str, text: &str) -> Result<ResourceAddresses, InvalidInput> {
    let (name, rest) = text.split_once('=').ok_or_else(|| {
        InvalidInput::new(
            field,
            format!("{text:?}: expected NAME=COUNT or NAME=ADDR,ADDR,..., like gpu=2 or gpu=0,1"),
        )
    })?;
    let name = name.trim().to_string();
    validate_name(field, &name)?;
    let rest = rest.trim();
    let addresses: Vec<String> = if !rest.contains(',') && rest.parse::<u32>().is_ok() {
        let count: u32 = rest.parse().unwrap_or(0);
        if count == 0 || count as usize > MAX_ADDRESSES {
            return Err(InvalidInput::new(
                field,
                format!("{text:?}: the count must be 1 to {MAX_ADDRESSES}"),
            ));
        }
        (0..count).map(|i| i.to_string()).collect()
    } else {
        rest.split(',').map(|a| a.trim().to_string()).collect()
    };
    let offer = ResourceAddresses { name, addresses };
    validate_offer(field, std::slice::from_ref(&offer))?;
    Ok(offer)
}

/// Reads a discovery program's output in Spark's format: one JSON object
/// `{"name":"gpu","addresses":["0","1"]}`, a JSON array of them, or one object per line.
pub fn parse_discovery(field: &str, output: &str) -> Result<Vec<ResourceAddresses>, InvalidInput> {
    #[derive(serde::Deserialize)]
    struct Found {
        name: String,
        addresses: Vec<String>,
    }
    let text = output.trim();
    let found: Vec<Found> = if text.starts_with('[') {
        serde_json::from_str(text).map_err(|e| bad_discovery(field, output, &e.to_string()))?
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Found>(l.trim()))
            .collect::<Result<_, _>>()
            .map_err(|e| bad_discovery(field, output, &e.to_string()))?
    };
    if found.is_empty() {
        return Err(bad_discovery(field, output, "it printed no resource"));
    }
    let offer: Vec<ResourceAddresses> = found
        .into_iter()
        .map(|f| ResourceAddresses {
            name: f.name,
            addresses: f.addresses,
        })
        .collect();
    validate_offer(field, &offer).map_err(|e| bad_discovery(field, output, &e.reason))?;
    Ok(offer)
}

fn bad_discovery(field: &str, output: &str, why: &str) -> InvalidInput {
    let mut shown: String = output.chars().take(400).collect();
    if shown.len() < output.len() {
        shown.push_str("...");
    }
    InvalidInput::new(
        field,
        format!(
            "the discovery program's output is not Spark's resource format \
             ({{\"name\":\"gpu\",\"addresses\":[\"0\",\"1\"]}}): {why}; it printed {shown:?}"
        ),
    )
}

/// Merges offers by name (later ones replace earlier ones of the same name), sorted by name.
pub fn merge(offers: impl IntoIterator<Item = ResourceAddresses>) -> Vec<ResourceAddresses> {
    let mut by_name = BTreeMap::new();
    for r in offers {
        by_name.insert(r.name.clone(), r);
    }
    by_name.into_values().collect()
}

/// The environment variable a process finds its addresses of `name` in: `gpu` →
/// `HEARTH_RESOURCE_GPU`.
pub fn env_name(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("HEARTH_RESOURCE_{upper}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_parse_as_counts_or_addresses_and_asks_as_counts() {
        let o = parse_offer("resource", "gpu=3").unwrap();
        assert_eq!(
            (o.name.as_str(), o.addresses),
            ("gpu", vec!["0".into(), "1".into(), "2".into()])
        );
        let o = parse_offer("resource", "gpu=2,5").unwrap();
        assert_eq!(o.addresses, vec!["2".to_string(), "5".to_string()]);
        assert_eq!(parse_ask("resource", "gpu=2").unwrap(), ("gpu".into(), 2));
        for bad in ["gpu", "GPU=1", "gpu=0", "gpu=x", "gpu=1,1", "gpu=a b", "=1"] {
            let e = parse_offer("resource", bad)
                .err()
                .or_else(|| parse_ask("resource", bad).err());
            assert!(e.is_some(), "{bad}");
        }
        assert!(
            parse_ask("executor_resource", "gpu=0")
                .unwrap_err()
                .to_string()
                .contains("executor_resource")
        );
        assert_eq!(env_name("nvidia.com-gpu"), "HEARTH_RESOURCE_NVIDIA_COM_GPU");
    }

    #[test]
    fn discovery_reads_sparks_format_and_quotes_what_it_cannot_read() {
        let one = parse_discovery("discovery", r#"{"name":"gpu","addresses":["0","1"]}"#).unwrap();
        assert_eq!(one[0].addresses.len(), 2);
        let many = parse_discovery(
            "discovery",
            "{\"name\":\"gpu\",\"addresses\":[\"0\"]}\n{\"name\":\"fpga\",\"addresses\":[\"f0\"]}\n",
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        let array = parse_discovery("discovery", r#"[{"name":"gpu","addresses":["7"]}]"#).unwrap();
        assert_eq!(array[0].addresses, vec!["7".to_string()]);
        let e = parse_discovery("discovery", "no gpus here\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no gpus here") && e.contains("discovery"), "{e}");
        let e = parse_discovery("discovery", "").unwrap_err().to_string();
        assert!(e.contains("no resource"), "{e}");
    }
}
