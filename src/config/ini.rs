//! The INI format of pgBackRest's configuration files: `[section]` headers, `key=value` lines,
//! whole-line `#` comments, no end-of-line comments.

use std::path::{Path, PathBuf};

use crate::error::{CliError, ErrorCode};

/// One `key=value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IniEntry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A parsed configuration file.
#[derive(Clone, Debug)]
pub struct IniFile {
    pub path: PathBuf,
    pub entries: Vec<IniEntry>,
}

/// Parses `text` read from `path`.
pub fn parse(text: &str, path: &Path) -> Result<IniFile, CliError> {
    let mut entries = Vec::new();
    let mut section: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = || format!("{}:{}", path.display(), i + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.strip_suffix(']').map(str::trim).filter(|n| !n.is_empty()).ok_or_else(|| {
                CliError::new(ErrorCode::Format, format!("{}: malformed section header '{line}'", at()))
            })?;
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(CliError::new(ErrorCode::Format, format!("{}: expected 'key=value', found '{line}'", at())));
        };
        let Some(section) = &section else {
            return Err(CliError::new(ErrorCode::Format, format!("{}: 'key=value' before any [section]", at())));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(CliError::new(ErrorCode::Format, format!("{}: empty option name", at())));
        }
        entries.push(IniEntry {
            section: section.clone(),
            key: key.to_string(),
            value: value.trim().to_string(),
            line: i + 1,
        });
    }
    Ok(IniFile { path: path.to_path_buf(), entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments() {
        let text =
            "# comment\n[global]\nrepo1-path=/var/lib/pgstrata\n\n[db]\npg1-path = /pgdata/pg15 # not a comment\n";
        let f = parse(text, Path::new("x.conf")).expect("parse");
        assert_eq!(f.entries.len(), 2);
        assert_eq!(f.entries[1].section, "db");
        assert_eq!(f.entries[1].value, "/pgdata/pg15 # not a comment");
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let err = parse("[global]\nnot an option\n", Path::new("/etc/x.conf")).expect_err("bad");
        assert!(err.message.contains("/etc/x.conf:2"), "{err}");
        assert!(parse("key=value\n", Path::new("x")).is_err());
        assert!(parse("[global\n", Path::new("x")).is_err());
    }
}
