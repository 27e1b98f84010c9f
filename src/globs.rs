//! E-mail globs (`*@example.com`), the user filter of `[object_storage]`
//! and of a sink's `select`.

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A compiled list of e-mail globs (`*@example.com`), matched without
/// regard to case.
#[derive(Clone)]
pub struct EmailGlobs {
    set: GlobSet,
    patterns: Vec<String>,
}

impl EmailGlobs {
    /// Compiles `patterns`; on failure returns the index of the bad pattern
    /// and what is wrong with it.
    pub fn new(patterns: &[String]) -> Result<Self, (usize, String)> {
        let mut builder = GlobSetBuilder::new();
        for (i, pattern) in patterns.iter().enumerate() {
            if pattern.trim().is_empty() {
                return Err((i, "pattern must not be empty".to_owned()));
            }
            let glob = GlobBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| (i, format!("invalid glob `{pattern}`: {}", e.kind())))?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| (0, format!("invalid glob list: {}", e.kind())))?;
        Ok(Self {
            set,
            patterns: patterns.to_vec(),
        })
    }

    /// Whether `email` matches any of the patterns (case-insensitively).
    pub fn is_match(&self, email: &str) -> bool {
        self.set.is_match(email)
    }

    /// The patterns as written in the configuration.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl fmt::Debug for EmailGlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EmailGlobs").field(&self.patterns).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_globs_match_case_insensitively() {
        let globs = EmailGlobs::new(&["*@Example.com".into(), "ops+*@corp.io".into()]).unwrap();
        for (email, want) in [
            ("app@example.com", true),
            ("APP@EXAMPLE.COM", true),
            ("ops+ci@corp.io", true),
            ("ops@corp.io", false),
            ("app@example.com.evil", false),
        ] {
            assert_eq!(globs.is_match(email), want, "{email}");
        }
    }

    #[test]
    fn email_globs_report_the_bad_pattern() {
        let err = EmailGlobs::new(&["ok@x".into(), "[oops".into()]).unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("[oops"), "{}", err.1);
    }
}
