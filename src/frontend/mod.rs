//! The frontends: each speaks one proxy's protocol and translates it into
//! the internal model: ICAP for Squid, ext_proc for Envoy (whose protocol
//! side lives in the `grpc/` crate).

pub mod extproc;
pub mod icap;
