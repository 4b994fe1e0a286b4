//! The guest build: one pipeline (`build_runtime`) for every variant (`variant`, the
//! variants as data), made of fingerprinted, skippable steps (`steps`).

pub(crate) mod build_runtime;
pub(crate) mod cpython_source;
pub(crate) mod packages;
mod steps;
pub(crate) mod variant;
