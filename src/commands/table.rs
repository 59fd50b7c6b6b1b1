//! How the subcommands print: aligned tables for people, pretty JSON for programs.

use std::io::Write;

use hearth_common::{Error, Result};

/// A list as JSON, or as a table of one row per item.
pub(super) fn print_list<V: serde::Serialize>(
    out: &mut impl Write,
    json: bool,
    views: &[V],
    header: &[&str],
    row: impl Fn(&V) -> Vec<String>,
) -> Result<()> {
    if json {
        writeln!(out, "{}", to_json(&views)?)?;
        return Ok(());
    }
    write_table(out, header, views.iter().map(row).collect())
}

/// Pretty JSON; a view that cannot be written as JSON is reported as failed output, which
/// it is to the caller.
pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Io(std::io::Error::other(e)))
}

/// Columns padded to their widest cell; the last is not, so lines end without blanks.
pub(super) fn write_table(
    out: &mut impl Write,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut buf = Vec::new();
        write_table(&mut buf, &["A", "BB"], vec![vec!["xyz".into(), "1".into()]]).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "A    BB\nxyz  1\n");
    }
}
