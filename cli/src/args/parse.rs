//! Parsers of flag values: durations, sizes, rates, drift.

use std::time::Duration;

pub fn parse_drift(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|e| format!("`{text}`: {e}"))?;
    swarm_worker::hold::check_drift(value)
}

/// `--label NAME=VALUE`.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (k, v) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected NAME=VALUE (pool=gpu)"))?;
    if !swarm_core::placement::valid_label(k, v) {
        return Err(format!("`{text}`: letters, digits and `-_./`, at most 63 bytes each"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `--resource NAME=AMOUNT` (`gpu=1`, `memory=16Gi`, `cpu=500m`).
pub fn parse_resource(text: &str) -> Result<(String, String), String> {
    let (k, v) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected NAME=AMOUNT (gpu=1, memory=16Gi)"))?;
    if !swarm_core::placement::valid_resource_name(k) {
        return Err(format!(
            "`{k}`: a resource is cpu, memory, gpu or a custom name of lowercase letters, digits and `-_./`"
        ));
    }
    let q = swarm_core::placement::Quantity::parse(v)?;
    Ok((k.to_owned(), q.to_text()))
}

pub fn parse_rate_limit(text: &str) -> Result<(String, swarm_coordinator::ratelimit::RateLimit), String> {
    let (tool, limit) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected TOOL=RATE[/BURST]"))?;
    Ok((tool.to_owned(), limit.parse()?))
}

pub fn parse_heartbeat(text: &str) -> Result<Duration, String> {
    let d = parse_ttl(text)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
        return Err(format!("`{text}`: a heartbeat interval from 100ms to 10m"));
    }
    Ok(d)
}

pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    if let Some(days) = text.strip_suffix('d') {
        let days = days.parse::<u64>().map_err(|e| format!("`{text}`: {e}"))?;
        return days.checked_mul(86_400).map(Duration::from_secs).ok_or_else(|| format!("`{text}`: too long"));
    }
    swarm_core::spec::parse_duration(text)
}

/// A size in bytes: `1048576`, `100MB`, `512KiB`, `1GiB` (decimal and binary units).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{text}`: a number of bytes, e.g. 100MB or 1GiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" | "Ki" | "K" => 1 << 10,
        "MiB" | "Mi" | "M" => 1 << 20,
        "GiB" | "Gi" | "G" => 1 << 30,
        "TiB" | "Ti" | "T" => 1 << 40,
        other => return Err(format!("`{text}`: unknown unit `{other}` (B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_in_decimal_and_binary_units_and_overflow_is_refused() {
        assert_eq!(super::parse_bytes("100MB"), Ok(100_000_000));
        assert_eq!(super::parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(super::parse_bytes("42"), Ok(42));
        assert!(super::parse_bytes("1.5GB").is_err());
        assert!(super::parse_bytes("99999999999TiB").is_err());
        assert!(super::parse_bytes("-1").is_err());
    }
}
