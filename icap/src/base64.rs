//! Base64 (RFC 4648, standard alphabet) for `X-Authenticated-User`.
//!
//! Squid and c-icap send the user name base64-encoded in that header; this is
//! the whole of what the codec needs, so it is not worth a dependency.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn value(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|a| *a == c).map(|p| p as u32)
}

/// Decodes base64 with or without `=` padding; `None` if it is not base64.
pub fn decode(input: &[u8]) -> Option<Vec<u8>> {
    let input = crate::syntax::trim_ows(input);
    let data = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    if data.len() % 4 == 1 || (data.len() != input.len() && input.len() % 4 != 0) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for group in data.chunks(4) {
        let mut n = 0u32;
        for (i, c) in group.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    Some(out)
}

/// Encodes with padding.
pub fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.chunks(3) {
        let mut n = 0u32;
        for (i, b) in group.iter().enumerate() {
            n |= (*b as u32) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        for s in ["", "a", "ab", "abc", "abcd", "WinNT://DOMAIN/alice"] {
            assert_eq!(
                decode(encode(s.as_bytes()).as_bytes()).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(decode(b"YWxpY2U").unwrap(), b"alice");
        assert_eq!(encode(b"alice"), "YWxpY2U=");
        assert_eq!(decode(b"a"), None);
        assert_eq!(decode(b"al!c"), None);
        assert_eq!(decode(b"YWxpY2U=="), None);
    }
}
