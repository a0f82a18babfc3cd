//! Sessions built in memory (hellos written by hand, records sealed with the
//! same RustCrypto AEADs) and fed at every split point.
