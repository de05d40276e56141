//! JSON exactly as Python's `json.dumps` writes it (`", "` and `": "` separators), so that what we
//! send is byte-identical to what a Python Veltix peer sends.

use serde::Serialize;
use serde_json::ser::Formatter;
use std::io::{self, Write};

use crate::{JsonError, TextEncoding};

/// A `serde_json` formatter that reproduces Python's default `json.dumps` layout.
///
/// With `ensure_ascii` (Python's default, used by `Request(json=...)`) every character outside
/// `' '..='~'` is written as `\uXXXX` (surrogate pairs above U+FFFF); without it (used by the
/// handshake, `ensure_ascii=False`) non-ASCII text is written as UTF-8.
#[derive(Clone, Copy, Debug, Default)]
pub struct PythonFormatter {
    /// Escape everything that is not printable ASCII.
    pub ensure_ascii: bool,
}

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if !self.ensure_ascii {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                w.write_all(&[c as u8])?;
            } else {
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Serializes `value` the way Python's `json.dumps(value, ensure_ascii=...)` does.
///
/// ```
/// use veltix_proto::json::to_python_json;
/// let v = serde_json::json!({"v": "3.3.0", "pv": "1.0", "meta": {}});
/// assert_eq!(to_python_json(&v, false).unwrap(), br#"{"v": "3.3.0", "pv": "1.0", "meta": {}}"#);
/// assert_eq!(to_python_json(&"é", true).unwrap(), br#""\u00e9""#);
/// ```
pub fn to_python_json<T: Serialize + ?Sized>(
    value: &T,
    ensure_ascii: bool,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, PythonFormatter { ensure_ascii });
    value.serialize(&mut ser)?;
    Ok(out)
}

/// Decodes JSON bytes the way Python's `json.loads(bytes)` accepts them: UTF-8 with or without a
/// BOM, or UTF-16/UTF-32 (detected from the BOM or the zero-byte pattern of the first 4 bytes).
///
/// Deliberate differences from Python: `NaN`/`Infinity` literals and non-ASCII decimal digits are
/// rejected (no Veltix peer sends them).
///
/// ```
/// use veltix_proto::json::from_python_json_bytes;
/// use veltix_proto::{JsonError, TextEncoding};
/// assert_eq!(from_python_json_bytes(b"\xEF\xBB\xBF{}").unwrap(), serde_json::json!({}));
/// assert_eq!(
///     from_python_json_bytes(b"\xFF\xFE{"),
///     Err(JsonError::Encoding(TextEncoding::OddUtf16Length { len: 1 }))
/// );
/// ```
pub fn from_python_json_bytes(bytes: &[u8]) -> Result<serde_json::Value, JsonError> {
    let text = decode_text(bytes)?;
    Ok(serde_json::from_str(&text)?)
}

fn decode_text(b: &[u8]) -> Result<String, TextEncoding> {
    fn utf16(b: &[u8], be: bool) -> Result<String, TextEncoding> {
        if b.len() % 2 != 0 {
            return Err(TextEncoding::OddUtf16Length { len: b.len() });
        }
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| {
                if be {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from_le_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|_| TextEncoding::InvalidUtf16)
    }
    fn utf32(b: &[u8], be: bool) -> Result<String, TextEncoding> {
        if b.len() % 4 != 0 {
            return Err(TextEncoding::Utf32Length { len: b.len() });
        }
        b.chunks_exact(4)
            .map(|c| {
                let v = if be {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                };
                char::from_u32(v).ok_or(TextEncoding::InvalidUtf32 { code_point: v })
            })
            .collect()
    }
    let utf8 = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|e| TextEncoding::InvalidUtf8 {
            valid_up_to: e.utf8_error().valid_up_to(),
        })
    };
    // The same detection as CPython's json.detect_encoding.
    match b {
        [0xFF, 0xFE, 0, 0, rest @ ..] => utf32(rest, false),
        [0, 0, 0xFE, 0xFF, rest @ ..] => utf32(rest, true),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
        [0xEF, 0xBB, 0xBF, rest @ ..] => utf8(rest),
        [0, b1, _, _, ..] => {
            if *b1 != 0 {
                utf16(b, true)
            } else {
                utf32(b, true)
            }
        }
        [_, 0, b2, b3, ..] => {
            if *b2 != 0 || *b3 != 0 {
                utf16(b, false)
            } else {
                utf32(b, false)
            }
        }
        [0, _] => utf16(b, true),
        [_, 0] => utf16(b, false),
        _ => utf8(b),
    }
}
