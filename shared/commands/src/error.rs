//! The command path's errors. The decision's own error type `E` passes through untouched, so
//! each caller maps it once (the api to problem+json, the saga to its outcome).

use appreg_eventstore::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// The decision refused the command (on the current state).
    #[error(transparent)]
    Rejected(E),
    /// A uniqueness claim the new state needs is held by another stream.
    #[error("{scope} {value:?} is already claimed")]
    ClaimTaken { scope: String, value: String },
    /// The stream kept changing under the command: every try lost the race.
    #[error("the stream changed concurrently {tries} times")]
    Conflict { tries: u32 },
    /// A stored event or snapshot does not decode.
    #[error("stream {stream_id}: {message}")]
    Corrupt { stream_id: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> CommandError<E> {
    /// Maps the decision's error.
    pub fn map_rejected<F>(self, f: impl FnOnce(E) -> F) -> CommandError<F> {
        match self {
            CommandError::Rejected(e) => CommandError::Rejected(f(e)),
            CommandError::ClaimTaken { scope, value } => CommandError::ClaimTaken { scope, value },
            CommandError::Conflict { tries } => CommandError::Conflict { tries },
            CommandError::Corrupt { stream_id, message } => {
                CommandError::Corrupt { stream_id, message }
            }
            CommandError::Store(e) => CommandError::Store(e),
        }
    }
}

/// Errors of a load: no decision involved.
pub type LoadError = CommandError<std::convert::Infallible>;

impl LoadError {
    /// A load error as an error of any command.
    pub fn widen<E>(self) -> CommandError<E> {
        self.map_rejected(|never| match never {})
    }
}
