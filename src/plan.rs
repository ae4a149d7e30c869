//! Closure walk: narinfos fetched concurrently and verified on arrival.
