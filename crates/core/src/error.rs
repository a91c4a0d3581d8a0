//! The one error type of the engine. Every message says what was expected and what came,
//! because it ends up verbatim in a JavaScript `Error`.

use thiserror::Error;

/// Errors raised by the engine.
#[derive(Debug, Error)]
pub enum Error {
    /// A tensor had the wrong shape or rank.
    #[error("shape mismatch in {op}: expected {expected}, got {got}")]
    Shape {
        /// Where the mismatch was found.
        op: String,
        /// What was expected, in words or as a shape.
        expected: String,
        /// What came.
        got: String,
    },
    /// Any other invalid argument (bad option, out-of-range label, NaN input...).
    #[error("{0}")]
    Invalid(String),
    /// Loading or saving a model failed.
    #[error("{0}")]
    Io(String),
    /// A size over a memory limit, or an allocation the system refused.
    #[error("{0}")]
    Memory(String),
    /// Training was stopped because the loss became NaN or infinite.
    #[error("{0}")]
    Diverged(String),
}

/// Engine result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds a [`Error::Shape`] from anything printable.
    pub fn shape(op: &str, expected: impl std::fmt::Debug, got: impl std::fmt::Debug) -> Self {
        Error::Shape {
            op: op.to_string(),
            expected: format!("{expected:?}"),
            got: format!("{got:?}"),
        }
    }
}

/// Returns early with [`Error::Invalid`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Invalid(format!($($arg)*)))
    };
}
