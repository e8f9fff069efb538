//! The request layer: what the options (a command line, configuration files, the environment)
//! say, resolved once into the typed values the engine takes. Front ends call it; the engine
//! never reads an option.
//!
//! - [`repos`]: each repository's storage and cipher ([`crate::repo::RepoTarget`]), the blob
//!   settings new objects are written with, the stanza name, and the endpoints of other hosts.

pub mod repos;
