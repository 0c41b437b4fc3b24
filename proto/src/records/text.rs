//! Bounds on the strings and lists inside records. A record's size is already capped by its
//! envelope limit; these keep each field to what its use needs, and keep control characters
//! (terminal escapes, newlines that forge log lines) out of labels shown to operators.

use super::RecordError;

/// A label: 1..=`max` bytes with no control characters.
pub(crate) fn label(field: &'static str, value: &str, max: usize) -> Result<(), RecordError> {
    if value.is_empty() {
        return Err(RecordError::invalid(field, "empty"));
    }
    optional_text(field, value, max)
}

/// Like [`label`], but may be empty.
pub(crate) fn optional_text(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), RecordError> {
    if value.len() > max {
        return Err(RecordError::invalid(field, "too long"));
    }
    if value.chars().any(char::is_control) {
        return Err(RecordError::invalid(field, "control character"));
    }
    Ok(())
}

/// A list of at most `max` entries.
pub(crate) fn count<T>(field: &'static str, items: &[T], max: usize) -> Result<(), RecordError> {
    if items.len() > max {
        return Err(RecordError::invalid(field, "too many entries"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_printable() {
        assert!(label("name", "acme", 4).is_ok());
        assert!(label("name", "acme!", 4).is_err());
        assert!(label("name", "", 4).is_err());
        assert!(label("name", "a\nb", 4).is_err());
        assert!(label("name", "a\u{1b}[", 8).is_err());
        assert!(optional_text("etag", "", 4).is_ok());
        assert!(count("list", &[1, 2], 2).is_ok());
        assert!(count("list", &[1, 2, 3], 2).is_err());
    }
}
