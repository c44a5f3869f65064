use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// The format of a configuration text.
///
/// ```
/// use steadfast_http::config::Format;
/// assert_eq!(Format::Toml.to_string(), "TOML");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// JSON (`serde_json`).
    Json,
    /// TOML (`toml`).
    Toml,
    /// YAML (`serde_norway`).
    Yaml,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Toml => "TOML",
            Format::Yaml => "YAML",
        })
    }
}

impl Format {
    /// The format a file's extension names: `.toml`, `.json`, `.yaml` or `.yml` (any case),
    /// or `None`.
    ///
    /// ```
    /// use steadfast_http::config::Format;
    /// assert_eq!(Format::of_path("etc/policies.yml".as_ref()), Some(Format::Yaml));
    /// assert_eq!(Format::of_path("policies.TOML".as_ref()), Some(Format::Toml));
    /// assert_eq!(Format::of_path("policies.ini".as_ref()), None);
    /// ```
    pub fn of_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "toml" => Some(Format::Toml),
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Why a policy file could not be loaded: the one error of
/// [`PolicySet::from_toml_str`](super::PolicySet::from_toml_str) and its siblings, naming the
/// field either way.
///
/// ```
/// use steadfast_http::config::{LoadError, PolicySet};
/// let err = PolicySet::from_toml_str("[policies.payments.retry]\nmax_attempts = 0").unwrap_err();
/// assert_eq!(err.path(), "policies.payments.retry.max_attempts");
/// assert!(matches!(err, LoadError::Invalid(_)));
/// let err = PolicySet::from_toml_str("[policies.payments]\ntimeot = \"1s\"").unwrap_err();
/// assert_eq!(err.path(), "policies.payments.timeot");
/// assert!(matches!(err, LoadError::Parse { .. }));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LoadError {
    /// The text is not well-formed, or a field is unknown, missing or of the wrong type.
    Parse {
        /// The dotted path of the field where reading stopped (an unknown field's own
        /// path: `policies.payments.retry.max_atempts`; empty for malformed text).
        path: String,
        /// What the parser said.
        message: String,
        /// The text's format.
        format: Format,
    },
    /// The text is well-formed but a value is invalid, as the builders judge it (its
    /// [`path`](ConfigError::path) is the field's full path).
    Invalid(ConfigError),
    /// The file could not be read
    /// ([`PolicySet::from_path`](super::PolicySet::from_path)).
    Io {
        /// The file.
        file: PathBuf,
        /// What kind of failure.
        kind: std::io::ErrorKind,
        /// What the system said.
        message: String,
    },
    /// The file's extension names no format this crate reads (`.toml`, `.json`, `.yaml`,
    /// `.yml`).
    UnknownFormat {
        /// The file.
        file: PathBuf,
    },
}

impl LoadError {
    /// The dotted path of the offending field (empty when the file could not be read).
    ///
    /// ```
    /// # use steadfast_http::config::PolicySet;
    /// let err = PolicySet::from_json_str(r#"{ "policies": { "a": { "retry": { "backoff": { "base": "1s" } } } } }"#).unwrap_err();
    /// assert_eq!(err.path(), "policies.a.retry.backoff.base");
    /// ```
    pub fn path(&self) -> &str {
        match self {
            LoadError::Parse { path, .. } => path,
            LoadError::Invalid(e) => e.path(),
            LoadError::Io { .. } | LoadError::UnknownFormat { .. } => "",
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Parse {
                path,
                message,
                format,
            } if path.is_empty() => write!(f, "invalid {format}: {message}"),
            LoadError::Parse {
                path,
                message,
                format,
            } => write!(f, "invalid {format} at `{path}`: {message}"),
            LoadError::Invalid(e) => e.fmt(f),
            LoadError::Io { file, message, .. } => {
                write!(f, "cannot read `{}`: {message}", file.display())
            }
            LoadError::UnknownFormat { file } => write!(
                f,
                "`{}`: the extension names no format (.toml, .json, .yaml, .yml)",
                file.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Invalid(e) => Some(e),
            LoadError::Parse { .. } | LoadError::Io { .. } | LoadError::UnknownFormat { .. } => {
                None
            }
        }
    }
}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        LoadError::Invalid(e)
    }
}
