//! The pure core: definitions, saga state, the state machine and retry maths.
//! Nothing here does I/O; time and ids come in as arguments.

pub mod definition;
pub mod history;
pub mod machine;
pub mod path;
pub mod retry;
pub mod state;
