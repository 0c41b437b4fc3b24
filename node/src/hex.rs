//! Hex: for keys in files and sealed records in headers. Lower-case out, either case in.

/// Lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower-case or upper-case hex; None if it is not hex.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

/// A 32-byte key written as 64 hex digits, surrounding whitespace allowed (a key file's line).
pub fn decode32(text: &str) -> Option<[u8; 32]> {
    decode(text.trim().as_bytes())?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let bytes = [0u8, 1, 0xab, 0xff, 0x10];
        assert_eq!(encode(&bytes), "0001abff10");
        assert_eq!(decode(b"0001ABff10"), Some(bytes.to_vec()));
        assert_eq!(decode(b"0g"), None);
        assert_eq!(decode(b"abc"), None);
        assert_eq!(decode("é0".as_bytes()), None);
        let key = [7u8; 32];
        assert_eq!(decode32(&format!(" {}\n", encode(&key))), Some(key));
        assert_eq!(decode32(&encode(&[7u8; 31])), None);
    }
}
