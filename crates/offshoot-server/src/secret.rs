//! Credentials: a [`Secret`] is compared and sent, never printed; [`redact`] takes credentials
//! out of text that came from elsewhere (URLs in a git error, a host's answer).

/// A credential: compared and sent, never printed. `Debug` and `Display` write `<redacted>`;
/// there is no `PartialEq`: [`Secret::matches`] is the only comparison, in constant time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// `None` for an empty or blank value, so an unset variable never becomes a valid secret.
    pub fn new(value: impl Into<String>) -> Option<Secret> {
        let value = value.into();
        (!value.trim().is_empty()).then_some(Secret(value))
    }

    /// The value, for where it must go: an HTTP header, an HMAC key, git's askpass helper.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret. The one place any secret is compared (API tokens,
    /// GitLab webhook tokens): both sides are hashed first and the digests compared without an
    /// early exit, so neither the position of the first difference nor the length shows in the
    /// time taken.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        let (a, b) = (Sha256::digest(presented), Sha256::digest(self.0.as_bytes()));
        a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// `text` with every occurrence of this secret replaced by `<redacted>`: for text that came
    /// from elsewhere (a host's error answer, a tool's output) and may echo it. Secrets shorter
    /// than 4 characters are left alone (they would mangle ordinary text and are no secret).
    pub fn redact_from(&self, text: &str) -> String {
        if self.0.len() >= 4 {
            text.replace(&self.0, "<redacted>")
        } else {
            text.to_owned()
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Removes user information from every URL in `text`, and `secret` wherever it appears.
pub fn redact(text: &str, secret: Option<&Secret>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        out.push_str(&rest[..scheme_end + 3]);
        rest = &rest[scheme_end + 3..];
        let authority_end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            out.push_str("<redacted>@");
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    match secret {
        Some(secret) => secret.redact_from(&out),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_and_never_print() {
        let secret = Secret::new("s3cret").expect("not blank");
        assert!(secret.matches(b"s3cret"));
        assert!(!secret.matches(b"s3cres"));
        assert!(!secret.matches(b""));
        assert!(!secret.matches(b"s3cret "));
        assert_eq!(format!("{secret} {secret:?}"), "<redacted> Secret(<redacted>)");
        assert_eq!(secret.redact_from("fatal: s3cret rejected"), "fatal: <redacted> rejected");
        assert!(Secret::new("  ").is_none());
    }
}
