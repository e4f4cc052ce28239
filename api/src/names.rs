//! Names of clusters, services, role groups and roles, and the text a change
//! must give as its reason, as the schemas requests state them in.

use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// [`validate_name`]'s rule as an ECMA-262 pattern, for the OpenAPI document.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";

/// The schema of a name [`validate_name`] accepts.
pub fn name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(63))
        .pattern(Some(NAME_PATTERN))
        .description(Some("1-63 lowercase letters, digits or '-', starting with a letter or digit."))
        .build()
}

/// A text that is not blank after `str::trim`, as an ECMA-262 pattern: some
/// character that is not whitespace.
pub fn not_blank_pattern() -> String {
    format!("[^{}]", crate::model::WHITESPACE_CHARS)
}

/// The schema of a text that must not be blank (a change's reason).
pub fn not_blank_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(not_blank_pattern()))
        .description(Some("Why: shown in the history. Not blank."))
        .build()
}

#[cfg(test)]
mod tests {
    use super::not_blank_pattern;

    #[test]
    fn not_blank_is_trim_not_empty() {
        let pattern = regex::Regex::new(&not_blank_pattern()).unwrap();
        for text in ["x", " x ", "\u{3000}x\t", "", " ", "\t\n\r\u{85}\u{a0}\u{2028}\u{3000}", "\u{feff}", "\u{1c}"] {
            assert_eq!(pattern.is_match(text), !text.trim().is_empty(), "{text:?}");
        }
    }
}
