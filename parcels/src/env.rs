//! The env script in `meta/` (`scripts.defines`), read without a shell.
//!
//! The script is valid bash so people can `source` it, but Drover never runs it: it accepts only
//! this subset and evaluates it itself.
//!
//! - blank lines and `#` comments (including a `#!` line);
//! - `export NAME=VALUE`, NAME `[A-Za-z_][A-Za-z0-9_]*`, VALUE unquoted, `"double quoted"` or
//!   `'single quoted'`;
//! - in unquoted and double-quoted values, `$NAME` and `${NAME}` expand to `PARCELS_ROOT`,
//!   `PARCEL_DIRNAME`, a variable set earlier in the script, or the inherited environment, in that
//!   order; anything unset expands to the empty string;
//! - no command substitution, no other `$` forms, no `\`, `;`, `&`, `|`, `<`, `>`, `` ` ``, globs
//!   or spaces outside quotes.
//!
//! For a variable whose name ends in `PATH` (PATH, LD_LIBRARY_PATH, CLASSPATH), empty entries are
//! dropped after expansion, so `PATH=$X/bin:$PATH` with no inherited PATH does not put the current
//! directory on the path.

use std::collections::BTreeMap;

use crate::ParcelError;

/// A parsed env script: the assignments in order, values still unexpanded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvScript {
    pub assignments: Vec<Assignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    pub value: Vec<Piece>,
}

/// Part of a value: literal text or a variable reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(String),
}

/// Variables the evaluator sets; a script may read them but not assign them.
pub const RESERVED: [&str; 2] = ["PARCELS_ROOT", "PARCEL_DIRNAME"];

/// Parses the script; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<EnvScript, ParcelError> {
    let mut assignments = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| ParcelError::InvalidEnv { file: file.to_owned(), line: i + 1, message };
        let rest = line
            .strip_prefix("export ")
            .ok_or_else(|| err(format!("expected `export NAME=VALUE` or a comment, found {line:?}")))?;
        let (name, value) = rest.trim_start().split_once('=').ok_or_else(|| err("expected `NAME=VALUE`".into()))?;
        if !is_var_name(name) {
            return Err(err(format!("invalid variable name {name:?}")));
        }
        if RESERVED.contains(&name) {
            return Err(err(format!("{name} is set by drover and cannot be assigned")));
        }
        let value = parse_value(value).map_err(err)?;
        assignments.push(Assignment { name: name.to_owned(), value });
    }
    Ok(EnvScript { assignments })
}

fn is_var_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn parse_value(v: &str) -> Result<Vec<Piece>, String> {
    if let Some(inner) = v.strip_prefix('\'') {
        let inner = inner.strip_suffix('\'').ok_or("unterminated single quote")?;
        if inner.contains('\'') {
            return Err("a single-quoted value cannot contain `'`".into());
        }
        return Ok(vec![Piece::Text(inner.to_owned())]);
    }
    let (inner, quoted) = match v.strip_prefix('"') {
        Some(inner) => (inner.strip_suffix('"').ok_or("unterminated double quote")?, true),
        None => (v, false),
    };
    let forbidden: &[char] = if quoted {
        &['"', '\\', '`']
    } else {
        &['"', '\'', '\\', '`', ';', '&', '|', '<', '>', '*', '?', '[', ' ', '\t', '(', ')', '{', '}', '~']
    };
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = inner.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c == '$' {
            let name = match chars.peek() {
                Some((_, '{')) => {
                    chars.next();
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, ch)) => name.push(ch),
                            None => return Err("unterminated `${`".into()),
                        }
                    }
                    name
                }
                _ => {
                    let mut name = String::new();
                    while let Some((_, ch)) = chars.peek() {
                        if ch.is_ascii_alphanumeric() || *ch == '_' {
                            name.push(*ch);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    name
                }
            };
            if !is_var_name(&name) {
                return Err(format!("only $NAME and ${{NAME}} are supported after `$`, found {name:?}"));
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Var(name));
        } else if forbidden.contains(&c) || c.is_control() {
            return Err(format!(
                "character {c:?} is not allowed in a value{}",
                if quoted { "" } else { " (quote it)" }
            ));
        } else {
            text.push(c);
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

impl EnvScript {
    /// Expands the assignments in order and returns the variables the script sets, each once,
    /// in the order of their first assignment, with their final values.
    pub fn evaluate(
        &self,
        parcels_root: &str,
        dir_name: &str,
        inherited: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let mut set: Vec<(String, String)> = Vec::new();
        for a in &self.assignments {
            let mut value = String::new();
            for piece in &a.value {
                match piece {
                    Piece::Text(t) => value.push_str(t),
                    Piece::Var(v) => {
                        let found = match v.as_str() {
                            "PARCELS_ROOT" => Some(parcels_root),
                            "PARCEL_DIRNAME" => Some(dir_name),
                            _ => set
                                .iter()
                                .find(|(k, _)| k == v)
                                .map(|(_, val)| val.as_str())
                                .or_else(|| inherited.get(v).map(String::as_str)),
                        };
                        value.push_str(found.unwrap_or(""));
                    }
                }
            }
            if a.name.ends_with("PATH") {
                value = value.split(':').filter(|p| !p.is_empty()).collect::<Vec<_>>().join(":");
            }
            match set.iter_mut().find(|(k, _)| *k == a.name) {
                Some(slot) => slot.1 = value,
                None => set.push((a.name.clone(), value)),
            }
        }
        set
    }
}
