//! Where substituted paths land: one trait, one file per backend.
