//! Output for people (aligned tables) and for scripts (`--json`).

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Epoch seconds as RFC 3339.
pub fn date(epoch: i64) -> String {
    OffsetDateTime::from_unix_timestamp(epoch).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

/// Rows under a header, each column as wide as its widest cell. Cells never hold control characters
/// (a name or user agent sent by someone else cannot move the cursor or rewrite the terminal).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let clean = |s: &str| s.chars().map(|c| if c.is_control() { '?' } else { c }).collect::<String>();
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| clean(c)).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A string field, or `-`.
pub fn field(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "-".into(),
    }
}

/// A list of strings joined with commas, or `-`.
pub fn list(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

/// The upstream's host, from a secret's `upstream.baseUrl`.
pub fn upstream_host(v: &Value) -> String {
    let Some(url) = v["upstream"]["baseUrl"].as_str() else { return "-".into() };
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns_and_neutralize_control_characters() {
        let rows = vec![vec!["openai_api_key".into(), "3".into()], vec!["x\u{1b}[2J".into(), "10".into()]];
        assert_eq!(
            table(&["NAME", "VERSION"], &rows),
            "NAME            VERSION\nopenai_api_key  3\nx?[2J           10\n"
        );
    }

    #[test]
    fn hosts_come_from_base_urls() {
        let v = serde_json::json!({"upstream": {"baseUrl": "https://api.openai.com/v1"}});
        assert_eq!(upstream_host(&v), "api.openai.com");
        assert_eq!(upstream_host(&serde_json::json!({})), "-");
    }
}
