//! The one CSV writer: RFC 4180 quoting with `\n` line ends, byte-identical to the sqlite3
//! CLI's `-csv` output (which also quotes fields with spaces), plus a guard against
//! spreadsheet formulas: a cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return
//! (user agents and user names are attacker-controlled) gets a leading `'`, so a spreadsheet
//! shows it as text instead of running it.

use std::io::{self, Write};

/// Writes one field, quoted where needed.
pub fn write_field(out: &mut dyn Write, field: &str) -> io::Result<()> {
    let formula = matches!(
        field.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    );
    let needs_quotes = formula
        || field
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r' | b' '));
    if !needs_quotes {
        return out.write_all(field.as_bytes());
    }
    out.write_all(b"\"")?;
    if formula {
        out.write_all(b"'")?;
    }
    for (i, part) in field.split('"').enumerate() {
        if i > 0 {
            out.write_all(b"\"\"")?;
        }
        out.write_all(part.as_bytes())?;
    }
    out.write_all(b"\"")
}

/// Writes one record: the fields separated by commas, then `\n`.
pub fn write_record<S: AsRef<str>>(
    out: &mut dyn Write,
    fields: impl IntoIterator<Item = S>,
) -> io::Result<()> {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_field(out, field.as_ref())?;
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(field: &str) -> String {
        let mut out = Vec::new();
        write_field(&mut out, field).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quotes_only_when_needed_and_defuses_formulas() {
        assert_eq!(csv("team/app"), "team/app");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv(""), "");
        assert_eq!(csv("a,\"b"), "\"a,\"\"b\"");
        let mut out = Vec::new();
        write_record(&mut out, ["main", "team/app", "3"]).unwrap();
        assert_eq!(out, b"main,team/app,3\n");
    }
}
