//! Keys and values: byte strings that read well in a history file and in a
//! report.
//!
//! In JSON a [`Bytes`] is a string when it is valid UTF-8, and otherwise an
//! object `{"hex": "00ff…"}`. An array of numbers is accepted on input too.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest key or value a report prints in full; longer ones are cut with `…`.
const DISPLAY_LIMIT: usize = 48;

/// A key or a value, as etcd stores it: any bytes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Bytes {
    fn from(text: &str) -> Self {
        Bytes(text.as_bytes().to_vec())
    }
}

impl From<String> for Bytes {
    fn from(text: String) -> Self {
        Bytes(text.into_bytes())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes(bytes)
    }
}

impl From<&[u8]> for Bytes {
    fn from(bytes: &[u8]) -> Self {
        Bytes(bytes.to_vec())
    }
}

/// Quoted text when printable UTF-8, `0x…` hex otherwise; cut when long.
impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = self.0.len() > DISPLAY_LIMIT;
        let shown = &self.0[..self.0.len().min(DISPLAY_LIMIT)];
        match std::str::from_utf8(shown) {
            Ok(text) if !text.chars().any(char::is_control) => write!(f, "{text:?}")?,
            _ => {
                f.write_str("0x")?;
                for byte in shown {
                    write!(f, "{byte:02x}")?;
                }
            }
        }
        if cut {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => Hex { hex: hex(&self.0) }.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Repr::deserialize(deserializer)? {
            Repr::Text(text) => Ok(Bytes(text.into_bytes())),
            Repr::Raw(bytes) => Ok(Bytes(bytes)),
            Repr::Hex(Hex { hex }) => unhex(&hex).map(Bytes).ok_or_else(|| {
                serde::de::Error::custom(format!("{hex:?} is not an even number of hex digits"))
            }),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hex {
    hex: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Hex(Hex),
    Raw(Vec<u8>),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_round_trip_through_json() {
        for bytes in [Bytes::from("k1"), Bytes(vec![0, 255, 7]), Bytes::default()] {
            let json = serde_json::to_string(&bytes).unwrap();
            assert_eq!(
                serde_json::from_str::<Bytes>(&json).unwrap(),
                bytes,
                "{json}"
            );
        }
        assert_eq!(
            serde_json::to_string(&Bytes(vec![0xff])).unwrap(),
            r#"{"hex":"ff"}"#
        );
        assert_eq!(
            serde_json::from_str::<Bytes>("[104, 105]").unwrap(),
            Bytes::from("hi")
        );
        assert!(serde_json::from_str::<Bytes>(r#"{"hex":"f"}"#).is_err());
    }

    #[test]
    fn display_quotes_text_and_shows_binary_as_hex() {
        assert_eq!(Bytes::from("a").to_string(), "\"a\"");
        assert_eq!(Bytes(vec![0, 1]).to_string(), "0x0001");
        assert!(Bytes(vec![b'x'; 100]).to_string().ends_with("…(100 bytes)"));
    }
}
