//! Bearer tokens: a list of accepted tokens (several during a rotation, SPEC §4), a
//! constant-time check and a fingerprint that may be logged in place of the token.
//!
//! A setting such as `INGEST_TOKEN` or `EXPORT_TOKEN` holds one or more tokens,
//! comma-separated. Every token is compared in full, whether or not an earlier one
//! matched, so the time taken says nothing about which token (or how much of one) was
//! right.

use std::fmt;

use axum::http::{HeaderMap, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_LEN: usize = 16;

/// The tokens a service accepts.
#[derive(Clone)]
pub struct Tokens(Vec<SecretString>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|t| fingerprint(t.expose_secret())))
            .finish()
    }
}

/// Why a token list was refused; the message names the position, never the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("no token given")]
    Empty,
    #[error("token {position} is shorter than {MIN_LEN} characters")]
    TooShort { position: usize },
    #[error("token {position} contains a space or a control character")]
    BadCharacter { position: usize },
    #[error(
        "token {position} has a character a platform cannot send back: only A-Z, a-z, 0-9, `_` and `-`, at most {WEBHOOK_SECRET_MAX_LEN}"
    )]
    NotAWebhookSecret { position: usize },
}

/// Longest secret Telegram (`secret_token`) and MAX (`secret`) take.
pub const WEBHOOK_SECRET_MAX_LEN: usize = 256;

impl Tokens {
    /// Parses a comma-separated list; spaces around each token are trimmed.
    pub fn parse(list: &str) -> Result<Self, TokenError> {
        let mut tokens = Vec::new();
        for (i, token) in list.split(',').map(str::trim).enumerate() {
            let position = i + 1;
            if token.is_empty() && list.trim().is_empty() {
                return Err(TokenError::Empty);
            }
            if token.chars().count() < MIN_LEN {
                return Err(TokenError::TooShort { position });
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(TokenError::BadCharacter { position });
            }
            tokens.push(SecretString::from(token.to_owned()));
        }
        Ok(Self(tokens))
    }

    /// Parses the secrets a messenger platform echoes in a webhook header (Telegram's
    /// `secret_token`, MAX's `secret`): as [`Tokens::parse`], and each one of the only
    /// characters both platforms accept (`A-Z a-z 0-9 _ -`, at most 256), so a secret
    /// the platform would refuse to register stops the start instead of every update.
    pub fn parse_webhook_secrets(list: &str) -> Result<Self, TokenError> {
        let tokens = Tokens::parse(list)?;
        for (i, token) in tokens.0.iter().enumerate() {
            let token = token.expose_secret();
            if token.len() > WEBHOOK_SECRET_MAX_LEN
                || !token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(TokenError::NotAWebhookSecret { position: i + 1 });
            }
        }
        Ok(tokens)
    }

    /// The fingerprint of the token `presented` matches, or `None`. Constant-time in
    /// the content of every configured token.
    pub fn verify(&self, presented: &str) -> Option<String> {
        let mut matched = None;
        for token in &self.0 {
            if same(token.expose_secret(), presented) && matched.is_none() {
                matched = Some(fingerprint(presented));
            }
        }
        matched
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether two secrets are equal, in time that does not depend on their content
/// (only on their lengths).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// For clap's `value_parser`.
pub fn parse_tokens(list: &str) -> Result<Tokens, String> {
    Tokens::parse(list).map_err(|e| e.to_string())
}

/// For clap's `value_parser`: [`Tokens::parse_webhook_secrets`].
pub fn parse_webhook_secrets(list: &str) -> Result<Tokens, String> {
    Tokens::parse_webhook_secrets(list).map_err(|e| e.to_string())
}

/// The first 8 hex digits of the token's SHA-256: enough to tell tokens apart in a
/// log, useless to guess one.
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    crate::hex::encode(&digest[..4])
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaa-one";
    const B: &str = "bbbbbbbbbbbbbbbb-two";

    #[test]
    fn a_rotation_accepts_either_token_and_tells_them_apart() {
        let tokens = Tokens::parse(&format!("{A}, {B}")).expect("two tokens");
        assert_eq!(tokens.len(), 2);
        let a = tokens.verify(A).expect("old token");
        let b = tokens.verify(B).expect("new token");
        assert_ne!(a, b);
        assert_eq!(a, fingerprint(A));
        assert_eq!(tokens.verify("aaaaaaaaaaaaaaaa-onf"), None);
        assert_eq!(tokens.verify(""), None);
        assert_eq!(tokens.verify(&A[..A.len() - 1]), None);
    }

    #[test]
    fn short_empty_or_spaced_tokens_are_refused_by_position() {
        assert_eq!(Tokens::parse("").err(), Some(TokenError::Empty));
        assert_eq!(Tokens::parse("  ").err(), Some(TokenError::Empty));
        assert_eq!(
            Tokens::parse(&format!("{A},short")).err(),
            Some(TokenError::TooShort { position: 2 })
        );
        assert_eq!(
            Tokens::parse(&format!("{A},,{B}")).err(),
            Some(TokenError::TooShort { position: 2 })
        );
        assert_eq!(
            Tokens::parse("aaaaaaaa bbbbbbbbbbbbb").err(),
            Some(TokenError::BadCharacter { position: 1 })
        );
    }

    #[test]
    fn webhook_secrets_hold_only_what_the_platforms_send_back() {
        let ok = "Abc_def-0123456789";
        assert_eq!(
            Tokens::parse_webhook_secrets(&format!("{ok},{A}"))
                .map(|t| t.len())
                .ok(),
            Some(2)
        );
        for bad in [
            "abcdefghijklmnop+",
            "abcdefghijklmnop.q",
            "пароль-пароль-пароль",
        ] {
            assert_eq!(
                Tokens::parse_webhook_secrets(&format!("{ok},{bad}")).err(),
                Some(TokenError::NotAWebhookSecret { position: 2 }),
                "{bad}"
            );
        }
        assert_eq!(
            Tokens::parse_webhook_secrets(&"a".repeat(257)).err(),
            Some(TokenError::NotAWebhookSecret { position: 1 })
        );
        assert!(Tokens::parse_webhook_secrets(&"a".repeat(256)).is_ok());
        // The general rules first: long enough, no spaces.
        assert_eq!(
            Tokens::parse_webhook_secrets("short").err(),
            Some(TokenError::TooShort { position: 1 })
        );
    }

    #[test]
    fn debug_shows_fingerprints_only() {
        let tokens = Tokens::parse(A).expect("token");
        let shown = format!("{tokens:?}");
        assert!(!shown.contains(A), "{shown}");
        assert!(shown.contains(&fingerprint(A)), "{shown}");
    }

    #[test]
    fn bearer_takes_the_scheme_in_any_case() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            "bearer  abc ".parse().expect("header"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer(&headers), None);
    }
}
