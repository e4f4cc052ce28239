//! Integer fields of request bodies: JSON has one number type, so `3.0` is the
//! integer 3 (JSON Schema agrees, and clients that compute in floating point
//! send it so). serde's derived `u64` refuses it; these deserializers take it.
//! Every request type with an integer field uses them.
//!
//! Use as `#[serde(deserialize_with = "whole::required")]`, or
//! `#[serde(default, deserialize_with = "whole::option")]` for an optional
//! field (absent or `null`: `None`).

use std::fmt;

use serde::Deserializer;
use serde::de::{Error, Unexpected, Visitor};

struct Whole;

impl Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
        // 2^64 is the first float past u64::MAX.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

struct OptionalWhole;

impl<'de> Visitor<'de> for OptionalWhole {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer or null")
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Whole).map(Some)
    }
}

fn narrow<T: TryFrom<u64>, E: Error>(v: u64) -> Result<T, E> {
    T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
}

/// A required integer field.
pub fn required<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    narrow(d.deserialize_any(Whole)?)
}

/// An optional integer field (`null` or absent: `None`).
pub fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    d.deserialize_option(OptionalWhole)?.map(narrow).transpose()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::required")]
        n: u32,
        #[serde(default, deserialize_with = "super::option")]
        m: Option<u64>,
    }

    fn parse(s: &str) -> Result<(u32, Option<u64>), String> {
        serde_json::from_str::<Body>(s).map(|b| (b.n, b.m)).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers() {
        assert_eq!(parse(r#"{"n": 3}"#), Ok((3, None)));
        assert_eq!(parse(r#"{"n": 3.0, "m": 7.0}"#), Ok((3, Some(7))));
        assert_eq!(parse(r#"{"n": 1e3, "m": null}"#), Ok((1000, None)));
        for bad in [r#"{"n": 3.5}"#, r#"{"n": -1}"#, r#"{"n": 4294967296}"#, r#"{"n": "3"}"#, r#"{"n": null}"#] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
